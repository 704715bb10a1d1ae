"""Ranges, tornado and joint intervals over the unsourced hardware parameters."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from amla_numerics.cli import main
from amla_numerics.pipeline import run
from amla_numerics.pipeline.hardware import HARDWARE_NAMES, hardware_from_dict, load_hardware
from amla_numerics.pipeline.schedule import default_schedule
from amla_numerics.pipeline.sensitivity import interval, latin_hypercube, paired_gap, tornado
from amla_numerics.pipeline.shape import AttentionShape

HW_DIR = Path(__file__).resolve().parents[1] / "amla_numerics" / "pipeline" / "hardware"


@pytest.mark.parametrize("name", HARDWARE_NAMES)
def test_every_assumption_has_a_range_and_every_range_a_reason(name) -> None:
    hw = load_hardware(name)
    for key, src in hw.sources.items():
        if src.startswith("assumption") and key not in ("name", "kind"):
            assert key in hw.ranges, f"{name}.{key}: an assumption without a range"
    for key, (lo, hi) in hw.ranges.items():
        assert lo <= hw[key] <= hi
        assert not hw.source(key).startswith("calibration: fixed"), key  # fits are held fixed


def test_malformed_range_is_rejected_with_the_field() -> None:
    doc = tomllib.loads((HW_DIR / "h20.toml").read_text())
    doc["rates"]["l2_read_bpc"]["range"] = [100.0, 200.0]  # does not contain the value 64
    with pytest.raises(ValueError, match=r"'rates\.l2_read_bpc' has a malformed range"):
        hardware_from_dict(doc)


def test_latin_hypercube_hits_every_stratum_of_every_parameter() -> None:
    pts = latin_hypercube({"a": (0.0, 8.0), "b": (10.0, 18.0)}, 8, seed=3)
    for k, lo in (("a", 0.0), ("b", 10.0)):
        assert sorted(int(p[k] - lo) for p in pts) == list(range(8))


def test_tornado_swings_and_interval_contains_them() -> None:
    hw = load_hardware("h800_sxm5")
    wl, sch = AttentionShape(16, 1, 4096), default_schedule(hw, "fa_fp32")
    tw = {s.name: s for s in tornado(hw, wl, sch)}
    assert set(tw) == set(hw.ranges)
    lo, hi = hw.ranges["launch_us"]
    r = interval(hw, wl, sch, calibrate=False)  # constants held, as in the tornado
    kernels = 2 if r.combine_us > 0 else 1  # a GPU launches the combine as its own kernel
    swing = tw["launch_us"].time_hi_us - tw["launch_us"].time_lo_us
    assert swing == pytest.approx(kernels * (hi - lo))
    t_lo, t_hi = r.time_us_range  # type: ignore[misc]
    for s in tw.values():
        assert t_lo <= min(s.time_lo_us, s.time_hi_us) + 1e-9
        assert max(s.time_lo_us, s.time_hi_us) <= t_hi + 1e-9
    f_lo, f_hi = r.tflops_range  # type: ignore[misc]
    assert f_lo <= r.tflops <= f_hi
    assert r.utilization_range == pytest.approx((f_lo / r.peak_tflops, f_hi / r.peak_tflops))


def test_paired_gap_is_zero_for_the_reference_and_brackets_the_nominal() -> None:
    hw = load_hardware("h800_sxm5")
    g = paired_gap(
        hw,
        AttentionShape(8, 1, 2048),
        [default_schedule(hw, v) for v in ("amla", "fa_fp32")],
        samples=3,
    )
    assert g["amla"] == (0.0, 0.0, 0.0)
    nom, lo, hi = g["fa_fp32"]
    assert lo <= nom <= hi


def test_cli_json_has_ranges_traffic_and_tornado(capsys) -> None:
    argv = [
        "pipeline",
        "--hardware",
        "h800_sxm5",
        "--batch",
        "4",
        "--kv-len",
        "2048",
        "--sensitivity",
        "--format",
        "json",
    ]
    assert main(argv) == 0
    d = json.loads(capsys.readouterr().out)
    lo, hi = d["tflops_range"]
    assert lo <= d["tflops"] <= hi
    assert set(d["traffic_bytes"]) == {"hbm_read", "hbm_write", "l2_read", "l2_write"}
    assert {t["name"] for t in d["tornado"]} == set(load_hardware("h800_sxm5").ranges)
    assert set(d["range_points"]) == {"fastest", "slowest"}
    assert set(load_hardware("h800_sxm5").ranges) <= set(d["range_points"]["slowest"])


def test_a_pinned_parameter_is_not_redrawn() -> None:
    hw = load_hardware("ascend910c").pin(l2_chip_gbps=10000.0)
    assert "l2_chip_gbps" not in hw.ranges and hw["l2_chip_gbps"] == 10000.0
    assert all("l2_chip_gbps" not in p for p in latin_hypercube(dict(hw.ranges), 4))
    replaced = load_hardware("ascend910c").replace(l2_chip_gbps=10000.0)
    assert "l2_chip_gbps" in replaced.ranges  # replace() keeps the range: the old trap


def test_gpu_traffic_counts_the_output_once() -> None:
    hw = load_hardware("h800_sxm5")
    wl = AttentionShape(64, 2, 4096)
    r = run(hw, wl, default_schedule(hw, "fa_fp32", split_kv=False))
    out = 64 * 2 * 128 * 512 * 2  # batch x s_q x heads x d_v x BF16
    kv = 64 * 4096 * 576 * 2  # every request's latent cache, read once at least
    t = r.traffic_bytes
    assert t["l2_write"] == out
    assert t["hbm_write"] == out
    assert t["hbm_read"] >= kv


@pytest.mark.parametrize(
    "batch, heads, kv_len", [(128, 128, 1024), (128, 16, 8192), (16, 64, 4096)]
)
def test_no_h800_case_moves_more_than_the_fitted_hbm_bandwidth(batch, heads, kv_len) -> None:
    """The output store is charged to HBM: compulsory bytes / time stays under the sustained
    rate (batch 128, 128 heads, 1K keys gives 3055 GB/s if the store is free)."""
    hw = load_hardware("h800_sxm5")
    r = run(hw, AttentionShape(batch, 1, kv_len, heads=heads), default_schedule(hw, "fa_fp32"))
    assert r.hbm_gbps <= 3350.0 * hw["hbm_efficiency"]

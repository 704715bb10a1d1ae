"""The validation ladder of the pipeline model, one test per rung.

Fitted anchors (the figure matches by construction; the test checks that the shipped
constant IS the fit): AMLA 614 TFLOPS -> ``mmad_overhead_cycles``; FlashMLA 660 TFLOPS ->
``block_overhead_cycles``; FlashMLA 3000 GB/s -> ``hbm_efficiency``; the 910B2 torch_npu call
at 4K keys -> the per-call host cost ``HOST_CALL_US``. Every other published
figure is a prediction: within 15 %, or a documented finding (``EXPLAINED_MISSES``), and
the validation table of docs/pipeline.md shows the model's current figure.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from amla_numerics.pipeline import evaluate
from amla_numerics.pipeline.calibrate import (
    ANCHORS,
    HOST_CALL_RANGE,
    HOST_CALL_US,
    anchor_result,
    anchor_value,
    fit_constant,
    fit_host_call,
)
from amla_numerics.pipeline.extremes import Calibration
from amla_numerics.pipeline.hardware import HARDWARE_NAMES, load_hardware

AMLA = ANCHORS["amla_614"]
DOCS = Path(__file__).resolve().parents[1] / "docs" / "pipeline.md"

#: prediction anchors that miss by more than 15 %, written down in docs/pipeline.md section 6
#: (a finding, never a constant fitted away).
EXPLAINED_MISSES: dict[str, str] = {
    "b2_fa_8k": "torch_npu's call takes 353 us, the PTO kernel on the same chip 293 us, the "
    "model's kernel 260 us + 38.6 us host cost: a kernel difference, not a per-call cost",
}


def test_amla_614_is_fitted_and_cube_bound() -> None:
    r = anchor_result(AMLA)
    assert r.peak_name == "48 AIC at 1.8 GHz = 707.8 TFLOPS"
    assert r.tflops == pytest.approx(614.0, rel=0.005)
    assert r.bound == "AIC.Cube"  # "the Preload Pipeline achieves Cube-bound performance"


@pytest.mark.slow
def test_shipped_mmad_overhead_is_the_fit() -> None:
    shipped = load_hardware("ascend910c")["mmad_overhead_cycles"]
    assert fit_constant(AMLA, "mmad_overhead_cycles", 100.0, 500.0, 1.0) == pytest.approx(
        shipped, abs=1.0
    )


def test_one_core_design_one_constant() -> None:
    asc = [n for n in HARDWARE_NAMES if n.startswith("ascend")]
    assert len({load_hardware(n)["mmad_overhead_cycles"] for n in asc}) == 1
    gpu = [n for n in HARDWARE_NAMES if not n.startswith("ascend")]
    assert len({load_hardware(n)["block_overhead_cycles"] for n in gpu}) == 1


def test_flashmla_660_fit_is_the_bound_zero() -> None:
    a = ANCHORS["flashmla_660"]
    r = anchor_result(a)
    assert r.tflops == pytest.approx(660.0, rel=0.05)  # 1.4 % below with no overhead at all
    assert r.tflops < 660.0
    assert r.bound == "SM.Tensor"
    assert fit_constant(a, "block_overhead_cycles", 0.0, 2000.0, 1.0) == 0.0
    assert load_hardware("h800_sxm5")["block_overhead_cycles"] == 0.0


def test_flashmla_3000_fits_hbm_efficiency() -> None:
    a = ANCHORS["flashmla_3000"]
    r = anchor_result(a)
    assert r.hbm_gbps == pytest.approx(3000.0, rel=0.005)
    assert r.bound == "HBM (chip share)"
    eff = fit_constant(a, "hbm_efficiency", 0.5, 1.0, 0.0025, 3)
    assert load_hardware("h800_sxm5")["hbm_efficiency"] == pytest.approx(eff, abs=0.003)
    assert r.hbm_gbps <= 3350.0 * eff * 1.001  # never above the sustained rate


@pytest.mark.parametrize("name", [k for k, a in ANCHORS.items() if a.role == "prediction"])
def test_predictions_within_15_percent_or_explained(name: str) -> None:
    a = ANCHORS[name]
    value = anchor_value(a)
    err = value / a.target - 1
    if abs(err) > 0.15:
        assert name in EXPLAINED_MISSES, f"{name}: {err:+.1%} unexplained"
    row = next(line for line in DOCS.read_text().splitlines() if line.startswith(f"| {name} |"))
    cells = [c.strip() for c in row.split("|")]
    assert f"{value:.1f}" in cells, f"docs/pipeline.md row of {name} is stale: model {value:.1f}"
    assert f"{err:+.1%}" in cells, f"docs/pipeline.md row of {name}: error {err:+.1%}"


def test_host_call_cost_is_the_fit_on_one_row_and_inside_its_range() -> None:
    a = ANCHORS["b2_fa_4k"]
    assert a.timing == "host" and a.role == "fit host_call_us"
    assert fit_host_call(a) == HOST_CALL_US
    assert anchor_value(a) == pytest.approx(a.target, rel=1e-3)
    assert HOST_CALL_RANGE[0] <= HOST_CALL_US <= HOST_CALL_RANGE[1]
    # the range's other end: torch_npu minus the PTO kernel at S = 4096 (same host benchmark)
    assert HOST_CALL_RANGE[0] == pytest.approx(118.302 - 88.902, abs=0.05)


def test_host_call_cost_enters_host_timed_figures_only() -> None:
    for a in ANCHORS.values():
        res = anchor_result(a)
        value = anchor_value(a)
        if a.timing == "kernel":
            assert value == getattr(res, a.metric)
            with pytest.raises(ValueError, match="kernel-timed"):
                fit_host_call(a)
        else:  # the same work over the kernel time plus the host cost
            assert value == pytest.approx(
                getattr(res, a.metric) * res.time_us / (res.time_us + HOST_CALL_US), rel=1e-12
            )
    # a host-timed anchor never becomes a hardware file's re-fitted constant
    assert Calibration(load_hardware("ascend910b2")).anchor is None
    assert Calibration(load_hardware("ascend910c")).field == "mmad_overhead_cycles"


def test_without_the_host_cost_the_short_rows_miss_and_with_it_they_do_not() -> None:
    """The check can fail: with no per-call cost the 1K and 2K rows miss by > 100 %."""
    for name in ("b2_fa_1k", "b2_fa_2k"):
        a = ANCHORS[name]
        assert anchor_value(a, host_call_us=0.0) / a.target - 1 > 1.0
        assert abs(anchor_value(a) / a.target - 1) < 0.15


def test_docs_table_lists_every_anchor() -> None:
    text = DOCS.read_text()
    for name, a in ANCHORS.items():
        assert re.search(rf"^\| {name} \|", text, re.M), name
        kind = "fitted" if a.role.startswith("fit") else "predicted"
        row = next(line for line in text.splitlines() if line.startswith(f"| {name} |"))
        assert kind in row, name


def test_a_die_is_half_a_package() -> None:
    kw = dict(q_len=2, kv_len=4096)
    die = evaluate("ascend910c_die", "amla", batch=24, **kw)
    pkg = evaluate("ascend910c", "amla", batch=48, **kw)
    # the same busiest core; only the processor-sharing rates see 23 vs 47 other cores
    assert die.tflops * 2 == pytest.approx(pkg.tflops, rel=1e-3)
    assert die.peak_name == "24 AIC at 1.8 GHz = 353.9 TFLOPS"

"""``amla-numerics pipeline``: output formats, sweeps, trace and plot files, usage errors.

Outputs are checked against the library called directly (the CLI must only render), the
trace against the Chrome trace event format, the PNG by its signature and size.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from amla_numerics.cli import main
from amla_numerics.pipeline import evaluate
from amla_numerics.variants import VARIANTS
from tests.test_pipeline_model import RESULT_KEYS

SMALL = ["--batch", "8", "--kv-len", "2048"]


def test_json_has_the_contract_keys_and_matches_the_library(capsys) -> None:
    assert (
        main(
            [
                "pipeline",
                "--hardware",
                "ascend910c",
                "--variant",
                "amla",
                *SMALL,
                "--q-len",
                "2",
                "--format",
                "json",
            ]
        )
        == 0
    )
    doc = json.loads(capsys.readouterr().out)
    for key in RESULT_KEYS:
        assert key in doc
    ref = evaluate("ascend910c", "amla", batch=8, q_len=2, kv_len=2048).to_dict()
    assert doc == json.loads(json.dumps(ref))


def test_table_names_every_peak_and_engine(capsys) -> None:
    assert main(["pipeline", *SMALL]) == 0
    out = capsys.readouterr().out
    assert "util vs 48 AIC at 1.8 GHz = 707.8 TFLOPS" in out
    assert "util vs public 752 TFLOPS" in out
    for engine in ("AIC.Cube", "AIC.MTE2", "AIV0.Vector", "AIV1.MTE3", "HBM (chip share)"):
        assert f"busy {engine}" in out


def test_sweep_runs_every_combination(capsys) -> None:
    assert (
        main(
            [
                "pipeline",
                "--sweep",
                "--batch",
                "4,8",
                "--kv-len",
                "1024,2048",
                "--q-len",
                "1,2",
                "--variant",
                "amla,fa_fp32,lazy",
                "--format",
                "json",
            ]
        )
        == 0
    )
    docs = json.loads(capsys.readouterr().out)
    assert len(docs) == 2 * 2 * 2 * 3
    combos = {(d["variant"], d["batch"], d["q_len"], d["kv_len"]) for d in docs}
    assert len(combos) == 24
    assert main(["pipeline", "--sweep", "--variant", ",".join(VARIANTS), *SMALL]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["hardware", "variant", "schedule"]
    assert [ln.split()[1] for ln in lines[1:]] == list(VARIANTS)


def test_trace_is_chrome_trace_json_and_plot_is_a_png(tmp_path: Path, capsys) -> None:
    trace, plot = tmp_path / "t.json", tmp_path / "g.png"
    assert (
        main(
            [
                "pipeline",
                "--batch",
                "8",
                "--kv-len",
                "16384",
                "--variant",
                "fa_fp32",
                "--trace",
                str(trace),
                "--plot",
                str(plot),
                "--format",
                "json",
            ]
        )
        == 0
    )
    res = json.loads(capsys.readouterr().out)
    doc = json.loads(trace.read_text())
    ev = [e for e in doc["traceEvents"] if e["ph"] == "X"]
    assert ev and all({"name", "ph", "ts", "dur", "pid", "tid"} <= set(e) for e in ev)
    assert all(e["dur"] >= 0 and e["ts"] >= 0 for e in ev)
    # the trace spans exactly the simulated time (the fixed launch and combine come on top)
    sim_us = res["time_us"] - res["launch_us"] - res["combine_us"]
    assert max(e["ts"] + e["dur"] for e in ev) == pytest.approx(sim_us, rel=1e-9)
    names = {e["args"]["name"] for e in doc["traceEvents"] if e["name"] == "thread_name"}
    assert {"AIC.Cube", "AIV0.Vector", "AIV1.MTE3"} <= names
    # CANN's non-AMLA path: the P V partial goes to a workspace, U updates O (no R stage)
    assert {e["cat"] for e in ev} >= {"C1", "C2", "V1", "U", "V2", "Q"}
    assert "R" not in {e["cat"] for e in ev}
    png = plot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--batch", "-4"], "shape.batch must be >= 1, got -4"),
        (["--kv-len", "0"], "shape.kv_len must be >= 1"),
        (["--batch", "two"], "--batch must be an integer"),
        (["--batch", "4,8"], "lists of values need --sweep"),
        (["--variant", "fp64"], "unknown variant 'fp64' for argument '--variant'"),
        (["--hardware", "tpu"], "unknown hardware 'tpu'"),
        (
            ["--set", "l1_stream_buffers=4"],
            "schedule.l1_stream_buffers: the tiling does not fit L1",
        ),
        (["--set", "vec_rows=64"], "schedule.vec_rows: the tiling does not fit UB"),
        (["--set", "kv_block=x"], "--set kv_block must be one integer"),
        (["--set", "warp=2"], "--set expects FIELD=VALUE"),
        (["--variant", "amla", "--rescale-prob", "0.5"], "applies only to variant 'lazy'"),
        (["--variant", "lazy", "--rescale-prob", "2"], "rescale_prob must be a number in [0, 1]"),
        (["--sweep", "--plot", "x.png"], "--trace and --plot apply to one configuration"),
        (["--sweep", "--trace", "x.json"], "--trace and --plot apply to one configuration"),
        (["--kv-heads", "3"], "shape.kv_heads (3) must divide heads (128)"),
        (["--samples", "-1"], "--samples must be >= 0"),
        (["--variant", "fa_fp32_ub", "--set", "m_tile=256"], "O resident"),
    ],
)
def test_usage_errors_exit_2_with_one_sentence(argv, needle, capsys) -> None:
    assert main(["pipeline", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("amla-numerics: error:") and needle in err, err
    assert "Traceback" not in err and err.count("\n") == 1


@pytest.mark.parametrize("kv_len", ["100000000", "1000000000000"])
def test_too_big_to_simulate_is_refused_in_one_sentence(kv_len, capsys):
    """Sizes are estimated before anything is built: a refusal in one sentence, exit 2."""
    assert main(["pipeline", "--kv-len", kv_len]) == 2
    err = capsys.readouterr().err
    assert "KV blocks on the busiest core" in err and "Traceback" not in err
    assert err.count("\n") == 1


def test_a_sweep_with_sensitivity_bounds_every_configuration(capsys) -> None:
    """Each row carries the bounds the library gives for that configuration alone."""
    argv = ["pipeline", "--hardware", "ascend910b2", "--sweep", "--batch", "1,2"]
    argv += ["--kv-len", "512", "--q-len", "1", "--sensitivity", "--format", "json"]
    assert main(argv) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["batch"] for r in rows] == [1, 2]
    for r in rows:
        ref = evaluate("ascend910b2", batch=r["batch"], q_len=1, kv_len=512, bounds=True)
        assert tuple(r["tflops_range"]) == ref.tflops_range
        assert r["range_points"] == json.loads(json.dumps(dict(ref.range_points or {})))
        assert "tornado" not in r  # the tornado is for one configuration


@pytest.mark.slow
def test_a_shared_calibration_gives_the_same_bounds_with_fewer_refits() -> None:
    from amla_numerics.pipeline import AttentionShape, default_schedule, load_hardware
    from amla_numerics.pipeline.extremes import Calibration
    from amla_numerics.pipeline.sensitivity import interval

    hw = load_hardware("ascend910c")
    shared = Calibration(hw)
    cases = [(AttentionShape(8, 1, 1024), "amla"), (AttentionShape(8, 1, 1024), "fa_fp32")]
    fits_alone = 0
    for wl, v in cases:
        sch = default_schedule(hw, v)
        alone = Calibration(hw)
        a = interval(hw, wl, sch, calibration=alone)
        b = interval(hw, wl, sch, calibration=shared)
        assert (a.time_us_range, a.range_points, a.range_note) == (
            b.time_us_range,
            b.range_points,
            b.range_note,
        )
        fits_alone += len(alone._cache)
    assert len(shared._cache) < fits_alone  # points common to both figures are fitted once


def test_rescale_is_a_deprecated_alias_of_variant(capsys):
    argv = ["pipeline", "--batch", "2", "--kv-len", "512", "--format", "json"]
    assert main([*argv, "--rescale", "fa_fp32"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["variant"] == "fa_fp32"
    assert err.count("deprecated") == 1 and "--variant" in err
    assert main([*argv, "--variant", "fa_fp32"]) == 0
    assert "deprecated" not in capsys.readouterr().err
    assert main([*argv, "--rescale", "amla", "--variant", "amla"]) == 2
    assert "give only --variant" in capsys.readouterr().err

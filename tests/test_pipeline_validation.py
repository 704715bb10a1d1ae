"""The validation ladder of the pipeline model, one test per rung.

Fitted anchors (the figure matches by construction; the test checks that the shipped
constant IS the fit): AMLA 614 TFLOPS -> ``mmad_overhead_cycles``; FlashMLA 660 TFLOPS ->
``block_overhead_cycles``; FlashMLA 3000 GB/s -> ``hbm_efficiency``. Every other published
figure is a prediction: within 15 %, or a documented finding (``EXPLAINED_MISSES``), and
the validation table of docs/pipeline.md shows the model's current figure.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from amla_numerics.pipeline import evaluate
from amla_numerics.pipeline.calibrate import ANCHORS, anchor_result, fit_constant
from amla_numerics.pipeline.hardware import HARDWARE_NAMES, load_hardware

AMLA = ANCHORS["amla_614"]
DOCS = Path(__file__).resolve().parents[1] / "docs" / "pipeline.md"

#: prediction anchors that miss by more than 15 %, written down in docs/pipeline.md section 6
#: (a finding, never a constant fitted away).
EXPLAINED_MISSES: dict[str, str] = {
    "b2_fa_1k": "short single-head prefill: the per-call cost the model lacks dominates",
    "b2_fa_2k": "the same: the error falls with length (+116 %, +102 %, +49 %, +36 %, +15 %)",
    "b2_fa_8k": "the same trend, 8K keys",
    "b2_fa_4k": "short single-head prefill: ~38 us per call missing (above the launch range)",
    "b2_fa_16k": "the same trend: the error falls with length (+49 %, +15 %, -4 %)",
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
    value = getattr(anchor_result(a), a.metric)
    err = value / a.target - 1
    if abs(err) > 0.15:
        assert name in EXPLAINED_MISSES, f"{name}: {err:+.1%} unexplained"
    row = next(line for line in DOCS.read_text().splitlines() if line.startswith(f"| {name} |"))
    cells = [c.strip() for c in row.split("|")]
    assert f"{value:.1f}" in cells, f"docs/pipeline.md row of {name} is stale: model {value:.1f}"
    assert f"{err:+.1%}" in cells, f"docs/pipeline.md row of {name}: error {err:+.1%}"


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

"""The steady-state extrapolation equals the reference event simulation of every block."""

from __future__ import annotations

import math

import pytest

from amla_numerics.pipeline import AttentionShape, default_schedule, load_hardware, make_plan, run
from amla_numerics.pipeline.des import simulate
from amla_numerics.pipeline.graph import Block, block_sequence, build_graph
from amla_numerics.pipeline.periodic import (
    PeriodicSim,
    PeriodicSimulator,
    shorten,
    simulate_periodic,
    simulated_blocks,
)
from amla_numerics.pipeline.rescale import MODEL_VARIANTS

#: The benchmark set: hardware files, variants and shapes (splits, s_q, heads, ragged keys).
BENCHMARK = [
    ("ascend910c", "amla", dict(batch=128, q_len=2, kv_len=16384), {}),
    ("ascend910c", "fa_fp32", dict(batch=48, q_len=2, kv_len=16384), {}),
    ("ascend910c", "fa_fp32_ub", dict(batch=16, q_len=1, kv_len=16384), {}),
    ("ascend910c", "lazy", dict(batch=16, q_len=2, kv_len=16000), dict(rescale_prob=0.25)),
    ("ascend910c", "amla", dict(batch=4, q_len=2, kv_len=32768), dict(splits=3)),
    ("ascend910c", "amla", dict(batch=8, q_len=4, kv_len=12000, heads=64), {}),
    ("ascend910b2", "fa_fp32", dict(batch=8, q_len=1, kv_len=32768, heads=32), {}),
    ("ascend910b3", "amla_fp32r", dict(batch=24, q_len=1, kv_len=8192), {}),
    ("h800_sxm5", "fa_fp32", dict(batch=64, q_len=1, kv_len=8192), {}),
    ("h20", "amla", dict(batch=32, q_len=2, kv_len=4096), {}),
    ("h100_sxm5", "lazy", dict(batch=16, q_len=1, kv_len=16384), {}),
    ("ascend910c", "naive", dict(batch=8, q_len=4, kv_len=32768), {}),  # L2 spill 0.83
]


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-300)


def _assert_equal(hw, wl, sch) -> None:
    """Every reported figure of the fast path equals the reference's to 1e-9."""
    fast, ref = run(hw, wl, sch), run(hw, wl, sch, reference=True)
    for field in ("time_us", "tflops", "utilization", "hbm_gbps"):
        a, b = getattr(fast, field), getattr(ref, field)
        assert _rel(a, b) <= 1e-9, (field, a, b)
    assert fast.bound == ref.bound
    for field in ("engines", "critical_path"):
        a, b = getattr(fast, field), getattr(ref, field)
        assert set(a) == set(b), field
        worst = max(abs(a[k] - b[k]) for k in b)
        assert worst <= 1e-9, (field, worst)
    assert fast.traffic_bytes == ref.traffic_bytes  # not simulated: the same closed form


@pytest.mark.parametrize("hw_name, variant, shape, over", BENCHMARK)
def test_fast_path_equals_the_reference_simulation(hw_name, variant, shape, over):
    hw = load_hardware(hw_name)
    _assert_equal(hw, AttentionShape(**shape), default_schedule(hw, variant, **over))


@pytest.mark.parametrize("hw_name", ["ascend910c", "h800_sxm5"])
@pytest.mark.parametrize("variant", MODEL_VARIANTS)
def test_every_variant_extrapolated_equals_the_reference(hw_name, variant):
    hw = load_hardware(hw_name)
    wl = AttentionShape(48, 2, 16384) if hw.kind != "gpu" else AttentionShape(16, 1, 8192)
    sch = default_schedule(hw, variant)
    plan = make_plan(hw, wl, sch)
    assert simulated_blocks(plan) < len(block_sequence(plan))  # the fast path cuts blocks
    _assert_equal(hw, wl, sch)


def test_the_report_configuration_is_extrapolated_not_simulated_in_full():
    hw = load_hardware("ascend910c")
    plan = make_plan(hw, AttentionShape(128, 2, 16384), default_schedule(hw, "amla"))
    fast = simulate_periodic(plan)
    assert isinstance(fast, PeriodicSim)
    assert fast.removed >= len(block_sequence(plan)) // 2
    ref = simulate(build_graph(plan).graph)
    assert math.isclose(fast.makespan, ref.makespan, rel_tol=1e-12)


def test_a_broken_period_falls_back_to_a_longer_simulation():
    """Blocks that are not identical are never cut: a run of alternating sizes stays whole."""
    f = Block(256, 512, True, False, False)
    a, b = Block(256, 512, False, False, True), Block(256, 256, False, False, True)
    last = Block(256, 512, False, True, True)
    s = shorten([f, *[a, b] * 10, last], keep=4)
    assert s.runs == () and len(s.blocks) == 22
    s = shorten([f, *[a] * 10, last], keep=4)
    assert s.runs == ((1, 4, 6),) and len(s.blocks) == 6


def test_the_compiled_and_the_pure_python_fast_paths_agree_bit_for_bit():
    hw = load_hardware("ascend910c")
    plan = make_plan(hw, AttentionShape(128, 2, 16384), default_schedule(hw, "fa_fp32"))
    fast = PeriodicSimulator(plan, compiled=True)()
    assert fast == PeriodicSimulator(plan, compiled=False)()
    assert isinstance(fast, PeriodicSim) and fast.removed > 0

"""The baselines as kernels implement them, shared bandwidth, L2 capacity, atomics, FP8,
general shapes and the split-KV combine.

Oracles: byte identities recomputed by hand from each kernel's data movement (CANN's
workspace path, AMLA's atomic path, FP8 P and KV), exact arithmetic of the fixed costs,
and the chip roofline (N cores x bytes / bandwidth).
"""

from __future__ import annotations

import dataclasses
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amla_numerics.pipeline import evaluate, run
from amla_numerics.pipeline.analytic import block_demand, workload_totals
from amla_numerics.pipeline.hardware import load_hardware
from amla_numerics.pipeline.plan import combine_cost, make_plan
from amla_numerics.pipeline.rescale import MODEL_VARIANTS, rescale_cost, rows_per_decision
from amla_numerics.pipeline.schedule import check_capacity, default_schedule
from amla_numerics.pipeline.shape import AttentionShape
from amla_numerics.variants import VARIANTS
from tests.strategies import examples

ASCEND = load_hardware("ascend910c")
H800 = load_hardware("h800_sxm5")
KW = dict(batch=32, q_len=2, kv_len=4096)


def test_every_variant_has_a_cost_and_extra_entries_are_tolerated() -> None:
    assert set(VARIANTS) <= set(MODEL_VARIANTS)
    for extra in ("fa_fp32_ub", "fa_fp8", "amla_fp8"):
        assert extra in MODEL_VARIANTS  # costed even before VARIANTS names them
    assert rescale_cost("fa_fp8").p_bytes == rescale_cost("amla_fp8").p_bytes == 1


def test_fa_fp32_reads_the_partial_and_the_old_o_every_block() -> None:
    """CANN's non-AMLA path: every block's P V partial is read back (FP32), and from the
    second block on the old O too; AMLA reads neither (integer atomic add)."""
    a = evaluate("ascend910c", "amla", **KW)
    f = evaluate("ascend910c", "fa_fp32", **KW)
    nb, m = 4096 // 512, 256
    extra = 32 * (nb + (nb - 1)) * m * 512 * 4
    assert f.traffic_bytes["l2_read"] - a.traffic_bytes["l2_read"] == extra
    assert f.traffic_bytes["hbm_read"] == a.traffic_bytes["hbm_read"]  # the cache, once


def test_fp8_p_halves_the_p_bytes_and_fp8_kv_the_cache_bytes() -> None:
    a = evaluate("ascend910c", "amla", **KW)
    a8 = evaluate("ascend910c", "amla_fp8", **KW)
    nb, m, n = 8, 256, 512
    assert a.traffic_bytes["l2_read"] - a8.traffic_bytes["l2_read"] == 32 * nb * m * n * 1
    assert a.traffic_bytes["l2_write"] - a8.traffic_bytes["l2_write"] == 32 * nb * m * n * 1
    kv8 = evaluate("ascend910c", "amla", kv_cache="fp8", **KW)
    cache = lambda r: r.traffic_bytes["hbm_read"] - 32 * 256 * 576 * 2  # noqa: E731 (minus Q)
    assert Fraction(cache(kv8)) / Fraction(cache(a)) == Fraction(656, 1152)


def test_ub_resident_design_needs_fewer_rows_and_says_so() -> None:
    sch = default_schedule(ASCEND, "fa_fp32_ub")
    assert sch.m_tile == 64 and rescale_cost("fa_fp32_ub").design == "ub"
    used, cap = check_capacity(ASCEND, AttentionShape(1, 2, 1024), sch)["UB"]
    assert used <= cap
    with pytest.raises(ValueError, match="O resident 256 KB"):
        check_capacity(ASCEND, AttentionShape(1, 2, 1024), dataclasses.replace(sch, m_tile=256))
    # fewer rows per core: the KV cache is streamed through L2 once per 64-row tile
    u = evaluate("ascend910c", "fa_fp32_ub", **KW)
    f = evaluate("ascend910c", "fa_fp32", **KW)
    assert u.traffic_bytes["l2_read"] > f.traffic_bytes["l2_read"]


def test_atomic_rmw_switch_adds_one_read_per_atomic_byte_at_l2() -> None:
    wl = AttentionShape(**KW)
    sch = default_schedule(ASCEND, "amla")
    on = make_plan(ASCEND, wl, sch)
    off = make_plan(ASCEND.replace(atomic_rmw=0.0), wl, sch)
    m, n = 256, 512
    d_on, d_off = block_demand(on, m, n), block_demand(off, m, n)
    atomics = m * 512 * 4 + 2 * (m // 2) * 512 * 4  # Fixpipe's P V add + the AIVs' N add
    assert d_on.traffic["L2 (chip share)"] - d_off.traffic["L2 (chip share)"] == atomics
    assert d_on.traffic["L2 write port"] == d_off.traffic["L2 write port"]


def test_l2_capacity_spills_exactly_the_missing_fraction() -> None:
    wl = AttentionShape(**KW)
    sch = default_schedule(ASCEND, "amla")
    fits = make_plan(ASCEND, wl, sch)
    ws, cap = fits.capacity["L2"]
    assert fits.spill == 0.0 and ws <= cap
    # per core: 2 slots x (S fp32 + P bf16) of 256 x 512, O fp32 256 x 512
    assert ws == fits.split.active_cores * (2 * 256 * 512 * 6 + 256 * 512 * 4)
    small = make_plan(ASCEND.replace(l2_bytes=ws / 4), wl, sch)
    assert small.spill == pytest.approx(0.75)
    assert workload_totals(small)["hbm_bytes"] == workload_totals(fits)["hbm_bytes"]
    d_small, d_fit = block_demand(small, 256, 512), block_demand(fits, 256, 512)
    assert d_small.traffic["HBM (chip share)"] > d_fit.traffic["HBM (chip share)"]


def test_launch_cost_adds_exactly_its_microseconds() -> None:
    wl, sch = AttentionShape(**KW), default_schedule(ASCEND, "amla")
    t = [run(ASCEND.replace(launch_us=v), wl, sch).time_us for v in (3.0, 20.0)]  # type: ignore[union-attr]
    assert t[1] - t[0] == pytest.approx(17.0, rel=1e-12)


@pytest.mark.parametrize("cores", [16, 20, 22, 24])
def test_shared_bandwidth_no_sign_flip_with_core_count(cores) -> None:
    """Static FIFO shares of a shared link would make the FP32-vs-AMLA gap at s_q = 1 flip
    sign with the core count. Processor sharing: the FP32 path is never faster than AMLA."""
    hw = load_hardware("ascend910c_die").replace(cores=cores)
    kw = dict(batch=64, q_len=1, kv_len=8192)
    a, f = evaluate(hw, "amla", **kw), evaluate(hw, "fa_fp32", **kw)
    assert f.tflops <= a.tflops * (1 + 1e-3)


def test_bandwidth_bound_config_reaches_its_roofline() -> None:
    """s_q = 1, batch 128, 16K on ascend910c (the old artifact: 438 of a 624 roofline)."""
    r = evaluate("ascend910c", "amla", batch=128, q_len=1, kv_len=16384)
    sim_only = r.time_us - r.launch_us - r.combine_us
    roof_only = (
        r.batch * 0 + (r.time_us * r.tflops / r.roofline_tflops) - r.launch_us - r.combine_us
    )
    assert sim_only <= roof_only * 1.06  # within 6 % of the roofline
    m = evaluate("h800_sxm5", "fa_fp32", batch=128, q_len=1, kv_len=8192, heads=16)
    # within 4 % of the sustained rate, launch and combine included
    assert m.bound == "HBM (chip share)" and m.hbm_gbps > 0.96 * 3350 * H800["hbm_efficiency"]


def test_split_kv_combine_cost_and_explicit_splits() -> None:
    wl = AttentionShape(1, 1, 65536)
    heur = make_plan(ASCEND, wl, default_schedule(ASCEND, "amla"))
    assert heur.split.max_splits > 1
    c = combine_cost(heur)
    m = 256  # heads x s_q = 128 rows padded to a 256-row tile's FP32 partial
    assert c.read == heur.split.partials * m * (512 * 4 + 8)
    assert c.time_us > ASCEND["sync_us"]
    one = make_plan(ASCEND, wl, default_schedule(ASCEND, "amla", splits=1, split_kv=False))
    assert combine_cost(one).time_us == 0.0 and one.split.max_splits == 1
    r1 = evaluate("ascend910c", "amla", batch=1, q_len=1, kv_len=65536, splits=1)
    r16 = evaluate("ascend910c", "amla", batch=1, q_len=1, kv_len=65536, splits=16)
    assert r16.splits == 16 and r16.combine_us > 0 and r16.time_us < r1.time_us
    with pytest.raises(ValueError, match=r"schedule\.splits must be >= 1"):
        evaluate("ascend910c", "amla", splits=0)


def test_rows_per_decision_is_a_vector_cores_share() -> None:
    assert rows_per_decision(256, 2) == 128
    assert rows_per_decision(64, 2) == 32


@settings(max_examples=examples(40))
@given(
    batch=st.integers(1, 64),
    q_len=st.integers(1, 4),
    kv_len=st.integers(1, 20000),
    kv=st.sampled_from(
        [(128, 1, 576, 512, True), (32, 8, 128, 128, False), (16, 16, 64, 64, False)]
    ),
    cache=st.sampled_from(["bf16", "fp8"]),
    gpu=st.booleans(),
)
def test_general_shapes_flops_and_bytes_match_closed_forms(
    batch, q_len, kv_len, kv, cache, gpu
) -> None:
    heads, kv_heads, dk, dv, shared = kv
    wl = AttentionShape(
        batch,
        q_len,
        kv_len,
        heads=heads,
        kv_heads=kv_heads,
        d_qk=dk,
        d_v=dv,
        shared_kv=shared,
        kv_cache=cache,
    )
    el = (lambda d: 2 * d) if cache == "bf16" else (lambda d: d + -(-d // 128) * 4)
    token = (el(dv) + (dk - dv) * 2 if cache == "fp8" else el(dk)) if shared else el(dk) + el(dv)
    assert wl.cache_token_bytes == token
    assert wl.flops == Fraction(2 * batch * q_len * heads * kv_len * (dk + dv))
    assert wl.hbm_bytes == Fraction(
        batch * kv_heads * kv_len * token + batch * heads * q_len * (dk + dv) * 2
    )
    hw = H800 if gpu else ASCEND
    sch = (
        default_schedule(hw, "amla", m_tile=64, cube_m=64)
        if not gpu
        else default_schedule(hw, "amla")
    )
    try:
        plan = make_plan(hw, wl, sch)
    except ValueError:  # a head dim the default tiling cannot split: rejected with a reason
        return
    t = workload_totals(plan)
    assert t["flops"] == wl.flops
    # K / (row tiles) per block: exact unless an FP8 token (656 B) meets 3 row tiles
    assert t["hbm_bytes"] == pytest.approx(float(wl.hbm_bytes), rel=1e-12)

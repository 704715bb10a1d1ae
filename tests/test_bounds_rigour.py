"""The bounds have no holes: the dn clamp (jumps of 31-60 binades, n rounded both ways at both
ends), masked first blocks, large negative scores, long N, custom policies and random
masked inputs all keep every emulated element within its deterministic bound against the
certified reference; the bound is never NaN; the constants come from the policy; and the
data-dependent terms are the ones the errors need (the bias, the clamp)."""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from amla_numerics import flash, reference
from amla_numerics.analysis.bounds import (
    a_priori_bound,
    bound_inputs,
    elementwise_bound,
    softmax_weights,
    split_bound,
)
from amla_numerics.analysis.workloads import make_workload
from amla_numerics.flash.policy import MatmulPolicy, get_policy
from amla_numerics.formats import BF16
from amla_numerics.rounding import round_to
from amla_numerics.variants import AMLA_VARIANTS, FP8_P_VARIANTS, VARIANTS
from tests.strategies import examples

LN2 = math.log(2.0)
GARBAGE = ("zero", "subnormal", "sign_borrow", "underflow", "overflow", "nonfinite")
UNGUARDED = [v for v in AMLA_VARIANTS if v != "amla_guarded"]


def _bf16(x):
    return np.asarray(round_to(np.asarray(x, dtype=np.float64), BF16), dtype=np.float64)


def _run(variant, q, k, v, scale, block_n, policy=None, mask=None):
    """Emulated output, certified reference, deterministic bound, the emulator result."""
    ref = reference.attention(q, k, v, scale, method="auto", mask=mask)
    res = flash.attention(
        q, k, v, variant, scale=scale, block_n=block_n, policy=policy, trace=True, mask=mask
    )
    b = a_priori_bound(
        variant, head_dim=q.shape[-1], kv_len=k.shape[-2], block_n=block_n, policy=policy
    )
    det = elementwise_bound(b, q, k, v, scale, mask=mask)
    return np.asarray(res.out, dtype=np.float64), ref, det, res


def _assert_within(out, ref, det, label):
    assert not np.any(np.isnan(det)), label
    err = np.abs(out - ref)
    ratio = np.where(err == 0, 0.0, err / det)
    worst = np.unravel_index(np.argmax(ratio), ratio.shape)
    assert np.all(err <= det), (label, worst, err[worst], det[worst])
    return float(ratio[worst])


def _jump_case(jump, f_old, f_new, *, rows=4, block_n=32, n_blocks=3, v_old=1e8, seed=0):
    """Scores: block 0 near ``(3 + f_old) ln 2``, later blocks ``jump`` binades higher (with
    fractional part ``f_new``), so ``-m log2 e`` sits at the chosen fractions at both ends
    of the jump; |V_old| ~ v_old >> |V_new| ~ 1 and of one sign (no cancellation)."""
    rng = np.random.default_rng(seed)
    n = block_n * n_blocks
    x_old = 3.0 + f_old
    x_new = math.floor(x_old) + jump + f_new
    target = np.concatenate([np.full(block_n, x_old * LN2), np.full(n - block_n, x_new * LN2)])
    k = np.zeros((n, 3))
    k[:, 0] = _bf16(target)
    k[:, 1] = _bf16(target - k[:, 0])  # the score is k0 + k1 (+ a small spread): exact in FP32
    k[:, 2] = _bf16(-rng.uniform(0.0, 2.0, n))
    q = np.ones((rows, 3))
    q[:, 2] = _bf16(rng.uniform(0.0, 0.5, rows))
    v = rng.standard_normal((n, 8))
    v[:block_n] = v_old * (1.0 + 0.1 * v[:block_n])
    return q, k, _bf16(v)


JUMPS = [
    (31, 0.45, 0.55),
    (31, 0.55, 0.45),
    (33, 0.45, 0.45),
    (40, 0.55, 0.55),
    (47, 0.2, 0.8),
    (60, 0.8, 0.2),
    (60, 0.45, 0.55),
]


@pytest.mark.parametrize(("jump", "f_old", "f_new"), JUMPS)
@pytest.mark.parametrize("variant", UNGUARDED)
def test_the_clamp_is_covered_and_tight(variant, jump, f_old, f_new):
    q, k, v = _jump_case(jump, f_old, f_new)
    out, ref, det, res = _run(variant, q, k, v, 1.0, 32)
    assert not any(res.hazards[h] for h in GARBAGE), res.hazards
    worst = _assert_within(out, ref, det, variant)
    # the clamp applied on every row (31 binades may not); with an FP8 P cast the cast's
    # 2**-4 terms, not the clamp's, dominate the bound (covered, not tight)
    if np.all(res.trace.dn[1] < -30) and variant not in FP8_P_VARIANTS:
        # the clamp's error dominates and the bound follows it closely
        assert worst > 0.5, worst


def test_the_jump_cases_round_n_both_ways():
    """dn = n_new - n_old differs from the jump by -1, 0 and +1 over the cases: the term
    must hold whichever way each end rounds."""
    seen = set()
    for jump, f_old, f_new in JUMPS:
        q, k, v = _jump_case(jump, f_old, f_new)
        res = flash.attention(q, k, v, "amla", scale=1.0, block_n=32, trace=True)
        seen.update((-res.trace.dn[1] - jump).tolist())
    assert {-1, 0, 1} <= seen, seen


def test_two_clamped_jumps_in_one_row():
    rng = np.random.default_rng(3)
    bn, rows = 16, 3
    x = np.concatenate([np.full(bn, 2.3), np.full(bn, 2.3 + 35.4), np.full(2 * bn, 2.3 + 80.6)])
    k = np.zeros((4 * bn, 3))
    k[:, 0] = _bf16(x * LN2)
    k[:, 1] = _bf16(x * LN2 - k[:, 0])
    k[:, 2] = _bf16(-rng.uniform(0.0, 1.0, 4 * bn))
    q = np.ones((rows, 3))
    v = 1.0 + 0.1 * rng.standard_normal((4 * bn, 4))
    v[:bn] *= 1e16
    v[bn : 2 * bn] *= 1e8
    v = _bf16(v)
    for variant in UNGUARDED:
        out, ref, det, res = _run(variant, q, k, v, 1.0, bn)
        assert np.sum(res.trace.dn < -30) == 2 * rows
        worst = _assert_within(out, ref, det, variant)
        assert worst > (0.05 if variant in FP8_P_VARIANTS else 0.5), (variant, worst)


@pytest.mark.parametrize(("jump", "f_old", "f_new"), JUMPS)
def test_the_guarded_variant_needs_no_clamp_term(jump, f_old, f_new):
    q, k, v = _jump_case(jump, f_old, f_new)
    out, ref, det, _ = _run("amla_guarded", q, k, v, 1.0, 32)
    _assert_within(out, ref, det, "amla_guarded")


def test_guarded_masked_first_blocks_with_large_negative_scores():
    """The first blocks fully masked and scores near -100 nats: the first add would scale
    O = 0 by 2**144 (inf * 0 = NaN before the guard); finite and within the bound."""
    rng = np.random.default_rng(9)
    n, bn, d = 128, 32, 4
    k = _bf16(np.concatenate([np.full((n, 1), -100.0), rng.standard_normal((n, d - 1))], 1))
    q = _bf16(np.concatenate([np.ones((3, 1)), rng.standard_normal((3, d - 1))], 1))
    v = _bf16(rng.standard_normal((n, 4)) + 0.5)
    keep = np.ones((3, n), bool)
    keep[:, :70] = False
    out, ref, det, _ = _run("amla_guarded", q, k, v, 1.0, bn, mask=keep)
    assert np.all(np.isfinite(out))
    _assert_within(out, ref, det, "amla_guarded")


def test_the_clamp_follows_the_policy():
    """A custom clamp at -10 is exercised by 12-20 binade jumps; without a clamp there is no
    clamp term (and amla's error stays at the rounding level)."""
    for clamp in (-10, None):
        pol = get_policy("ascend").replace(dn_clamp=clamp)
        for jump in (12, 20):
            q, k, v = _jump_case(jump, 0.45, 0.55, v_old=1e4)
            out, ref, det, res = _run("amla", q, k, v, 1.0, 32, policy=pol)
            assert not any(res.hazards[h] for h in GARBAGE)
            worst = _assert_within(out, ref, det, (clamp, jump))
            if clamp is not None:
                assert worst > 0.5
    assert a_priori_bound("amla", head_dim=4, kv_len=8, policy=pol).dn_clamp is None
    assert a_priori_bound("amla", head_dim=4, kv_len=8).dn_clamp == -30
    assert a_priori_bound("amla_guarded", head_dim=4, kv_len=8).dn_clamp is None
    assert a_priori_bound("fa_fp32", head_dim=4, kv_len=8).dn_clamp is None


@pytest.mark.parametrize("variant", ["naive", "fa_fp32", "fa_bf16", "lazy", "amla_guarded"])
def test_masked_first_blocks(variant):
    """Rows whose first KV blocks are fully masked (moderate scores: the guard's multiply
    stays finite) are within the bound; the fully masked row's bound is +inf, never NaN."""
    rng = np.random.default_rng(5)
    n, bn, rows, d = 96, 16, 4, 8
    q = _bf16(rng.standard_normal((rows, d)))
    k = _bf16(rng.standard_normal((n, d)))
    v = _bf16(rng.standard_normal((n, 4)) + 0.5)
    keep = np.ones((rows, n), bool)
    keep[0, :40] = False  # first two blocks and part of the third
    keep[1, :16] = False
    keep[2, 50:] = False
    out, ref, det, _ = _run(variant, q, k, v, d**-0.5, bn, mask=keep)
    _assert_within(out[:3], ref[:3], det[:3], variant)
    keep[3] = False
    det = elementwise_bound(
        a_priori_bound(variant, head_dim=d, kv_len=n, block_n=bn), q, k, v, d**-0.5, mask=keep
    )
    assert np.all(np.isinf(det[3])) and np.all(np.isfinite(det[:3]))


@pytest.mark.parametrize("variant", VARIANTS)
def test_large_negative_scores(variant):
    """Scores near -1000 nats (n ~ 1443, r's FP32 error ~1e-4 at a change) stay bounded."""
    rng = np.random.default_rng(7)
    n, d = 256, 4
    k = np.zeros((n, d))
    k[:, 0] = -1000.0
    k[:, 1:] = rng.standard_normal((n, d - 1)) * np.linspace(0.2, 3.0, n)[:, None]
    q = np.ones((3, d))
    q[:, 1:] = rng.standard_normal((3, d - 1))
    q, k = _bf16(q), _bf16(k)
    v = _bf16(rng.standard_normal((n, 4)) + 0.5)
    out, ref, det, res = _run(variant, q, k, v, 1.0, 32)
    assert not any(res.hazards[h] for h in GARBAGE)
    _assert_within(out, ref, det, variant)


@pytest.mark.parametrize("variant", VARIANTS)
def test_long_n_bound_is_finite(variant):
    """N = 131072 with blocks of 4 keys: the bound is finite (it was inf * 0 = NaN)."""
    rng = np.random.default_rng(0)
    n, d = 131072, 4
    b = a_priori_bound(variant, head_dim=d, kv_len=n, block_n=4)
    det = elementwise_bound(
        b,
        rng.standard_normal((2, d)),
        rng.standard_normal((n, d)),
        rng.standard_normal((n, 3)),
        0.5,
    )
    assert np.all(np.isfinite(det)) and np.all(det > 0)


@pytest.mark.slow
@pytest.mark.parametrize("workload", ["random", "drift"])
def test_long_n_measured_within_bound(workload):
    w = make_workload(workload, head_dim=16, kv_len=131072, rows=2, seed=1)
    for variant in ("fa_fp32", "amla", "amla_exactcomp", "lazy"):
        out, ref, det, res = _run(variant, w.q, w.k, w.v, w.scale, 512)
        assert not any(res.hazards[h] for h in GARBAGE)
        _assert_within(out, ref, det, variant)


def test_the_bias_is_a_real_systematic_error():
    """With a 1e-5 bias (84 units a block) over 64 blocks, V of one sign and no P cast (FP32
    P V inputs, so the cast's 2**-8 does not hide it), amla's measured error exceeds what
    the bound would be without its bias term, and stays within the full bound: the term is
    needed and sufficient."""
    pol = get_policy("ascend").replace(eps_bias=1e-5, p_cast=None, pv=MatmulPolicy("fp32"))
    rng = np.random.default_rng(2)
    n, d, bn = 4096, 16, 64
    q = _bf16(rng.standard_normal((2, d)) * 0.1)
    k = _bf16(rng.standard_normal((n, d)))
    v = _bf16(1.0 + 0.01 * rng.standard_normal((n, 4)))
    out, ref, det, _ = _run("amla", q, k, v, d**-0.5, bn, policy=pol)
    _assert_within(out, ref, det, "amla")
    b = a_priori_bound("amla", head_dim=d, kv_len=n, block_n=bn, policy=pol)
    assert b.bias_units == 84
    no_bias = dataclasses.replace(b, terms={**b.terms, "bias_step": 0.0})
    det0 = elementwise_bound(no_bias, q, k, v, d**-0.5)
    assert np.any(np.abs(out - ref) > det0)
    # the probabilistic bound keeps the bias linear in the block count: it still holds
    prob = elementwise_bound(b, q, k, v, d**-0.5, kind="probabilistic")
    assert np.all(np.abs(out - ref) <= prob)
    prob0 = elementwise_bound(no_bias, q, k, v, d**-0.5, kind="probabilistic")
    assert np.any(np.abs(out - ref) > prob0)


def test_constants_come_from_the_policy():
    asc = a_priori_bound("amla", head_dim=8, kv_len=64)
    assert asc.u_work == 2.0**-24 and asc.sigma_work == 2.0**-149
    assert asc.sigma_cast == 2.0**-133  # BF16's smallest subnormal: the P cast
    assert asc.bias_units == round(float(np.float32(1e-6)) * 2**23) == 8
    fp16 = a_priori_bound(
        "fa_fp32", head_dim=8, kv_len=64, policy=get_policy("ascend").replace(p_cast="fp16")
    )
    # FP16's subnormals (2**-24) feed a BF16 matrix unit: re-rounded to BF16 (2**-8 more)
    assert fp16.sigma_cast == 2.0**-24 * (1 + 2.0**-8) + 2.0**-133
    ex = a_priori_bound("amla", head_dim=8, kv_len=64, policy="exact")
    assert ex.u_work == 2.0**-53 and ex.dn_clamp is None and ex.bias_units == 0
    assert ex.u_cast == 0.0 and ex.u_r == 0.0
    rz = a_priori_bound(
        "fa_fp32", head_dim=8, kv_len=64, policy=get_policy("ascend").replace(p_cast_rounding="rz")
    )
    assert rz.u_cast == 2.0**-7  # truncation: a whole unit
    # the residual's constants: fl(ln 2) and fl(1 / fl(ln 2)) in FP32, errors below u
    assert 0 < asc.eta_slope < 2 * 2.0**-24


def test_no_change_blocks_cost_only_the_bias():
    """When the row max sits in block 0, AMLA's bound over 128 blocks stays within a few
    percent of fa_fp32's (no compensation mismatch is charged), while charging the
    mismatch on every block would multiply it."""
    w = make_workload("sink", head_dim=32, kv_len=8192, rows=4, seed=0)
    x = bound_inputs(w.q, w.k, w.v, w.scale)
    amla = elementwise_bound(a_priori_bound("amla", head_dim=32, kv_len=8192, block_n=64), x)
    fa = elementwise_bound(a_priori_bound("fa_fp32", head_dim=32, kv_len=8192, block_n=64), x)
    assert np.max(amla / fa) < 1.3


def test_softmax_weights_masked_rows_are_zero():
    rng = np.random.default_rng(0)
    keep = np.ones((2, 5), bool)
    keep[1] = False
    s, w = softmax_weights(rng.standard_normal((2, 3)), rng.standard_normal((5, 3)), 1.0, keep)
    assert np.all(np.isneginf(s[1])) and np.all(w[1] == 0)
    assert math.isclose(float(w[0].sum()), 1.0, rel_tol=1e-12)


_POLICIES = [
    {},
    {"exp": "poly"},
    {"rowsum": "seq"},
    {"dn_clamp": -4},
    {"dn_clamp": None},
    {"eps_bias": 0.0},
    {"eps_bias": 3e-6},
    {"p_cast": "fp16", "p_cast_rounding": "rne"},
    {"r_cast_rounding": "rne"},
]


@settings(max_examples=examples(30), deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    d=st.sampled_from([1, 4, 16]),
    n=st.integers(1, 400),
    block_n=st.sampled_from([1, 4, 16, 64]),
    spread=st.sampled_from([0.3, 3.0, 12.0]),
    shift=st.sampled_from([0.0, -300.0, 40.0]),
    variant=st.sampled_from(VARIANTS),
    policy=st.sampled_from(range(len(_POLICIES))),
    masked=st.booleans(),
)
def test_bound_holds_on_random_masked_inputs(
    seed, d, n, block_n, spread, shift, variant, policy, masked
):
    rng = np.random.default_rng(seed)
    pol = get_policy("ascend").replace(**_POLICIES[policy])
    q = _bf16(spread * rng.standard_normal((3, d + 1)))
    q[:, 0] = 1.0
    k = _bf16(np.concatenate([np.full((n, 1), shift), rng.standard_normal((n, d))], axis=1))
    v = _bf16(rng.standard_normal((n, 5)) + 0.5)
    keep = None
    if masked:
        keep = rng.random((3, n)) < 0.7
        keep[:, -1] = True  # every row attends to something
    out, ref, det, res = _run(variant, q, k, v, (d + 1) ** -0.5, block_n, pol, keep)
    covered = ~res.garbage_mask()  # the integer add's garbage: outside every bound
    if variant == "amla_guarded" or variant not in AMLA_VARIANTS:
        assert np.all(covered)
    assume(np.any(covered))
    _assert_within(out[covered], ref[covered], det[covered], (variant, _POLICIES[policy]))


@pytest.mark.parametrize("fmt", ["bf16", "fp32", "fp16"])
def test_representability_agrees_with_round_to(fmt):
    """The bounds charge input rounding only where the inputs are not in the matrix unit's
    format; the fast FP32/BF16 test agrees with the exact rounder on normals, subnormals
    and out-of-range values."""
    from amla_numerics.analysis.bounds.inputs import _representable
    from amla_numerics.formats import get_format

    rng = np.random.default_rng(4)
    edge = [2.0**-133, 2.0**-134, 2.0**-149, 2.0**-150, 3e38, 1e39, 0.0, -(2.0**-126), 65504.0]
    cases = [rng.standard_normal(500), _bf16(rng.standard_normal(500))] + [
        np.array([x]) for x in edge
    ]
    for x in cases:
        want = np.array_equal(np.asarray(round_to(x, get_format(fmt)), dtype=np.float64), x)
        assert _representable(x, fmt) == want, (fmt, x[:3])


@pytest.mark.parametrize("variant", VARIANTS)
def test_underflowing_probabilities(variant):
    """Keys ~95 nats below the max have FP32-subnormal P whose BF16 cast flushes to zero;
    with |V| ~ 3e37 on them (and one exact key at the max) their absolute rounding errors
    dominate the output error: the bound's subnormal terms (from the formats) cover them,
    and without those terms it would not."""
    rng = np.random.default_rng(11)
    n, bn = 96, 32
    k = np.zeros((n, 2))
    k[:, 0] = _bf16(-rng.uniform(93.0, 97.0, n))
    k[5, 0] = 0.0
    q = np.array([[1.0, 0.0], [1.0, 0.0]])
    v = 3e37 * (1.0 + 0.1 * rng.standard_normal((n, 3)))
    v[5] = 1.0
    v = _bf16(v)
    out, ref, det, res = _run(variant, q, k, v, 1.0, bn)
    assert not any(res.hazards[h] for h in GARBAGE)
    _assert_within(out, ref, det, variant)
    b = a_priori_bound(variant, head_dim=2, kv_len=n, block_n=bn)
    no_sub = dataclasses.replace(b, sigma_cast=0.0, sigma_work=0.0)
    if variant not in FP8_P_VARIANTS:  # an E4M3 P's relative term (2**-4) covers them too
        assert np.any(np.abs(out - ref) > elementwise_bound(no_sub, q, k, v, 1.0))


@pytest.mark.parametrize("variant", ["fa_fp32", "amla", "lazy", "amla_exactcomp"])
def test_additive_bias_masks(variant):
    """An ALiBi-like additive bias (rounded to FP32 and added to the scaled score by the
    emulator) with -inf entries: within the bound, which charges both roundings."""
    rng = np.random.default_rng(8)
    n, d, rows = 300, 8, 3
    q = _bf16(rng.standard_normal((rows, d)))
    k = _bf16(rng.standard_normal((n, d)))
    v = _bf16(rng.standard_normal((n, 4)) + 0.5)
    bias = -0.37 * np.abs(np.arange(n)[None, :] - np.array([[50], [150], [299]]))
    bias[1, 200:] = -np.inf
    out, ref, det, res = _run(variant, q, k, v, d**-0.5, 64, mask=bias)
    assert not any(res.hazards[h] for h in GARBAGE)
    _assert_within(out, ref, det, variant)


def _clamped_subnormal_cast_case(jump, p_frac, block_n=32):
    """Block 0: a key at the max (V = 0) and ``block_n - 1`` keys whose probability
    ``p_frac`` lies just above half the P cast's smallest subnormal (each rounds up to it,
    nearly doubling), with |V| = 1e8; then one key ``jump`` binades higher (V = 0) and the
    rest 40 nats below it: the clamp over-weights the doubled old keys by ``K``; the row
    sum stays near 1, so the output error is that over-weighted cast error."""
    n = 3 * block_n
    x0 = 3.0 * LN2  # -m log2 e an integer: r^ = 1, the tile value is P itself
    t = np.concatenate(
        [
            [x0],
            np.full(block_n - 1, x0 + math.log(p_frac)),
            [x0 + jump * LN2],
            np.full(n - block_n - 1, x0 + jump * LN2 - 40.0),
        ]
    )
    k = np.zeros((n, 2))
    k[:, 0] = _bf16(t)
    k[:, 1] = _bf16(t - k[:, 0])
    v = np.zeros((n, 4))
    v[1:block_n] = 1e8
    return np.ones((2, 2)), k, v


@pytest.mark.parametrize(
    ("variant", "p_cast", "p_frac"),
    [
        ("amla_fp8", None, 1.05 * 2.0**-10),
        ("amla_fp8", "e5m2", 1.05 * 2.0**-17),
        ("amla", "fp16", 1.05 * 2.0**-25),
    ],
)
@pytest.mark.parametrize("jump", [40, 60])
def test_the_clamp_over_weights_the_casts_subnormal_error(variant, p_cast, p_frac, jump):
    """The clamp multiplies an old key's P cast error in the subnormal range by ``K`` as
    it does its relative terms: the bound covers it and the error reaches half of it."""
    pol = None if p_cast is None else get_policy("ascend").replace(p_cast=p_cast)
    q, k, v = _clamped_subnormal_cast_case(jump, p_frac)
    out, ref, det, res = _run(variant, q, k, v, 1.0, 32, policy=pol)
    assert np.all(res.trace.dn[1] < -30) and not any(res.hazards[h] for h in GARBAGE)
    worst = _assert_within(out, ref, det, (variant, p_cast, jump))
    assert worst > 0.45, worst


def test_the_block_fma_alignment_floor_is_covered():
    """Hopper's FP8-path accumulator (block FMA, 14 bits, 32 products + c per block) aligns
    to at least the raw exponent ``-126`` of a subnormal accumulator: with V = 127 2**-133
    (BF16 subnormal) and P = 129 2**-20 every product is 16383 2**-153, just below the
    grid step 2**-139, and is truncated away in every block after the first (the key at
    the max keeps the accumulator non-zero): an error about ten times the relative terms,
    which the bound's alignment floor covers and the loss reaches most of."""
    from amla_numerics.flash import ACCUMULATION_PRESETS, MatmulPolicy

    pol = get_policy("ascend").replace(
        pv=MatmulPolicy("bf16", ACCUMULATION_PRESETS["h100_fp8"], "fp32")
    )
    n = 512
    t = np.full(n, math.log(129 * 2.0**-20))
    t[0] = 0.0
    k = np.zeros((n, 2))
    k[:, 0] = _bf16(t)
    k[:, 1] = _bf16(t - k[:, 0])
    q = np.ones((2, 2))
    v = np.full((n, 3), 127 * 2.0**-133)
    v[0] = 2.0**-133  # the key at the max: small, so that the relative terms stay small
    for variant in ("fa_fp32", "naive"):
        out, ref, det, res = _run(variant, q, k, v, 1.0, n, policy=pol)
        assert not res.garbage_mask().any()
        worst = _assert_within(out, ref, det, variant)
        assert worst > 0.5, (variant, worst)
    # under the exact accumulator the same input has no such loss
    out, ref, det, _ = _run("fa_fp32", q, k, v, 1.0, n)
    assert _assert_within(out, ref, det, "exact") < 0.1


@pytest.mark.parametrize("policy", [None, "cann", "exact"])
def test_astronomical_score_errors_give_an_infinite_bound_never_nan(policy):
    """Inputs whose scores reach 1e34-1e40 (and their products with tiny scales): every
    term of the bound may overflow float64; the bound is then +inf, never NaN, and its
    evaluation raises no floating-point warning."""
    rng = np.random.default_rng(0)
    seen_inf = False
    for mag in (1e17, 1e18, 3e19):
        for scale in (1.0, 1e-30):
            q = rng.standard_normal((3, 8)) * mag
            k = rng.standard_normal((40, 8)) * mag
            v = rng.standard_normal((40, 2)) * 1e20
            x = bound_inputs(q, k, v, scale)
            for variant in VARIANTS:
                b = a_priori_bound(variant, head_dim=8, kv_len=40, block_n=16, policy=policy)
                for kind in ("deterministic", "probabilistic"):
                    with warnings.catch_warnings():
                        warnings.simplefilter("error")
                        e = elementwise_bound(b, x, kind=kind)
                    assert not np.isnan(e).any(), (mag, scale, variant, kind)
                    assert np.all(e > 0)
                    seen_inf |= bool(np.isinf(e).any())
    assert seen_inf


@pytest.mark.parametrize("variant", ["amla", "amla_exactcomp"])
def test_an_overflowed_o_the_integer_add_made_finite_is_garbage(variant):
    """E4M3 P scaled by 256 times ``V = 1.5e38``: block 0's ``O = P V`` overflows FP32 to
    inf; block 1 raises the max, and the integer add of ``dn`` to inf's exponent field gives
    a finite value (``2**128 2**dn``) unrelated to the answer: counted ``overflow`` and
    ``nonfinite`` and in ``garbage_mask()``. Without block 1 the output stays inf: counted
    ``overflow``, not garbage (judged: a failure)."""
    pol = get_policy("ascend").replace(p_cast="e4m3", p_cast_rounding="rne", p_scale=256.0)
    q, v = np.array([[1.0]]), np.array([[1.5e38], [1.0]])
    k = np.array([[0.0], [4.0]])  # the max rises by 4 nats at block 1
    res = flash.attention(q, k, v, variant, scale=1.0, block_n=1, policy=pol)
    ref = reference.attention(q, k, v, 1.0)
    b = a_priori_bound(variant, head_dim=1, kv_len=2, block_n=1, policy=pol)
    e = elementwise_bound(b, q, k, v, 1.0)
    assert np.isfinite(res.out).all() and np.abs(res.out - ref).max() > 10 * e.max()
    assert res.hazard_mask["overflow"].all() and res.hazard_mask["nonfinite"].all()
    assert res.garbage_mask().all()
    judged = ~res.garbage_mask()
    assert np.all(np.abs(res.out - ref)[judged] <= e[judged])
    one = flash.attention(q, k[:1], v[:1], variant, scale=1.0, block_n=1, policy=pol)
    assert np.isinf(one.out).all() and one.hazard_mask["overflow"].all()
    assert not one.garbage_mask().any()


@pytest.mark.parametrize("variant", ["fa_fp32", "amla"])
def test_fp64_values_whose_squares_overflow_keep_a_finite_bound(variant):
    """Under the FP64 ``"exact"`` policy, V beyond 1.3e154 (its square beyond float64,
    in the probabilistic bound's sum) gives a finite bound, never NaN, with no warning, and
    the emulated output lies within it against the correctly rounded reference."""
    rng = np.random.default_rng(0)
    q, k = np.ones((2, 4)), rng.standard_normal((5, 4))
    v = np.full((5, 2), 1e200)
    v[0], v[1, 0] = 0.0, -3e250
    out = np.asarray(
        flash.attention(q, k, v, variant, scale=0.5, block_n=2, policy="exact").out, np.float64
    )
    ref = reference.attention(q, k, v, 0.5, method="mpmath")
    b = a_priori_bound(variant, head_dim=4, kv_len=5, block_n=2, policy="exact")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bounds = [
            elementwise_bound(b, q, k, v, 0.5, kind=kind)
            for kind in ("deterministic", "probabilistic")
        ]
        bounds.append(split_bound(variant, q, k, v, 0.5, splits=2, block_n=2, policy="exact"))
    for bound in bounds:
        assert np.isfinite(bound).all()
    assert np.all(np.abs(out - ref) <= bounds[0])


def test_the_fp64_exp_term_covers_numpys_faithful_exp():
    """The ``"exact"`` policy's exp is numpy's binary64 exp, faithful rather than correctly
    rounded: the bound charges it 2u (not u), and numpy's exp on this platform stays within
    that against 60-digit mpmath on random and large arguments."""
    import mpmath

    from amla_numerics.flash.stages import EXP64_REL_ERR

    b = a_priori_bound("fa_fp32", head_dim=4, kv_len=8, block_n=4, policy="exact")
    assert b.exp_u == EXP64_REL_ERR == 2.0**-52
    rng = np.random.default_rng(7)
    x = np.concatenate([rng.uniform(-700.0, 700.0, 2000), rng.uniform(-1.0, 1.0, 2000)])
    worst = mpmath.mpf(0)
    with mpmath.workdps(60):
        for xi, yi in zip(x.tolist(), np.exp(x).tolist(), strict=True):
            t = mpmath.exp(mpmath.mpf(xi))
            worst = max(worst, abs(mpmath.mpf(yi) - t) / t)
    assert worst <= EXP64_REL_ERR

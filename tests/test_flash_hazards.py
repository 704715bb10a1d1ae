"""Per-element hazard masks, the clamp class, FP32 overflow for every variant, and the guard
that keeps ``amla_guarded`` finite and accurate where the integer add is garbage, clamped or
would wrap. Outputs are checked against an mpmath reference (tests.test_flash.mp_attention)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from amla_numerics import flash
from amla_numerics.exp2add import HAZARDS
from amla_numerics.flash.emulator import CLIP_HAZARD, RANGE_HAZARD
from amla_numerics.formats import BF16
from amla_numerics.rounding import round_to
from tests.test_flash import _zero_column_case, mp_attention


def _bf16(x):
    return np.asarray(round_to(np.asarray(x, dtype=np.float64), BF16), dtype=np.float64)


CLASSES = {h for h in HAZARDS if h != "ok"} | {"clamp"}


def test_masks_have_every_class_and_the_shape_of_out():
    rng = np.random.default_rng(0)
    q, k, v = (
        rng.standard_normal((3, 4)),
        rng.standard_normal((40, 4)),
        rng.standard_normal((40, 2)),
    )
    for variant in flash.VARIANTS:
        res = flash.attention(q, k, v, variant, block_n=16)
        assert set(res.hazard_mask) == CLASSES and set(res.hazards) == CLASSES | {"ok"}
        for name, mask in res.hazard_mask.items():
            assert mask.shape == res.out.shape and mask.dtype == bool
            assert not mask.any(), (variant, name)  # benign data: no hazard anywhere
        assert not res.garbage_mask().any()


def test_zero_column_mask_marks_exactly_that_column():
    q, k, v = _zero_column_case()
    res = flash.attention(q, k, v, "amla", block_n=16)
    zero = res.hazard_mask["zero"]
    assert zero[:, 2].all() and not zero[:, [0, 1, 3, 4]].any()
    assert res.hazards["zero"] >= zero.sum()  # counts sum over blocks, the mask over outputs
    np.testing.assert_array_equal(res.garbage_mask(), zero)
    g = flash.attention(q, k, v, "amla_guarded", block_n=16)
    assert g.hazard_mask["zero"][:, 2].all()  # detected ...
    assert not g.garbage_mask().any()  # ... and repaired: every element covered


def _masked_first_blocks(score: float):
    """Block 0 fully masked for every row; the other keys score about ``score`` nats."""
    rng = np.random.default_rng(7)
    n, d = 48, 4
    q = np.ones((3, d))
    # BF16-exact keys (ULP 0.25 at |k| = 50): the emulator sees the reference's inputs
    k = np.full((n, d), score / (0.5 * d)) + np.round(rng.standard_normal((n, d)) * 2) / 4
    v = np.round(rng.standard_normal((n, 3)) * 64) / 64
    keep = np.ones((3, n), bool)
    keep[:, :16] = False
    return q, k, v, keep


@pytest.mark.parametrize("score", [-100.0, -60.0, 100.0])
def test_guarded_is_finite_and_accurate_after_masked_first_blocks(score):
    q, k, v, keep = _masked_first_blocks(score)
    ref, _, ref_abs = mp_attention(q, k, v, 0.5, keep)
    fa = flash.attention(q, k, v, "fa_fp32", scale=0.5, block_n=16, mask=keep)
    g = flash.attention(q, k, v, "amla_guarded", scale=0.5, block_n=16, mask=keep)
    assert np.all(np.isfinite(g.out))
    # AMLA's rounding of P r^ to BF16 and its compensation: within a few BF16 units of sum p|v|
    assert np.all(np.abs(g.out - ref) <= 2.0**-7 * ref_abs)
    assert np.all(np.abs(fa.out - ref) <= 2.0**-7 * ref_abs)
    a = flash.attention(q, k, v, "amla", scale=0.5, block_n=16, mask=keep)
    assert a.hazards["zero"] > 0 and a.hazard_mask["zero"].all()


def _clamp_jump(binades: int, v_old: float):
    """Block 0 scores 0 with |V| = v_old; block 1 scores ``binades`` binades higher."""
    n, d = 32, 4
    q = np.ones((2, d))
    k = np.zeros((n, d))
    k[16:] = binades * np.log(2) / (0.5 * d)
    k = np.float32(k).astype(np.float64)
    v = np.ones((n, 3))
    v[:16] = v_old
    v[:16, 1] = -v_old
    return q, k, v


@pytest.mark.parametrize("binades", [31, 45, 60])
def test_clamp_is_counted_per_row_and_the_guard_applies_the_exact_power(binades):
    q, k, v = _clamp_jump(binades, 2.0**40)
    ref, _, ref_abs = mp_attention(q, k, v, 0.5)
    a = flash.attention(q, k, v, "amla", scale=0.5, block_n=16, trace=True)
    assert a.hazards["clamp"] == 2 * 3  # both rows, every column, one block
    assert a.hazard_mask["clamp"].all() and not a.garbage_mask().any()
    assert int(a.trace.dn[1].min()) <= -binades + 1
    g = flash.attention(q, k, v, "amla_guarded", scale=0.5, block_n=16)
    fa = flash.attention(q, k, v, "fa_fp32", scale=0.5, block_n=16)
    assert g.hazards["clamp"] == 6 and not g.garbage_mask().any()
    err_g = np.abs(g.out - ref) / ref_abs
    err_fa = np.abs(fa.out - ref) / ref_abs
    assert np.all(np.isfinite(g.out))
    assert np.max(err_g) <= max(4 * np.max(err_fa), 2.0**-8)
    # the unguarded kernel under-scales the old block by 2**(binades - 30)
    # (O_old is 2**40 times O_new, scaled by 2**-30 instead of 2**-binades)
    old = 2.0 ** (40 - binades)
    assert np.max(np.abs(a.out - ref) / ref_abs) > 0.5 * (2.0**10 - old) / (1 + old)


@pytest.mark.parametrize("variant", ["fa_fp32", "lazy", "naive", "amla", "amla_guarded"])
def test_fp32_overflow_of_o_is_the_overflow_class(variant):
    n = 32
    q = np.zeros((2, 4))
    k = np.zeros((n, 4))
    v = np.ones((n, 3))
    v[:, 0] = 3e37  # every weight 1 before the division: O = 16 * 3e37 > FP32 max
    ref, _, _ = mp_attention(q, k, v, 0.5)
    assert np.all(np.isfinite(ref))
    res = flash.attention(q, k, v, variant, scale=0.5, block_n=16)
    assert not np.all(np.isfinite(res.out[:, 0]))
    assert res.hazards["overflow"] > 0
    assert res.hazard_mask["overflow"][:, 0].all() and not res.hazard_mask["overflow"][:, 1:].any()
    # FP32 overflow is not garbage: the elements stay covered, and fail any bound check
    assert not res.garbage_mask().any()
    assert np.all(np.isfinite(res.out[:, 1:]))


def test_fully_masked_rows_are_not_overflow():
    rng = np.random.default_rng(1)
    q, k, v = (
        rng.standard_normal((3, 4)),
        rng.standard_normal((20, 4)),
        rng.standard_normal((20, 2)),
    )
    keep = np.ones((3, 20), bool)
    keep[1] = False
    for variant in ("fa_fp32", "amla_guarded"):
        res = flash.attention(q, k, v, variant, block_n=8, mask=keep)
        assert np.all(np.isnan(res.out[1]))
        assert res.hazards["overflow"] == 0 and not res.garbage_mask().any()


def test_rescale_probability_counts_row_groups_from_the_trace():
    rng = np.random.default_rng(2)
    q = rng.standard_normal((4, 8)) * 0.1
    q[:, 0] = np.array([1.0, 2.0, 3.0, 4.0]) * np.sqrt(8)  # the max grows 0.75-3 nats/block
    k = rng.standard_normal((256, 8)) * 0.1
    k[:, 0] = np.linspace(0, 12, 256)  # rows rescale every few blocks (tau = 8 bits)
    res = flash.attention(q, k, rng.standard_normal((256, 2)), "lazy", block_n=16, trace=True)
    r = np.asarray(res.trace.rescaled)
    later = r[1:]
    # independent counts: a step is a (block >= 1, group) pair; it rescales if any row did
    assert res.trace.rescale_prob(1) == later.mean()
    assert res.trace.rescale_prob(2) == np.mean(later[:, 0::2] | later[:, 1::2])
    assert res.trace.rescale_prob() == np.mean(later.any(axis=-1))
    assert 0 < res.trace.rescale_prob(1) < res.trace.rescale_prob() <= 1
    with pytest.raises(ValueError, match="group_rows"):
        flash.rescale_probability(r, 3)
    eager = flash.attention(q, k, rng.standard_normal((256, 2)), "fa_fp32", block_n=16, trace=True)
    assert eager.trace.rescale_prob(1) == 1.0


def _clip_case(n=2048):
    """``n`` equal keys: O = n V exactly; columns at 2e10, 2e9 and -4e10 against the
    ``"cann"`` clip at 1e10 (the first and last are zeroed, the middle one is not)."""
    q, k = np.ones((2, 4)), np.zeros((n, 4))
    v = np.empty((n, 3))
    v[:, 0], v[:, 1], v[:, 2] = 1e7, 1e6, -2e7
    return q, k, v


@pytest.mark.parametrize("variant", ["naive", "fa_fp32", "amla", "lazy", "amla_fp8"])
@pytest.mark.parametrize("splits", [None, 2])
def test_the_o_clip_is_a_counted_garbage_class(variant, splits):
    """Policy ``"cann"`` zeroes a finite O beyond 1e10: those elements (and only they) are
    the ``o_clip`` class, in the garbage mask; every other element is within its bound
    against the exact answer (an equal-weight mean: V itself)."""
    from amla_numerics.analysis.bounds import a_priori_bound, elementwise_bound, split_bound

    q, k, v = _clip_case()
    res = flash.attention(q, k, v, variant, scale=0.5, block_n=512, policy="cann", splits=splits)
    out = np.asarray(res.out, np.float64)
    if splits is None:
        b = a_priori_bound(variant, head_dim=4, kv_len=2048, block_n=512, policy="cann")
        det = elementwise_bound(b, q, k, v, 0.5)
        expect = np.array([True, False, True])  # O = 2048 V per column
    else:
        det = split_bound(variant, q, k, v, 0.5, splits=2, block_n=512, policy="cann")
        expect = np.abs(1024 * v[0]) > 1e10  # each split's O = 1024 V
    exact = np.broadcast_to(v[0], out.shape)  # every key has the same score
    assert np.all(out[:, expect] == 0) and np.all(out[:, ~expect] != 0)
    parts = 1 if splits is None else splits  # a split run sums its splits' counts
    assert res.hazards[CLIP_HAZARD] == parts * 2 * int(expect.sum())
    assert np.array_equal(res.hazard_mask[CLIP_HAZARD], np.broadcast_to(expect, out.shape))
    g = res.garbage_mask()
    assert np.array_equal(g, np.broadcast_to(expect, out.shape))
    err = np.abs(out - exact)
    assert np.all(err[~g] <= det[~g])
    assert np.all(err[g] > det[g])  # the zeroed values are wrong far beyond any bound


def test_no_clip_class_without_a_clipping_policy():
    q, k, v = _clip_case()
    res = flash.attention(q, k, v, "amla", scale=0.5, block_n=512)
    assert CLIP_HAZARD not in res.hazards and not res.garbage_mask().any()
    assert np.all(np.asarray(res.out)[:, 0] > 1e6)  # "ascend" keeps O = 2e10
    small = flash.attention(q, k, v / 100, "amla", scale=0.5, block_n=512, policy="cann")
    assert small.hazards[CLIP_HAZARD] == 0 and not small.garbage_mask().any()


@pytest.mark.parametrize("variant", flash.VARIANTS)
def test_scores_beyond_the_work_format_are_a_counted_garbage_class(variant):
    """BF16 inputs near 1e20 (valid: BF16 has FP32's range) whose products overflow FP32:
    the rows they reach are the ``score_range`` class, in the garbage mask, never a silent
    NaN; a row of ordinary inputs beside them is untouched and a fully masked row stays
    undefined (not finite, not this class)."""
    rng = np.random.default_rng(0)
    q = _bf16(rng.standard_normal((3, 4)))
    q[0] *= 2.0**66  # q.k ~ 2**132 |q0||k|: beyond FP32
    k = _bf16(rng.standard_normal((24, 4)) * 2.0**66)
    v = _bf16(rng.standard_normal((24, 2)))
    keep = np.ones((3, 24), bool)
    keep[2] = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = flash.attention(q, k, v, variant, scale=2.0**-66, block_n=8, mask=keep)
    out, g = np.asarray(res.out), res.garbage_mask()
    hit = res.hazard_mask[RANGE_HAZARD]
    assert hit[0].all() and not hit[1:].any()
    assert res.hazards[RANGE_HAZARD] == 2 and g[0].all()
    assert np.all(np.isfinite(out[1])) and not g[1].any()
    assert not np.isfinite(out[2]).any()  # NaN (0 / 0); AMLA: its counted zero hazard


def test_fa4_scores_whose_rounding_exceeds_the_exp_range_are_flagged():
    """fa4 takes the running max of the raw scores: near 1e34 the rounding of ``fl(m c)``
    alone is far beyond the exp's range, every probability underflows and l = 0: a row
    with keys whose output is NaN is the ``score_range`` class, not an undefined row."""
    rng = np.random.default_rng(0)
    q = _bf16(rng.standard_normal((3, 8)) * 1e17)
    k = _bf16(rng.standard_normal((40, 8)) * 1e17)
    v = _bf16(rng.standard_normal((40, 2)))
    res = flash.attention(q, k, v, "fa4", scale=1.0, block_n=16)
    bad = ~np.isfinite(np.asarray(res.out))
    assert bad.any() and np.array_equal(bad, res.hazard_mask[RANGE_HAZARD])
    assert np.array_equal(res.garbage_mask(), bad)
    ok = flash.attention(q / 1e17, k / 1e17, v, "fa4", scale=1.0, block_n=16)
    assert RANGE_HAZARD not in ok.hazards and np.all(np.isfinite(ok.out))


@pytest.mark.parametrize("variant", ["naive", "fa_fp32", "lazy", "amla"])
def test_an_overflowed_o_the_clip_zeroed_is_garbage(variant):
    """O overflows FP32 (two keys of weight 1 with V = 3e38): under ``"cann"`` the clip
    makes the inf a finite 0, counted ``overflow`` and in the garbage mask (no bound covers
    that 0); under ``"ascend"`` the inf stays and stays judged (a failure, not garbage)."""
    q, k = np.ones((1, 2)), np.zeros((2, 2))
    v = np.full((2, 1), 3e38)
    cann = flash.attention(q, k, v, variant, scale=1.0, block_n=2, policy="cann")
    assert np.asarray(cann.out)[0, 0] == 0
    assert cann.hazard_mask["overflow"][0, 0] and cann.garbage_mask()[0, 0]
    asc = flash.attention(q, k, v, variant, scale=1.0, block_n=2, policy="ascend")
    assert not np.isfinite(np.asarray(asc.out)[0, 0])
    assert asc.hazard_mask["overflow"][0, 0] and not asc.garbage_mask()[0, 0]


@pytest.mark.parametrize("variant", ["naive", "fa_fp32", "amla", "lazy"])
@pytest.mark.parametrize("pv", ["h100", "h100_fp8"])
def test_a_saturating_accumulator_is_counted_overflow(variant, pv):
    """Tensor-core accumulators round toward zero, so a P V sum beyond FP32 saturates at
    the largest value instead of inf: a finite, wrong output (20 keys of V = 3e37 in one
    block: O = 6e38). It is counted ``overflow`` and in the garbage mask; a tenth of that V
    does not overflow, is not flagged, and stays within its bound."""
    from amla_numerics.analysis.bounds import a_priori_bound, elementwise_bound
    from amla_numerics.flash.accumulate import ACCUMULATION_PRESETS
    from amla_numerics.flash.policy import MatmulPolicy, get_policy

    mm = MatmulPolicy("bf16", ACCUMULATION_PRESETS[pv])
    pol = get_policy("ascend").replace(name=pv, pv=mm)
    q, k = np.ones((1, 2)), np.zeros((20, 2))
    for v, over in ((np.full((20, 1), 3e37), True), (np.full((20, 1), 3e36), False)):
        res = flash.attention(q, k, v, variant, scale=1.0, block_n=20, policy=pol)
        out = np.asarray(res.out, np.float64)
        assert np.isfinite(out).all()
        assert bool(res.hazard_mask["overflow"][0, 0]) is over
        assert bool(res.garbage_mask()[0, 0]) is over
        b = a_priori_bound(variant, head_dim=2, kv_len=20, block_n=20, policy=pol)
        within = np.abs(out - v[0]) <= elementwise_bound(b, q, k, v, 1.0)
        assert bool(within[0, 0]) is not over  # the saturated value is far out of bound

"""The certified fast oracle against the mpmath truth.

Every comparison is against mpf values good to 40 digits: ``|y_fast - truth| <= bound``
must hold exactly (the truth's own error, 1e-40 relative, is far below any bound), and the
bound itself must be at most 1e-3 FP32 ULP wherever the issue requires it.
"""

from __future__ import annotations

import math

import ml_dtypes
import mpmath
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amla_numerics.formats import BF16, E4M3, E5M2, FP16, FP32
from amla_numerics.reference import attention, certified_attention
from amla_numerics.ulp import ulp
from tests.strategies import (
    ADVERSARIAL_KINDS,
    adversarial_attention_inputs,
    attention_inputs,
    examples,
    format_arrays,
)

FORMATS = [BF16, FP16, FP32]
DPS = 40


def truth(q, k, v, scale, mask=None):
    return attention(q, k, v, scale, mask=mask, method="mpmath", dps=DPS, return_mpf=True)


def check_certified(q, k, v, scale, mask=None, *, require_tight=True):
    """Fast result within its bound of the truth; bound <= 1e-3 FP32 ULP where required."""
    r = certified_attention(q, k, v, scale, mask=mask, return_lse=True)
    ref = truth(q, k, v, scale, mask)
    ref64 = attention(q, k, v, scale, mask=mask, method="mpmath", dps=DPS)
    with mpmath.workprec(200):
        for idx in np.ndindex(ref.shape):
            t = ref[idx]
            if mpmath.isnan(t):
                assert np.isnan(r.out[idx])
                continue
            err = abs(mpmath.mpf(float(r.out[idx])) - t)
            assert err <= mpmath.mpf(float(r.bound[idx])), (idx, r.out[idx], t, r.bound[idx])
    tol = 1e-3 * ulp(ref64, FP32)
    tight = r.bound <= tol
    if require_tight:
        assert tight.all(), float(np.max(r.bound / tol))
    return r, ref64, tight


@pytest.mark.parametrize("fmt", [*FORMATS, E4M3, E5M2], ids=lambda f: f.name)
@settings(max_examples=examples(12))
@given(data=st.data())
def test_fast_within_bound_random(fmt, data):
    q, k, v, scale = data.draw(attention_inputs(fmt, max_m=3, max_n=24, max_dk=12, max_dv=4))
    _r, ref64, tight = check_certified(q, k, v, scale, require_tight=False)
    # random inputs: the bound is tight except where an output nearly cancels
    scale_v = np.abs(v.astype(np.float64)).max(axis=0)
    assert tight[np.abs(ref64) > 1e-6 * scale_v].all()


@pytest.mark.parametrize("kind", ADVERSARIAL_KINDS)
@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
@settings(max_examples=examples(5))
@given(data=st.data())
def test_fast_within_bound_adversarial(fmt, kind, data):
    q, k, v, scale, _ = data.draw(adversarial_attention_inputs(fmt, kind))
    _r, ref64, tight = check_certified(q, k, v, scale, require_tight=(kind != "cancel"))
    if kind == "cancel":
        # auto repairs every loose element: it then equals the correctly rounded truth
        auto = attention(q, k, v, scale)
        assert np.array_equal(auto[~tight], ref64[~tight])
        assert (np.abs(auto - ref64) <= 1e-3 * ulp(ref64, FP32)).all()


def test_spread_scores_underflow():
    """Scores over +-1e3: every weight but the top ones underflows; still certified."""
    q = np.ones((1, 1), dtype=np.float32)
    k = np.array([[1000.0], [999.0], [-1000.0], [0.0], [-500.0]], dtype=np.float32)
    v = np.array([[1.0], [-1.0], [5.0], [7.0], [9.0]], dtype=np.float32)
    _r, ref64, _ = check_certified(q, k, v, 1.0)
    expect = (1 - math.exp(-1)) / (1 + math.exp(-1))
    assert abs(ref64[0, 0] - expect) < 1e-15


def test_exact_tie_and_zero_column_are_exact():
    q = np.array([[1.0, 2.0]], dtype=ml_dtypes.bfloat16)
    k = np.array([[1.0, 2.0], [1.0, 2.0], [-3.0, 0.5]], dtype=ml_dtypes.bfloat16)
    v = np.array([[1.0, 0.0], [2.0, 0.0], [4.0, 0.0]], dtype=ml_dtypes.bfloat16)
    r, ref64, _ = check_certified(q, k, v, 0.5)
    assert ref64[0, 1] == 0.0 and r.out[0, 1] == 0.0 and r.bound[0, 1] == 0.0


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (1, 7, 1, 3), (4, 1, 5, 2)])
def test_degenerate_shapes(shape):
    m, n, dk, dv = shape
    rng = np.random.default_rng(sum(shape))
    q = rng.standard_normal((m, dk)).astype(np.float16)
    k = rng.standard_normal((n, dk)).astype(np.float16)
    v = rng.standard_normal((n, dv)).astype(np.float16)
    r, _ref64, _ = check_certified(q, k, v, None)
    if n == 1:  # one key: the output is that key's value, exactly
        assert np.array_equal(r.out, np.broadcast_to(v.astype(np.float64), r.out.shape))


def test_auto_matches_truth_within_tolerance_and_mask():
    rng = np.random.default_rng(7)
    q = rng.standard_normal((2, 1, 3, 8)).astype(ml_dtypes.bfloat16)
    k = rng.standard_normal((3, 20, 8)).astype(ml_dtypes.bfloat16)
    v = rng.standard_normal((1, 20, 4)).astype(ml_dtypes.bfloat16)
    mask = np.tril(np.ones((3, 20), dtype=bool), k=10)
    out, lse = attention(q, k, v, mask=mask, return_lse=True)
    ref, ref_lse = attention(q, k, v, mask=mask, method="mpmath", dps=30, return_lse=True)
    assert out.shape == (2, 3, 3, 4) and lse.shape == (2, 3, 3)
    assert (np.abs(out - ref) <= 1e-3 * ulp(ref, FP32)).all()
    assert (np.abs(lse - ref_lse) <= 1e-3 * ulp(ref_lse, FP32)).all()
    # the boolean mask is the additive 0 / -inf mask
    add = np.where(mask, 0.0, -np.inf)
    by_add = attention(q, k, v, mask=add, method="fast")
    assert np.array_equal(by_add, attention(q, k, v, mask=mask, method="fast"))


@pytest.mark.parametrize("method", ["auto", "fast", "mpmath"])
def test_fully_masked_row_is_nan(method):
    q = np.ones((2, 2), dtype=np.float32)
    k = np.ones((3, 2), dtype=np.float32)
    v = np.arange(6, dtype=np.float32).reshape(3, 2)
    mask = np.array([[0.0, -np.inf, 0.0], [-np.inf, -np.inf, -np.inf]])
    out, lse = attention(q, k, v, mask=mask, method=method, dps=20, return_lse=True)
    assert np.isnan(out[1]).all() and lse[1] == -np.inf
    np.testing.assert_array_equal(out[0], [2.0, 3.0])  # mean of keys 0 and 2, exactly


def test_mla_shape_small_n_auto_equals_truth_where_loose():
    """The MLA decode geometry (Dk 576, Dv 512 = K[:, :512], scale 1/sqrt(192)), small N."""
    rng = np.random.default_rng(3)
    k = rng.standard_normal((24, 576)).astype(ml_dtypes.bfloat16)
    q = rng.standard_normal((2, 576)).astype(ml_dtypes.bfloat16)
    v = k[:, :512]
    r = certified_attention(q, k, v, 1 / math.sqrt(192))
    out = attention(q, k, v, 1 / math.sqrt(192))
    tol = 1e-3 * ulp(out, FP32)
    loose = ~(r.bound <= tol)
    assert loose.mean() < 0.01  # the fallback is rare
    ref = attention(q, k, v, 1 / math.sqrt(192), method="mpmath", dps=20)
    assert (np.abs(out - ref) <= tol).all()


def test_wide_exponent_range_falls_back_to_mpmath():
    """float64 inputs beyond the fast path: "fast" raises ValueError, "auto" uses mpmath."""
    q = np.array([[1e-300, 1e300], [1.0, 0.5]])
    k = np.array([[1e300, 1e-300], [1e300, -1e-300], [0.0, 2.0**-1074]])
    v = np.array([[1.0], [2.0], [-3.0]])
    with pytest.raises(ValueError, match="fast path"):
        attention(q, k, v, 1.0, method="fast")
    auto = attention(q, k, v, 1.0)
    ref = attention(q, k, v, 1.0, method="mpmath", dps=20)
    np.testing.assert_array_equal(auto, ref)


def test_float64_inputs_certified():
    rng = np.random.default_rng(9)
    q, k = rng.standard_normal((2, 5)), rng.standard_normal((11, 5))
    v = rng.standard_normal((11, 3))
    check_certified(q, k, v, None)


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
@settings(max_examples=examples(10))
@given(data=st.data())
def test_fast_within_bound_bit_patterns(fmt, data):
    """Inputs drawn from raw bit patterns (subnormals, extremes), magnitudes up to 8."""
    m, n, dk, dv = (data.draw(st.integers(1, hi)) for hi in (2, 12, 5, 3))
    q = data.draw(format_arrays(fmt, (m, dk), max_abs=8.0))
    k = data.draw(format_arrays(fmt, (n, dk), max_abs=8.0))
    v = data.draw(format_arrays(fmt, (n, dv), max_abs=8.0))
    _r, ref64, _tight = check_certified(q, k, v, 0.25, require_tight=False)
    auto = attention(q, k, v, 0.25)
    assert (np.abs(auto - ref64) <= 1e-3 * ulp(ref64, FP32)).all()


@pytest.mark.slow
def test_mla_decode_full_n_against_truth():
    """The benchmark geometry at full N = 8192 (4 rows): auto within 1e-3 FP32 ULP of the
    correctly rounded truth on two rows, and the fast certificate holds there."""
    rng = np.random.default_rng(0)
    k = rng.standard_normal((8192, 576)).astype(ml_dtypes.bfloat16)
    q = rng.standard_normal((4, 576)).astype(ml_dtypes.bfloat16)
    v = k[:, :512]
    scale = 1 / math.sqrt(192)
    r = certified_attention(q, k, v, scale)
    out = attention(q, k, v, scale)
    ref = attention(q[:2], k, v, scale, method="mpmath", dps=30, return_mpf=True)
    ref64 = attention(q[:2], k, v, scale, method="mpmath", dps=30)
    assert (np.abs(out[:2] - ref64) <= 1e-3 * ulp(ref64, FP32)).all()
    with mpmath.workprec(200):
        for idx in np.ndindex(ref.shape):
            assert abs(mpmath.mpf(float(r.out[idx])) - ref[idx]) <= mpmath.mpf(float(r.bound[idx]))


@settings(max_examples=examples(15))
@given(data=st.data())
def test_fast_within_bound_with_random_masks(data):
    """Additive masks: finite offsets and -inf (fully masked rows included)."""
    q, k, v, scale = data.draw(attention_inputs(BF16, max_m=3, max_n=16, max_dk=6, max_dv=3))
    m, n = q.shape[0], k.shape[0]
    choices = st.sampled_from([0.0, -np.inf, -3.5, 2.0, -1e4])
    mask = np.array(data.draw(st.lists(choices, min_size=m * n, max_size=m * n))).reshape(m, n)
    _r, ref64, _tight = check_certified(q, k, v, scale, mask, require_tight=False)
    auto, lse = attention(q, k, v, scale, mask=mask, return_lse=True)
    ref64, ref_lse = attention(q, k, v, scale, mask=mask, method="mpmath", dps=30, return_lse=True)
    dead = np.isneginf(mask).all(axis=1)
    assert np.isnan(auto[dead]).all() and (lse[dead] == -np.inf).all()
    assert (np.abs(auto[~dead] - ref64[~dead]) <= 1e-3 * ulp(ref64[~dead], FP32)).all()
    assert (np.abs(lse[~dead] - ref_lse[~dead]) <= 1e-3 * ulp(ref_lse[~dead], FP32)).all()


@pytest.mark.parametrize("method", ["fast", "mpmath"])
def test_batch_broadcast_equals_loop(method):
    rng = np.random.default_rng(12)
    q = rng.standard_normal((2, 3, 2, 4)).astype(np.float16)
    k = rng.standard_normal((3, 5, 4)).astype(np.float16)
    v = rng.standard_normal((5, 2)).astype(np.float16)
    out, lse = attention(q, k, v, method=method, dps=20, return_lse=True)
    assert out.shape == (2, 3, 2, 2) and lse.shape == (2, 3, 2)
    for a in range(2):
        for b in range(3):
            o1, l1 = attention(q[a, b], k[b], v, method=method, dps=20, return_lse=True)
            np.testing.assert_array_equal(out[a, b], o1)
            np.testing.assert_array_equal(lse[a, b], l1)


@pytest.mark.parametrize(
    ("dtype", "delta", "scale"), [(np.float64, 2.0**-50, 1.0), (np.float32, 2.0**-20, 2.0**-30)]
)
def test_near_cancellation_goes_to_mpmath(dtype, delta, scale):
    """Pairs of almost equal keys with values +a / -a: outputs cancel to ~delta * a. The
    fast bound is then looser than 1e-3 FP32 ULP, and auto returns the correctly rounded
    truth for exactly those elements."""
    rng = np.random.default_rng(21)
    n = 20
    q = rng.standard_normal((3, 4)).astype(dtype)
    k = np.repeat(rng.standard_normal((1, 4)), n, axis=0)
    k[1::2] += rng.standard_normal((n // 2, 4)) * delta
    k = k.astype(dtype)
    a = rng.standard_normal((1, 2))
    v = np.where(np.arange(n)[:, None] % 2 == 0, a, -a).astype(dtype)
    _r, ref64, tight = check_certified(q, k, v, scale, require_tight=False)
    assert (~tight).any()  # the case really exercises the fallback
    auto = attention(q, k, v, scale)
    np.testing.assert_array_equal(auto[~tight], ref64[~tight])
    assert (np.abs(auto - ref64) <= 1e-3 * ulp(ref64, FP32)).all()


# --- the speed-ups of the fast path keep exactness (row-block limbs, exp reduction, views) ---


@settings(max_examples=examples(40))
@given(data=st.data())
def test_exact_dot_row_blocks_match_fractions(data):
    """Rows of very different spans: later limbs are nonzero on a few rows only (and may be
    zero between nonzero ones); the block terms must still give the exact dot products."""
    from fractions import Fraction

    from amla_numerics.reference.exactdot import exact_dot

    m = data.draw(st.integers(1, 5))
    n = data.draw(st.integers(1, 6))
    kk = data.draw(st.integers(1, 12))
    seed = data.draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((m, kk)) * np.exp2(
        rng.integers(-40, 40, (m, kk)) * rng.integers(0, 2, (m, 1))
    )
    b = rng.standard_normal((n, kk)) * np.exp2(
        rng.integers(-40, 40, (n, kk)) * rng.integers(0, 2, (n, 1))
    )
    a[rng.random(a.shape) < 0.3] = 0.0
    a = a.astype(ml_dtypes.bfloat16).astype(np.float64)
    b = b.astype(ml_dtypes.bfloat16).astype(np.float64)
    d = exact_dot(a, b, precision_a=8, precision_b=8)
    exact = [
        [sum(Fraction(x) * Fraction(y) for x, y in zip(a[i], b[j], strict=True)) for j in range(n)]
        for i in range(m)
    ]
    assert d.to_fractions() == exact
    hi, lo, err = d.to_dd()
    for i in range(m):
        h1, l1, _ = d.to_dd(slice(i, i + 1))
        assert np.array_equal(h1[0], hi[i]) and np.array_equal(l1[0], lo[i])
        for j in range(n):
            assert abs(Fraction(hi[i, j]) + Fraction(lo[i, j]) - exact[i][j]) <= Fraction(err[i, j])


def test_exact_dot_sparse_rows_use_blocks():
    """A few rows with a tiny value need a second limb: only those rows get a block term."""
    from amla_numerics.reference.exactdot import exact_dot

    rng = np.random.default_rng(3)
    a = rng.standard_normal((16, 64)).astype(ml_dtypes.bfloat16).astype(np.float64)
    b = rng.standard_normal((40, 64)).astype(ml_dtypes.bfloat16).astype(np.float64)
    a[3, 5] = 2.0**-60
    b[7, 9] = -(2.0**-50)
    d = exact_dot(a, b, precision_a=8, precision_b=8)
    assert d.blocks is not None and d.blocks[0] is None
    assert any(blk is not None for blk in d.blocks)
    ref = exact_dot(a, b, precision_a=53, precision_b=53)  # a different split, same values
    assert d.to_fractions() == ref.to_fractions()
    hi, lo, _ = d.to_dd()
    rh, rl, _ = ref.to_dd()
    assert np.array_equal(hi + lo, rh + rl)
    for sl in (slice(1, 15, 3), slice(None, None, -1), slice(2, 6), slice(-4, None)):
        h2, l2, _e2 = d.to_dd(sl)  # row blocks of the block terms: same values as slicing
        assert np.array_equal(h2, hi[sl]) and np.array_equal(l2, lo[sl])


def test_exp_dd_first_reduction_step_is_exact():
    """``xc - n*c0`` (the TwoSum the exp skips) has a zero error term on the whole domain."""
    from amla_numerics.reference._dd import _constants, exp_dd, two_sum

    _, _, c0, _, _, inv = _constants()
    rng = np.random.default_rng(0)
    x = np.concatenate(
        [
            np.linspace(-746.0, 1.0, 400_001),
            -rng.random(200_000) * 60,
            np.ldexp(1.0, -np.arange(1, 1075)),
            -np.ldexp(1.0, -np.arange(1, 1075)),
            np.array([0.0, -0.0, 1.0, -746.0]),
        ]
    )
    n = np.rint(x * inv)
    _, err = two_sum(x, -(n * c0))
    assert not err.any()
    with mpmath.workprec(200):
        for xv in (-700.25, -13.5, -1e-300, -0.34657359027997264):
            hi, lo = exp_dd(np.array([xv]), np.zeros(1))
            e = abs(mpmath.mpf(hi[0]) + mpmath.mpf(lo[0]) - mpmath.exp(xv))
            assert e <= (2.0**-84 + 2.0**-100 * abs(xv)) * mpmath.exp(xv) + 2.0**-1070


@pytest.mark.parametrize("method", ["fast", "auto"])
def test_v_prefix_view_of_k_same_result(method):
    """v = k[:, :Dv] (a view: its conversion is shared) gives bit-identical results."""
    rng = np.random.default_rng(1)
    k = rng.standard_normal((300, 48)).astype(ml_dtypes.bfloat16)
    q = rng.standard_normal((5, 48)).astype(ml_dtypes.bfloat16)
    v_view = k[:, :32]
    v_copy = np.ascontiguousarray(k[:, :32])
    a = attention(q, k, v_view, 0.25, method=method, return_lse=True)
    b = attention(q, k, v_copy, 0.25, method=method, return_lse=True)
    assert a[0].tobytes() == b[0].tobytes() and a[1].tobytes() == b[1].tobytes()


def test_sparse_v_split_is_exact():
    """V_hi + V_lo == V exactly, with only the candidates (small values) truncated."""
    from amla_numerics.reference.fast import _sparse_split

    rng = np.random.default_rng(2)
    v = rng.standard_normal((4096, 64))
    v[rng.random(v.shape) < 0.01] *= 2.0**-20
    v = v.astype(ml_dtypes.bfloat16).astype(np.float64)
    _bp, bv, lv, lo = _sparse_split(v.T, 53 - 12 - 1, 8)
    hi = lv.parts[0]  # (Dv, N), integers below 2**bv on the column grid
    assert np.array_equal(hi, np.trunc(hi)) and np.abs(hi).max() < 2.0**bv
    back = hi * np.ldexp(1.0, lv.exps - bv)[:, None]
    total = back + (lo.toarray() if lo is not None else 0.0)
    assert np.array_equal(total, v.T)  # both terms exact and disjoint in bits: no rounding
    assert lo is not None and lo.nnz < 0.05 * v.size

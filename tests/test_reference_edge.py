"""The reference on valid inputs at the edges of its domain: rows with no attended key, and
outputs whose exact value underflows float64.

Oracle: plain mpmath at high precision, written here from the formula (no shared code),
and the float64 rounding of a value below half the smallest subnormal (``2**-1075``),
which is a zero of the value's sign.
"""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest

from amla_numerics.analysis.metrics import reference_error, reference_ulp
from amla_numerics.reference import AUTO_ULP_FP32, AUTO_ULP_FP64, attention, certified_attention
from amla_numerics.testing import compare

METHODS = ["auto", "fast", "mpmath"]


def _f64(x: mpmath.mpf) -> float:
    """Round-to-nearest float64 of an mpf value (any exponent)."""
    if x == 0 or abs(x) < mpmath.ldexp(1, -1075):  # below half the smallest subnormal
        return math.copysign(0.0, float(mpmath.sign(x)))
    return float(x)  # mpmath's conversion rounds to nearest


def _ulp32(y: float) -> float:
    """FP32 ulp at ``y`` (``2**-149`` in the subnormal range)."""
    e = math.frexp(y)[1] - 1 if y else -200
    return 2.0 ** (max(e, -126) - 23)


def _check(method, got, want):
    """mpmath: the float64 rounding; auto: within 1e-3 FP32 ulp of the value (its guarantee)."""
    exp = _f64(want)
    if method == "mpmath":
        assert got == exp and math.copysign(1, got) == math.copysign(1, exp), (got, exp)
    else:
        with mpmath.workprec(400):
            assert abs(mpmath.mpf(float(got)) - want) <= 1e-3 * _ulp32(got), (got, exp)


def _oracle(dots, bias, v, scale, prec=400):
    """``softmax(scale * dots + bias) @ v`` row by row at ``prec`` bits (mpmath only)."""
    with mpmath.workprec(prec):
        s = [
            mpmath.mpf(scale) * mpmath.mpf(d) + mpmath.mpf(b)
            for d, b in zip(dots, bias, strict=True)
        ]
        m = max(s)
        p = [mpmath.exp(x - m) for x in s]
        den = mpmath.fsum(p)
        return [
            mpmath.fsum(pj * mpmath.mpf(float(vj[c])) for pj, vj in zip(p, v, strict=True)) / den
            for c in range(v.shape[1])
        ]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_single_row_with_every_key_masked_is_nan(method, dtype):
    # one query row, every key masked (a padding row in M = 1 decode); float32 V has bits
    # below the fast path's V grid (its sparse remainder product runs on a dead row)
    rng = np.random.default_rng(0)
    q = rng.standard_normal((1, 8)).astype(dtype)
    k = rng.standard_normal((5, 8)).astype(dtype)
    v = rng.standard_normal((5, 4)).astype(dtype)
    for mask in (np.zeros((1, 5), bool), np.full((1, 5), -np.inf)):
        out, lse = attention(q, k, v, mask=mask, method=method, return_lse=True)
        assert out.shape == (1, 4) and np.isnan(out).all()
        assert lse.tolist() == [-np.inf]


def test_compare_with_a_padding_row():
    # the kernel's padding row is NaN like the reference's; the live row is judged
    rng = np.random.default_rng(1)
    q = rng.standard_normal((2, 8)).astype(np.float32)
    k = rng.standard_normal((6, 8)).astype(np.float32)
    v = rng.standard_normal((6, 4)).astype(np.float32)
    mask = np.ones((2, 6), bool)
    mask[0] = False
    ref = attention(q, k, v, mask=mask, method="mpmath")
    assert np.isnan(ref[0]).all() and np.isfinite(ref[1]).all()
    res = compare(ref.astype(np.float32), q, k, v, mask=mask, bit_match=False)
    assert res is not None
    for one_row in (mask[:1], mask[1:]):  # M = 1 with and without its key
        compare(
            attention(q[:1], k, v, mask=one_row, method="mpmath").astype(np.float32),
            q[:1],
            k,
            v,
            mask=one_row,
            bit_match=False,
        )


@pytest.mark.parametrize("bias", [-740.0, -745.0, -1e4, -1e12])
@pytest.mark.parametrize("sign", [1.0, -1.0])
@pytest.mark.parametrize("method", METHODS)
def test_underflowing_output_is_the_float64_rounding(bias, sign, method):
    # keys 0 and 1 tie and their values cancel exactly; key 2 carries a finite bias, so the
    # output is sign * e**bias / (2 + e**bias): subnormal (-740), half the smallest
    # subnormal or below (-745: rounds to zero), astronomically small (-1e4, -1e12)
    q = np.array([[1.0]], np.float32)
    k = np.zeros((3, 1), np.float32)
    v = np.array([[1.0], [-1.0], [sign]], np.float32)
    mask = np.array([[0.0, 0.0, bias]])
    want = _oracle([0, 0, 0], mask[0], v.astype(np.float64), 1.0)
    out = attention(q, k, v, 1.0, mask=mask, method=method)
    if method == "fast":  # certified, not correctly rounded: within its bound
        r = certified_attention(q, k, v, 1.0, mask=mask)
        assert out[0, 0] == r.out[0, 0] and np.isfinite(r.bound[0, 0])
        with mpmath.workprec(400):
            assert abs(mpmath.mpf(float(out[0, 0])) - want[0]) <= r.bound[0, 0]
        return
    _check(method, out[0, 0], want[0])
    if method == "mpmath":
        mpf = attention(q, k, v, 1.0, mask=mask, method="mpmath", return_mpf=True)
        with mpmath.workprec(400):
            assert abs(mpf[0, 0] - want[0]) <= mpmath.mpf(10) ** -45 * abs(want[0])


def test_underflow_among_ordinary_columns():
    # a column that underflows beside columns that do not: each its own correct rounding
    rng = np.random.default_rng(3)
    n = 7
    k = rng.standard_normal((n, 4)).astype(np.float32)
    k[1] = k[0]  # keys 0 and 1 tie
    q = rng.standard_normal((2, 4)).astype(np.float32)
    v = rng.standard_normal((n, 3)).astype(np.float32)
    v[1, 0] = -v[0, 0]
    v[2:, 0] = 0.0
    v[2, 0] = 3.0  # column 0: the tie cancels, only key 2 (bias -1e5) is left
    mask = np.zeros((2, n))
    mask[:, 2] = -1e5
    for method in ("auto", "mpmath"):  # correctly rounded here (fast: within its bound)
        out = attention(q, k, v, 0.5, mask=mask, method=method)
        for i in range(2):
            with mpmath.workprec(400):  # exact: products of FP32 values, 4 terms
                d = [
                    mpmath.fsum(
                        mpmath.mpf(float(a)) * mpmath.mpf(float(b))
                        for a, b in zip(q[i], k[j], strict=True)
                    )
                    for j in range(n)
                ]
            want = _oracle(d, mask[i], v.astype(np.float64), 0.5)
            for c in range(3):
                _check(method, out[i, c], want[c])


def test_auto_ulp_fp64_certifies_one_fp64_ulp():
    # outputs that nearly cancel: the fast certificate there is above one FP64 ULP (so the
    # default auto keeps the fast value on its 1e-3 FP32 ULP guarantee); with AUTO_ULP_FP64
    # every such element is recomputed: within one FP64 ULP of the exact value
    rng = np.random.default_rng(7)
    n = 64
    q = rng.standard_normal((1, 8))
    k = rng.standard_normal((n, 8))
    x = rng.standard_normal(n)
    s = 0.3 * (q @ k.T)[0]
    p = np.exp(s - s.max())
    p /= p.sum()
    v = np.stack([x - p @ x + d for d in (1e-10, 1e-11, 1e-12)], axis=1)
    r = certified_attention(q, k, v, 0.3)
    assert (r.bound > np.spacing(np.abs(r.out))).all()  # the fast certificate is too coarse
    assert (r.bound <= 1e-3 * 2.0**-24 * np.abs(r.out)).all()  # but enough for 1e-3 FP32 ULP
    default = attention(q, k, v, 0.3)
    assert np.array_equal(default, r.out)  # so the default keeps the fast values
    got = attention(q, k, v, 0.3, auto_ulp=AUTO_ULP_FP64)
    mp = attention(q, k, v, 0.3, method="mpmath")
    assert np.array_equal(got, mp)  # recomputed: correctly rounded
    with pytest.raises(ValueError, match="'auto_ulp'"):
        attention(q, k, v, 0.3, auto_ulp=0.0)


def test_fp64_policies_are_judged_against_a_one_ulp_reference():
    assert reference_ulp("exact") == AUTO_ULP_FP64 == 2.0**-29
    assert reference_ulp("ascend") == reference_ulp(None) == AUTO_ULP_FP32
    ref = np.array([1.0, -3.0, np.nan])
    assert reference_error(ref, AUTO_ULP_FP64).tolist() == [2.0**-52, 2.0**-51, 0.0]

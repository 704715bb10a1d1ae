"""The mpmath truth and the building blocks against independent oracles."""

from __future__ import annotations

import math
from fractions import Fraction

import ml_dtypes
import mpmath
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amla_numerics.formats import BF16, FP16, FP32, FP64
from amla_numerics.reference import (
    attention,
    dispatch,
    exact_dot,
    mp_logsumexp,
    mp_softmax,
    online_softmax,
)
from amla_numerics.reference._inputs import make_scale
from amla_numerics.reference.mp import attention_row
from amla_numerics.rounding import round_to
from tests.strategies import attention_inputs, examples, format_arrays


def oracle(q, k, v, scale, prec, mask=None):
    """Straight mpmath from the raw floats: fsum of exact products, no shared code."""
    q = np.asarray(q, np.float64)
    k = np.asarray(k, np.float64)
    v = np.asarray(v, np.float64)
    m_, n = q.shape[0], k.shape[0]
    out = np.empty((m_, v.shape[1]), dtype=object)
    lse = []
    with mpmath.workprec(prec):
        sc = 1 / mpmath.sqrt(q.shape[1]) if scale is None else mpmath.mpf(scale)
        for i in range(m_):
            s = [
                sc
                * mpmath.fsum(
                    mpmath.mpf(a) * mpmath.mpf(b) for a, b in zip(q[i], k[j], strict=True)
                )
                for j in range(n)
            ]
            if mask is not None:
                s = [x + mpmath.mpf(float(mask[i, j])) for j, x in enumerate(s)]
            mx = max(s)
            p = [mpmath.exp(x - mx) for x in s]
            tot = mpmath.fsum(p)
            lse.append(mx + mpmath.log(tot))
            for c in range(v.shape[1]):
                out[i, c] = mpmath.fdot(p, [mpmath.mpf(x) for x in v[:, c]]) / tot
    return out, np.array(lse, dtype=object)


def rounded(x):
    return round_to(x, FP64).astype(np.float64)


@pytest.mark.parametrize("fmt", [BF16, FP16, FP32], ids=lambda f: f.name)
@settings(max_examples=examples(25))
@given(data=st.data())
def test_exact_dot_matches_fractions(fmt, data):
    m = data.draw(st.integers(1, 3))
    n = data.draw(st.integers(1, 4))
    kk = data.draw(st.integers(1, 6))
    a = data.draw(format_arrays(fmt, (m, kk))).astype(np.float64)
    b = data.draw(format_arrays(fmt, (n, kk))).astype(np.float64)
    got = exact_dot(a, b, precision_a=fmt.p, precision_b=fmt.p).to_fractions()
    for i in range(m):
        for j in range(n):
            want = sum(
                (Fraction(x) * Fraction(y) for x, y in zip(a[i], b[j], strict=True)), Fraction(0)
            )
            assert got[i][j] == want


@pytest.mark.parametrize("fmt", [BF16, FP16, FP32], ids=lambda f: f.name)
@settings(max_examples=examples(10))
@given(data=st.data())
def test_mpmath_path_is_correctly_rounded(fmt, data):
    q, k, v, scale = data.draw(attention_inputs(fmt, max_m=2, max_n=12, max_dk=6, max_dv=3))
    out, lse = attention(q, k, v, scale, method="mpmath", dps=20, return_lse=True)
    o300, l300 = oracle(q, k, v, scale, 300)
    o600, l600 = oracle(q, k, v, scale, 600)
    for got, a, b in ((out, o300, o600), (lse, l300, l600)):
        ra, rb = rounded(a), rounded(b)
        settled = ra == rb  # the oracle itself agrees with twice its precision
        assert settled.all()
        np.testing.assert_array_equal(got[settled], ra[settled])


def test_columns_settling_at_different_precisions():
    """A row whose columns settle in different rounds of the Ziv loop (found by CI).

    Scores 0 and ~5e-91 (weights 1 - 5e-91 and 1): column 0 settles at the first
    precision; column 1 lies closer than 1e-50 (relative) to a float64 rounding midpoint,
    so the loop must double its precision. Each column must be computed from its own exact
    sums, whatever the others did: both against the independent oracle.
    """
    q = np.array([[1e-45]], np.float32)
    k = np.array([[0.0]] + [[1e-45]] * 5, np.float32)
    v = np.array([[0.0, 4.8985068e-29]] + [[2.1439867e-43] * 2] * 5, np.float32)
    dots = exact_dot(q.astype(np.float64), k.astype(np.float64)).row_mpf(0)

    def solve(cols=None):
        return attention_row(dots, None, v.astype(np.float64), make_scale(0.25, 1), 20, cols)

    row = solve()
    assert solve([0]).prec < solve([1]).prec == row.prec  # column 0 settled first
    o300, _ = oracle(q, k, v, 0.25, 300)
    o600, _ = oracle(q, k, v, 0.25, 600)
    assert (rounded(o300) == rounded(o600)).all()
    np.testing.assert_array_equal(np.array([[row.out[0], row.out[1]]]), rounded(o300))
    for dps in (20, 40):
        got = attention(q, k, v, 0.25, method="mpmath", dps=dps)
        np.testing.assert_array_equal(got, rounded(o300))


def test_mpf_results_good_to_dps_digits():
    rng = np.random.default_rng(11)
    q = rng.standard_normal((2, 5)).astype(ml_dtypes.bfloat16)
    k = rng.standard_normal((9, 5)).astype(ml_dtypes.bfloat16)
    v = rng.standard_normal((9, 3)).astype(ml_dtypes.bfloat16)
    ref, _ = oracle(q, k, v, None, 400)
    for dps in (15, 30, 50):
        got = attention(q, k, v, method="mpmath", dps=dps, return_mpf=True)
        with mpmath.workprec(400):
            for idx in np.ndindex(got.shape):
                assert abs(got[idx] - ref[idx]) <= mpmath.mpf(10) ** -dps * abs(ref[idx])


def test_rational_outputs_are_exact():
    """One key, exact ties everywhere, an all-zero column: rational values, rounded exactly."""
    k = np.array([[1.0, 1.0]] * 3)
    q = np.array([[0.5, -2.0]])
    v = np.array([[1.0, 0.0], [2.0, 0.0], [2.0**-60, 0.0]])
    out = attention(q, k, v, method="mpmath", dps=20)
    assert out[0, 0] == float(Fraction(3 + Fraction(1, 2**60), 3))
    assert out[0, 1] == 0.0
    one = attention(q, k[:1], v[:1] + 0.25, 0.5, method="mpmath", dps=20, return_lse=True)
    assert one[0][0, 0] == 1.25 and one[1][0] == 0.5 * (0.5 - 2.0)


def test_building_blocks_softmax_logsumexp():
    s = [1.5, -2.0, 0.0, -math.inf]
    p = mp_softmax(s, dps=30)
    with mpmath.workprec(300):
        e = [mpmath.exp(mpmath.mpf(x)) for x in s[:3]]
        tot = mpmath.fsum(e)
        for got, want in zip(p[:3], e, strict=True):
            assert abs(got - want / tot) <= mpmath.mpf(10) ** -29 * want / tot
        assert p[3] == 0
        assert abs(mp_logsumexp(s, dps=30) - mpmath.log(tot)) <= mpmath.mpf(10) ** -29
    two = mp_logsumexp([[0.0, 0.0], [1.0, -math.inf]], dps=20)
    assert two.shape == (2,) and float(two[1]) == 1.0


def test_online_softmax_blocks():
    rng = np.random.default_rng(5)
    q = rng.standard_normal((2, 4)).astype(ml_dtypes.bfloat16).astype(np.float64)
    k = (rng.standard_normal((10, 4)) * 3).astype(ml_dtypes.bfloat16).astype(np.float64)
    v = rng.standard_normal((10, 3)).astype(ml_dtypes.bfloat16).astype(np.float64)
    t = online_softmax(q, k, v, 0.5, block=4, dps=30)
    assert t.m.shape == (2, 3) and t.o.shape == (2, 3, 3)
    ref = attention(q, k, v, 0.5, method="mpmath", dps=30, return_mpf=True)
    half = Fraction(1, 2)
    scores = [
        [
            half * sum(Fraction(a) * Fraction(b) for a, b in zip(q[i], k[j], strict=True))
            for j in range(10)
        ]
        for i in range(2)
    ]
    with mpmath.workprec(300):
        for i in range(2):
            for b in range(3):
                seen = scores[i][: 4 * (b + 1)]
                assert float(round_to(t.m[i, b], FP64)) == float(round_to(max(seen), FP64))
                mj = mpmath.mpf(max(seen).numerator) / max(seen).denominator
                lj = mpmath.fsum(
                    mpmath.exp(mpmath.mpf(x.numerator) / x.denominator - mj) for x in seen
                )
                assert abs(t.l[i, b] - lj) <= mpmath.mpf(10) ** -28 * lj
            for c in range(3):
                assert abs(t.o[i, -1, c] / t.l[i, -1] - ref[i, c]) <= mpmath.mpf(10) ** -28
    m64, _l64, o64 = t.as_float64()
    assert m64.dtype == np.float64 and o64.shape == (2, 3, 3)


def test_precision_ladder_raises(monkeypatch):
    real = dispatch.attention_row

    def drifting(dots, mask_row, v, scale, dps, cols=None, *, want_lse=False):
        r = real(dots, mask_row, v, scale, dps, cols, want_lse=want_lse)
        if dps == 40:  # the ladder's 2*dps recomputation sees a different value
            out = {c: x * (1 + 2.0**-40) for c, x in r.out.items()}
            return type(r)(out, r.out_mpf, r.lse, r.lse_mpf, r.prec)
        return r

    monkeypatch.setattr(dispatch, "attention_row", drifting)
    with pytest.raises(RuntimeError, match="precision ladder"):
        attention(np.ones((1, 2)), np.eye(2), np.eye(2), method="mpmath", dps=20)


def test_jobs_identical_to_serial():
    rng = np.random.default_rng(2)
    q = rng.standard_normal((4, 6)).astype(np.float16)
    k = rng.standard_normal((7, 6)).astype(np.float16)
    v = rng.standard_normal((7, 2)).astype(np.float16)
    serial = attention(q, k, v, method="mpmath", dps=20, return_mpf=True)
    par = attention(q, k, v, method="mpmath", dps=20, return_mpf=True, jobs=2)
    assert all(a == b for a, b in zip(serial.ravel(), par.ravel(), strict=True))


def test_mpmath_precision_not_leaked():
    before = mpmath.mp.prec
    attention(np.ones((1, 3)), np.ones((2, 3)), np.ones((2, 1)), method="mpmath", dps=60)
    online_softmax(np.ones((1, 3)), np.ones((2, 3)), np.ones((2, 1)), dps=60)
    assert mpmath.mp.prec == before


def test_exp_dd_within_its_bound():
    """The double-double exp against mpmath at 300 bits, over the whole range it serves."""
    from amla_numerics.reference._dd import EXP_ABS, EXP_REL, exp_dd, two_sum

    rng = np.random.default_rng(4)
    xh = np.concatenate(
        [
            -rng.random(3000) * 760,
            -rng.random(500) * 1e-3,
            -rng.random(200) * 2.0**-40,
            [0.0, -0.0, 1.0, -745.0, -708.3, -745.2, -746.5, -np.inf],
        ]
    )
    tail = np.where(np.isfinite(xh), xh * rng.uniform(-1, 1, xh.size) * 2**-53, 0)
    with np.errstate(invalid="ignore"):  # -inf's TwoSum error term is NaN: reset below
        xh, xl = two_sum(xh, tail)
    xl[np.isinf(xh)] = 0.0
    hi, lo = exp_dd(xh, xl)
    with mpmath.workprec(300):
        for a, b, h, l_ in zip(xh, xl, hi, lo, strict=True):
            if a == -np.inf:
                assert h == 0 and l_ == 0
                continue
            e = mpmath.exp(mpmath.mpf(a) + mpmath.mpf(b))
            bound = (EXP_REL + 2.0**-100 * abs(a)) * e + EXP_ABS
            assert abs(mpmath.mpf(h) + mpmath.mpf(l_) - e) <= bound, (a, b)

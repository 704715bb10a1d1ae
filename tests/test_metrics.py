"""Error metrics against independent oracles: mpmath softmax weights for the magnitude
scale, exact rationals for the condition-aware error, and an enumeration of every BF16
value for the BF16-output view."""

from __future__ import annotations

import math
from fractions import Fraction

import mpmath
import numpy as np
import pytest

from amla_numerics.analysis.metrics import U_FP32, error_metrics, magnitude_scale
from amla_numerics.formats import BF16
from tests.oracle import oracle_round, pattern_values


def _mp_magnitude(q, k, v, scale, keep):
    """sum_k p_ik |v_kj| with mpmath at 50 digits (exact inputs, exact scale)."""
    mpmath.mp.dps = 50
    m_rows, n = q.shape[0], k.shape[0]
    out = np.zeros((m_rows, v.shape[1]))
    for i in range(m_rows):
        s = [
            mpmath.mpf(scale)
            * mpmath.fsum(mpmath.mpf(a) * mpmath.mpf(b) for a, b in zip(q[i], k[j], strict=True))
            for j in range(n)
        ]
        e = [mpmath.exp(s[j]) if keep[i, j] else mpmath.mpf(0) for j in range(n)]
        tot = mpmath.fsum(e)
        for c in range(v.shape[1]):
            out[i, c] = float(mpmath.fsum(e[j] * abs(mpmath.mpf(v[j, c])) for j in range(n)) / tot)
    return out


@pytest.mark.parametrize("seed", [0, 1])
def test_magnitude_scale_matches_mpmath(seed):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((3, 5)) * 3.0  # spread scores over several nats
    k = rng.standard_normal((7, 5))
    v = rng.standard_normal((7, 4))
    keep = rng.random((3, 7)) < 0.7
    keep[:, 0] = True
    got = magnitude_scale(q, k, v, 0.4)
    want = _mp_magnitude(q, k, v, 0.4, np.ones((3, 7), bool))
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)
    # a boolean mask and the same mask as an additive -inf/0 float mask agree with mpmath
    got_b = magnitude_scale(q, k, v, 0.4, mask=keep)
    got_f = magnitude_scale(q, k, v, 0.4, mask=np.where(keep, 0.0, -np.inf))
    want_m = _mp_magnitude(q, k, v, 0.4, keep)
    np.testing.assert_allclose(got_b, want_m, rtol=1e-12, atol=0)
    np.testing.assert_array_equal(got_b, got_f)


def test_magnitude_scale_broadcasts_and_handles_masked_rows():
    rng = np.random.default_rng(3)
    q = rng.standard_normal((2, 3, 4))
    k = rng.standard_normal((5, 4))
    v = rng.standard_normal((5, 2))
    got = magnitude_scale(q, k, v)
    assert got.shape == (2, 3, 2)
    np.testing.assert_array_equal(got[1], magnitude_scale(q[1], k, v))
    keep = np.ones((3, 5), bool)
    keep[2] = False  # a fully masked row: weights 0
    assert np.all(magnitude_scale(q[0], k, v, mask=keep)[2] == 0)


def test_magnitude_scale_refuses_bad_input():
    with pytest.raises(ValueError, match="'q'"):
        magnitude_scale(np.ones((2, 3)), np.ones((4, 2)), np.ones((4, 1)))
    with pytest.raises(ValueError, match="'v'"):
        magnitude_scale(np.ones((2, 3)), np.ones((4, 3)), np.ones((5, 1)))
    with pytest.raises(ValueError, match="'mask'"):
        magnitude_scale(
            np.ones((2, 3)), np.ones((4, 3)), np.ones((4, 1)), mask=np.full((2, 4), np.nan)
        )
    with pytest.raises(ValueError, match="'k'"):
        magnitude_scale(np.ones((2, 3)), np.full((4, 3), np.inf), np.ones((4, 1)))


def _fraction_cond(out, ref, mag):
    """Exact |out - ref| / mag / 2**-24 for every element (Fractions; mag > 0)."""
    return [
        abs(Fraction(float(o)) - Fraction(float(r))) / Fraction(float(m)) * 2**24
        for o, r, m in zip(out.ravel(), ref.ravel(), mag.ravel(), strict=True)
    ]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_condition_aware_error_matches_exact_rationals(seed):
    rng = np.random.default_rng(seed)
    ref = rng.standard_normal((6, 5))
    ref[0, 0] = 1e-9  # cancellation: tiny reference inside a normal-sized magnitude scale
    mag = np.abs(rng.standard_normal((6, 5))) + 0.5
    out = np.float32(ref + rng.standard_normal((6, 5)) * 1e-6)
    m = error_metrics(out, ref, mag=mag)
    exact = _fraction_cond(out, ref, mag)
    srt = sorted(exact)
    n = len(srt)
    # numpy's method="higher": the element at index ceil(q (n - 1))
    assert m.cond_err_max == pytest.approx(float(srt[-1]), rel=1e-14)
    assert m.cond_err_median == pytest.approx(float(srt[math.ceil(0.5 * (n - 1))]), rel=1e-14)
    assert m.cond_err_p999 == pytest.approx(float(srt[math.ceil(0.999 * (n - 1))]), rel=1e-14)
    signed = [
        (Fraction(float(o)) - Fraction(float(r))) / Fraction(float(g)) * 2**24
        for o, r, g in zip(out.ravel(), ref.ravel(), mag.ravel(), strict=True)
    ]
    assert m.cond_err_mean_signed == pytest.approx(float(sum(signed) / n), rel=1e-12, abs=1e-12)
    worst = int(np.argmax([float(e) for e in exact]))
    assert m.worst_index == tuple(int(i) for i in np.unravel_index(worst, ref.shape))
    # the ULP-at-reference error explodes at the tiny reference, the condition-aware one not
    assert m.max_ulp_fp32 > 1e4 * m.cond_err_max
    # row and Frobenius errors from exact sums of squares
    rows = []
    for i in range(ref.shape[0]):
        num = sum(
            (Fraction(float(o)) - Fraction(float(r))) ** 2
            for o, r in zip(out[i], ref[i], strict=True)
        )
        den = sum(Fraction(float(r)) ** 2 for r in ref[i])
        rows.append(math.sqrt(num / den))
    assert m.row_rel_max == pytest.approx(max(rows), rel=1e-12)
    assert m.row_rel_median == pytest.approx(
        sorted(rows)[math.ceil(0.5 * (len(rows) - 1))], rel=1e-12
    )
    num = sum(
        (Fraction(float(o)) - Fraction(float(r))) ** 2
        for o, r in zip(out.ravel(), ref.ravel(), strict=True)
    )
    den = sum(Fraction(float(r)) ** 2 for r in ref.ravel())
    assert m.rel_fro == pytest.approx(math.sqrt(num / den), rel=1e-12)


@pytest.mark.parametrize("mode", ["rne", "rna"])
def test_bf16_output_view_against_an_enumeration_of_bf16(mode):
    values = pattern_values(BF16)
    grid = np.unique(values[np.isfinite(values)])  # every finite BF16 value, sorted, one zero
    rng = np.random.default_rng(5)
    ref = rng.standard_normal(200) * 3.0
    out = np.float32(ref * (1 + rng.standard_normal(200) * 2**-8))
    out[:5] = np.float32(ref[:5])  # some exact
    m = error_metrics(out, ref, mag=np.abs(ref) + 1, out_rounding=mode)
    dist, wrong = [], 0
    for o, r in zip(out, ref, strict=True):
        ob = oracle_round(Fraction(float(o)), BF16, mode)
        rb = oracle_round(Fraction(float(r)), BF16, "rne")
        d = abs(int(np.searchsorted(grid, ob)) - int(np.searchsorted(grid, rb)))
        dist.append(d)
        wrong += d != 0
    assert m.bf16_out_max_ulp == max(dist)
    assert m.bf16_out_incorrect_frac == wrong / len(ref)
    assert 0 < wrong < len(ref)


def test_nonfinite_outputs_are_infinite_errors_and_masked_rows_are_left_out():
    ref = np.array([[1.0, 2.0], [np.nan, np.nan], [3.0, -1.0], [0.5, 0.5]])
    out = np.float32([[1.0, np.nan], [np.nan, np.nan], [3.0, -1.0], [0.5, 0.5]])
    mag = np.array([[1.0, 2.0], [0.0, 0.0], [3.0, 1.0], [1.0, 1.0]])
    m = error_metrics(out, ref, mag=mag)
    assert (m.n, m.n_nonfinite, m.n_ref_nonfinite) == (6, 1, 2)
    assert m.cond_err_max == math.inf and m.worst_index == (0, 1)
    assert m.rel_fro == math.inf and m.row_rel_max == math.inf and m.row_rel_median == 0.0
    assert m.bf16_out_max_ulp == math.inf and m.bf16_out_incorrect_frac == 1 / 6
    assert m.max_ulp_fp32 == 0.0  # the secondary fields are over the finite outputs
    assert m.hist_cond_err[-1] == 1


def test_zero_magnitude_means_exact_or_infinite():
    ref = np.array([0.0, 1.0])
    mag = np.array([0.0, 1.0])
    assert error_metrics(np.float32([0.0, 1.0]), ref, mag=mag).cond_err_max == 0.0
    assert error_metrics(np.float32([1e-30, 1.0]), ref, mag=mag).cond_err_max == math.inf


def test_lse_error_is_in_u_fp32_of_the_denominator():
    lse_ref = np.array([1.0, 2.0, -np.inf])  # a fully masked row is left out
    lse = np.array([1.0 + 3 * U_FP32, 2.0 - U_FP32, -np.inf])
    m = error_metrics(np.float32([1.0]), np.array([1.0]), mag=np.ones(1), lse=lse, lse_ref=lse_ref)
    assert m.lse_err_max == pytest.approx(3.0, rel=1e-9)
    m = error_metrics(
        np.float32([1.0]),
        np.array([1.0]),
        mag=np.ones(1),
        lse=np.array([np.nan]),
        lse_ref=np.array([0.5]),
    )
    assert m.lse_err_max == math.inf
    assert math.isnan(error_metrics(np.float32([1.0]), np.array([1.0]), mag=np.ones(1)).lse_err_max)


def test_error_metrics_refuses_bad_input():
    one = np.ones(3)
    with pytest.raises(ValueError, match="'out'"):
        error_metrics(np.ones(2), one, mag=one)
    with pytest.raises(ValueError, match="'mag'"):
        error_metrics(one, one, mag=np.ones(2))
    with pytest.raises(ValueError, match="'mag'"):
        error_metrics(one, one, mag=-one)
    with pytest.raises(ValueError, match="'lse'"):
        error_metrics(one, one, mag=one, lse=np.zeros(1))
    with pytest.raises(ValueError, match="'out_rounding'"):
        error_metrics(one, one, mag=one, out_rounding="up")
    d = error_metrics(np.float32(one), one, mag=one).to_dict()
    assert d["worst_index"] == [0] and d["cond_err_max"] == 0.0


def test_scale_bias_is_the_least_squares_scale_minus_one():
    rng = np.random.default_rng(8)
    ref = rng.standard_normal(300)
    out = np.float64(np.float32(ref * (1 + 5 * U_FP32)))  # over-scaled by 5 u, then rounded
    m = error_metrics(out, ref, mag=np.abs(ref) + 1)
    num = sum(Fraction(float(o)) * Fraction(float(r)) for o, r in zip(out, ref, strict=True))
    den = sum(Fraction(float(r)) ** 2 for r in ref)
    assert m.scale_bias == pytest.approx(float((num / den - 1) * 2**24), rel=1e-6)
    assert 4.5 < m.scale_bias < 5.5

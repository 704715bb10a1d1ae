"""Elementwise stages: correctly rounded FP32 exp, the polynomial exp, rna, casts, AMLA scalars."""

from __future__ import annotations

from fractions import Fraction

import mpmath
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from amla_numerics.flash import get_policy
from amla_numerics.flash.amla import amla_scalars
from amla_numerics.flash.stages import _exp32, cast, exp_cr, exp_poly, rna_int
from amla_numerics.formats import BF16, FP32
from tests.oracle import oracle_round
from tests.strategies import examples


def _mp_exp32(x: float) -> float:
    with mpmath.workprec(200):
        e = mpmath.exp(mpmath.mpf(x))
        # exact rational of the 200-bit value; FP32 hard cases need far fewer bits
        man, exp = e.man_exp
        frac = Fraction(man) * Fraction(2) ** exp if exp >= 0 else Fraction(man, 2**-exp)
    return oracle_round(frac, FP32, "rne")


f32 = st.floats(-104.0, 89.0, width=32)


@given(x=f32)
@example(x=0.0)
@example(x=float(np.float32(88.72283)))  # near FP32 overflow
@example(x=float(np.float32(-103.97)))  # subnormal result
@example(x=float(np.float32(-87.33655)))  # near the normal/subnormal boundary
@settings(max_examples=examples(300))
def test_exp_cr_is_correctly_rounded(x):
    got = exp_cr(np.float32(x))
    assert got.dtype == np.float32
    assert float(got) == _mp_exp32(float(np.float32(x)))


def test_exp_cr_hard_case_path_agrees_with_fast_path():
    """Force the mpmath path on every element: both paths must give the same bits."""
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.uniform(-100, 88, 200), [0.0, -np.inf, np.inf]]).astype(np.float32)
    assert np.array_equal(_exp32(x, force_mp=True), exp_cr(x))
    assert exp_cr(np.float32(-np.inf)) == 0 and np.isinf(exp_cr(np.float32(np.inf)))


@given(x=st.floats(-80.0, 80.0, width=32))
@example(x=45.84578323364258).via("LOG2E's own rounding error matters: above (|x| + 8) 2**-24")
@settings(max_examples=examples(200))
def test_exp_poly_error_bound(x):
    got = float(exp_poly(np.float32(x)))
    want = _mp_exp32(x)
    # argument error: the rounding of t = fl(x * LOG2E) and that of the constant LOG2E, each
    # up to |x| log2(e) 2**-24 in t (times ln 2 for exp), plus a few ulps of polynomial + Horner
    assert abs(got - want) <= (2 * abs(x) * 2.0**-24 + 8 * 2.0**-24) * want


@given(t=st.floats(-1e6, 1e6, width=32))
@example(t=2.5).via("tie away from zero")
@example(t=-2.5).via("negative tie")
@example(t=float(np.nextafter(np.float32(0.5), np.float32(0)))).via(
    "just below a half: t + 0.5 would round up"
)
def test_rna_int(t):
    a = abs(Fraction(t)) + Fraction(1, 2)
    w = a.numerator // a.denominator  # floor(|t| + 1/2), exactly
    want = w if t >= 0 else -w
    assert float(rna_int(np.float32(t))) == want


@given(x=st.floats(-(2.0**100), 2.0**100, width=32), mode=st.sampled_from(["rne", "rna", "rz"]))
def test_cast_to_bf16(x, mode):
    got = cast(np.float32([x]), "bf16", mode)
    assert got.dtype == np.float32
    assert float(got[0]) == oracle_round(Fraction(x), BF16, mode)


def test_amla_scalars_follow_the_kernel_formulas():
    pol = get_policy("ascend")
    m0 = np.float32([1.7, -0.3, 25.0])
    m1 = np.float32([2.9, -0.3, 40.0])
    s0 = amla_scalars(m0, None, None, pol, "amla", 1.5)
    s1 = amla_scalars(m1, s0.n, s0.cof, pol, "amla", 1.5)
    for m, s in ((m0, s0), (m1, s1)):
        # n = rna(-m / ln 2) in FP32; r within [2**-0.5, 2**0.5] up to rounding
        assert np.all(np.abs(s.n + m / np.log(2)) <= 0.5 + 1e-5)
        assert np.all((s.r > 0.70) & (s.r < 1.42))
        assert np.array_equal(s.r_hat, cast(s.r, "bf16", "rna"))
        assert np.array_equal(s.cof, s.r / s.r_hat)
    assert np.array_equal(s1.dn, s1.n - s0.n) and np.all(s1.dn <= 0)
    ratio = s0.cof / s1.cof
    eps = (ratio - np.float32(1)) * np.float32(1.5) + np.float32(1e-6)
    assert np.array_equal(s1.eps, eps)
    want_N = rna_int((np.maximum(s1.dn, np.float32(-30)) + eps) * np.float32(2**23)).astype(
        np.int64
    )
    assert np.array_equal(s1.N, want_N)
    nocomp = amla_scalars(m1, s0.n, s0.cof, pol, "amla_nocomp", 1.5)
    assert np.all(nocomp.eps == 0) and np.all(nocomp.N % 2**23 == 0)
    fp32r = amla_scalars(m1, s0.n, s0.cof, pol, "amla_fp32r", 1.5)
    assert np.array_equal(fp32r.r_hat, fp32r.r)


@pytest.mark.parametrize("bad", [np.int32([1]), np.float16([1.0])])
def test_exp_cr_refuses_other_dtypes(bad):
    with pytest.raises(TypeError, match="'x'"):
        exp_cr(bad)


@given(
    seed=st.integers(0, 2**32 - 1),
    scale_exp=st.sampled_from([-140, -126, -100, 0, 100, 127]),
    zeros=st.booleans(),
    shift=st.integers(-40, 2),
)
@settings(max_examples=examples(100))
def test_all_ok_shortcut_agrees_with_the_foundation_hazard_counts(seed, scale_exp, zeros, shift):
    from amla_numerics.exp2add import exp2_add_bits_hazards
    from amla_numerics.flash.amla import _all_ok_counts

    rng = np.random.default_rng(seed)
    with np.errstate(over="ignore"):  # 2**127 scale: some infinities, on purpose
        O = (rng.standard_normal((3, 5)) * 2.0**scale_exp).astype(np.float32)
    if zeros:
        O[1, 2] = 0.0
    N = (rng.integers(-(2**22), 2**22, (3, 1)) + shift * 2**23).astype(np.int64)
    N[0] = 0
    counts = _all_ok_counts(O, N)
    full = exp2_add_bits_hazards(O, N).counts
    if counts is None:
        assert sum(v for k, v in full.items() if k != "ok") > 0
    else:
        assert counts == full

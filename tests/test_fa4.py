"""FA4's softmax pieces against exact oracles: the FMA, the polynomial exp2 (bit for bit and
within its stated error bound), the log2-domain lazy rescale."""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from amla_numerics import flash
from amla_numerics.flash.fa4 import (
    FA4_EX2_COEFFS,
    FA4_EX2_POLY_ERR,
    FA4_EX2_REL_ERR,
    ex2_emu,
    fma32,
    softmax_scale_log2,
)
from amla_numerics.formats import BF16, FP32
from amla_numerics.rounding import round_to
from tests.oracle import oracle_round
from tests.test_flash_bitexact import ex2_fa4
from tests.tolerances import tol


def test_fma32_is_one_rounding_of_the_exact_value():
    rng = np.random.default_rng(0)
    a = (rng.standard_normal(3000) * np.exp2(rng.integers(-30, 30, 3000))).astype(np.float32)
    b = (rng.standard_normal(3000) * np.exp2(rng.integers(-30, 30, 3000))).astype(np.float32)
    c = (-(a.astype(np.float64) * b) * (1 + rng.standard_normal(3000) * 1e-6)).astype(np.float32)
    got = fma32(a, b, c)
    for ai, bi, ci, gi in zip(a, b, c, got, strict=True):
        exact = Fraction(float(ai)) * Fraction(float(bi)) + Fraction(float(ci))
        assert float(gi) == oracle_round(exact, FP32, "rne")


def test_ex2_emu_bit_exact_against_the_scalar_oracle():
    rng = np.random.default_rng(1)
    x = np.concatenate(
        [
            rng.uniform(-130, 8, 1500),
            [0.0, -0.0, 1.0, -1.0, 2.0**-140, -(2.0**-130), -126.0, -126.5, -127.0, -127.5],
            [-np.inf, 7.999999, -1e-8, 0.9999999],
        ]
    ).astype(np.float32)
    got = ex2_emu(x)
    want = np.array([ex2_fa4(xi) for xi in x], np.float32)
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))


def test_ex2_emu_error_within_its_bound_on_a_dense_grid():
    x = np.linspace(-126.0, 8.0, 2**20 + 7).astype(np.float32)
    rel = np.abs(ex2_emu(x).astype(np.float64) / np.exp2(x.astype(np.float64)) - 1)
    assert rel.max() <= FA4_EX2_REL_ERR
    assert rel.max() > 0.9 * FA4_EX2_POLY_ERR  # the stated error is attained, not loose
    f = np.linspace(0.0, 1.0, 2**18 + 1)
    c0, c1, c2, c3 = FA4_EX2_COEFFS
    poly = ((c3 * f + c2) * f + c1) * f + c0
    assert np.max(np.abs(poly / np.exp2(f) - 1)) <= FA4_EX2_POLY_ERR


def test_scale_constant_and_masked_scores():
    assert softmax_scale_log2(0.125) == np.float32(0.125 / np.log(2))
    assert ex2_emu(np.float32([-np.inf]))[0] == 0.0
    rng = np.random.default_rng(3)
    q, k, v = (round_to(rng.standard_normal(sh), BF16) for sh in ((3, 8), (50, 8), (50, 2)))
    mask = np.ones((3, 50), bool)
    mask[:, 10:20] = False
    a = flash.attention(q, k, v, "fa4", block_n=16, mask=mask, trace=True)
    assert np.all(np.isfinite(a.out))
    assert np.all(a.trace.p_underflow == 0)
    # the exact-policy run of the same recurrence is the reference (masked keys: P = +0)
    ref = flash.attention(q, k, v, "fa4", block_n=16, mask=mask, policy="exact")
    ref_c = flash.attention(q, k[mask[0]], v[mask[0]], "fa_fp32", block_n=16, policy="exact")
    assert np.max(np.abs(ref.out - ref_c.out)) <= tol("exact_policy") * np.abs(v).max()
    assert np.max(np.abs(a.out - ref.out)) <= tol("bf16_p_run") * np.abs(v).max()


def test_float_bias_takes_the_score_mod_path():
    """A finite additive bias: scores scaled and biased first, c = log2 e (FA4's score_mod);
    the run stays close to the exact-policy recurrence (same BF16 inputs)."""
    rng = np.random.default_rng(5)
    q, k, v = (round_to(rng.standard_normal(sh), BF16) for sh in ((3, 8), (40, 8), (40, 2)))
    bias = -0.1 * np.abs(np.arange(40)[None, :] - np.arange(3)[:, None] * 10.0)  # ALiBi-like
    a = flash.attention(q, k, v, "fa4", block_n=16, mask=bias)
    ref = flash.attention(q, k, v, "fa_fp32", block_n=16, mask=bias, policy="exact")
    assert np.isfinite(a.lse).all()
    # l: the polynomial's relative error per P (and FP32 sums): lse within 2 of it
    assert np.max(np.abs(a.lse - ref.lse)) <= 2 * FA4_EX2_REL_ERR
    assert np.max(np.abs(a.out - ref.out)) <= tol("bf16_p_run") * np.abs(v).max()

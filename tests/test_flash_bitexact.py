"""A second, independent implementation of docs/numerics.md: scalar loops, Fractions, mpmath.

It shares nothing with the package but the spec: products are exact Fraction sums rounded
by the test oracle, exp is mpmath at 200 bits rounded by the oracle, casts use the oracle,
the integer add uses Python ints. Under the ``"ascend"`` policy it must agree with
``flash.attention`` bit for bit, for every variant.
"""

from __future__ import annotations

import math
from fractions import Fraction

import ml_dtypes
import mpmath
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amla_numerics import flash
from amla_numerics.formats import BF16, E4M3, FP32
from tests.oracle import oracle_round
from tests.strategies import examples

F = Fraction
f32 = np.float32


def r32(x) -> np.float32:
    return f32(oracle_round(F(x), FP32, "rne"))


def bf16(x, mode="rna") -> np.float32:
    return f32(oracle_round(F(float(x)), BF16, mode))


def e4m3(x) -> np.float32:
    """The FP8 variants' P cast: E4M3, rne, saturating (docs/numerics.md section 5)."""
    return f32(oracle_round(F(float(x)), E4M3, "rne", saturate=True))


FA4_C = (
    F("1.0"),
    F("0.695146143436431884765625"),
    F("0.227564394474029541015625"),
    F("0.077119089663028717041015625"),
)


def fma32(a, b, c) -> np.float32:
    return r32(F(float(a)) * F(float(b)) + F(float(c)))


def ex2_fa4(x: np.float32) -> np.float32:
    """FA4's exp2 (docs/numerics.md section 13) from exact rationals and the bit pattern."""
    if abs(x) < 2.0**-126:
        x = f32(0)
    x = max(x, f32(-127))  # also -inf -> -127
    fx = F(float(x))
    n = fx.numerator // fx.denominator
    f = f32(float(fx - n))  # exact
    p = f32(FA4_C[3])
    for c in (FA4_C[2], FA4_C[1], FA4_C[0]):
        p = fma32(p, f, f32(c))
    bits = (int(np.array(p, f32).view(np.uint32)) + n * 2**23) % 2**32
    return np.array(bits, np.uint32).view(f32)[()]


def exp32(x: np.float32) -> np.float32:
    if x == -np.inf:
        return f32(0)
    with mpmath.workprec(200):
        e = mpmath.exp(mpmath.mpf(float(x)))
        man, ex = e.man_exp
    return r32(F(man) * F(2) ** ex)


def dot32(a, b) -> np.float32:
    return r32(sum(F(float(x)) * F(float(y)) for x, y in zip(a, b, strict=True)))


def pairwise(xs):
    xs = list(xs)
    while len(xs) > 1:
        nxt = [xs[i] + xs[i + 1] for i in range(0, len(xs) - 1, 2)]  # float32 adds
        if len(xs) % 2:
            nxt.append(xs[-1])
        xs = nxt
    return xs[0]


def rna_int(t: np.float32) -> np.float32:
    a = abs(F(float(t))) + F(1, 2)
    w = a.numerator // a.denominator
    return f32(w if t >= 0 else -w)


def int_add(x: np.float32, n: int) -> np.float32:
    bits = int(np.array(x, f32).view(np.uint32))
    return np.array((bits + n) % 2**32, np.uint32).view(f32)[()]


def is_hazard(x: np.float32, n: int) -> bool:
    if n == 0:
        return False
    mag = int(np.array(x, f32).view(np.uint32)) & 0x7FFFFFFF
    moved = mag + n
    return (mag >> 23) in (0, 255) or moved < 2**23 or moved >= 255 * 2**23


def scalar_attention(q, k, v, variant, scale, block, c=1.5, tau=None):
    """One row at a time, one element at a time, straight from docs/numerics.md."""
    if tau is None:  # skip_scale's threshold is in nats (6), lazy's in log2 units (8)
        tau = 6.0 if variant == "skip_scale" else 8.0
    m_rows, n_keys, dv = q.shape[0], k.shape[0], v.shape[1]
    sc, LN2 = f32(scale), f32(math.log(2))
    RECIP, LOG2E = f32(1) / LN2, f32(1 / math.log(2))
    blocks = (
        [(0, n_keys)]
        if variant == "naive"
        else [(lo, min(lo + block, n_keys)) for lo in range(0, n_keys, block)]
    )
    amla = variant.startswith("amla")
    fa4 = variant == "fa4"
    c_log2 = f32(scale * math.log2(math.e))
    pcast = e4m3 if variant in ("fa_fp8", "amla_fp8") else bf16
    out = np.zeros((m_rows, dv), f32)
    for i in range(m_rows):
        m = l = None
        O = [f32(0)] * dv
        n_prev = cof_prev = None
        for j, (lo, hi) in enumerate(blocks):
            s = [dot32(q[i], k[t]) * (f32(1) if fa4 else sc) for t in range(lo, hi)]
            mb = max(s)
            if j == 0:
                m_new, resc = mb, False
            else:
                cand = max(m, mb)
                if fa4:
                    g = (m - cand) * c_log2
                    resc = g < -f32(tau)
                    m_new = cand if resc else m
                elif variant == "lazy":
                    resc = (cand - m) * LOG2E > f32(tau)
                    m_new = cand if resc else m
                elif variant == "skip_scale":
                    resc = (cand - m) > f32(tau)
                    m_new = cand if resc else m
                else:
                    m_new, resc = cand, True
            if fa4:
                mc = m_new * c_log2
                p = [ex2_fa4(fma32(x, c_log2, -mc)) for x in s]
            else:
                p = [exp32(x - m_new) for x in s]
            rs = pairwise(p)
            if j == 0:
                l = rs
            else:
                a = (ex2_fa4(g) if resc else f32(1)) if fa4 else exp32(m - m_new)
                l = (a * l if resc else l) + rs
            if amla:
                n = rna_int(m_new * (-RECIP))
                r = exp32(((m_new * RECIP) + n) * LN2)
                r_hat = r if variant == "amla_fp32r" else bf16(r)
                cof = r / r_hat
                ratio = (f32(1) if cof_prev is None else cof_prev) / cof
                eps = (
                    f32(0)
                    if variant in ("amla_nocomp", "amla_exactcomp")
                    else (ratio - f32(1)) * f32(c) + f32(1e-6)
                )
                dn = f32(0) if n_prev is None else n - n_prev
                dnc = max(dn, f32(-30))
                A = [pcast(x * r_hat) for x in p]
                pv = [dot32(A, [v[t][col] for t in range(lo, hi)]) for col in range(dv)]
                if j == 0:
                    O = pv
                else:
                    N = int(rna_int((dnc + eps) * f32(2**23)))
                    for col in range(dv):
                        if variant == "amla_exactcomp":
                            O[col] = int_add(O[col], int(dnc) * 2**23) * ratio
                        elif variant == "amla_guarded" and (is_hazard(O[col], N) or dn < -30):
                            # the exact power of two (unclamped dn), rounded once
                            x = float(O[col] * ratio)  # one FP32 multiply
                            try:
                                y = math.ldexp(x, int(dn))  # exact in double here
                            except OverflowError:
                                y = math.copysign(math.inf, x)
                            O[col] = f32(y)
                        else:
                            O[col] = int_add(O[col], N)
                        O[col] = O[col] + pv[col]
                n_prev, cof_prev, last_r_hat = n, cof, r_hat
            else:
                P = [pcast(x) for x in p]
                pv = [dot32(P, [v[t][col] for t in range(lo, hi)]) for col in range(dv)]
                for col in range(dv):
                    if j == 0:
                        O[col] = pv[col]
                    else:
                        O[col] = ((a * O[col]) if resc else O[col]) + pv[col]
                    if variant == "fa_bf16":
                        O[col] = bf16(O[col], "rne")
            m = m_new
        den = l * last_r_hat if amla else l
        for col in range(dv):
            out[i, col] = O[col] / den
    return out


@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 20),
    block=st.integers(1, 8),
    mag=st.sampled_from([0.5, 2.0, 6.0]),
    variant=st.sampled_from(flash.VARIANTS),
)
@settings(max_examples=examples(30))
def test_emulator_matches_independent_scalar_implementation(seed, n, block, mag, variant):
    rng = np.random.default_rng(seed)
    bf = ml_dtypes.bfloat16
    q = (rng.standard_normal((2, 4)) * mag).astype(bf).astype(np.float32)
    k = (rng.standard_normal((n, 4)) * mag).astype(bf).astype(np.float32)
    k[:, 0] += np.linspace(0, mag * 2, n).astype(bf).astype(np.float32)  # a moving max
    k = k.astype(bf).astype(np.float32)
    k[0, 1] = 0.0
    k[-1, 2] = np.float32(2.0**-130)  # a BF16 subnormal
    v = rng.standard_normal((n, 3)).astype(bf).astype(np.float32)
    with np.errstate(all="ignore"):
        want = scalar_attention(q, k, v, variant, 0.5, block)
    got = flash.attention(q, k, v, variant, scale=0.5, block_n=block).out
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))
    # the same values as bfloat16 arrays (the emulator's bit-level fast paths)
    got_bf = flash.attention(
        q.astype(bf), k.astype(bf), v.astype(bf), variant, scale=0.5, block_n=block
    ).out
    assert np.array_equal(got_bf.view(np.uint32), want.view(np.uint32))


@pytest.mark.parametrize("variant", ["amla", "amla_guarded"])
def test_hazard_garbage_is_bit_exact_too(variant):
    """An all-zero V column and a moving max: the integer add's garbage, reproduced exactly."""
    rng = np.random.default_rng(4)
    bf = ml_dtypes.bfloat16
    q = np.ones((2, 4), np.float32)
    k = (
        (rng.standard_normal((24, 4)) * 0.3 + np.linspace(0, 3, 24)[:, None])
        .astype(bf)
        .astype(np.float32)
    )
    v = rng.standard_normal((24, 3)).astype(bf).astype(np.float32)
    v[:, 1] = 0
    with np.errstate(all="ignore"):
        want = scalar_attention(q, k, v, variant, 0.5, 6)
    res = flash.attention(q, k, v, variant, scale=0.5, block_n=6)
    assert res.hazards["zero"] > 0
    assert np.array_equal(res.out.view(np.uint32), want.view(np.uint32))


@pytest.mark.parametrize("variant", ["fa4", "fa_fp8", "amla_fp8"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_new_variants_match_the_scalar_implementation(variant, seed):
    """fa4 (polynomial exp2 on FMAs, log2-domain lazy rescale) and the FP8 P casts, with a
    max that grows by ~7 log2 units per 8-key block: fa4 rescales on some blocks only."""
    rng = np.random.default_rng(100 + seed)
    bf = ml_dtypes.bfloat16
    n = 37
    q = rng.standard_normal((2, 4)).astype(np.float32)
    q[:, 0] = 4.0  # score ramp 0.5 * 4 * 12 = 24 nats over the keys
    q = q.astype(bf).astype(np.float32)
    k = rng.standard_normal((n, 4)).astype(np.float32)
    k[:, 0] += np.linspace(0, 12, n).astype(np.float32)  # the max grows by ~40 log2 units
    k = k.astype(bf).astype(np.float32)
    v = rng.standard_normal((n, 3)).astype(bf).astype(np.float32)
    with np.errstate(all="ignore"):
        want = scalar_attention(q, k, v, variant, 0.5, 8)
    res = flash.attention(q, k, v, variant, scale=0.5, block_n=8, trace=True)
    assert np.array_equal(res.out.view(np.uint32), want.view(np.uint32))
    if variant == "fa4":
        assert res.trace.rescaled[1:].any() and not res.trace.rescaled[1:].all()

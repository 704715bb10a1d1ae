"""The ``skip_scale`` variant (DeepSeek's Ascend skip-scale rescale, tau in nats).

Oracles: a vectorised numpy implementation of docs/numerics.md written here (inputs chosen
so that every float64 dot product is exact, exp from mpmath rounded by the test oracle, the
P cast by the test oracle), ``fa_fp32`` itself at ``tau = 0`` (where the two must agree bit
for bit), and the closed-form count of saturated P elements on constructed score ramps.
"""

from __future__ import annotations

import math
from fractions import Fraction

import mpmath
import numpy as np
import pytest

from amla_numerics import flash
from amla_numerics.analysis.bounds import a_priori_bound, elementwise_bound
from amla_numerics.formats import BF16, E4M3, E5M2, FP32
from amla_numerics.pipeline.rescale import rescale_cost
from amla_numerics.variants import DEFAULT_SKIP_TAU, TAU_UNITS, default_tau, tau_log2
from tests.oracle import oracle_round

f32 = np.float32
_FMT = {"bf16": BF16, "e4m3": E4M3, "e5m2": E5M2}


def _round(x: np.ndarray, fmt, mode: str, saturate: bool = False) -> np.ndarray:
    flat = [oracle_round(Fraction(float(v)), fmt, mode, saturate=saturate) for v in x.ravel()]
    return np.array(flat, np.float64).reshape(x.shape)


def _exp32(x: np.ndarray) -> np.ndarray:
    out = np.empty(x.shape, f32)
    for idx, v in np.ndenumerate(x):
        if v == -np.inf:
            out[idx] = 0.0
            continue
        with mpmath.workprec(200):
            man, ex = mpmath.exp(mpmath.mpf(float(v))).man_exp
        out[idx] = oracle_round(Fraction(man) * Fraction(2) ** ex, FP32, "rne")
    return out


def _pairwise(p: np.ndarray) -> np.ndarray:
    cols = [p[:, i] for i in range(p.shape[1])]
    while len(cols) > 1:
        nxt = [cols[i] + cols[i + 1] for i in range(0, len(cols) - 1, 2)]
        if len(cols) % 2:
            nxt.append(cols[-1])
        cols = nxt
    return cols[0]


def numpy_skip_scale(q, k, v, scale, block, tau, p_cast="bf16", mode="rna", p_scale=1.0):
    """docs/numerics.md for ``skip_scale``, all rows at once; returns (out, saturations).

    Exactness: q, k are multiples of 1/4 in [-2, 2] with 4 columns and ``scale`` a power
    of two, so each score is exact in float64 and in FP32; P (8 or fewer significant bits,
    in [2**-30, 2**10]) times V (multiples of 1/8, 5 bits) summed over <= 16 keys spans
    well under 53 bits: the float64 P V sums are exact, rounded once to FP32.
    """
    n = k.shape[0]
    s_all = (q.astype(np.float64) @ k.T.astype(np.float64) * scale).astype(f32)
    m = l = o = None
    sats = 0
    for j, lo in enumerate(range(0, n, block)):
        s = s_all[:, lo : lo + block]
        mb = s.max(axis=1)
        if j == 0:
            m_new, resc = mb, np.zeros(mb.shape, bool)
        else:
            cand = np.maximum(m, mb)
            resc = (cand - m) > f32(tau)
            m_new = np.where(resc, cand, m)
        p = _exp32(s - m_new[:, None])
        rs = _pairwise(p)
        x = p * f32(p_scale) if p_scale != 1.0 else p
        fmt = _FMT[p_cast]
        pc = _round(x, fmt, mode, saturate=p_cast != "bf16")
        sats += int(np.count_nonzero(_round(x, fmt, mode) > fmt.max_finite))
        pv = (pc @ v[lo : lo + block].astype(np.float64)).astype(f32)
        if p_scale != 1.0:
            pv = pv / f32(p_scale)
        if j == 0:
            l, o = rs, pv
        else:
            a = _exp32(m - m_new)
            l = np.where(resc, a * l, l) + rs
            o = np.where(resc[:, None], a[:, None] * o, o) + pv
        m = m_new
    return o / l[:, None], sats


def _inputs(seed: int, n: int, ramp: float):
    rng = np.random.default_rng(seed)
    q = rng.integers(-8, 9, (3, 4)) / 4.0
    q[:, 0] = 2.0
    k = rng.integers(-8, 9, (n, 4)) / 4.0
    k[:, 0] = np.round(np.linspace(-2.0, -2.0 + ramp, n) * 4) / 4  # the max moves
    v = rng.integers(-16, 17, (n, 3)) / 8.0
    return q.astype(f32), k.astype(f32), v.astype(f32)


@pytest.mark.parametrize("tau", [0.0, 0.5, 2.0, 6.0])
@pytest.mark.parametrize("seed", [0, 1])
def test_bit_exact_against_numpy(seed, tau):
    q, k, v = _inputs(seed, 29, 4.0)
    with np.errstate(all="ignore"):
        want, _ = numpy_skip_scale(q, k, v, 0.5, 6, tau)
    res = flash.attention(q, k, v, "skip_scale", scale=0.5, block_n=6, tau=tau, trace=True)
    assert np.array_equal(res.out.view(np.uint32), want.view(np.uint32))
    assert res.config["tau"] == tau


@pytest.mark.parametrize(("p_cast", "p_scale"), [("e4m3", 1.0), ("e4m3", 4.0), ("e5m2", 256.0)])
def test_bit_exact_with_an_fp8_p_and_a_static_scale(p_cast, p_scale):
    q, k, v = _inputs(3, 31, 4.0)
    pol = flash.get_policy("ascend").replace(p_cast=p_cast, p_cast_rounding="rne", p_scale=p_scale)
    with np.errstate(all="ignore"):
        want, sats = numpy_skip_scale(q, k, v, 0.5, 5, 3.0, p_cast, "rne", p_scale)
    res = flash.attention(
        q, k, v, "skip_scale", scale=0.5, block_n=5, tau=3.0, policy=pol, trace=True
    )
    assert np.array_equal(res.out.view(np.uint32), want.view(np.uint32))
    assert int(res.trace.p_saturate.sum()) == sats


def test_default_threshold_is_six_nats():
    assert DEFAULT_SKIP_TAU == 6.0 and default_tau("skip_scale") == 6.0
    assert TAU_UNITS["skip_scale"] == "ln" and TAU_UNITS["lazy"] == "log2"
    q, k, v = _inputs(5, 24, 6.0)
    a = flash.attention(q, k, v, "skip_scale", scale=0.5, block_n=4)
    b = flash.attention(q, k, v, "skip_scale", scale=0.5, block_n=4, tau=6.0)
    assert a.config["tau"] == 6.0 and np.array_equal(a.out, b.out)
    # lazy's default is unchanged (8 log2 units)
    assert flash.attention(q, k, v, "lazy", scale=0.5, block_n=4).config["tau"] == 8.0


@pytest.mark.parametrize("policy", ["ascend", "cann", "exact"])
@pytest.mark.parametrize("masked", [False, True])
def test_tau_zero_is_fa_fp32_bit_for_bit(policy, masked):
    """tau = 0: a row skips only when its max did not grow, where fa_fp32 multiplies by
    exp(0) = 1 exactly; with masks (rows with no key yet) too."""
    rng = np.random.default_rng(7)
    q, k, v = (
        rng.standard_normal((4, 8)),
        rng.standard_normal((40, 8)),
        rng.standard_normal((40, 5)),
    )
    k[:, 0] += np.linspace(0, 6, 40)
    mask = rng.random((4, 40)) > 0.3 if masked else None
    if masked:
        mask[0, :20] = False  # a row whose first blocks are fully masked
    kw = dict(block_n=8, policy=policy, mask=mask)
    with np.errstate(all="ignore"):
        a = flash.attention(q, k, v, "skip_scale", tau=0.0, trace=True, **kw)
        b = flash.attention(q, k, v, "fa_fp32", **kw)
    assert np.array_equal(a.out.view(np.uint8), b.out.view(np.uint8))
    # a positive threshold skips some rescales and changes the result
    c = flash.attention(q, k, v, "skip_scale", tau=2.0, trace=True, **kw)
    assert c.trace.rescaled[1:].sum() < a.trace.rescaled[1:].sum()
    assert not np.array_equal(c.out, b.out)


def _ramp(growth: np.ndarray, n0: int = 8):
    """Block 0: scores 0; block 1: scores ``growth`` (each <= tau: no rescale), so
    P = exp(growth) against the stale max 0. q = e_0, k[:, 0] = the score (scale 1)."""
    n = n0 + growth.size
    q = np.zeros((1, 4))
    q[0, 0] = 1.0
    k = np.zeros((n, 4))
    k[n0:, 0] = growth
    v = np.ones((n, 2))
    return q, k, v


@pytest.mark.parametrize(
    ("p_cast", "p_scale", "mode"),
    [("e4m3", 1.0, "rne"), ("e4m3", 2.0, "rne"), ("e5m2", 64.0, "rne"), ("e4m3", 1.0, "rna")],
)
def test_saturation_count_matches_closed_form(p_cast, p_scale, mode):
    """Saturated P elements = #{g : e**g S above the cast's overflow threshold}: E4M3 (max
    448, rne: 464 rounds to the even 448, beyond saturates), E5M2 (57344, odd: the tie
    61440 overflows)."""
    fmt = _FMT[p_cast]
    growth = np.arange(4.0, 8.0, 0.0625)  # exact in BF16 (scores are rounded to BF16)
    q, k, v = _ramp(growth, 8)
    pol = flash.get_policy("ascend").replace(p_cast=p_cast, p_cast_rounding=mode, p_scale=p_scale)
    res = flash.attention(
        q, k, v, "skip_scale", scale=1.0, block_n=8, tau=8.0, policy=pol, trace=True
    )
    assert not res.trace.rescaled.any()
    ulp_top = 2.0 ** (math.floor(math.log2(fmt.max_finite)) - fmt.p + 1)
    thr = fmt.max_finite + ulp_top / 2  # the tie above max_finite
    x = np.exp(growth) * p_scale  # no value lies within 1e-6 of the threshold
    assert np.min(np.abs(x - thr) / thr) > 1e-6
    want = int(np.count_nonzero(x > thr))
    assert int(res.trace.p_saturate.sum()) == want > 0


def test_six_nats_is_saturation_free_for_e4m3():
    """The default tau: P <= e**6 = 403.4 < 448 (E4M3), zero saturations even on a ramp
    whose max grows by just under 6 nats per block."""
    growth = np.arange(0.0, 6.0, 0.125)
    q, k, v = _ramp(growth, 8)
    pol = flash.get_policy("ascend").replace(p_cast="e4m3", p_cast_rounding="rne")
    res = flash.attention(q, k, v, "skip_scale", scale=1.0, block_n=8, policy=pol, trace=True)
    assert int(res.trace.p_saturate.sum()) == 0
    # lazy (FA4) at tau = 8 log2 units: growth up to 5.5 nats (7.9 log2 units) is not
    # rescaled, P <= 2**8 = 256 fits E4M3 ...
    q, k, v = _ramp(np.arange(0.0, 5.5, 0.125), 8)
    lz = flash.attention(q, k, v, "lazy", scale=1.0, block_n=8, tau=8.0, policy=pol, trace=True)
    assert not lz.trace.rescaled.any() and int(lz.trace.p_saturate.sum()) == 0
    # ... but FA4's static scale 2**8 saturates it: e**g 2**8 > 464 for g > ln(464/256)
    pol8 = pol.replace(p_scale=256.0)
    sat = flash.attention(q, k, v, "lazy", scale=1.0, block_n=8, tau=8.0, policy=pol8, trace=True)
    want = int(np.count_nonzero(np.exp(np.arange(0.0, 5.5, 0.125)) * 256 > 464))
    assert int(sat.trace.p_saturate.sum()) == want > 30


def test_bound_uses_lazys_terms_with_tau_in_log2_units():
    b = a_priori_bound("skip_scale", head_dim=8, kv_len=64, block_n=16)
    lz = a_priori_bound("lazy", head_dim=8, kv_len=64, block_n=16, tau=tau_log2("skip_scale", 6.0))
    assert b.tau == lz.tau and b.tau * math.log(2) >= 6.0
    assert b.terms == lz.terms
    # E4M3 P saturation flagged from the closed form: e**6 (x2 slack) 1 <= 448? no: flagged
    pol = flash.get_policy("ascend").replace(p_cast="e4m3", p_cast_rounding="rne")
    assert (
        a_priori_bound("skip_scale", head_dim=8, kv_len=64, tau=2.0, policy=pol).p_saturate is False
    )
    assert (
        a_priori_bound("skip_scale", head_dim=8, kv_len=64, tau=7.0, policy=pol).p_saturate is True
    )


@pytest.mark.parametrize("tau", [0.0, 3.0, 6.0])
def test_error_within_the_bound(tau):
    rng = np.random.default_rng(11)
    q, k, v = (
        rng.standard_normal((4, 16)),
        rng.standard_normal((96, 16)),
        rng.standard_normal((96, 8)),
    )
    k[:, 0] += np.linspace(0, 10, 96)
    res = flash.attention(q, k, v, "skip_scale", block_n=16, tau=tau)
    ref = flash.attention(q, k, v, "naive", block_n=16, policy="exact").out
    b = a_priori_bound("skip_scale", head_dim=16, kv_len=96, block_n=16, tau=tau)
    eb = elementwise_bound(b, q, k, v, 16**-0.5)
    err = np.abs(res.out.astype(np.float64) - ref)
    assert np.all(err <= eb), (np.max(err / eb), np.unravel_index(np.argmax(err / eb), err.shape))
    assert np.max(err / eb) > 1e-4  # the bound is not vacuous


def test_pipeline_data_movement_o_in_ub_without_atomics():
    c = rescale_cost("skip_scale")
    assert c.design == "ub" and c.o_atomic_bytes == 0 and c.o_write_bytes == 0
    assert rescale_cost("skip_scale", rescale_prob=0.25).probability == 0.25
    with pytest.raises(ValueError, match="rescale_prob"):
        rescale_cost("amla", rescale_prob=0.25)

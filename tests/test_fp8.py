"""FP8 P V (fa_fp8, amla_fp8), the static P scale, the KV order: against exact oracles.

The cast is checked exhaustively around every E4M3/E5M2 code (each code, each midpoint and
its float32 neighbours, the overflow boundary) against :mod:`tests.oracle` (Fractions);
the whole ``fa_fp8`` recurrence against a scalar re-implementation of docs/numerics.md
written with Fractions (products and sums) and mpmath (exp), bit for bit, trace counts
included.
"""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction

import mpmath
import numpy as np
import pytest

from amla_numerics import flash
from amla_numerics.analysis.sinks import sink_workload
from amla_numerics.flash.fp8 import p_cast_stage, remove_p_scale, variant_policy
from amla_numerics.flash.policy import Policy, get_policy
from amla_numerics.flash.stages import cast_saturating
from amla_numerics.formats import BF16, E4M3, E5M2, FP32
from amla_numerics.rounding import round_to
from amla_numerics.variants import AMLA_VARIANTS, FP8_P_VARIANTS, VARIANTS
from tests.oracle import oracle_round, pattern_values
from tests.tolerances import tol

FMTS = {"e4m3": E4M3, "e5m2": E5M2}


def _probe_values(fmt) -> np.ndarray:
    """Every finite code, every midpoint, their float32 neighbours, and the overflow zone."""
    codes = np.unique(np.abs(pattern_values(fmt)[np.isfinite(pattern_values(fmt))]))
    mids = (codes[:-1] + codes[1:]) / 2
    top = fmt.max_finite
    extra = [top + top * 2.0**-fmt.p, top * 1.5, top * 4, 1e30, 2.0**-200]
    base = np.concatenate([codes, mids, [codes[1] / 2, codes[1] / 4], extra]).astype(np.float32)
    up = np.nextafter(base, np.float32(np.inf))
    down = np.nextafter(base, np.float32(0))
    v = np.unique(np.concatenate([base, up, down]))
    return np.concatenate([v, -v, np.float32([np.inf, -np.inf])])


@pytest.mark.parametrize("fmt", sorted(FMTS))
@pytest.mark.parametrize("mode", ["rne", "rna", "rz"])
def test_saturating_cast_exhaustive_around_every_code(fmt, mode):
    x = _probe_values(FMTS[fmt])
    y, sat = cast_saturating(x, fmt, mode)
    assert y.dtype == np.float32
    for xi, yi, si in zip(x.tolist(), y.tolist(), sat.tolist(), strict=True):
        if math.isinf(xi):
            want_sat = True
            want = math.copysign(FMTS[fmt].max_finite, xi)
        else:
            plain = oracle_round(Fraction(xi), FMTS[fmt], mode)
            want_sat = not math.isfinite(plain)
            want = oracle_round(Fraction(xi), FMTS[fmt], mode, saturate=True)
        assert (yi, si) == (want, want_sat), (xi, yi, si, want, want_sat)


def test_p_cast_stage_scale_and_counts_against_fractions():
    rng = np.random.default_rng(3)
    x = np.exp(-rng.uniform(0, 20, size=(3, 200))).astype(np.float32)
    x[0, :5] = 0.0
    x[1, :3] = 1.0
    for fmt in ("e4m3", "e5m2"):
        for s in (1.0, 3.0, 256.0, 448.0, 2.0**20):
            pol = get_policy("ascend").replace(p_cast=fmt, p_cast_rounding="rne", p_scale=s)
            st = p_cast_stage(x, pol)
            xs = x * np.float32(s)  # one float32 multiply: the spec's fl(X * S)
            want = np.empty_like(x)
            under = np.zeros(3, int)
            satn = np.zeros(3, int)
            for idx, v in np.ndenumerate(xs):
                plain = oracle_round(Fraction(float(v)), FMTS[fmt], "rne")
                want[idx] = oracle_round(Fraction(float(v)), FMTS[fmt], "rne", saturate=True)
                satn[idx[0]] += not math.isfinite(plain)
                under[idx[0]] += x[idx] != 0 and want[idx] == 0
            np.testing.assert_array_equal(st.values, want)
            np.testing.assert_array_equal(st.underflow, under)
            np.testing.assert_array_equal(st.saturate, satn)
            back = remove_p_scale(np.float32([1.0, 7.0]), pol)
            np.testing.assert_array_equal(back, np.float32([1.0, 7.0]) / np.float32(s))


def test_policy_fields_validate_and_round_trip():
    pol = get_policy("ascend").replace(p_cast="e5m2", p_scale=448.0, kv_order="reverse")
    assert Policy.from_json(pol.to_json()) == pol
    assert dataclasses.replace(get_policy("ascend"), p_cast="e4m3").p_cast == "e4m3"
    for bad in (0.0, -1.0, math.nan, math.inf, True, "2"):
        with pytest.raises(ValueError, match="p_scale"):
            get_policy("ascend").replace(p_scale=bad)
    with pytest.raises(ValueError, match="kv_order"):
        get_policy("ascend").replace(kv_order="backward")
    with pytest.raises(ValueError, match="p_cast"):
        get_policy("ascend").replace(p_cast="e3m4")


def test_variant_facts():
    assert set(FP8_P_VARIANTS) <= set(VARIANTS)
    assert "amla_fp8" in AMLA_VARIANTS and "fa_fp8" not in AMLA_VARIANTS
    asc = get_policy("ascend")
    assert variant_policy(asc, "fa_fp8") == asc.replace(p_cast="e4m3", p_cast_rounding="rne")
    assert variant_policy(asc, "amla") is asc
    keep = asc.replace(p_cast="e5m2", p_cast_rounding="rz")
    assert variant_policy(keep, "amla_fp8") is keep


# ----------------------------------------------------------------- scalar oracle of fa_fp8


def _f32(x) -> np.float32:
    return np.float32(x)


def _exp_oracle(x: np.float32) -> np.float32:
    if np.isneginf(x):
        return _f32(0.0)
    with mpmath.workprec(200):
        return round_to(mpmath.exp(mpmath.mpf(float(x))), FP32)[()]


def _dot_fp32(a, b) -> np.float32:
    """The exact sum of exact products, rounded once to FP32 (the "exact" model)."""
    s = sum(
        (Fraction(float(x)) * Fraction(float(y)) for x, y in zip(a, b, strict=True)), Fraction(0)
    )
    return _f32(oracle_round(s, FP32, "rne"))


def _pairwise(xs: list[np.float32]) -> np.float32:
    while len(xs) > 1:
        nxt = [_f32(xs[i] + xs[i + 1]) for i in range(0, len(xs) - 1, 2)]
        if len(xs) % 2:
            nxt.append(xs[-1])
        xs = nxt
    return xs[0]


def _oracle_fa_fp8(q, k, v, scale, block, s_p, order, fmt):
    """docs/numerics.md sections 1-7 for ``fa_fp8``, one row at a time, scalar by scalar."""
    qb = np.asarray(round_to(q, BF16), np.float64)
    kb = np.asarray(round_to(k, BF16), np.float64)
    vb = np.asarray(round_to(v, BF16), np.float64)
    n, dv = kb.shape[0], vb.shape[1]
    blocks = [(lo, min(lo + block, n)) for lo in range(0, n, block)]
    if order == "reverse":
        blocks = blocks[::-1]
    sc, sp = _f32(scale), _f32(s_p)
    outs, unders = [], []
    for row in qb:
        m = l = None
        o = [_f32(0)] * dv
        under_row = []
        for j, (lo, hi) in enumerate(blocks):
            s = [_f32(_dot_fp32(row, kb[t]) * sc) for t in range(lo, hi)]
            m_new = max(s) if j == 0 else max(m, max(s))
            p = [_exp_oracle(_f32(x - m_new)) for x in s]
            rs = _pairwise(list(p))
            if j == 0:
                l = rs
            else:
                a = _exp_oracle(_f32(m - m_new))
                l = _f32(_f32(a * l) + rs)
            pc, cnt = [], 0
            for x in p:
                xs = _f32(x * sp) if s_p != 1 else x
                c = oracle_round(Fraction(float(xs)), FMTS[fmt], "rne", saturate=True)
                cnt += x != 0 and c == 0
                pc.append(c)
            under_row.append(cnt)
            pv = [_dot_fp32(pc, vb[lo:hi, col]) for col in range(dv)]
            if s_p != 1:
                pv = [_f32(y / sp) for y in pv]
            if j == 0:
                o = pv
            else:
                o = [_f32(_f32(a * oc) + y) for oc, y in zip(o, pv, strict=True)]
            m = m_new
        outs.append([_f32(oc / l) for oc in o])
        unders.append(under_row)
    return np.array(outs, np.float32), np.array(unders).T


@pytest.mark.parametrize(
    ("s_p", "order", "fmt"),
    [(1.0, "forward", "e4m3"), (448.0, "reverse", "e4m3"), (256.0, "forward", "e5m2")],
)
def test_fa_fp8_bit_exact_against_scalar_oracle(s_p, order, fmt):
    w = sink_workload(9.0, head_dim=8, kv_len=40, rows=2, n_sinks=2, seed=5)
    v = w.v[:, :3]
    pol = get_policy("ascend").replace(
        p_cast=fmt, p_cast_rounding="rne", p_scale=s_p, kv_order=order
    )
    res = flash.attention(w.q, w.k, v, "fa_fp8", scale=w.scale, block_n=16, policy=pol, trace=True)
    want, under = _oracle_fa_fp8(w.q, w.k, v, w.scale, 16, s_p, order, fmt)
    np.testing.assert_array_equal(res.out, want)
    np.testing.assert_array_equal(res.trace.p_underflow, under)
    assert res.config["policy"]["p_cast"] == fmt


def test_amla_fp8_is_amla_under_the_fp8_policy():
    w = sink_workload(6.0, head_dim=16, kv_len=300, rows=3, seed=1)
    pol = get_policy("ascend").replace(p_cast="e4m3", p_cast_rounding="rne")
    a = flash.attention(w.q, w.k, w.v, "amla_fp8", scale=w.scale, block_n=64, trace=True)
    b = flash.attention(w.q, w.k, w.v, "amla", scale=w.scale, block_n=64, policy=pol, trace=True)
    np.testing.assert_array_equal(a.out, b.out)
    np.testing.assert_array_equal(a.trace.p_underflow, b.trace.p_underflow)
    assert a.hazards == b.hazards


def test_reverse_order_recurrence_matches_reference_under_exact_policy():
    from amla_numerics import reference

    w = sink_workload(10.0, head_dim=16, kv_len=200, rows=3, seed=2)
    ref = reference.attention(w.q, w.k, w.v, w.scale, method="auto")
    pol = get_policy("exact").replace(kv_order="reverse")
    for variant in ("fa_fp32", "fa_fp8", "amla", "amla_fp8", "lazy"):
        res = flash.attention(w.q, w.k, w.v, variant, scale=w.scale, block_n=32, policy=pol)
        assert np.max(np.abs(res.out - ref)) <= tol("exact_policy") * np.abs(ref).max(), variant


def test_sinks_underflow_forward_not_reverse():
    """A sink 14 nats up in block 0: forward, most later E4M3 probabilities (< 2**-10 after
    the sink set the max) underflow; reverse, each block's P is taken against its own max."""
    w = sink_workload(14.0, head_dim=32, kv_len=512, rows=4, seed=0)
    pol = get_policy("ascend").replace(p_scale=448.0)
    fwd = flash.attention(
        w.q, w.k, w.v, "fa_fp8", scale=w.scale, block_n=128, trace=True, policy=pol
    )
    rev = flash.attention(
        w.q,
        w.k,
        w.v,
        "fa_fp8",
        scale=w.scale,
        block_n=128,
        trace=True,
        policy=pol.replace(kv_order="reverse"),
    )
    # forward: exp(-14 + 3.5) * 448 < 2**-10 * ... most of the 508 ordinary keys are lost
    assert fwd.trace.p_underflow.sum(axis=0).min() > 400
    # reverse: ordinary blocks see their own max; only the sink block (visited last) can
    # underflow, and the ordinary keys' rescale happens on O in FP32
    assert rev.trace.p_underflow[:-1].sum() == 0
    assert fwd.trace.p_saturate.sum() == 0 and rev.trace.p_saturate.sum() == 0


# ------------------------------------------------------------- bounds on adversarial inputs


@pytest.mark.parametrize("variant", ["fa_fp8", "amla_fp8", "lazy", "fa4"])
@pytest.mark.parametrize("delta", [0.0, 8.0, 16.0])
@pytest.mark.parametrize(
    ("s_p", "order"), [(1.0, "forward"), (448.0, "reverse"), (4096.0, "forward"), (3.0, "forward")]
)
def test_measured_error_within_bound_fp8_adversarial(variant, delta, s_p, order):
    """Sinks (massive underflow forward), saturating scales (4096 * P > 448), a non power
    of two scale, lazy's stale P up to 2**8 cast to E4M3: error <= the a priori bound."""
    from amla_numerics import reference
    from amla_numerics.analysis.bounds import a_priori_bound, elementwise_bound

    w = sink_workload(delta, head_dim=32, kv_len=600, rows=4, seed=int(delta) + 1)
    pol = get_policy("ascend").replace(
        p_cast="e4m3", p_cast_rounding="rne", p_scale=s_p, kv_order=order
    )
    ref = reference.attention(w.q, w.k, w.v, w.scale, method="auto")
    res = flash.attention(w.q, w.k, w.v, variant, scale=w.scale, block_n=128, policy=pol)
    b = a_priori_bound(variant, head_dim=32, kv_len=600, block_n=128, policy=pol)
    det = elementwise_bound(b, w.q, w.k, w.v, w.scale)
    err = np.abs(np.asarray(res.out, np.float64) - ref)
    assert np.all(np.isfinite(det))
    assert np.all(err <= det), float(np.max(err / det))
    if s_p == 4096.0:
        assert b.p_saturate


def test_fp8_bound_terms():
    from amla_numerics.analysis.bounds import a_priori_bound

    u = 2.0**-24
    b = a_priori_bound("fa_fp8", head_dim=64, kv_len=1024)
    assert b.u_cast == 2.0**-4 and b.sigma_cast == 2.0**-9 and not b.p_saturate
    pol = get_policy("ascend").replace(p_scale=256.0)
    b = a_priori_bound("fa_fp8", head_dim=64, kv_len=1024, policy=pol)
    assert b.sigma_cast == 2.0**-17 and b.u_cast == 2.0**-4 + 2 * u * (1 + 2.0**-4)
    assert b.p_scale_abs == 2.0**-149
    b = a_priori_bound("amla_fp8", head_dim=64, kv_len=1024, policy=pol.replace(p_scale=448.0))
    assert b.p_saturate  # 448 * r^ can exceed 448
    assert not a_priori_bound("amla_fp8", head_dim=64, kv_len=1024, policy=pol).p_saturate
    assert a_priori_bound("fa_fp32", head_dim=64, kv_len=1024).sigma_cast == 2.0**-133
    assert a_priori_bound("fa_fp8", head_dim=8, kv_len=8, policy="exact").sigma_cast == 0.0
    rev = a_priori_bound("fa_fp8", head_dim=8, kv_len=8, policy=pol.replace(kv_order="reverse"))
    assert rev.kv_order == "reverse"


def test_reverse_order_within_splits_under_exact_policy():
    """kv_order='reverse' with split-KV: each split visits its blocks last to first; the
    "exact" recurrences still reach the certified reference."""
    from amla_numerics import reference

    w = sink_workload(10.0, head_dim=16, kv_len=300, rows=3, seed=4)
    ref = reference.attention(w.q, w.k, w.v, w.scale, method="auto")
    pol = get_policy("exact").replace(kv_order="reverse")
    for variant in ("fa_fp8", "amla_fp8", "fa4"):
        res = flash.attention(
            w.q, w.k, w.v, variant, scale=w.scale, block_n=32, policy=pol, splits=3
        )
        assert np.max(np.abs(res.out - ref)) <= tol("exact_policy") * np.abs(ref).max(), variant

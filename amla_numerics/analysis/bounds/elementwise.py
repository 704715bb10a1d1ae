"""The bound evaluated on inputs: :func:`elementwise_bound`, per output element.

Reads the exact scores to find the KV blocks where the running max can change, sums each
key's stage terms into the numerator's and denominator's relative weight errors, and adds
the clamp, the division and the underflow terms (``docs/bounds.md`` sections 1-7).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from amla_numerics.analysis.bounds.arith import _F64_SLACK, _LN2, LAMBDA, _prob_scale
from amla_numerics.analysis.bounds.arrays import (
    _after,
    _blocked,
    _times,
    _to_keys,
    _weighted_sum,
)
from amla_numerics.analysis.bounds.inputs import BoundInputs, _reverse_keys, bound_inputs
from amla_numerics.analysis.bounds.pcast import _cast_abs
from amla_numerics.analysis.bounds.rescale import _cof_quotients, _dn_coef, _rho_a, _work_constants
from amla_numerics.analysis.bounds.result import Bound
from amla_numerics.analysis.bounds.scores import score_error
from amla_numerics.formats import get_format
from amla_numerics.variants import spec

__all__ = ["elementwise_bound"]


def elementwise_bound(
    bound: Bound,
    q: Any,
    k: Any = None,
    v: Any = None,
    scale: float | None = None,
    *,
    kind: str = "deterministic",
    mask: Any = None,
    causal: bool = False,
) -> np.ndarray:
    """Evaluate ``bound`` on inputs: an absolute error bound for every output element.

    Parameters
    ----------
    bound : Bound
        From :func:`a_priori_bound`.
    q, k, v : array_like
        ``(M, d)``, ``(N, d)``, ``(N, dv)`` (any float dtype; leading dims broadcast).
        Or pass a :class:`BoundInputs` as ``q`` alone, to evaluate several bounds on the
        same inputs without recomputing their statistics.
    scale : float, optional
        The softmax scale (with arrays; default ``1/sqrt(d)``).
    kind : {"deterministic", "probabilistic"}
        See the Notes of :func:`a_priori_bound`.
    mask, causal
        With arrays: the attention mask, as :func:`amla_numerics.flash.attention` reads it.

    Returns
    -------
    numpy.ndarray
        float64, shape ``(..., M, dv)``, never NaN: ``+inf`` on rows with no attended key
        (their output is undefined) and where a weight's relative error bound exceeds
        ``e**709`` (scores beyond ~1e31) or any term overflows float64.

    Notes
    -----
    The exact scores decide, per row and KV block, whether the running max can change
    (near-ties count as changes); the weights and sums are evaluated in float64 (relative
    error ~1e-13, far below every term) and the bound is then inflated by ``1 + 2**-20``.
    """
    if kind not in ("deterministic", "probabilistic"):
        raise ValueError(
            f"argument 'kind' must be 'deterministic' or 'probabilistic', got {kind!r}"
        )
    if not isinstance(bound, Bound):
        raise TypeError(f"argument 'bound' must be a Bound, got {type(bound).__name__}")
    if isinstance(q, BoundInputs):
        x = q
    elif k is None or v is None:
        raise TypeError("pass q, k, v (and scale), or a BoundInputs as q alone")
    else:
        x = bound_inputs(q, k, v, scale, mask=mask, causal=causal)
    if x.kv_len != bound.kv_len or x.head_dim != bound.head_dim:
        raise ValueError(
            f"inputs (d={x.head_dim}, N={x.kv_len}) do not match the bound "
            f"(d={bound.head_dim}, N={bound.kv_len})"
        )
    if bound.kv_order == "reverse" and bound.blocks > 1:
        x = _reverse_keys(x, bound.blocks * bound.block_n)
    # scores so large that a term overflows float64 make the bound +inf: every undefined
    # intermediate (inf - inf, 0 / 0, 0 * inf) arises only where a term is already +inf
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        total = _evaluate(bound, x, kind == "probabilistic")
    return np.where(np.isnan(total), np.inf, total)


def _evaluate(b: Bound, x: BoundInputs, prob: bool) -> np.ndarray:
    u, n_keys = b.u_work, x.kv_len
    s, w = x.s, x.w
    fin = np.isfinite(s)  # attended keys
    s0 = np.where(fin, s, 0.0)
    sp = spec(b.variant)
    amla = sp.is_amla
    lazy = sp.stale_max is not None  # a stale max: P up to 2**tau

    def count(n: np.ndarray | float) -> np.ndarray | float:
        """n roundings of size u: n (deterministic) or LAMBDA sqrt(n) (probabilistic)."""
        return np.minimum(n, LAMBDA * np.sqrt(n)) if prob else n

    e, s_qk = score_error(b, x, prob)
    E = np.max(e, axis=-1, keepdims=True)  # (..., M, 1)
    any_key = np.any(fin, axis=-1, keepdims=True)
    smax = np.max(np.where(fin, s, -np.inf), axis=-1, keepdims=True)
    smax0 = np.where(any_key, smax, 0.0)

    # --- per block: can the running max change? bounds of m_j
    t_blk = b.blocks
    bn = b.block_n if sp.tiled else n_keys
    hi_blk = np.max(_blocked(np.where(fin, s + e, -np.inf), t_blk, bn, -np.inf), axis=-1)
    lo_blk = np.max(_blocked(np.where(fin, s - e, -np.inf), t_blk, bn, -np.inf), axis=-1)
    m_hi = np.maximum.accumulate(hi_blk, axis=-1)  # m_j <= m_hi_j
    m_lo = np.maximum.accumulate(lo_blk, axis=-1)  # m_j >= m_lo_j
    chg = np.zeros(hi_blk.shape, dtype=bool)
    chg[..., 1:] = hi_blk[..., 1:] > m_lo[..., :-1]
    chg_f = chg.astype(np.float64)
    chg_after = _after(chg_f)  # (..., M, T): change blocks after block b
    later = np.arange(t_blk - 1, -1, -1, dtype=np.float64)  # blocks after block b
    nochg_after = later - chg_after
    # sum_{j > b} |dm_j| <= m_T - m_b (monotone); lazy's stale max trails by <= tau ln 2
    with np.errstate(invalid="ignore"):
        d_after = np.where(
            (chg_after > 0) & np.isfinite(m_lo),
            m_hi[..., -1:] - m_lo + (b.tau * _LN2 * (1.0 + 4 * u) if lazy else 0.0),
            0.0,
        )
    n_chg_row = np.sum(chg_f, axis=-1, keepdims=True)

    # --- AMLA: n at both ends of every jump, the clamp, the compensation mismatch
    rho_key: Any = 0.0
    dn_key: Any = 0.0
    logk_key: np.ndarray | None = None
    if amla:
        consts = _work_constants(b.work)
        dt = consts["dtype"]
        n_of = consts["n_of"]
        with np.errstate(over="ignore", invalid="ignore"):
            lo_w = np.asarray(m_lo, dtype=dt)  # round to the work format, then outward
            lo_w = np.where(lo_w < m_lo, np.nextafter(lo_w, dt(np.inf)), lo_w)
            hi_w = np.asarray(m_hi, dtype=dt)
            hi_w = np.where(hi_w > m_hi, np.nextafter(hi_w, dt(-np.inf)), hi_w)
        started = np.isfinite(m_hi)  # some attended key in blocks <= j
        n_hi = np.where(started, n_of(lo_w), 0.0)  # n is non-increasing in m
        n_lo = np.where(started, n_of(hi_w), 0.0)
        dn_lo = np.zeros_like(n_lo)
        dn_hi = np.zeros_like(n_lo)
        dn_lo[..., 1:] = n_lo[..., 1:] - n_hi[..., :-1]
        dn_hi[..., 1:] = n_hi[..., 1:] - n_lo[..., :-1]
        old = np.zeros_like(chg)
        old[..., 1:] = started[..., :-1]  # keys before block j exist
        dn_abs = np.where(chg & old, np.maximum(-dn_lo, dn_hi), 0.0)
        if b.dn_clamp is not None:
            dn_abs = np.minimum(dn_abs, abs(b.dn_clamp))
        dn_max = np.max(dn_abs, axis=-1, keepdims=True)
        absm = np.max(np.where(fin, np.abs(s) + e, 0.0), axis=-1, keepdims=True)
        eta = b.eta_slope * absm + b.eta_const
        h_fac = np.exp(2.0 * eta)  # H = (1 + eta_{j-1}) / (1 + eta_j) <= e**(2 eta)
        q_lo, q_hi = _cof_quotients(b, consts, lo_w, hi_w, n_lo, n_hi, started)
        rho = (1.0 + _rho_a(b, dn_max, q_lo, q_hi)) * h_fac - 1.0  # (..., M, T)
        rho_key = _to_keys(_after(np.where(chg, rho, 0.0)), bn, n_keys)
        dn_key = _to_keys(_after(dn_abs), bn, n_keys) * (_dn_coef(b, dn_max) * h_fac)
        if b.dn_clamp is not None:
            clamped = chg & old & (dn_lo < b.dn_clamp)
            if clamped.any():
                logk = np.where(clamped, (b.dn_clamp - dn_lo) * _LN2, 0.0)
                logk_key = _to_keys(_after(logk), bn, n_keys)

    # --- per-key first-order relative terms: t = t_ind (per key) + t_blk (per block)
    #     + t_sys (systematic); numerator and denominator
    span = np.where(fin, smax0 - s0, 0.0) + E + e + (b.tau * _LN2 * (1.0 + 4 * u) if lazy else 0.0)
    e_sys = (2.0 * u + u * u) * np.abs(s_qk)  # the scale's rounding (and the product's): linear
    common_ind = e - e_sys + (u + b.exp_slope) * span + b.exp_u
    v_in = 0.0 if b.pv_in in x.v_formats else get_format(b.pv_in).unit_roundoff
    num_ind = common_ind + b.terms["fold"] + b.u_cast + v_in
    blk_idx = np.arange(n_keys) // bn
    own = (blk_idx > 0).astype(np.float64)  # key i's tile is added to an existing O
    pv = _prob_scale(b.pv_gamma, bn, u) if prob and not b.pv_biased else b.pv_gamma
    rowsum = _prob_scale(b.rowsum_gamma, bn, u) if prob else b.rowsum_gamma
    ca = _to_keys(chg_after, bn, n_keys)
    na = _to_keys(nochg_after, bn, n_keys)
    da = _to_keys(d_after, bn, n_keys)
    # a_j = exp(fl(m_{j-1} - m_j)) at change blocks: exp_u + (u + exp_slope) |dm_j| each
    a_err = ca * b.exp_u + (u + b.exp_slope) * da
    num_blk: Any
    den_blk: Any
    num_sys: Any
    den_sys: Any
    if not sp.tiled:
        num_blk = np.full_like(s0, pv)
        den_blk = np.full_like(s0, rowsum)
        num_sys = np.zeros_like(s0)
        den_sys = np.zeros_like(s0)
    elif amla:
        num_blk = pv + count(own) * u + count(na + ca) * u
        den_blk = rowsum + count(own) * u + count(na) * u + count(ca) * 2.0 * u
        num_sys = na * b.terms["bias_step"] + rho_key + dn_key
        den_sys = a_err
    else:  # fa_fp32, fa_bf16, lazy: a_j scales O and l alike, but not the new keys
        later_k = na + ca
        num_blk = pv + count(own) * u + count(na) * u + count(ca) * 2.0 * u
        num_blk = num_blk + count(later_k + 1.0) * b.u_o
        den_blk = rowsum + count(own) * u + count(na) * u + count(ca) * 2.0 * u
        num_sys = a_err
        den_sys = a_err
    num_sys = num_sys + e_sys
    den_sys = den_sys + e_sys
    t_num = num_ind + num_blk + num_sys
    t_den = common_ind + den_blk + den_sys
    with np.errstate(over="ignore"):
        alpha = np.where(fin, np.expm1(t_num), 0.0)
        if b.p_saturate:  # a saturated cast lies in [0, X]: (1 + alpha) doubles
            alpha = np.where(fin, 1.0 + 2.0 * alpha, 0.0)
        beta = np.where(fin, np.expm1(t_den), 0.0)

    # --- assemble: numerator, denominator, the clamp, the division
    wa = _times(w, alpha)
    wa = np.where(fin & (w == 0) & np.isinf(alpha), np.inf, wa)
    wb = _times(w, beta)
    wb = np.where(fin & (w == 0) & np.isinf(beta), np.inf, wb)
    if prob:
        infl_n = np.where(t_num > 0, alpha / np.where(t_num > 0, t_num, 1.0), 1.0)
        infl_d = np.where(t_den > 0, beta / np.where(t_den > 0, t_den, 1.0), 1.0)
        wi = _times(w, num_ind * infl_n)
        quad = LAMBDA * np.sqrt(_weighted_sum(wi * wi, x.v_sq))
        bnum = np.minimum(_weighted_sum(wi, x.v_abs), quad)
        bnum = bnum + _weighted_sum(_times(w, (num_blk + num_sys) * infl_n), x.v_abs)
        wdi = _times(w, common_ind * infl_d)
        sb_ind = np.minimum(
            np.sum(wdi, axis=-1, keepdims=True),
            LAMBDA * np.sqrt(np.sum(wdi * wdi, axis=-1, keepdims=True)),
        )
        sb_p = sb_ind + np.sum(_times(w, (den_blk + den_sys) * infl_d), axis=-1, keepdims=True)
    else:
        bnum = _weighted_sum(wa, x.v_abs)
    sb = np.sum(wb, axis=-1, keepdims=True)  # sum_i w_i |beta_i|
    lse = x.lse if x.lse is not None else np.zeros_like(E)
    with np.errstate(over="ignore", invalid="ignore"):
        # D >= e**-E / L: the computed l is >= 1 and the exact L' <= L e**E
        floor = np.exp(-E - np.where(any_key, lse - smax0, 0.0))
    den_factor = np.maximum(1.0 - sb, floor)
    bden = _times(x.out_abs, sb_p if prob else sb)
    rel = (bnum + bden) / den_factor
    if logk_key is not None:
        with np.errstate(over="ignore", invalid="ignore"):
            wk = np.exp(np.where(fin & (logk_key > 0), s0 - lse + logk_key, -np.inf))
        rel = rel + _weighted_sum(_times(wk, 1.0 + alpha), x.v_abs) / den_factor
    div = b.terms["division"]
    total = rel * (1.0 + div) + div * x.out_abs

    # --- underflow (absolute): subnormal roundings, carried by at most 1 + alpha_max
    alpha_max = np.max(alpha, axis=-1, keepdims=True)
    carry = 1.0 + alpha_max
    sig = b.sigma_work
    per_key = sig * b.r_hat_max + (sig if amla else 0.0)
    v_sum = x.v_sum if x.v_sum is not None else np.sum(x.v_abs, axis=-2, keepdims=True)
    cast_abs = _cast_abs(b, x, s0, e, fin, m_hi, m_lo, bn, alpha, common_ind, logk_key)
    v_in_sig = 0.0 if b.pv_in in x.v_formats else get_format(b.pv_in).min_subnormal
    n_pos = float(n_keys)
    abs_num = per_key * v_sum * (1.0 + v_in) + _times(v_in_sig * n_pos * b.r_hat_max, carry)
    abs_num = abs_num + cast_abs + b.blocks * (b.sigma_pv_out + b.sigma_o + sig + b.p_scale_abs)
    if b.pv_align:  # the block FMA's alignment floor, per tile
        top = np.maximum(b.pv_align_const, x.v_max * (1.0 + v_in))
        abs_num = abs_num + b.blocks * b.pv_align * top
    # a_j (or AMLA's guard factor) rounded into the subnormals: sigma |O|, |O| <= N p_max max|V|
    p_max = 2.0 ** (b.tau + 1.0) if lazy else 1.0  # lazy's P against a stale max: <= 2**tau
    o_max = 2.0 * n_pos * x.v_max * b.r_hat_max * p_max
    abs_num = abs_num + n_chg_row * sig * (o_max + 1.0)
    abs_out = _times(carry, abs_num) / b.r_hat_min
    delta_l = sig * (n_pos + n_chg_row * (n_pos * p_max + 1.0))
    abs_out = abs_out + _times(x.out_abs + total, delta_l * (1.0 + 2.0 * u)) + sig
    total = total + abs_out
    total = np.where(any_key, total, np.inf)  # no attended key: the output is undefined
    return total * _F64_SLACK

"""The division stage, ``out = fl(O / l)``, and the bound's assembly in the common frame.

The per-key relative errors of the numerator's and denominator's weights combine as
``(sum_i w_i |alpha_i| |V_i| + |out| sum_i w_i |beta_i|) / D`` (``docs/bounds.md``
section 1, the frame; section 7, the probabilistic form), then the final division's
rounding and the absolute underflow terms of every stage (section 6).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from amla_numerics.analysis.bounds.arith import _F64_SLACK, LAMBDA, _gamma
from amla_numerics.analysis.bounds.arrays import _times, _weighted_sum
from amla_numerics.analysis.bounds.inputs import BoundInputs
from amla_numerics.analysis.bounds.pcast import _cast_abs
from amla_numerics.analysis.bounds.rescale import _Changes
from amla_numerics.analysis.bounds.result import Bound
from amla_numerics.formats import get_format
from amla_numerics.variants import spec

__all__: list[str] = []


def _division_term(variant: str, u: float) -> float:
    """The final division's relative error: ``u`` (``O / l``), ``gamma_2`` for AMLA
    (``O / fl(l r^)``)."""
    return _gamma(2, u) if spec(variant).is_amla else u


@dataclass(frozen=True)
class _Terms:
    """Per key, the first-order relative terms of the numerator's and the denominator's
    weights: independent per key (``num_ind``, ``common_ind``), per block (``*_blk``) and
    systematic (``*_sys``)."""

    num_ind: Any
    num_blk: Any
    num_sys: Any
    common_ind: Any
    den_blk: Any
    den_sys: Any


def _relative_error(
    b: Bound,
    x: BoundInputs,
    t: _Terms,
    fin: np.ndarray,
    s0: np.ndarray,
    E: np.ndarray,
    any_key: np.ndarray,
    smax0: np.ndarray,
    logk_key: np.ndarray | None,
    prob: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """``(total, alpha)``: the relative part of the bound per output element (numerator,
    denominator, the clamp's over-weighted keys, the division) and the numerator's
    per-key relative weight error ``alpha``."""
    w = x.w
    t_num = t.num_ind + t.num_blk + t.num_sys
    t_den = t.common_ind + t.den_blk + t.den_sys
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
        wi = _times(w, t.num_ind * infl_n)
        quad = LAMBDA * np.sqrt(_weighted_sum(wi * wi, x.v_sq))
        bnum = np.minimum(_weighted_sum(wi, x.v_abs), quad)
        bnum = bnum + _weighted_sum(_times(w, (t.num_blk + t.num_sys) * infl_n), x.v_abs)
        wdi = _times(w, t.common_ind * infl_d)
        sb_ind = np.minimum(
            np.sum(wdi, axis=-1, keepdims=True),
            LAMBDA * np.sqrt(np.sum(wdi * wdi, axis=-1, keepdims=True)),
        )
        sb_p = sb_ind + np.sum(_times(w, (t.den_blk + t.den_sys) * infl_d), axis=-1, keepdims=True)
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
    return total, alpha


def _with_underflow(
    b: Bound,
    x: BoundInputs,
    total: np.ndarray,
    alpha: np.ndarray,
    s0: np.ndarray,
    e: np.ndarray,
    fin: np.ndarray,
    ch: _Changes,
    common_ind: np.ndarray,
    logk_key: np.ndarray | None,
    any_key: np.ndarray,
) -> np.ndarray:
    """``total`` plus the absolute underflow terms: each rounding into a subnormal range
    (the exp, the fold, the cast, V's input rounding per key; the P V output, O's storage,
    the scale's removal and the alignment floor per block; ``a_j`` and l per change
    block), carried by at most ``1 + alpha_max``; ``+inf`` on rows with no attended key."""
    u, n_keys = b.u_work, x.kv_len
    sp = spec(b.variant)
    lazy = sp.stale_max is not None  # a stale max: P up to 2**tau
    v_in = 0.0 if b.pv_in in x.v_formats else get_format(b.pv_in).unit_roundoff
    # --- underflow (absolute): subnormal roundings, carried by at most 1 + alpha_max
    alpha_max = np.max(alpha, axis=-1, keepdims=True)
    carry = 1.0 + alpha_max
    sig = b.sigma_work
    per_key = sig * b.r_hat_max + (sig if sp.is_amla else 0.0)
    v_sum = x.v_sum if x.v_sum is not None else np.sum(x.v_abs, axis=-2, keepdims=True)
    cast_abs = _cast_abs(b, x, s0, e, fin, ch.m_hi, ch.m_lo, ch.bn, alpha, common_ind, logk_key)
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
    abs_num = abs_num + ch.n_chg_row * sig * (o_max + 1.0)
    abs_out = _times(carry, abs_num) / b.r_hat_min
    delta_l = sig * (n_pos + ch.n_chg_row * (n_pos * p_max + 1.0))
    abs_out = abs_out + _times(x.out_abs + total, delta_l * (1.0 + 2.0 * u)) + sig
    total = total + abs_out
    total = np.where(any_key, total, np.inf)  # no attended key: the output is undefined
    return total * _F64_SLACK

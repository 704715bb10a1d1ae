"""The P cast stage: ``cast(P)`` (or ``cast(fl(P S))`` with a static P scale) before P V.

The static scale's and the FP8 saturation's constants, and the cast's absolute
(below-normal) errors per key carried to the final frame (``docs/bounds.md`` section 3, the
cast; section 6, "FP8 P casts, the static P scale, the KV order, fa4").
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from amla_numerics.analysis.bounds.arith import _LN2, _cast_u, _contains, _sigma
from amla_numerics.analysis.bounds.arrays import _to_keys, _weighted_sum
from amla_numerics.analysis.bounds.inputs import BoundInputs
from amla_numerics.analysis.bounds.result import Bound
from amla_numerics.formats import get_format
from amla_numerics.variants import spec

__all__: list[str] = []


def _p_scale_w(pol: Any) -> float:
    """The static P scale ``S`` as the work format holds it."""
    return float(np.float32(pol.p_scale)) if pol.work == "fp32" else float(pol.p_scale)


def _p_top(variant: str, tau: float) -> float:
    """The largest P tile value: 1; ``2**(tau + 1)`` with a stale max (``tau`` in log2
    units for every stale-max variant); AMLA's ``P r^ <= 2**(1/2) (1 + 2**-7)``."""
    sp = spec(variant)
    top = 2.0 ** (tau + 1.0) if sp.stale_max is not None else 1.0
    if sp.is_amla:
        top *= math.sqrt(2.0) * (1.0 + 2.0**-7)
    return top


def _pcast_fields(pol: Any, variant: str, tau: float) -> dict:
    """The :class:`Bound` fields of the P cast under ``pol``: its relative and subnormal
    errors as the matrix unit sees it (with the P V input format's rounding when the
    cast's values do not all fit it), the static scale's and saturation's terms, the
    smallest normal tile value in the P frame and ``max(1, S p_top)``."""
    u_cast = _cast_u(pol.p_cast, pol.p_cast_rounding)
    sigma_cast = _sigma(pol.p_cast)
    if not _contains(pol.pv.in_format, pol.p_cast or pol.work):  # P re-rounded for the matmul
        u_in = get_format(pol.pv.in_format).unit_roundoff
        u_cast = u_cast + u_in * (1.0 + u_cast)
        sigma_cast = sigma_cast * (1.0 + u_in) + _sigma(pol.pv.in_format)
    p_sat, p_scale_abs, sigma_cast, u_cast = _p_scale_terms(pol, variant, tau, sigma_cast, u_cast)
    s_w = _p_scale_w(pol)
    p_min_normal = 0.0
    if pol.p_cast is not None:
        p_min_normal = get_format(pol.p_cast).min_normal
        if not _contains(pol.pv.in_format, pol.p_cast):
            p_min_normal = max(p_min_normal, get_format(pol.pv.in_format).min_normal)
        p_min_normal /= s_w
    return {
        "u_cast": u_cast,
        "sigma_cast": sigma_cast,
        "p_saturate": p_sat,
        "p_scale_abs": p_scale_abs,
        "p_min_normal": p_min_normal,
        "pv_align_const": max(1.0, s_w * _p_top(variant, tau)),
    }


def _p_scale_terms(
    pol: Any, variant: str, tau: float, sigma_cast: float, u_cast: float
) -> tuple[bool, float, float, float]:
    """The static P scale ``S`` and the FP8 saturation: (p_saturate, p_scale_abs,
    sigma_cast, u_cast). The cast sees ``fl(X S)``: its subnormal spacing is ``sigma / S``
    in the P frame; ``S != 1`` adds the multiply's and the division's roundings (``2u``
    relative, one subnormal spacing of ``W`` absolute per block). Saturation is possible
    when ``S`` times the largest tile value (1; ``2**(tau + 1)`` with a stale max; AMLA's
    ``P r^ <= 2**(1/2) (1 + 2**-7)``) exceeds the cast format's ``max_finite``."""
    work = get_format(pol.work)
    u = work.unit_roundoff
    s = _p_scale_w(pol)
    p_scale_abs = 0.0
    if s != 1.0:
        u_cast = u_cast + 2.0 * u * (1.0 + u_cast)
        sigma_cast = sigma_cast / s
        p_scale_abs = work.min_subnormal
    sat = False
    if pol.p_cast is not None and get_format(pol.p_cast).name in ("e4m3", "e5m2"):
        top = _p_top(variant, tau)
        sat = s * top * (1.0 + 4.0 * u) > get_format(pol.p_cast).max_finite
    return sat, p_scale_abs, sigma_cast, u_cast


def _cast_abs(
    b: Bound,
    x: BoundInputs,
    s0: np.ndarray,
    e: np.ndarray,
    fin: np.ndarray,
    m_hi: np.ndarray,
    m_lo: np.ndarray,
    bn: int,
    alpha: np.ndarray,
    common: np.ndarray,
    logk: np.ndarray | None = None,
) -> np.ndarray:
    """The P cast's absolute (below-normal) errors, summed over keys with ``|V|``, in the
    final frame. Key ``i`` of block ``j`` is cast in block ``j``'s frame, where one rounding
    into the subnormals errs by at most ``sigma_cast``; carried to the row's final max it
    shrinks by ``exp(m_j - m) <= min(1, exp(m_hi_j - m_lo_T))`` (the computed max never
    decreases; a stale max trails the true one by at most ``tau ln 2``). Where AMLA's
    ``dn`` clamp over-weights key ``i`` by ``K_i`` (``logk = ln K_i``), the carried error and
    the computed value are ``K_i`` times larger: ``min(1, exp(m_hi_j - m_lo_T + ln K_i))``
    (the clamped factor ``2**dn_clamp`` is itself at most 1). A value below the
    normal range also rounds to within ``[0, 2x]`` (two roundings: ``3x``), ``x`` the
    computed tile value: in the final frame at most ``r^_max exp(min(s_i + e_i - m_lo_T,
    stale)) (1 + alpha_i)`` (the computed final max is >= every computed score, minus
    ``stale = tau ln 2`` for a stale max). A key whose tile value is surely normal in the
    cast format (at least ``r^_min exp(s_i - e_i - m_hi_j - common_i) >= p_min_normal``
    in its block's frame, ``common_i`` the score/exp relative terms) takes none."""
    if not b.sigma_cast:
        return np.zeros(1)
    n = s0.shape[-1]
    stale = b.tau * _LN2 * (1.0 + 4 * b.u_work) if spec(b.variant).stale_max else 0.0
    with np.errstate(invalid="ignore", over="ignore"):
        lift = _to_keys(m_hi - m_lo[..., -1:] + stale, bn, n)
        x_log = s0 + e - m_lo[..., -1:]
        if logk is not None:
            lift = lift + logk
            x_log = x_log + logk
        frame = np.nan_to_num(np.exp(np.minimum(lift, 0.0)), nan=1.0)
        x_fin = b.r_hat_max * np.exp(np.minimum(x_log, stale))
        x_fin = np.nan_to_num(x_fin, nan=1.0, posinf=1.0) * (1.0 + alpha)
    per = np.minimum(b.sigma_cast * frame, 3.0 * x_fin)
    if b.p_min_normal > 0:
        with np.errstate(invalid="ignore", over="ignore", under="ignore"):
            x_lo = b.r_hat_min * np.exp(s0 - e - _to_keys(m_hi, bn, n) - common)
        per = np.where(np.nan_to_num(x_lo, nan=0.0) >= b.p_min_normal, 0.0, per)
    per = np.where(fin, per, 0.0)
    return _weighted_sum(per, x.v_abs)

"""The rescale stage: ``a_j`` (FA) and AMLA's integer add, where the running max changes.

The kernel constants' errors in the work format, AMLA's compensation mismatch
``rho = (1 + a) H - 1`` and its ``dn`` term, and the bounds of ``cof_{j-1} / cof_j`` from
the kernel's own scalars (``docs/bounds.md`` section 4, later blocks; section 5, the
``dn`` clamp).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from amla_numerics.analysis.bounds.arith import _LN2, _cast_u, _gamma
from amla_numerics.analysis.bounds.arrays import _after, _blocked, _to_keys
from amla_numerics.analysis.bounds.inputs import BoundInputs
from amla_numerics.analysis.bounds.result import Bound
from amla_numerics.formats import get_format
from amla_numerics.variants import spec

__all__: list[str] = []


@lru_cache(maxsize=4)
def _work_constants(work: str) -> dict[str, Any]:
    """The kernel constants' relative errors in ``work`` and the exact rounding helpers.

    ``ln2_err = |LN2 / ln 2 - 1|`` and ``recip_err = |RECIP_LN2 ln 2 - 1|`` with
    ``LN2 = fl(ln 2)``, ``RECIP_LN2 = fl(1 / LN2)`` (as :func:`flash.stages.constants`),
    evaluated exactly with mpmath.
    """
    import mpmath

    from amla_numerics.flash.policy import Policy
    from amla_numerics.flash.stages import constants, rna_int

    pol = Policy(work=work, rescale="exact" if work != "fp32" else "int_add")
    k = constants(pol)
    dt = type(k["LN2"])
    with mpmath.workprec(200):
        ln2 = mpmath.log(2)
        ln2_err = abs(mpmath.mpf(float(k["LN2"])) / ln2 - 1)
        recip_err = abs(mpmath.mpf(float(k["RECIP_LN2"])) * ln2 - 1)
        # round the errors up to float64
        ln2_err_f = float(ln2_err) * (1 + 2.0**-50)
        recip_err_f = float(recip_err) * (1 + 2.0**-50)

    def rnd(x: float) -> float:
        return float(dt(x))

    def rna_units(eps: float) -> float:
        return float(rna_int(np.asarray(dt(eps) * k["TWO23"])))

    def n_of(m: np.ndarray) -> np.ndarray:
        """AMLA's ``n = rna(fl(-m RECIP_LN2))`` for work-format values ``m`` (-inf: 0)."""
        m = np.asarray(m, dtype=dt)
        with np.errstate(invalid="ignore", over="ignore"):
            m_eff = np.where(np.isfinite(m), m, dt(0))
            return np.asarray(rna_int(m_eff * (-k["RECIP_LN2"])), dtype=np.float64)

    return {
        "ln2_err": ln2_err_f,
        "recip_err": recip_err_f,
        "round": rnd,
        "rna_units": rna_units,
        "n_of": n_of,
        "dtype": dt,
        "k": k,
    }


def _rho_a(
    b: Bound,
    dn_max: np.ndarray | float,
    q_lo: np.ndarray | float | None = None,
    q_hi: np.ndarray | float | None = None,
) -> np.ndarray | float:
    """``a`` of AMLA's change-block mismatch ``rho = (1 + a) H - 1`` (docs/bounds.md),
    for at most ``dn_max`` binades of ``|dnc|`` and ``cof_{j-1}/cof_j`` in
    ``[q_lo, q_hi]`` (default: the a priori range); 0 for the non-AMLA variants."""
    sp, u = spec(b.variant), b.u_work
    if not sp.is_amla:
        return 0.0
    if q_lo is None or q_hi is None:
        q_lo, q_hi = 1.0 / b._q_hi, b._q_hi
    q_lo = np.asarray(q_lo, dtype=np.float64)
    q_hi = np.asarray(q_hi, dtype=np.float64)
    mult = (1.0 + _gamma(3, u)) * (1.0 + u) - 1.0  # O * ratio: ratio / q and the multiply
    nocomp = np.maximum(1.0 / q_lo - 1.0, 1.0 - 1.0 / q_hi)  # |1/q - 1|
    if b.rescale != "int_add":
        if sp.compensation == "none":
            return nocomp
        return 0.0 if sp.fold == "r_fp32" else mult
    if sp.compensation == "none":
        return nocomp
    if sp.compensation == "exact":
        return mult
    b_abs, e_max, c = abs(b.eps_bias), b.eps_max, b.c
    x = e_max * (1.0 + u) + u * (1.0 + np.asarray(dn_max, dtype=np.float64))
    h_hi, h_lo = 1.0 + x, 0.5 / (1.0 + x)
    if sp.fold == "r_fp32":  # ratio = 1, eps = fl(bias) exactly
        return h_hi * (b_abs + u * (b_abs + 1.0))
    kappa = np.maximum(np.abs(h_hi * c * (1 + u) ** 2 - 1.0), np.abs(h_lo * c * (1 - u) ** 2 - 1.0))
    dq = np.maximum(q_hi - 1.0, 1.0 - q_lo)
    base = (
        kappa * dq
        + h_hi * c * (1 + u) ** 2 * q_hi * _gamma(3, u)
        + h_hi * (b_abs * (1.0 + u) + u * (e_max + 1.0))
    )
    a = base / q_lo
    return np.maximum(a, mult) if sp.guard else a


def _dn_coef(b: Bound, dn_max: np.ndarray | float) -> np.ndarray | float:
    """Coefficient of ``sum |dnc_j|`` (the rounding of ``fl(dnc + eps)``) in AMLA's
    mismatch, before the factor ``H``; 0 where N is formed without ``eps``."""
    sp = spec(b.variant)
    if not sp.is_amla or sp.compensation != "additive" or b.rescale != "int_add":
        return 0.0
    u = b.u_work
    x = b.eps_max * (1.0 + u) + u * (1.0 + np.asarray(dn_max, dtype=np.float64))
    q_lo = 1.0 if sp.fold == "r_fp32" else 1.0 / b._q_hi
    return (1.0 + x) * u / q_lo


def _cof_quotients(
    b: Bound,
    consts: dict[str, Any],
    lo_w: np.ndarray,
    hi_w: np.ndarray,
    n_lo: np.ndarray,
    n_hi: np.ndarray,
    started: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Bounds of ``q_j = cof_{j-1} / cof_j`` (exact cofs ``r / r^``) per row and block.

    AMLA's ``r_j`` is a monotone function of the work-format max ``m_j`` while ``n_j`` is
    constant (correctly rounded exp), so where ``n`` and the cast ``r^`` agree at both ends
    of ``m_j``'s interval, ``r^_j`` is known and ``r_j`` lies between the two end values:
    the kernel's own scalars, recomputed. Elsewhere (or with the polynomial exp, which need
    not be monotone) the a priori range ``[1/(1+u_r), 1/(1-u_r)]`` of a cof is used.
    Block 0's entry is unused.
    """
    q_top = b._q_hi
    cof_lo = np.full(lo_w.shape, 1.0 / (1.0 + b.u_r))
    cof_hi = np.full(lo_w.shape, 1.0 / (1.0 - b.u_r))
    if b.u_r > 0 and b.exp_model == "cr":
        from amla_numerics.flash.stages import cast, exp_cr

        dt, k = consts["dtype"], consts["k"]

        def r_of(m: np.ndarray, n: np.ndarray) -> np.ndarray:
            with np.errstate(invalid="ignore", over="ignore"):
                m_eff = np.where(np.isfinite(m), m, dt(0))
                return exp_cr((m_eff * k["RECIP_LN2"] + n.astype(dt)) * k["LN2"])

        r_a, r_b = r_of(lo_w, n_hi), r_of(hi_w, n_lo)
        h_a = cast(r_a, b.r_cast, b.r_cast_rounding)
        h_b = cast(r_b, b.r_cast, b.r_cast_rounding)
        known = (n_lo == n_hi) & (h_a == h_b) & (h_a > 0)
        known &= started | ~np.isfinite(hi_w)
        ra = r_a.astype(np.float64)
        rb = r_b.astype(np.float64)
        rh = np.where(known, h_a.astype(np.float64), 1.0)
        cof_lo = np.where(known, np.minimum(ra, rb) / rh * (1 - 2.0**-50), cof_lo)
        cof_hi = np.where(known, np.maximum(ra, rb) / rh * (1 + 2.0**-50), cof_hi)
    q_lo = np.full(lo_w.shape, 1.0 / q_top)
    q_hi = np.full(lo_w.shape, q_top)
    q_lo[..., 1:] = np.maximum(cof_lo[..., :-1] / cof_hi[..., 1:] * (1 - 2.0**-50), 1.0 / q_top)
    q_hi[..., 1:] = np.minimum(cof_hi[..., :-1] / cof_lo[..., 1:] * (1 + 2.0**-50), q_top)
    return q_lo, q_hi


def _rescale_fields(pol: Any, variant: str, c: float, exp_u: float, exp_slope: float) -> dict:
    """The :class:`Bound` fields of the rescale stage under ``pol``: AMLA's compensation
    constants in the work format, its residual's error ``eta``, the range of ``r^``, the
    ``dn`` clamp and the bias's integer ``nu_0`` (FA variants: the neutral values)."""
    work = get_format(pol.work)
    u = work.unit_roundoff
    sp = spec(variant)
    amla = sp.is_amla
    u_r = 0.0
    if amla and sp.fold != "r_fp32" and pol.r_cast is not None:
        u_r = _cast_u(pol.r_cast, pol.r_cast_rounding)
    consts = _work_constants(pol.work)
    c_w, bias_w = consts["round"](c), consts["round"](float(pol.eps_bias))
    # AMLA's residual r = exp(fl(fl(fl(m RECIP) + n) LN2)): |ln(r / (e**m 2**n))| <= eta
    rho_r, rho_l = consts["recip_err"], consts["ln2_err"]
    t3_max = 0.5 * _LN2 * (1.0 + rho_l) * (1.0 + u) + work.min_subnormal
    d_exp = exp_u + exp_slope * t3_max
    eta_slope = rho_r + u * (1.0 + rho_r)
    eta_const = (
        0.5 * _LN2 * (rho_l + u * (1.0 + rho_l)) + 2.0 * work.min_subnormal - math.log1p(-d_exp)
    )
    r_min, r_max = 1.0, 1.0
    if amla:
        r_lo, r_hi = math.exp(-t3_max) * (1.0 - d_exp), math.exp(t3_max) * (1.0 + d_exp)
        u_rc = _cast_u(pol.r_cast, pol.r_cast_rounding) if sp.fold != "r_fp32" else 0.0
        r_min, r_max = r_lo * (1.0 - u_rc), r_hi * (1.0 + u_rc)
    clamp = pol.dn_clamp if amla else None
    if sp.guard and pol.rescale == "int_add":
        clamp = None  # the guard multiplies by the exact 2**dn where the add would clamp
    nu0 = 0
    if amla and pol.rescale == "int_add" and sp.compensation == "additive":
        nu0 = int(consts["rna_units"](bias_w))
    return {
        "u_r": u_r,
        "c": c_w,
        "eps_bias": bias_w,
        "dn_clamp": clamp,
        "rescale": pol.rescale,
        "r_cast": None if sp.fold == "r_fp32" else pol.r_cast,
        "r_cast_rounding": pol.r_cast_rounding,
        "bias_units": nu0,
        "eta_slope": eta_slope if amla else 0.0,
        "eta_const": eta_const if amla else 0.0,
        "r_hat_min": r_min,
        "r_hat_max": r_max,
    }


def _bias_step(b: Bound) -> float:
    """The relative change of O at a block where the max does not move: AMLA's add of
    ``nu_0``, ``0 < theta_0 <= nu_0 2**-23 (1 + nu_0 2**-23)``."""
    nu_rel = abs(b.bias_units) * 2.0**-23
    return nu_rel * (1.0 + nu_rel)


def _rescale_step(b: Bound) -> float:
    """AMLA's compensation mismatch at a block where the max moves, for ``|m| = 0`` and
    ``dn = 0`` (0 for the FA variants)."""
    amla = spec(b.variant).is_amla
    return float((1.0 + _rho_a(b, 0.0)) * math.exp(2.0 * b.eta_const) - 1.0 if amla else 0.0)


@dataclass(frozen=True)
class _Changes:
    """Per row and KV block, where the running max can change (docs/bounds.md section 4).

    ``bn`` keys per block (all keys for an untiled variant); ``m_lo``, ``m_hi``
    (..., M, T): bounds of the running max ``m_j``; ``chg``: block ``j`` may change it;
    per block ``b``, ``chg_after`` and ``nochg_after`` count the later blocks that may
    and may not, ``d_after`` bounds the later total movement ``sum_{j > b} |dm_j|``;
    ``n_chg_row`` (..., M, 1) counts the change blocks of the row.
    """

    bn: int
    m_lo: np.ndarray
    m_hi: np.ndarray
    chg: np.ndarray
    chg_after: np.ndarray
    nochg_after: np.ndarray
    d_after: np.ndarray
    n_chg_row: np.ndarray


def _max_changes(b: Bound, x: BoundInputs, e: np.ndarray, fin: np.ndarray) -> _Changes:
    """Per block: can the running max change? The bounds of ``m_j`` from the exact scores
    ``s`` and their error ``e`` (near-ties count as changes)."""
    u, n_keys, s = b.u_work, x.kv_len, x.s
    sp = spec(b.variant)
    lazy = sp.stale_max is not None  # a stale max: P up to 2**tau
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
    return _Changes(bn, m_lo, m_hi, chg, chg_after, nochg_after, d_after, n_chg_row)


def _amla_terms(
    b: Bound, x: BoundInputs, e: np.ndarray, fin: np.ndarray, ch: _Changes
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """AMLA's per-key terms over the later change blocks: the compensation mismatch
    ``rho``, the ``dn`` rounding term, and ``ln K_i`` of the clamp (None: no key clamped).
    ``n`` is bounded at both ends of every jump from the score interval of the max."""
    s, n_keys, bn, chg = x.s, x.kv_len, ch.bn, ch.chg
    m_lo, m_hi = ch.m_lo, ch.m_hi
    logk_key: np.ndarray | None = None
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
    return rho_key, dn_key, logk_key


def _rescale_terms(
    b: Bound,
    s0: np.ndarray,
    na: np.ndarray,
    ca: np.ndarray,
    da: np.ndarray,
    rho_key: Any,
    dn_key: Any,
) -> tuple[Any, Any]:
    """The systematic per-key terms of the later blocks' rescales, numerator and
    denominator: ``a_j``'s error ``exp_u + (u + exp_slope) |dm_j|`` at the change blocks
    (both sides for FA; l only for AMLA), AMLA's bias at the others and its mismatch."""
    u = b.u_work
    sp = spec(b.variant)
    # a_j = exp(fl(m_{j-1} - m_j)) at change blocks: exp_u + (u + exp_slope) |dm_j| each
    a_err = ca * b.exp_u + (u + b.exp_slope) * da
    if not sp.tiled:
        return np.zeros_like(s0), np.zeros_like(s0)
    if sp.is_amla:
        return na * b.terms["bias_step"] + rho_key + dn_key, a_err
    return a_err, a_err  # fa_fp32, fa_bf16, lazy: a_j scales O and l alike

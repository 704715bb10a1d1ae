"""The rescale stage: ``a_j`` (FA) and AMLA's integer add, where the running max changes.

The kernel constants' errors in the work format, AMLA's compensation mismatch
``rho = (1 + a) H - 1`` and its ``dn`` term, and the bounds of ``cof_{j-1} / cof_j`` from
the kernel's own scalars (``docs/bounds.md`` section 4, later blocks; section 5, the
``dn`` clamp).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from amla_numerics.analysis.bounds.arith import _gamma
from amla_numerics.analysis.bounds.result import Bound
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

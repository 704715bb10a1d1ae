"""AMLA's per-block scalars and its rescale of O: the INT32 exponent add, its variants, the guard.

Per row and KV block ``j`` (0-based; every operation in the policy's work format, ``fl`` =
one IEEE rne rounding; constants from :func:`~amla_numerics.flash.stages.constants`), after
the online-softmax step has produced the running max ``m_j`` (rows whose scores are all
masked so far use ``m_j := 0`` here):

====================  ====================================================================
``t_j``               ``fl(m_j * (-RECIP_LN2))``
``n_j``               ``rna(t_j)`` (integer, ties away from zero: Ascend ``CAST_ROUND``)
``r_j``               ``exp_cr(fl(fl(fl(m_j * RECIP_LN2) + n_j) * LN2))`` (the kernel's order)
``r^_j``              ``cast(r_j, r_cast, r_cast_rounding)`` (BF16 rna); ``amla_fp32r``: ``r_j``
``cof_j``             ``fl(r_j / r^_j)``
``ratio_j``           ``fl(cof_{j-1} / cof_j)`` with ``cof_{-1} = 1`` (the kernel's cof_0 = 1)
``eps_j``             ``fl(fl(fl(ratio_j - 1) * c) + eps_bias)``; ``amla_nocomp``,
                      ``amla_exactcomp``: 0
``dn_j``              ``fl(n_j - n_{j-1})``, ``dn_0 = 0``
``N_j``               ``rna(fl(fl(max(dn_j, dn_clamp) + eps_j) * 2**23))`` as int32 (saturating)
====================  ====================================================================

The P tile is folded before its cast: ``A_j = cast(fl(P_j * r^_j))``. Block 0 is stored
plainly; for ``j >= 1`` the rescale of O (before ``O = fl(O + A_j V_j)``) is

- ``"amla"``, ``"amla_nocomp"``, ``"amla_fp32r"``: ``O := as_fp32(as_int32(O) + N_j)``
  (:func:`~amla_numerics.exp2add.exp2_add_bits`, wraparound, hazards counted);
- ``"amla_exactcomp"``: the same add with ``eps_j = 0``, then ``O := fl(O * ratio_j)``;
- ``"amla_guarded"``: the ``"amla"`` add where its hazard code is ``ok`` and the clamp did
  not apply (``dn_j >= dn_clamp``); elsewhere (zero, subnormal, underflow, sign borrow,
  overflow or non-finite O, or a row whose ``dn_j`` the clamp raised) the exact power of two
  by FP32 multiplies: ``O := fl(fl(O * ratio_j) * 2**dn_j)`` with the *unclamped* ``dn_j``,
  the scaling by ``2**dn_j`` rounded once (exact unless the result is subnormal; below
  ``2**-150`` it is 0, beyond FP32's range inf). A zero O stays a zero of the same sign
  (``0 * 2**dn`` is 0 for every ``dn``: no ``0 * inf``). Guarantee: wherever the integer add
  would be garbage, clamped or would wrap, the guarded O equals what ``amla_exactcomp``'s
  multiply would give without its clamp, so on finite inputs (and O within FP32's range) its
  output is finite and carries only the ``"amla"`` rounding and compensation errors of the
  unclamped recurrence (within its a priori bound); a fully masked row stays NaN (0/0).
  Cost: it must read O (GM -> UB), compute the exponent-field check, the add, the multiply
  and a select, then write O back (UB -> GM): the FP32 multiply's round trip plus about
  3 vector ops per element.
- policy ``rescale="exact"``: ``O := O * 2**dn_j * ratio_j`` (``2**dn_j`` only for
  ``amla_nocomp``), exactly in float64 (no clamp in the ``"exact"`` preset).

Final: ``out = fl(O_N / fl(l_N * r^_N))``.

Examples
--------
>>> import numpy as np
>>> from amla_numerics.flash.policy import get_policy
>>> s = amla_scalars(np.float32([0.0, 3.0]), None, None, get_policy("ascend"), "amla", 1.5)
>>> s.n.tolist(), s.r_hat.tolist()
([0.0, -4.0], [1.0, 1.2578125])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from amla_numerics.exp2add import HAZARDS, count_hazards, exp2_add_bits, exp2_add_bits_hazards
from amla_numerics.flash.policy import Policy
from amla_numerics.flash.stages import cast, constants, exp_cr, exp_poly, rna_int
from amla_numerics.variants import spec

__all__ = ["AmlaScalars", "amla_rescale", "amla_scalars", "clamped_rows", "guarded_multiply"]


_I32 = (-(2**31), 2**31 - 1)


@dataclass(frozen=True)
class AmlaScalars:
    """Per-row scalars of one block (work dtype; ``N`` int64 within int32's range)."""

    n: np.ndarray
    r: np.ndarray
    r_hat: np.ndarray
    cof: np.ndarray
    ratio: np.ndarray
    eps: np.ndarray
    dn: np.ndarray
    dnc: np.ndarray
    N: np.ndarray


def amla_scalars(
    m: np.ndarray,
    n_prev: np.ndarray | None,
    cof_prev: np.ndarray | None,
    policy: Policy,
    variant: str,
    c: float,
) -> AmlaScalars:
    """The table of the module docstring for one block (``n_prev is None``: block 0)."""
    m = np.asarray(m)
    dt = m.dtype.type
    k = constants(policy)
    exp = exp_cr if policy.exp == "cr" else exp_poly
    with np.errstate(invalid="ignore", over="ignore"):
        m_eff = np.where(np.isfinite(m), m, dt(0))
        n = rna_int(m_eff * (-k["RECIP_LN2"]))
        r = exp((m_eff * k["RECIP_LN2"] + n) * k["LN2"])
        sp = spec(variant)
        r_hat = r if sp.fold == "r_fp32" else cast(r, policy.r_cast, policy.r_cast_rounding)
        cof = r / r_hat
        ratio = (dt(1) if cof_prev is None else cof_prev) / cof
        if sp.compensation != "additive":
            eps = np.zeros_like(m_eff)
        else:
            eps = (ratio - dt(1)) * dt(c) + dt(policy.eps_bias)
        dn = np.zeros_like(m_eff) if n_prev is None else n - n_prev
        dnc = dn if policy.dn_clamp is None else np.maximum(dn, dt(policy.dn_clamp))
        Nf = rna_int((dnc + eps) * k["TWO23"])
        Nd = np.asarray(Nf, dtype=np.float64)
        Nd = np.where(np.isnan(Nd), 0.0, Nd)  # then +-inf saturate like every out-of-range value
        N = np.minimum(np.maximum(Nd, _I32[0]), _I32[1]).astype(np.int64)
    ratio = np.broadcast_to(np.asarray(ratio, dtype=dt), m_eff.shape)
    return AmlaScalars(n, r, r_hat, cof, ratio, eps, dn, dnc, N)


def clamped_rows(sc: AmlaScalars, policy: Policy) -> np.ndarray | None:
    """Rows (shape of the scalars) whose ``dn_j`` the clamp raised, or None if none did."""
    if policy.dn_clamp is None or policy.rescale == "exact":
        return None
    rows = np.asarray(sc.dn < sc.dn.dtype.type(policy.dn_clamp))
    return rows if np.any(rows) else None


def amla_rescale(
    O: np.ndarray, sc: AmlaScalars, policy: Policy, variant: str
) -> tuple[np.ndarray, dict[str, int], np.ndarray | None]:
    """O rescaled for a block ``j >= 1``, the hazard counts of its integer add, and the
    per-element hazard codes (shape of O; None when every add is ``ok``).

    ``O`` has shape (..., M, Dv); the scalars have shape (..., M). For ``amla_guarded`` the
    counts and codes are the hazards *detected* (and repaired by the multiply).
    """
    sp = spec(variant)
    if policy.rescale == "exact":
        # O * ratio rounded once, then scaled by 2**dn exactly (ldexp): the same value as
        # O * (2**dn ratio) wherever 2**dn is a normal number, and no 0 * inf where the
        # factor alone would overflow (a row whose earlier blocks were all masked has
        # O = 0 and n_prev = 0, so dn = n can exceed the exponent range)
        dn = sc.dnc.astype(np.int64)[..., None]
        scaled = O if sp.compensation == "none" else O * sc.ratio[..., None]
        with np.errstate(over="ignore"):  # a true overflow is counted by the caller
            return np.ldexp(scaled, dn), count_hazards(np.zeros(0, np.int8)), None
    N = sc.N[..., None]
    if sp.compensation == "exact":
        N = rna_int(sc.dnc * constants(policy)["TWO23"]).astype(np.int64)[..., None]
    counts = _all_ok_counts(O, N)
    report = None if counts is not None else exp2_add_bits_hazards(O, N)
    added = _add_bits(O, N)
    if sp.compensation == "exact":
        with np.errstate(invalid="ignore", over="ignore"):
            added = added * sc.ratio[..., None]
    elif sp.guard:
        bad = None if report is None else report.codes != 0
        clamped = clamped_rows(sc, policy)
        if clamped is not None:
            bad = clamped[..., None] if bad is None else bad | clamped[..., None]
        if bad is not None and np.any(bad):
            added = np.where(bad, guarded_multiply(O, sc), added)
    if report is None:
        assert counts is not None
        return added, counts, None
    return added, report.counts, np.broadcast_to(report.codes, added.shape)


#: |dn| beyond which ``x * 2**dn`` is 0 or inf for every FP32 ``x`` (and 0 stays 0).
_DN_LIMIT = 400


def guarded_multiply(O: np.ndarray, sc: AmlaScalars) -> np.ndarray:
    """``fl(fl(O * ratio) * 2**dn)`` with the unclamped ``dn``: the guard's exact power of two.

    ``fl(O * ratio)`` is one work-format multiply; the power of two is applied in float64
    (exact: ``|dn|`` is clipped to 400, beyond which the FP32 result is 0 or inf anyway)
    and rounded once (rne) to the work format. Zeros stay zeros of the same sign.

    Examples
    --------
    >>> import numpy as np
    >>> from amla_numerics.flash.policy import get_policy
    >>> pol = get_policy("ascend")
    >>> prev = amla_scalars(np.float32([0.0]), None, None, pol, "amla_guarded", 1.5)
    >>> sc = amla_scalars(np.float32([-100.0]), prev.n, prev.cof, pol, "amla_guarded", 1.5)
    >>> int(sc.dn[0]), guarded_multiply(np.float32([[0.0, 2.0**-140]]), sc).tolist()
    (144, [[0.0, 15.96875]])
    """
    dt = O.dtype.type
    with np.errstate(invalid="ignore", over="ignore", under="ignore"):
        t = (O * sc.ratio[..., None].astype(dt)).astype(np.float64)
        dn = np.clip(np.nan_to_num(sc.dn.astype(np.float64)), -_DN_LIMIT, _DN_LIMIT)
        return np.ldexp(t, dn.astype(np.int32)[..., None]).astype(dt)


def _all_ok_counts(O: np.ndarray, N: np.ndarray) -> dict[str, int] | None:
    """The hazard counts when every add is ``ok`` (a cheap pre-check), else None.

    ``ok`` for a normal O word (exponent field 1..254) whose magnitude bits plus ``N`` stay
    in ``[2**23, 255 * 2**23)``, or for ``N == 0``: the classes of
    :func:`~amla_numerics.exp2add.exp2_add_bits_hazards`, which handles every other case.
    """
    mag = O.view(np.uint32) & np.uint32(0x7FFFFFFF)
    size = np.broadcast_shapes(mag.shape, np.shape(N))
    lo = mag.min(axis=-1, keepdims=True).astype(np.int64)
    hi = mag.max(axis=-1, keepdims=True).astype(np.int64)
    n_min = N.min(axis=-1, keepdims=True) if N.shape[-1] > 1 else N
    n_max = N.max(axis=-1, keepdims=True) if N.shape[-1] > 1 else N
    normal = (lo >= 1 << 23) & (hi < 255 << 23)
    inside = (lo + n_min >= 1 << 23) & (hi + n_max < 255 << 23)
    if not np.all((normal & inside) | ((n_min == 0) & (n_max == 0))):
        return None
    counts = dict.fromkeys(HAZARDS, 0)
    counts["ok"] = int(np.prod(size, dtype=np.int64))
    return counts


def _add_bits(O: np.ndarray, N: np.ndarray) -> np.ndarray:
    """:func:`~amla_numerics.exp2add.exp2_add_bits` for a float32 O and int64 ``N`` within
    int32's range: the add modulo 2**32 on the uint32 words (the same bits)."""
    if O.dtype != np.float32 or np.asarray(N).dtype != np.int64:
        return exp2_add_bits(O, N)
    inc = np.asarray(N).astype(np.int32).view(np.uint32)
    return np.add(O.view(np.uint32), inc).view(np.float32)

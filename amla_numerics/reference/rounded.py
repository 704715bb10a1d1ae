"""The reference rounded correctly to the formats kernels write (FP32, BF16), certified.

:func:`rounded_reference` computes the certified fast oracle once
(:func:`~amla_numerics.reference.fast.fast_problem`: ``out`` and a rigorous bound ``b`` with
``|out - x| <= b`` for the exact ``x``) and decides, element by element, the correctly
rounded value of ``x`` in each requested format: rounding is monotone, so when both ends of
``[out - b, out + b]`` (each widened outward by one float64 step, which covers the float64
rounding of the ends themselves) round to the same value, so does ``x``. Where they do not
(``x`` within ``b`` of a rounding midpoint, or a bound too loose), the row is recomputed with
the mpmath path from the same exact dot products and its mpf values (good to ``dps``
digits, exact where the output is rational: ties, one key, zero columns) are rounded
directly. The float64 ``out`` follows ``method="auto"``: within ``1e-3`` FP32 ULP of ``x``,
or the correctly rounded float64 where the fast bound was looser.

Examples
--------
>>> import numpy as np
>>> q = np.array([[1.0, 0.0]]); k = np.array([[1.0, 0.0], [0.0, 1.0]]); v = np.array([[1.0], [0.0]])
>>> r = rounded_reference(q, k, v, 1.0)
>>> float(r.rounded["fp32"][0, 0]) == float(np.float32(np.e / (np.e + 1)))
True
>>> r.n_mpmath_rows
0
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from amla_numerics.formats import FP32, get_format
from amla_numerics.reference._inputs import prepare
from amla_numerics.reference.dispatch import _loose, _mp_problem
from amla_numerics.reference.fast import FastUnavailable, fast_problem
from amla_numerics.rounding import round_to
from amla_numerics.ulp import ulp

__all__ = ["RoundedReference", "rounded_reference"]


@dataclass(frozen=True)
class RoundedReference:
    """The reference of one problem, with its certified roundings.

    Attributes
    ----------
    out : numpy.ndarray
        float64 (..., M, Dv): ``method="auto"``'s value (see the module docstring).
    lse : numpy.ndarray
        float64 (..., M): the log-sum-exp of the scaled scores (same guarantee as ``out``).
    rounded : dict[str, numpy.ndarray]
        Format name -> the correctly rounded (rne) exact output in that format (dtype
        float32 for ``fp32``, ``ml_dtypes.bfloat16`` for ``bf16``, float64 otherwise).
    n_mpmath_rows : int
        Rows recomputed with mpmath (ambiguous roundings or loose bounds).
    max_bound_ulp_fp32 : float
        The largest certified bound of the fast path in FP32 ULPs of ``out`` (over the
        elements it certified).
    """

    out: np.ndarray
    lse: np.ndarray
    rounded: dict[str, np.ndarray] = field(repr=False)
    n_mpmath_rows: int = 0
    max_bound_ulp_fp32: float = 0.0


def _ambiguous(out: np.ndarray, bound: np.ndarray, fmt: Any) -> np.ndarray:
    with np.errstate(invalid="ignore", over="ignore"):
        lo = np.nextafter(out - bound, -np.inf)
        hi = np.nextafter(out + bound, np.inf)
        a = round_to(lo, fmt)
        b = round_to(hi, fmt)
    same = (a == b) & np.isfinite(bound)
    return ~same & ~np.isnan(out)


def rounded_reference(
    q: Any,
    k: Any,
    v: Any,
    scale: Any = None,
    *,
    mask: Any = None,
    formats: tuple[str, ...] = ("fp32", "bf16"),
    dps: int = 50,
) -> RoundedReference:
    """The reference, its lse and its correctly rounded values in ``formats``.

    Parameters
    ----------
    q, k, v, scale, mask
        As for :func:`amla_numerics.reference.attention` (exact inputs, leading dims
        broadcast).
    formats : tuple of str
        Formats to round to (names of :mod:`amla_numerics.formats`).
    dps : int
        Digits of the mpmath path for the ambiguous rows.

    Returns
    -------
    RoundedReference
    """
    prob = prepare(q, k, v, scale, mask)
    fmts = {name: get_format(name) for name in formats}
    shp = prob.batch_shape
    nb, m, _ = prob.q.shape
    dv = prob.v.shape[2]
    try:
        fast = fast_problem(prob, True)
    except FastUnavailable:
        fast = None
    if fast is None:
        rows = {(b, i): None for b in range(nb) for i in range(m)}
        out = np.full((nb, m, dv), np.nan)
        lse = np.full((nb, m), -np.inf)
        bound = np.full((nb, m, dv), np.inf)
        dots = None
        max_b = float("nan")
    else:
        out = fast.out.reshape(nb, m, dv).copy()
        bound = fast.bound.reshape(nb, m, dv)
        lse = fast.lse.reshape(nb, m).copy()
        dots = fast.dots
        loose = _loose(bound, out) & ~np.isnan(out)
        lb = fast.lse_bound.reshape(nb, m)
        loose_lse = _loose(lb, lse) & np.isfinite(lse)
        need = loose.any(axis=2) | loose_lse
        for fmt in fmts.values():
            need |= _ambiguous(out, bound, fmt).any(axis=2)
        rows = {(int(b), int(i)): None for b, i in zip(*np.nonzero(need), strict=True)}
        ok = ~loose & np.isfinite(out)
        max_b = float(np.max(bound[ok] / ulp(out[ok], FP32))) if ok.any() else 0.0
    rounded = {name: np.asarray(round_to(out, fmt), dtype=np.float64) for name, fmt in fmts.items()}
    if rows:
        res, _ = _mp_problem(prob, dps, 1, True, rows=rows, dots=dots)
        for (b, i), (o, om, ls, _) in res.items():
            out[b, i] = [o[c] for c in range(dv)]
            lse[b, i] = ls if ls is not None else np.nan
            for name, fmt in fmts.items():
                rounded[name][b, i] = [float(round_to(om[c], fmt)) for c in range(dv)]
    typed = {
        name: rounded[name].astype(fmt.storage).reshape(*shp, m, dv) for name, fmt in fmts.items()
    }
    return RoundedReference(out.reshape(*shp, m, dv), lse.reshape(*shp, m), typed, len(rows), max_b)

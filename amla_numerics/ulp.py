"""Units in the last place for any format, bfloat16 and FP8 included.

numpy's ``spacing``/``testing.nulp_diff`` reject bfloat16 and know nothing of a format that
is only *stored* in a wider dtype, so these helpers work from the format's parameters:
every value is reduced by :func:`amla_numerics.rounding.decompose` to ``|x| = k * 2**qe``
(with ``qe = max(E, emin) - p + 1``), the same reduction ``round_to`` uses.

Examples
--------
>>> import numpy as np
>>> from amla_numerics.formats import BF16, FP32
>>> ulp([1.0, 1.5, 0.0], BF16)
array([7.81250000e-03, 7.81250000e-03, 9.18354962e-41])
>>> ulp_error(np.float32(1.0) + np.float32(2**-23), 1.0, FP32)
array(1.)
>>> ulp_distance(np.float32(-0.0), np.float32(0.0), FP32)
array(0)
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import numpy as np

from amla_numerics._arrays import broadcast_named
from amla_numerics.formats import FP64, Format, get_format
from amla_numerics.rounding import as_real_array, decompose, round_to, to_fraction

__all__ = ["signed_ulp_error", "ulp", "ulp_distance", "ulp_error"]


def ulp(x: Any, fmt: Format | str) -> np.ndarray:
    """The spacing of ``fmt`` at ``|x|``: ``2**(max(E, emin) - p + 1)``, ``2**E <= |x| < 2**(E+1)``.

    Parameters
    ----------
    x : array_like or mpmath.mpf
        Any real values (need not be representable in ``fmt``); exact scalars are taken
        exactly, so an mpf just below a power of two has the smaller binade's ULP.
    fmt : Format or str
        The format.

    Returns
    -------
    numpy.ndarray of float64
        ``ulp(0) = fmt.min_subnormal``; subnormals have ``min_subnormal``; inf gives inf
        and NaN gives NaN. Values beyond ``max_finite`` keep the formula (no clamp at emax).

    Notes
    -----
    Exact: a power of two in float64's range, for every format with ``p <= 53``.
    """
    fmt = get_format(fmt)
    arr = as_real_array(x)
    parts = decompose(arr, fmt)
    out = np.ldexp(1.0, parts.qe)
    return np.where(parts.special != 0, parts.special, out)


def signed_ulp_error(y: Any, ref: Any, fmt: Format | str) -> np.ndarray:
    """``(y - ref) / ulp(ref, fmt)`` in float64: positive where ``y`` is too large (bias).

    Parameters
    ----------
    y : array_like
        Computed values (any float dtype).
    ref : array_like or mpf values
        The reference. float64 references give a float64 difference (exact when
        ``y`` and ``ref`` are within a factor 2, else rounded once); mpf/Fraction
        references give the exact quotient rounded once to float64.
    fmt : Format or str
        The format whose ULP at ``ref`` is the unit.

    Notes
    -----
    NaN in ``y`` or ``ref`` gives NaN; infinite ``y`` with finite ``ref`` gives +-inf.
    """
    fmt = get_format(fmt)
    yarr = np.asarray(y)
    if yarr.dtype.kind not in "fV":
        yarr = as_real_array(y, "y")
    ref_arr = as_real_array(ref, "ref")
    yarr, ref_arr = broadcast_named(y=yarr, ref=ref_arr)
    unit = ulp(ref_arr, fmt)
    if ref_arr.dtype.kind != "O" and yarr.dtype.kind != "O":
        with np.errstate(invalid="ignore"):
            return np.asarray((yarr.astype(np.float64) - ref_arr.astype(np.float64)) / unit)
    out = np.empty(ref_arr.shape)
    flat_y, flat_r, flat_u = yarr.reshape(-1), ref_arr.reshape(-1), unit.reshape(-1)
    for i in range(out.size):
        yv, rv = flat_y[i], flat_r[i]
        try:
            diff = to_fraction(yv) - to_fraction(rv)
        except ValueError:  # a non-finite y or ref
            out.flat[i] = np.float64(float(yv)) - np.float64(float(rv))
            continue
        out.flat[i] = float(round_to(diff / Fraction(flat_u[i]), FP64))
    return out


def ulp_error(y: Any, ref: Any, fmt: Format | str) -> np.ndarray:
    """``|y - ref| / ulp(ref, fmt)`` in float64 (see :func:`signed_ulp_error`).

    Examples
    --------
    >>> import mpmath
    >>> from amla_numerics.formats import BF16
    >>> ulp_error([1.0], [mpmath.mpf(1) + mpmath.mpf(2) ** -9], BF16)
    array([0.25])
    """
    return np.asarray(np.abs(signed_ulp_error(y, ref, fmt)))  # 0-d stays an array


def ulp_distance(a: Any, b: Any, fmt: Format | str) -> np.ndarray:
    """The number of ``fmt`` values between ``a`` and ``b`` (int64, ``>= 0``).

    Parameters
    ----------
    a, b : array_like
        Values representable in ``fmt`` (any dtype that holds them exactly), broadcast
        together. +0 and -0 are 0 apart; consecutive values 1 apart; ``max_finite`` and inf
        are 1 apart.

    Raises
    ------
    ValueError
        If an argument holds NaN or a value ``fmt`` cannot represent, or they do not
        broadcast.

    Notes
    -----
    The ordered-integer mapping: a non-negative value ``k * 2**qe`` has index
    ``(qe + p - 1 - emin) * 2**(p-1) + k`` (0 for +-0, one more than ``max_finite``'s
    for inf), a negative one minus that; the distance is the absolute difference.
    For formats with a dtype this equals the difference of sign-magnitude integer views.
    """
    fmt = get_format(fmt)
    ia = _ordered_index(a, fmt, "a")
    ib = _ordered_index(b, fmt, "b")
    ia, ib = broadcast_named(a=ia, b=ib)
    if ia.dtype == object:  # FP64-wide indices: Python ints, then back to int64 if they fit
        d = np.abs(ia - ib)
        if d.size and max(d.reshape(-1)) >= 2**63:
            raise ValueError("the distance does not fit in int64 (it spans most of FP64)")
        return d.astype(np.int64)
    return np.asarray(np.abs(ia - ib))  # 0-d stays an array


def _ordered_index(x: Any, fmt: Format, argument: str) -> np.ndarray:
    arr = as_real_array(x, argument)
    parts = decompose(arr, fmt)
    if np.any(np.isnan(parts.special)):
        raise ValueError(f"argument {argument!r} contains NaN, which has no ULP distance")
    finite = parts.special == 0
    binade = parts.qe + (fmt.p - 1) - fmt.emin
    top = fmt.emax - fmt.emin
    over = (binade > top) | ((binade == top) & (parts.k > fmt.max_significand))
    if np.any(finite & (parts.inexact | over)):
        raise ValueError(f"argument {argument!r} holds values not representable in {fmt.name}")
    big = fmt.p > 40  # indices beyond int64 arithmetic's comfort: use Python ints
    half = 2 ** (fmt.p - 1)
    if big:
        binade, k = binade.astype(object), parts.k.astype(np.int64).astype(object)
    else:
        k = parts.k.astype(np.int64)
    idx = binade * half + k
    inf_index = (fmt.emax - fmt.emin) * half + fmt.max_significand + 1
    idx = np.where(finite, idx, inf_index)
    if np.any(~finite) and not fmt.has_inf:
        raise ValueError(f"argument {argument!r} holds an infinity, which {fmt.name} lacks")
    return np.where(parts.sign, -idx, idx)

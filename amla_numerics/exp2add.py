"""AMLA's INT32 exponent add: ``x * 2**n`` as ``as_fp32(as_int32(x) + n * 2**23)``, with hazards.

The hardware adds an int32 to the bit pattern of an FP32 word (an atomic add in global
memory) with two's-complement wraparound. For a normal ``x`` whose scaled exponent stays
normal the result is exactly ``x * 2**n`` (the sign bit is untouched, so negative ``x`` works
too). Everywhere else it is garbage, and these functions return exactly that garbage, bit
for bit, and name it.

Hazard classes (int8 codes, the first that applies wins; ``N`` is the raw increment,
``b`` the magnitude bits ``as_int32(x) & 0x7FFFFFFF``):

====  ===============  ========================================================================
code  name             condition
====  ===============  ========================================================================
0     ``ok``           ``N == 0``, or ``x`` normal and ``2**23 <= b + N < 255 * 2**23``
1     ``nonfinite``    ``x`` is inf or NaN (and ``N != 0``): the pattern becomes another one
2     ``zero``         ``x`` is +-0: ``0 + N`` is a tiny normal/subnormal, or with ``N < 0`` a
                       borrow into the sign bit (``0 - 30 * 2**23`` is about ``-2**99``)
3     ``subnormal``    ``x`` is subnormal: no implicit bit, so the add does not scale it
4     ``sign_borrow``  ``b + N < 0``: the exponent field borrowed from the sign bit
5     ``underflow``    ``0 <= b + N < 2**23``: the true result is subnormal or below and the
                       pattern lost its implicit bit
6     ``overflow``     ``b + N >= 255 * 2**23``: inf/NaN patterns or a carry into the sign bit
====  ===============  ========================================================================

For ``exp2_add`` (``N = n * 2**23``) code 0 holds exactly when the result equals ``x * 2**n``
(``N == 0`` included). With a fractional increment (``exp2_add_bits``, the kernel's
``N = round((dn + eps) * 2**23)``) code 0 means the add stayed inside the normal range, so
the result is the intended ``x * 2**dn * (1 + eps/(1+f))`` perturbation.

Examples
--------
>>> import numpy as np
>>> x = np.float32([3.0, -3.0, 0.0, 2.0**-126])
>>> exp2_add(x, -1)
array([ 1.5, -1.5, -inf,  0. ], dtype=float32)
>>> report = exp2_add_hazards(x, -1)
>>> report.codes
array([0, 0, 2, 5], dtype=int8)
>>> report.counts["zero"], report.n_hazards
(1, 2)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from amla_numerics._arrays import broadcast_named

__all__ = [
    "HAZARDS",
    "HazardReport",
    "count_hazards",
    "exp2_add",
    "exp2_add_bits",
    "exp2_add_bits_hazards",
    "exp2_add_hazards",
]

#: Hazard class names, indexed by their int8 code.
HAZARDS: tuple[str, ...] = (
    "ok",
    "nonfinite",
    "zero",
    "subnormal",
    "sign_borrow",
    "underflow",
    "overflow",
)

_MANT = 1 << 23
_MAX_EXP_FIELD = 255 * _MANT


@dataclass(frozen=True)
class HazardReport:
    """Per-element hazard codes of an exponent add and their counts.

    Attributes
    ----------
    codes : numpy.ndarray of int8
        One code per element (see :data:`HAZARDS`).
    counts : dict[str, int]
        Elements per class, every class listed (zeros included).
    """

    codes: np.ndarray
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def n_hazards(self) -> int:
        """Elements whose code is not ``ok``."""
        return int(sum(v for k, v in self.counts.items() if k != "ok"))


def count_hazards(codes: np.ndarray) -> dict[str, int]:
    """Elements per hazard class in an array of codes (every class listed)."""
    tally = np.bincount(np.asarray(codes, dtype=np.int64).reshape(-1), minlength=len(HAZARDS))
    return {name: int(tally[i]) for i, name in enumerate(HAZARDS)}


def exp2_add(x: Any, n: Any) -> np.ndarray:
    """``as_fp32(as_int32(x) + n * 2**23)`` with int32 wraparound: ``x * 2**n`` where safe.

    Parameters
    ----------
    x : array_like of float32
        The FP32 words (a float32 array or scalar; other dtypes are refused so that
        nothing is rounded silently: use ``round_to(x, FP32)`` first).
    n : array_like of int
        Power-of-two exponents, broadcast against ``x``.

    Returns
    -------
    numpy.ndarray of float32
        Exactly what the hardware add produces, garbage included.

    Notes
    -----
    No rounding: an integer add of ``n * 2**23 mod 2**32``. Equal to ``x * 2**n`` iff the
    hazard code (:func:`exp2_add_hazards`) is 0.
    """
    return exp2_add_bits(x, _increments(n, "n") * _MANT)


def exp2_add_bits(x: Any, N: Any) -> np.ndarray:
    """``as_fp32(as_int32(x) + N)`` with int32 wraparound, for a raw int32 increment ``N``.

    The kernel's increment is ``N = round((max(dn, -30) + eps) * 2**23)``: a power-of-two
    part plus a fractional ``eps`` that perturbs the mantissa (``x (1 + eps / (1 + f))``
    for mantissa ``1.f`` when no carry crosses into the exponent).

    Examples
    --------
    >>> import numpy as np
    >>> exp2_add_bits(np.float32(1.0), 2**22)  # mantissa 1.0 -> 1.5
    array(1.5, dtype=float32)
    """
    xa, Na = broadcast_named(x=_float32(x), N=_increments(N, "N"))
    bits = xa.view(np.uint32).astype(np.int64)
    out = np.asarray((bits + Na) & 0xFFFFFFFF).astype(np.uint32)
    return out.view(np.float32)


def exp2_add_hazards(x: Any, n: Any) -> HazardReport:
    """Hazard codes of :func:`exp2_add` (see the module docstring for the classes)."""
    return exp2_add_bits_hazards(x, _increments(n, "n") * _MANT)


def exp2_add_bits_hazards(x: Any, N: Any) -> HazardReport:
    """Hazard codes of :func:`exp2_add_bits` (see the module docstring for the classes)."""
    xa, Na = broadcast_named(x=_float32(x), N=_increments(N, "N"))
    mag = xa.view(np.uint32).astype(np.int64) & 0x7FFFFFFF
    field_ = mag >> 23
    moved = mag + Na
    codes = np.select(
        [
            Na == 0,
            field_ == 255,
            mag == 0,
            field_ == 0,
            moved < 0,
            moved < _MANT,
            moved >= _MAX_EXP_FIELD,
        ],
        [0, 1, 2, 3, 4, 5, 6],
        default=0,
    ).astype(np.int8)
    return HazardReport(codes, count_hazards(codes))


def _float32(x: Any) -> np.ndarray:
    xa = np.asarray(x)
    if xa.dtype != np.float32:
        raise TypeError(
            f"argument 'x' must be float32 (got {xa.dtype}); round it first with round_to(x, FP32)"
        )
    return xa


def _increments(n: Any, argument: str) -> np.ndarray:
    na = np.asarray(n)
    if na.dtype.kind in "iu":
        return na.astype(np.int64)
    if na.dtype.kind == "f":
        if not np.all(np.isfinite(na)) or np.any(na != np.round(na)):
            raise ValueError(f"argument {argument!r} must hold integers, got non-integral values")
        return na.astype(np.int64)
    raise TypeError(f"argument {argument!r} must be an integer array, got dtype {na.dtype}")

"""Independent exact oracles for the foundation tests (exact rationals only).

Written without reference to the package's rounding code: the representable neighbours
of a rational are found by walking the format's binades, and each mode then picks one.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from amla_numerics.formats import Format

__all__ = ["bits_to_values", "neighbours", "oracle_round", "pattern_values"]

INF = math.inf
NAN = math.nan


def neighbours(a: Fraction, fmt: Format) -> tuple[Fraction, Fraction, Fraction]:
    """(lo, hi, spacing): the grid points around ``a >= 0`` with exponent range unbounded above."""
    e = fmt.emin
    if a > 0:  # a float estimate of log2, started low, then walked up to the binade
        e = max(fmt.emin, math.floor(math.log2(a.numerator) - math.log2(a.denominator)) - 2)
    while Fraction(2) ** (e + 1) <= a:
        e += 1
    spacing = Fraction(2) ** (e - fmt.p + 1)
    lo = (a // spacing) * spacing
    hi = lo if lo == a else lo + spacing
    return lo, hi, spacing


def oracle_round(x: Fraction, fmt: Format, mode: str, *, saturate: bool = False) -> float:
    """The correctly rounded value of ``x`` as a Python float (inf/nan where specified)."""
    neg = x < 0
    a = -x if neg else x
    lo, hi, spacing = neighbours(a, fmt)
    if lo == hi:
        r = lo
    elif mode == "rz":
        r = lo
    elif mode == "ru":
        r = lo if neg else hi
    elif mode == "rd":
        r = hi if neg else lo
    else:
        mid = (lo + hi) / 2
        if a < mid:
            r = lo
        elif a > mid:
            r = hi
        elif mode == "rna":
            r = hi
        else:  # rne: the even significand
            r = lo if (lo / spacing) % 2 == 0 else hi
    if r > fmt.max_finite_exact:
        if saturate:
            r = fmt.max_finite_exact
        else:
            toward_inf = (
                mode in ("rne", "rna") or (mode == "ru" and not neg) or (mode == "rd" and neg)
            )
            if toward_inf:
                v = INF if fmt.has_inf else NAN
                return -v if neg else v
            r = fmt.max_finite_exact
    v = float(r)  # r has <= 53 significant bits and lies in float64's range: exact
    return -v if neg else v


def bits_to_values(bits: np.ndarray, fmt: Format) -> np.ndarray:
    """Interpret unsigned integer bit patterns as ``fmt`` values (float64 array)."""
    uint = {1: np.uint8, 2: np.uint16, 4: np.uint32}[fmt.dtype.itemsize]
    with np.errstate(invalid="ignore"):  # NaN patterns stay NaN
        return bits.astype(uint).view(fmt.dtype).astype(np.float64)


def pattern_values(fmt: Format) -> np.ndarray:
    """Every bit pattern of a <= 16-bit format, as float64 (NaNs included)."""
    n = 2 ** (8 * fmt.dtype.itemsize)
    return bits_to_values(np.arange(n, dtype=np.uint64), fmt)

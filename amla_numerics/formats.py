"""Binary floating-point formats: FP64, FP32, BF16, FP16, the OCP FP8 pair, and custom ones.

A :class:`Format` is the triple (p, emin, emax) of IEEE 754 style parameters plus how the
format spends its top codes (infinities, or NaN only as in OCP E4M3) and the numpy /
ml_dtypes dtype that stores it. Everything else (unit roundoff, largest finite, smallest
normal and subnormal) is derived from those, never typed in.

Conventions: ``p`` counts the implicit bit, so a finite value is ``+-m * 2**(e - p + 1)`` with
integer ``0 <= m < 2**p`` and ``emin <= e <= emax``; normal values have ``m >= 2**(p-1)``.

Examples
--------
>>> from amla_numerics.formats import BF16, E4M3, Format
>>> BF16.p, BF16.emin, BF16.emax, BF16.unit_roundoff
(8, -126, 127, 0.00390625)
>>> E4M3.max_finite, E4M3.has_inf
(448.0, False)
>>> Format.custom(p=5, emin=-6, emax=7).max_finite
248.0
>>> get_format("bf16") is BF16
True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import ml_dtypes
import numpy as np

__all__ = [
    "BF16",
    "E4M3",
    "E5M2",
    "FORMATS",
    "FP16",
    "FP32",
    "FP64",
    "Format",
    "get_format",
]


@dataclass(frozen=True)
class Format:
    """A binary floating-point format.

    Parameters
    ----------
    name : str
        Short lower-case name (``"fp32"``, ``"bf16"``, ...).
    p : int
        Precision in bits, the implicit leading bit included (FP32: 24).
    emin, emax : int
        Smallest and largest exponent of a normal number (FP32: -126, 127).
    has_inf : bool
        True if the format encodes infinities (IEEE style). False for OCP E4M3
        ("fn"), whose all-ones code is NaN and whose largest finite value has mantissa
        ``1.110...`` instead of ``1.111...``.
    dtype : numpy.dtype or None
        The numpy / ml_dtypes dtype that stores the format exactly; None for a custom
        format, whose values are stored in float64 (exact, because ``p <= 53`` and the
        exponent range lies inside float64's).

    Notes
    -----
    Derived quantities: unit roundoff ``u = 2**-p`` (round to nearest);
    ``min_normal = 2**emin``; ``min_subnormal = 2**(emin - p + 1)``;
    ``max_finite = (2 - 2**(1 - p)) * 2**emax``, or ``(2 - 2**(2 - p)) * 2**emax`` for a
    format without infinities whose top mantissa code is NaN (OCP E4M3: 448).
    """

    name: str
    p: int
    emin: int
    emax: int
    has_inf: bool = True
    dtype: np.dtype | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        for arg in ("p", "emin", "emax"):
            if not isinstance(getattr(self, arg), int | np.integer):
                raise TypeError(f"{arg} must be an integer, got {getattr(self, arg)!r}")
        if not 2 <= self.p <= 53:
            raise ValueError(f"p must lie in [2, 53], got {self.p}")
        if not -1022 <= self.emin < 0 < self.emax <= 1023:
            raise ValueError(
                f"need -1022 <= emin < 0 < emax <= 1023, got emin={self.emin}, emax={self.emax}"
            )
        if self.dtype is not None:
            object.__setattr__(self, "dtype", np.dtype(self.dtype))

    @classmethod
    def custom(cls, p: int, emin: int, emax: int, *, name: str | None = None) -> Format:
        """A custom IEEE-style format (with infinities) stored in float64."""
        return cls(name or f"custom(p={p},emin={emin},emax={emax})", p, emin, emax)

    @property
    def storage(self) -> np.dtype:
        """The dtype arrays of this format are returned in (float64 for custom formats)."""
        return self.dtype if self.dtype is not None else np.dtype(np.float64)

    @property
    def unit_roundoff(self) -> float:
        """``2**-p``: the relative error bound of round-to-nearest."""
        return 2.0**-self.p

    @property
    def min_normal(self) -> float:
        """``2**emin``."""
        return 2.0**self.emin

    @property
    def min_subnormal(self) -> float:
        """``2**(emin - p + 1)``."""
        return 2.0 ** (self.emin - self.p + 1)

    @property
    def max_significand(self) -> int:
        """The largest integer significand ``m`` of a finite value at exponent ``emax``."""
        top = 2**self.p - 1
        return top if self.has_inf else top - 1

    @property
    def max_finite(self) -> float:
        """The largest finite value."""
        return float(self.max_finite_exact)

    @property
    def max_finite_exact(self) -> Fraction:
        """The largest finite value as an exact rational."""
        return Fraction(self.max_significand) * Fraction(2) ** (self.emax - self.p + 1)

    def describe(self) -> dict[str, Any]:
        """The format's parameters as a plain dict (for tables and JSON)."""
        return {
            "name": self.name,
            "p": self.p,
            "emin": self.emin,
            "emax": self.emax,
            "unit_roundoff": self.unit_roundoff,
            "max_finite": self.max_finite,
            "min_normal": self.min_normal,
            "min_subnormal": self.min_subnormal,
        }


FP64 = Format("fp64", 53, -1022, 1023, dtype=np.dtype(np.float64))
FP32 = Format("fp32", 24, -126, 127, dtype=np.dtype(np.float32))
BF16 = Format("bf16", 8, -126, 127, dtype=np.dtype(ml_dtypes.bfloat16))
FP16 = Format("fp16", 11, -14, 15, dtype=np.dtype(np.float16))
E4M3 = Format("e4m3", 4, -6, 8, has_inf=False, dtype=np.dtype(ml_dtypes.float8_e4m3fn))
E5M2 = Format("e5m2", 3, -14, 15, dtype=np.dtype(ml_dtypes.float8_e5m2))

#: The built-in formats by name, widest first.
FORMATS: dict[str, Format] = {f.name: f for f in (FP64, FP32, BF16, FP16, E4M3, E5M2)}

_ALIASES = {
    "float64": "fp64",
    "double": "fp64",
    "float32": "fp32",
    "single": "fp32",
    "bfloat16": "bf16",
    "float16": "fp16",
    "half": "fp16",
    "float8_e4m3fn": "e4m3",
    "float8_e5m2": "e5m2",
}


def get_format(fmt: Format | str | np.dtype | type, argument: str = "fmt") -> Format:
    """Resolve a Format, a name (``"bf16"``, ``"bfloat16"``...) or a dtype to a Format.

    Raises
    ------
    ValueError
        If the name or dtype is not a known format; the message names ``argument``.
    """
    if isinstance(fmt, Format):
        return fmt
    if isinstance(fmt, str):
        key = _ALIASES.get(fmt.lower(), fmt.lower())
        if key in FORMATS:
            return FORMATS[key]
        raise ValueError(
            f"unknown format {fmt!r} for argument {argument!r}; valid: {', '.join(FORMATS)}"
        )
    try:
        dt = np.dtype(fmt)
    except TypeError:
        raise TypeError(
            f"argument {argument!r} must be a Format, a format name or a dtype, got {fmt!r}"
        ) from None
    for f in FORMATS.values():
        if f.dtype == dt:
            return f
    raise ValueError(f"dtype {dt} of argument {argument!r} is not a known format")

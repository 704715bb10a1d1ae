"""Validation and normalisation of attention inputs (shapes, dtypes, scale, mask)."""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import ml_dtypes
import mpmath
import numpy as np

from amla_numerics.inputs import check_shapes, is_leading_columns, split_mask
from amla_numerics.rounding import to_fraction

__all__ = ["METHODS", "Problem", "Scale", "check_dps", "prepare"]

METHODS = ("auto", "fast", "mpmath")


def _precision(dtype: np.dtype) -> int | None:
    """Significant bits of a float dtype no wider than float64 (None otherwise)."""
    if dtype.kind not in "fV":
        return None
    try:
        nmant = ml_dtypes.finfo(dtype).nmant
    except (TypeError, ValueError):
        return None
    return nmant + 1 if nmant <= 52 and dtype.itemsize <= 8 else None


@dataclass(frozen=True)
class Scale:
    """The softmax scale, exactly: a rational ``value`` or ``1/sqrt(isqrt_of)``."""

    value: Fraction | None
    isqrt_of: int | None = None

    def mpf(self) -> mpmath.mpf:
        """The scale at the current mpmath precision (exact when representable)."""
        if self.value is not None:
            return mpmath.mpf(self.value.numerator) / self.value.denominator
        return 1 / mpmath.sqrt(self.isqrt_of)

    def dd(self) -> tuple[float, float, float]:
        """``(hi, lo, err)``: the scale as a double-double and its absolute error bound."""
        from amla_numerics.formats import FP64
        from amla_numerics.rounding import round_to

        with mpmath.workprec(300):
            exact = self.mpf()
            hi = float(round_to(exact, FP64))
            lo = float(round_to(exact - mpmath.mpf(hi), FP64))
            rest = abs(exact - mpmath.mpf(hi) - mpmath.mpf(lo))
            if self.value is not None and rest == 0:
                return hi, lo, 0.0
            err = float(round_to(rest, FP64, mode="ru")) + abs(hi) * 2.0**-280
        return hi, lo, err

    def token(self) -> str:
        """A stable text form for cache keys."""
        if self.value is not None:
            return f"q:{self.value.numerator}/{self.value.denominator}"
        return f"isqrt:{self.isqrt_of}"


@dataclass(frozen=True)
class Problem:
    """Validated inputs, broadcast and flattened to a batch of 2-D problems (float64, exact)."""

    q: np.ndarray  # (B, M, Dk)
    k: np.ndarray  # (B, N, Dk)
    v: np.ndarray  # (B, N, Dv)
    mask: np.ndarray | None  # (B, M, N) float64 additive (-inf allowed), or None
    scale: Scale
    batch_shape: tuple[int, ...]
    precision: tuple[int, int, int]  # significant bits of q, k, v's formats
    dtypes: tuple[str, str, str]


def _as_float(x: Any, name: str) -> tuple[np.ndarray, int, str]:
    arr = np.asarray(x)
    prec = _precision(arr.dtype)
    if prec is None:
        raise TypeError(
            f"argument '{name}' must be a float array no wider than float64 (float64, "
            f"float32, float16, bfloat16, FP8), got dtype {arr.dtype}"
        )
    if arr.size == 0:
        raise ValueError(f"argument '{name}' is empty (shape {arr.shape})")
    if arr.dtype == ml_dtypes.bfloat16:
        # the exponent field tells NaN/inf: a 2-byte pass instead of an 8-byte one
        if np.any((arr.view(np.uint16) & 0x7F80) == 0x7F80):
            raise ValueError(f"argument '{name}' contains NaN or inf")
        return arr.astype(np.float64), prec, "bfloat16"  # exact
    out = arr.astype(np.float64)  # exact for every float dtype up to float64
    if not np.isfinite(out).all():
        raise ValueError(f"argument '{name}' contains NaN or inf")
    return out, prec, arr.dtype.name


def make_scale(scale: Any, dk: int) -> Scale:
    """Exact scale: None means ``1/sqrt(dk)`` (rational only for a perfect square ``dk``)."""
    if scale is None:
        r = int(np.sqrt(dk))
        for c in (r - 1, r, r + 1):
            if c > 0 and c * c == dk:
                return Scale(Fraction(1, c))
        return Scale(None, dk)
    if isinstance(scale, bool) or not isinstance(
        scale, numbers.Real | mpmath.mpf | np.floating | np.integer
    ):
        raise TypeError(f"argument 'scale' must be a real number or None, got {scale!r}")
    try:
        return Scale(to_fraction(scale if not isinstance(scale, np.generic) else scale.item()))
    except ValueError:
        raise ValueError(f"argument 'scale' must be finite, got {scale!r}") from None


def check_dps(dps: Any) -> int:
    if isinstance(dps, bool) or not isinstance(dps, numbers.Integral) or dps < 15:
        raise ValueError(f"argument 'dps' must be an integer >= 15, got {dps!r}")
    return int(dps)


def prepare(q: Any, k: Any, v: Any, scale: Any, mask: Any) -> Problem:
    """Check and broadcast; every error names the offending argument."""
    qa, pq, dq = _as_float(q, "q")
    ka, pk, dk_ = _as_float(k, "k")
    if is_leading_columns(v, k):  # v = k[..., :Dv] (MLA): reuse k's conversion, same values
        va, pv, dv = ka[..., : np.shape(v)[-1]], pk, dk_
    else:
        va, pv, dv = _as_float(v, "v")
    batch, m, n, _, _ = check_shapes(qa, ka, va)
    keep, bias = split_mask(mask, batch, m, n)
    msk = None
    if keep is not None:  # the fast and mpmath paths take one additive float64 mask
        add = np.where(keep, 0.0 if bias is None else bias, -np.inf)
        msk = np.ascontiguousarray(add.reshape(-1, m, n))
    bq = np.broadcast_to(qa, (*batch, *qa.shape[-2:])).reshape(-1, *qa.shape[-2:])
    bk = np.broadcast_to(ka, (*batch, *ka.shape[-2:])).reshape(-1, *ka.shape[-2:])
    bv = np.broadcast_to(va, (*batch, *va.shape[-2:])).reshape(-1, *va.shape[-2:])
    return Problem(
        bq, bk, bv, msk, make_scale(scale, qa.shape[-1]), tuple(batch), (pq, pk, pv), (dq, dk_, dv)
    )

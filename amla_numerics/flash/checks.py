"""Validation of the emulator's arguments and the attention mask, shared with the bounds
(:func:`amla_numerics.analysis.bounds.bound_inputs` checks what the emulator checks).

Every user mistake raises ValueError/TypeError with one sentence naming the argument.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import ml_dtypes
import numpy as np

from amla_numerics.inputs import check_shapes, is_leading_columns, split_mask
from amla_numerics.variants import check_c, check_tau, spec

__all__ = ["Inputs", "block_bounds", "check_fits", "check_inputs", "check_scale"]


@dataclass(frozen=True)
class Inputs:
    """Validated arrays (float64 views of the exact input values) and derived sizes."""

    q: np.ndarray
    k: np.ndarray
    v: np.ndarray
    keep: np.ndarray | None  # bool (..., M, N), True = attend; None = attend to all
    bias: np.ndarray | None  # float64 (..., M, N) additive score bias (0 where masked); None: none
    scale: float
    batch: tuple[int, ...]
    m: int
    n: int
    dk: int
    dv: int


def _array(x: Any, name: str, finite_checked: bool = False) -> np.ndarray:
    try:
        a = np.asarray(x)
    except Exception as exc:  # pragma: no cover - exotic inputs
        raise TypeError(f"argument {name!r} must be an array of real numbers") from exc
    if a.dtype.kind not in "fViu" or (a.dtype.kind == "V" and a.dtype.itemsize > 8):
        raise TypeError(f"argument {name!r} must hold real numbers, got dtype {a.dtype}")
    if not finite_checked and not _all_finite(a):  # a view of checked memory needs no second look
        raise ValueError(f"argument {name!r} contains NaN or infinite values")
    return a


# exponent-field masks: a value is finite iff its exponent field is not all ones
_EXP_MASKS = {
    np.dtype(ml_dtypes.bfloat16): (np.uint16, 0x7F80),
    np.dtype(np.float16): (np.uint16, 0x7C00),
    np.dtype(np.float32): (np.uint32, 0x7F800000),
    np.dtype(np.float64): (np.uint64, 0x7FF0000000000000),
}


def _all_finite(a: np.ndarray) -> bool:
    if a.dtype in _EXP_MASKS:  # a same-size view works for any strides
        uint, mask = _EXP_MASKS[a.dtype]
        if not a.size:
            return True
        # finite iff the exponent field is not all ones, i.e. |bits| < the field's mask
        return bool((a.view(uint) & uint(mask | (mask - 1))).max() < uint(mask))
    if a.dtype.kind in "fV":
        return bool(np.isfinite(a).all())
    return True


def check_inputs(
    q: Any,
    k: Any,
    v: Any,
    *,
    scale: Any,
    block_n: Any,
    mask: Any,
    causal: Any,
    c: Any,
    tau: Any,
) -> Inputs:
    """Check shapes and options; build the combined boolean mask (see :func:`attention`)."""
    qa, ka = _array(q, "q"), _array(k, "k")
    va = _array(v, "v", finite_checked=is_leading_columns(v, ka))
    batch, m, n, dk, dv = check_shapes(qa, ka, va)
    if isinstance(block_n, bool) or not isinstance(block_n, (int, np.integer)) or block_n < 1:
        raise ValueError(f"argument 'block_n' must be an integer >= 1, got {block_n!r}")
    if scale is None:
        scale = 1.0 / math.sqrt(dk)
    if isinstance(scale, bool) or not isinstance(scale, (int, float, np.floating, np.integer)):
        raise TypeError(f"argument 'scale' must be a real number, got {type(scale).__name__}")
    scale = float(scale)
    if not math.isfinite(scale) or scale == 0:
        raise ValueError(f"argument 'scale' must be finite and non-zero, got {scale}")
    check_c(c)
    check_tau(tau)
    if not isinstance(causal, (bool, np.bool_)):
        raise TypeError(f"argument 'causal' must be a bool, got {type(causal).__name__}")
    keep, bias = split_mask(mask, batch, m, n)
    if causal:
        rows = np.arange(m)[:, None]
        cols = np.arange(n)[None, :]
        tri = cols <= rows + (n - m)  # bottom-right aligned: the last query sees every key
        keep = tri if keep is None else keep & tri
    return Inputs(qa, ka, va, keep, bias, scale, tuple(batch), m, n, dk, dv)


#: Largest finite value and smallest normal of each work format.
_WORK_RANGE = {"fp32": (float(np.finfo(np.float32).max), 2.0**-126), "fp64": (math.inf, 2.0**-1022)}
#: The matrix-unit input formats that can overflow: name, largest finite value, storage dtype.
_IN_FORMATS = {
    "bf16": ("BF16", ml_dtypes.bfloat16),
    "fp16": ("FP16", np.float16),
    "fp32": ("FP32", np.float32),
}


def check_scale(scale: float, work: str, variant: str) -> None:
    """Refuse a scale the work format cannot hold (rounded to inf, or below its normal
    range, where its relative rounding error is unbounded), and a negative scale for
    ``fa4`` (it takes the running max of the unscaled scores); for ``fa4`` the same range
    test applies to ``scale * log2 e``, the constant its exp2 folds in.

    Examples
    --------
    >>> check_scale(0.125, "fp32", "amla")
    >>> check_scale(1e39, "fp32", "amla")
    Traceback (most recent call last):
    ...
    ValueError: argument 'scale' (1e+39) does not fit the work format fp32 (normal range ...)
    >>> check_scale(-0.125, "fp32", "fa4")
    Traceback (most recent call last):
    ...
    ValueError: argument 'scale' must be positive for variant 'fa4' (...), got -0.125
    """
    top, tiny = _WORK_RANGE[work]
    values = [("scale", scale)]
    if spec(variant).softmax == "fa4":
        if scale < 0:
            raise ValueError(
                "argument 'scale' must be positive for variant 'fa4' (it takes the running max "
                f"of the unscaled scores), got {scale!r}"
            )
        values.append(("scale * log2(e)", scale * math.log2(math.e)))
    for what, x in values:
        if not tiny <= abs(x) <= top:
            detail = "" if what == "scale" else f" ({what} = {x!r})"
            raise ValueError(
                f"argument 'scale' ({scale!r}){detail} does not fit the work format {work} "
                f"(normal range {tiny!r} to {top!r})"
            )


def check_fits(raw: np.ndarray, rounded: np.ndarray, name: str, in_format: str) -> None:
    """Refuse a matrix input whose values overflow the matrix unit's input format (finite
    ``raw`` that rounds to inf, e.g. FP16 inputs beyond 65504); ``rounded`` is ``raw``
    rounded to ``in_format`` (float64). Inputs already stored in the format pass unread."""
    if in_format not in _IN_FORMATS:
        return
    label, storage = _IN_FORMATS[in_format]
    if raw.dtype == np.dtype(storage) or _all_finite(rounded):
        return
    big = float(np.max(np.abs(raw.astype(np.float64))))
    raise ValueError(
        f"argument {name!r} overflows the matrix unit's input format {label} "
        f"(largest |value| {big:.6g}, largest finite {label} "
        f"{float(ml_dtypes.finfo(storage).max):.6g})"
    )


def block_bounds(n: int, block_n: int) -> list[tuple[int, int]]:
    """``[(lo, hi), ...]`` of the KV blocks; the last one may be shorter.

    Examples
    --------
    >>> block_bounds(5, 2)
    [(0, 2), (2, 4), (4, 5)]
    """
    return [(lo, min(lo + block_n, n)) for lo in range(0, n, block_n)]

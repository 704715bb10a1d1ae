"""Attention inputs, checked once for the reference and the emulator: shapes, broadcasting, masks.

Both :func:`amla_numerics.reference.attention` and :func:`amla_numerics.flash.attention` take
``q (..., M, Dk)``, ``k (..., N, Dk)``, ``v (..., N, Dv)`` whose leading dimensions broadcast, and
an optional ``mask`` with ONE meaning in both:

- a boolean array: ``True`` attends, ``False`` drops the key (a keep-mask);
- a float array: an additive bias on the scaled scores, any finite value or ``-inf`` (drops the
  key); NaN and ``+inf`` are refused.

The reference adds the bias exactly; the emulator rounds it to its work format and adds it to
the scaled score in that format (``docs/numerics.md``, stage 1). MLA's ``V = K[..., :Dv]`` is
recognised by :func:`is_leading_columns` (same memory), so the checks and conversions of K serve V.

Examples
--------
>>> import numpy as np
>>> q, k = np.zeros((2, 4)), np.zeros((5, 4))
>>> check_shapes(q, k, k[:, :3], "q", "k", "v")
((), 2, 5, 4, 3)
>>> keep, bias = split_mask(np.array([0.0, -np.inf, 0.5, 0.0, 0.0]), (), 2, 5)
>>> keep[0].tolist(), bias[0].tolist()
([True, False, True, True, True], [0.0, 0.0, 0.5, 0.0, 0.0])
>>> split_mask(np.array([0.0, np.nan, 0, 0, 0]), (), 2, 5)
Traceback (most recent call last):
...
ValueError: argument 'mask' contains NaN or +inf (a float mask is an additive bias: finite or -inf)
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["check_shapes", "is_leading_columns", "split_mask"]


def is_leading_columns(v: Any, k: Any) -> bool:
    """True if ``v`` is the view ``k[..., :Dv]`` (same memory, dtype, strides; Dv <= Dk).

    Examples
    --------
    >>> import numpy as np
    >>> k = np.ones((3, 8))
    >>> is_leading_columns(k[:, :4], k), is_leading_columns(k[:, :4].copy(), k)
    (True, False)
    """
    return (
        isinstance(v, np.ndarray)
        and isinstance(k, np.ndarray)
        and v.dtype == k.dtype
        and v.ndim == k.ndim >= 2
        and v.shape[:-1] == k.shape[:-1]
        and 0 < v.shape[-1] <= k.shape[-1]
        and v.strides == k.strides
        and v.__array_interface__["data"][0] == k.__array_interface__["data"][0]
    )


def check_shapes(
    q: np.ndarray, k: np.ndarray, v: np.ndarray, qn: str = "q", kn: str = "k", vn: str = "v"
) -> tuple[tuple[int, ...], int, int, int, int]:
    """Check ranks and dimensions; return ``(batch, M, N, Dk, Dv)`` (``batch`` broadcast).

    Raises
    ------
    ValueError
        A rank below 2, an empty dimension, Dk or N disagreeing, or leading dims that do not
        broadcast (the message names the arguments).
    """
    for name, a in ((qn, q), (kn, k), (vn, v)):
        if a.ndim < 2:
            raise ValueError(
                f"argument {name!r} must have at least 2 dimensions (..., rows, features), "
                f"got shape {a.shape}"
            )
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(
            f"arguments {qn!r} {q.shape} and {kn!r} {k.shape} differ in the feature dimension Dk"
        )
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(
            f"arguments {kn!r} {k.shape} and {vn!r} {v.shape} differ in the number of keys N"
        )
    m, n, dk, dv = q.shape[-2], k.shape[-2], q.shape[-1], v.shape[-1]
    if min(m, n, dk, dv) < 1:
        raise ValueError(f"empty dimension: {qn} {q.shape}, {kn} {k.shape}, {vn} {v.shape}")
    try:
        batch = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    except ValueError:
        raise ValueError(
            f"leading dimensions of {qn!r} {q.shape}, {kn!r} {k.shape} and {vn!r} {v.shape} "
            "do not broadcast"
        ) from None
    return tuple(batch), m, n, dk, dv


def split_mask(
    mask: Any, batch: tuple[int, ...], m: int, n: int
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """A mask as ``(keep, bias)``: a bool keep-mask and a float64 additive bias (0 where none).

    Either may be None (all keys kept; no bias). Both broadcast to ``(*batch, m, n)`` and are
    returned broadcast to that shape (read-only views where possible).

    Raises
    ------
    TypeError
        A mask that is neither boolean nor float.
    ValueError
        NaN or ``+inf`` in a float mask, or a shape that does not broadcast to the scores.
    """
    if mask is None:
        return None, None
    ma = np.asarray(mask)
    target = (*batch, m, n)
    try:
        if np.broadcast_shapes(ma.shape, target) != target:
            raise ValueError
    except ValueError:
        raise ValueError(
            f"argument 'mask' {ma.shape} does not broadcast to the scores {target}"
        ) from None
    if ma.dtype == np.bool_:
        return np.broadcast_to(ma, target), None
    if ma.dtype.kind not in "fiuV":
        raise TypeError(
            f"argument 'mask' must be boolean (True = attend) or a float additive bias, "
            f"got dtype {ma.dtype}"
        )
    bias = ma.astype(np.float64)
    if np.isnan(bias).any() or (bias == np.inf).any():
        raise ValueError(
            "argument 'mask' contains NaN or +inf (a float mask is an additive bias: "
            "finite or -inf)"
        )
    keep = bias != -np.inf
    finite_bias = np.where(keep, bias, 0.0)
    return (
        np.broadcast_to(keep, target),
        np.broadcast_to(finite_bias, target) if np.any(finite_bias) else None,
    )

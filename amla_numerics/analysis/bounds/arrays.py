"""The float64 evaluation of the bound over keys and KV blocks.

Per-block values mapped to keys, suffix sums over the later blocks, and the weighted sums
``sum_i w_i t_i |V_i|`` that never turn ``0 * inf`` into NaN (``docs/bounds.md`` section 1:
the weights and sums are evaluated in float64).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__: list[str] = []


def _blocked(a: np.ndarray, t: int, bn: int, fill: float) -> np.ndarray:
    """(..., N) -> (..., T, B), padding the last block with ``fill``."""
    n = a.shape[-1]
    if t * bn != n:
        pad = np.full((*a.shape[:-1], t * bn - n), fill)
        a = np.concatenate([a, pad], axis=-1)
    return a.reshape(*a.shape[:-1], t, bn)


def _after(a: np.ndarray) -> np.ndarray:
    """Per block b, the sum of ``a`` over the blocks strictly after b (last axis)."""
    tot = np.cumsum(a[..., ::-1], axis=-1)[..., ::-1]
    return tot - a


def _to_keys(a: np.ndarray, bn: int, n: int) -> np.ndarray:
    """(..., T) per-block values -> (..., N) per key."""
    return np.repeat(a, bn, axis=-1)[..., :n]


def _mm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` for ``a`` (..., M, N) and ``b`` (..., N, Dv), computed as ``(b^T a^T)^T``:
    the same sums, but a long ``N`` as the inner dimension of a BLAS product with the
    small ``M`` outside is pathologically slow under multithreaded OpenBLAS on a loaded
    machine (seconds instead of milliseconds); ``b`` is best a transposed view of a
    C-contiguous (..., Dv, N) array (as :func:`bound_inputs` stores ``|v|``)."""
    return np.swapaxes(np.swapaxes(b, -1, -2) @ np.swapaxes(a, -1, -2), -1, -2)


def _weighted_sum(wa: np.ndarray, v_abs: np.ndarray) -> np.ndarray:
    """``wa @ v_abs`` (both >= 0 or inf/NaN) where an infinite (or undefined 0 * inf)
    entry of one meeting a non-zero entry of the other gives +inf and meeting a zero gives
    0 (never NaN; an infinite ``v_abs`` is ``|V|**2`` beyond float64)."""
    bad = ~np.isfinite(wa)
    bad_v = ~np.isfinite(v_abs)
    if not (bad.any() or bad_v.any()):
        return _mm(wa, v_abs)
    wa0, va0 = np.where(bad, 0.0, wa), np.where(bad_v, 0.0, v_abs)
    res = _mm(wa0, va0)
    hit = _mm(bad.astype(np.float64), (v_abs != 0).astype(np.float64)) > 0
    hit |= _mm((wa != 0).astype(np.float64), bad_v.astype(np.float64)) > 0
    return np.where(hit, np.inf, res)


def _times(a: Any, b: Any) -> np.ndarray:
    """``a * b`` with ``0 * inf = 0`` (a zero factor is an exact zero here)."""
    with np.errstate(invalid="ignore"):
        r = np.multiply(a, b)
    return np.where(np.isnan(r), 0.0, r)

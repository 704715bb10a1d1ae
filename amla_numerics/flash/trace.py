"""The emulator's per-block trace and the rescale probability read from it.

A leaf of the emulator package: the emulator fills a :class:`Trace` per run (per split in a
split-KV run, :mod:`~amla_numerics.flash.splitkv`); the report and the pipeline model read
its rescale decisions through :func:`rescale_probability`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Trace", "rescale_probability"]


@dataclass(frozen=True)
class Trace:
    """Per-block state, arrays of shape (n_blocks, ..., M).

    Attributes
    ----------
    m : float64
        The max used at block j (``lazy``: the stale running max).
    n, dn : int64
        AMLA's ``n_j`` and ``dn_j = n_j - n_{j-1}`` (0 for the other variants).
    r_hat, cof, eps : float64
        AMLA's ``r^_j``, ``cof_j``, ``eps_j`` (1, 1, 0 for the other variants; ``eps_0`` is
        computed as the kernel does but never applied).
    N : int32
        The increment added to O's bits at block j (0 at block 0 and for non-AMLA variants).
    rescaled : bool
        Whether block j rescaled O (False at block 0; data-dependent for ``lazy``).
    p_underflow, p_saturate : int64
        Per row and block: P (or A) elements non-zero before the P cast and zero after it,
        and elements the cast saturated (:mod:`~amla_numerics.flash.fp8`).

    Blocks are in visit order (last to first under ``kv_order="reverse"``).
    """

    m: np.ndarray
    n: np.ndarray
    r_hat: np.ndarray
    cof: np.ndarray
    eps: np.ndarray
    dn: np.ndarray
    N: np.ndarray
    rescaled: np.ndarray
    p_underflow: np.ndarray | None = None
    p_saturate: np.ndarray | None = None

    def rescale_prob(self, group_rows: int | None = None) -> float:
        """The per-block rescale probability of the run: :func:`rescale_probability` of
        :attr:`rescaled` (the one definition the report and the pipeline model use)."""
        return rescale_probability(self.rescaled, group_rows)


def rescale_probability(rescaled: Any, group_rows: int | None = None) -> float:
    """Fraction of (block, row group) steps, over blocks 1 .. J-1, in which O was rescaled.

    A vector core rescales a group of rows together when *any* row in it needs it (the
    ``lazy`` variant's branch is taken per group), so the probability of a step is whether
    any row of the group rescaled. This is the one definition of the lazy variant's rescale
    probability: the report records it per case and the pipeline model takes the number.

    Parameters
    ----------
    rescaled : array_like of bool, shape (n_blocks, ..., M)
        :attr:`Trace.rescaled` (block 0 never rescales and is ignored).
    group_rows : int, optional
        Rows decided together; a positive divisor of M (default: all M rows of the last
        axis, one group per leading index).

    Returns
    -------
    float
        In [0, 1]; NaN when there is only one block (no step can rescale).

    Raises
    ------
    ValueError
        Not a boolean array with at least 2 dimensions, or a bad ``group_rows``.

    Examples
    --------
    >>> import numpy as np
    >>> r = np.array([[0, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1]], bool)
    >>> rescale_probability(r), rescale_probability(r, group_rows=2), rescale_probability(r, 1)
    (0.6666666666666666, 0.3333333333333333, 0.16666666666666666)
    """
    arr = np.asarray(rescaled)
    if arr.dtype != bool or arr.ndim < 2:
        raise ValueError(
            "argument 'rescaled' must be a boolean array of shape (n_blocks, ..., M), got "
            f"dtype {arr.dtype} and {arr.ndim} dimension(s)"
        )
    m = arr.shape[-1]
    g = m if group_rows is None else group_rows
    if isinstance(g, bool) or not isinstance(g, int | np.integer) or g < 1 or m % g:
        raise ValueError(
            f"argument 'group_rows' must be a positive divisor of M = {m}, got {group_rows!r}"
        )
    if arr.shape[0] < 2:
        return float("nan")
    later = arr[1:].reshape(arr.shape[0] - 1, -1, m // int(g), int(g))
    return float(later.any(axis=-1).mean())

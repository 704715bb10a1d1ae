"""Matrix-unit accumulation models and the vector unit's row-sum orders, bit for bit.

Every model takes operands whose values are exact (already rounded to the input format),
forms every product exactly (a BF16/FP16/FP32 product is exact in float64) and differs only
in how the products are summed and rounded to the output format (FP32 or FP64):

``"exact"``
    The exact sum of all ``K`` products, rounded once (``out_rounding``). Implemented as a
    float64 BLAS product ``s``, which is exact when every product is a multiple of
    ``Q = 2**(qa_i + qb_j)`` (the smallest quanta of row ``i`` and column ``j``) and
    ``||a_i|| ||b_j|| < 2**53 Q`` (the usual case for BF16 operands); otherwise it obeys
    ``|s - x| <= (K + 2) 2**-52 sum_k |a_ik| max|b|``: where both ends of that interval
    round to the same FP32 number it is the answer; elsewhere (mostly exact ties, a few
    per thousand for P V) the element's own products decide (exactness test, tight bound),
    then ``math.fsum``, or the split of ``a`` into a large part and a tail. Long 2-D sums
    (``K > 4096``: an unblocked P V) sum 256-key BLAS blocks under a tighter bound and settle
    the few open elements from their own products. The certificate lives in
    :mod:`amla_numerics.flash._exactsum`.
    For an FP64 output the BLAS result is returned as it is (error within that bound; only
    the ``"exact"`` policy uses it, to check recurrences to ~1e-12).
``"fp32_seq"``
    ``s_0 = 0``, ``s_k = fl(s_{k-1} + a_k b_k)`` for ``k = 1..K`` in index order: a chain of
    fused multiply-adds, one rounding each.
``"pairwise"``
    The exact products, then a balanced tree: each level adds neighbours ``(2i, 2i+1)``
    with one rounding; an odd last element moves up unchanged.
``"block_fma"``
    Chunks of ``block`` products in index order; for each chunk the accumulator ``c`` and
    the products are aligned to the largest exponent ``e`` among them (zeros ignored),
    i.e. cut to multiples of ``2**(e - (p - 1) - extra_bits)`` (``p`` = 24 for FP32) with
    ``align_rounding`` (``"rz"``: truncation), summed exactly, and the sum rounded to the
    output format with ``out_rounding``. After Fasi, Higham, Mikaitis & Pranesh (2021) and
    Khattak & Mikaitis (2025); see :data:`ACCUMULATION_PRESETS`.

The rounded additions are exact-then-round: a float64 TwoSum gives the sum and its error,
the sum is moved to the odd neighbour when the error is non-zero (round to odd, which
makes a second rounding to ``p <= 51`` bits correct in every mode), then rounded.

Examples
--------
>>> import numpy as np
>>> a = np.array([[1.0, 2.0**-24, 2.0**-24]])
>>> b = np.ones((3, 1))
>>> matmul(a, b, Accumulation("exact"), "fp32")  # 1 + 2**-23: exact sum, one rounding
array([[1.0000001]], dtype=float32)
>>> matmul(a, b, Accumulation("fp32_seq"), "fp32")  # each 2**-24 is a tie lost to even
array([[1.]], dtype=float32)
>>> float(vector_sum(np.float32([1.0, 2.0**-24, 2.0**-24, 2.0**-24]), "pairwise"))
1.0000001192092896
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from amla_numerics.flash._exactsum import (
    _exact,
    _round64,
    _round_odd,
    add_rounded,
    column_stats,
    min_nonzero_abs,
    quantum_exp_from_min,
)
from amla_numerics.formats import FP32, FP64

__all__ = [
    "ACCUMULATION_MODELS",
    "ACCUMULATION_PRESETS",
    "Accumulation",
    "add_rounded",
    "column_stats",
    "matmul",
    "min_nonzero_abs",
    "quantum_exp_from_min",
    "vector_sum",
]

ACCUMULATION_MODELS: tuple[str, ...] = ("exact", "fp32_seq", "pairwise", "block_fma")
_ROUNDINGS = ("rne", "rz")


@dataclass(frozen=True)
class Accumulation:
    """How a matrix unit sums products (see the module docstring).

    Attributes
    ----------
    model : {"exact", "fp32_seq", "pairwise", "block_fma"}
    block : int
        Products per block FMA (``block_fma`` only).
    extra_bits : int
        Alignment bits kept beyond the output precision (``block_fma`` only).
    align_rounding : {"rz", "rne"}
        Rounding of aligned significands (``block_fma``; ``"rz"`` = truncation).
    out_rounding : {"rne", "rz"}
        Rounding of each result to the output format.
    """

    model: str = "exact"
    block: int = 4
    extra_bits: int = 0
    align_rounding: str = "rz"
    out_rounding: str = "rne"

    def __post_init__(self) -> None:
        if self.model not in ACCUMULATION_MODELS:
            raise ValueError(
                f"accumulation model must be one of {ACCUMULATION_MODELS}, got {self.model!r}"
            )
        if not isinstance(self.block, int) or self.block < 1:
            raise ValueError(f"accumulation 'block' must be an int >= 1, got {self.block!r}")
        if not isinstance(self.extra_bits, int) or not 0 <= self.extra_bits <= 20:
            raise ValueError(
                f"accumulation 'extra_bits' must be an int in [0, 20], got {self.extra_bits!r}"
            )
        if self.align_rounding not in _ROUNDINGS or self.out_rounding not in _ROUNDINGS:
            raise ValueError(f"accumulation roundings must be one of {_ROUNDINGS}")


#: Block-FMA presets. "v100"/"t4": 4 products + accumulator, truncated alignment, RZ
#: normalisation (Fasi et al. 2021, FP16 inputs, FP32 accumulation); "a100": 8 products
#: (same paper, FP16/BF16). "h100": 16 products with 3 extra alignment bits and RZ after
#: the Khattak-Mikaitis models [inferred from the abstract-level description: check the
#: paper's tables before quoting numbers measured with it].
ACCUMULATION_PRESETS: dict[str, Accumulation] = {
    "v100": Accumulation(
        "block_fma", block=4, extra_bits=0, align_rounding="rz", out_rounding="rz"
    ),
    "t4": Accumulation("block_fma", block=4, extra_bits=0, align_rounding="rz", out_rounding="rz"),
    "a100": Accumulation(
        "block_fma", block=8, extra_bits=0, align_rounding="rz", out_rounding="rz"
    ),
    "h100": Accumulation(
        "block_fma", block=16, extra_bits=3, align_rounding="rz", out_rounding="rz"
    ),
}

_FORMATS = {"fp32": FP32, "fp64": FP64}
_CHUNK = 1 << 22  # products held at once by the pairwise and block-FMA models (32 MB)
_DTYPES = {"fp32": np.float32, "fp64": np.float64}


def matmul(
    a: np.ndarray,
    b: np.ndarray,
    acc: Accumulation,
    out: str = "fp32",
    *,
    in_precision: int | None = None,
    b_stats: tuple[np.ndarray, np.ndarray] | None = None,
    b_absmax: float | None = None,
    a_stats: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """``a @ b`` (``a`` (..., M, K), ``b`` (..., K, N), exact values) under model ``acc``.

    Returns an array of the ``out`` format's dtype (float32 or float64), leading
    dimensions broadcast as in ``numpy.matmul``. ``in_precision`` (optional) promises that
    every operand has at most that many significant bits (BF16: 8, with a subnormal
    quantum no finer than ``2**-133``); it only speeds up the ``"exact"`` model, as does
    ``b_stats``, ``b``'s :func:`column_stats` computed once by the caller, and ``b_absmax``,
    an upper bound of ``max |b|`` (ditto), and ``a_stats``, ``a``'s row ``(norms, quantum
    exponents)`` (the row analogue of ``b_stats``).
    """
    if out not in _FORMATS:
        raise ValueError(f"argument 'out' must be 'fp32' or 'fp64', got {out!r}")
    if out == "fp64" and acc.out_rounding != "rne":
        raise ValueError("an fp64 product supports only out_rounding='rne'")
    a64 = np.asarray(a, dtype=np.float64)
    b64 = np.asarray(b, dtype=np.float64)
    if acc.model == "exact":
        return _exact(a64, b64, out, acc.out_rounding, in_precision, b_stats, b_absmax, a_stats)
    if a64.shape[-1] != b64.shape[-2]:
        raise ValueError(f"matmul: inner dimensions differ ({a64.shape[-1]} and {b64.shape[-2]})")
    if acc.model == "fp32_seq":  # one outer product per step: no (M, N, K) array
        shape = (*np.broadcast_shapes(a64.shape[:-2], b64.shape[:-2]), a64.shape[-2], b64.shape[-1])
        s = np.zeros(shape)
        for k in range(a64.shape[-1]):
            s = add_rounded(
                s, a64[..., :, k : k + 1] * b64[..., k : k + 1, :], out, acc.out_rounding
            )
            s = s.astype(np.float64)
        return s.astype(_DTYPES[out])
    # pairwise / block_fma need the (..., M, N, K) products: a few rows at a time
    per_row = max(
        1, int(np.prod(np.broadcast_shapes(a64.shape[:-2], b64.shape[:-2]), dtype=np.int64))
    )
    per_row *= b64.shape[-1] * a64.shape[-1]
    step = max(1, _CHUNK // max(per_row, 1))
    parts = []
    for r0 in range(0, a64.shape[-2], step):
        ar = a64[..., r0 : r0 + step, :]
        prods = ar[..., :, None, :] * np.swapaxes(b64, -1, -2)[..., None, :, :]  # (..., m, N, K)
        if acc.model == "pairwise":
            parts.append(_pairwise(prods, out, acc.out_rounding).astype(_DTYPES[out]))
        else:
            parts.append(_block_fma(prods, acc, out))
    if not parts:
        shape = (*np.broadcast_shapes(a64.shape[:-2], b64.shape[:-2]), 0, b64.shape[-1])
        return np.zeros(shape, _DTYPES[out])
    return np.concatenate(parts, axis=-2)


def vector_sum(x: np.ndarray, order: str, axis: int = -1) -> np.ndarray:
    """Sum of ``x`` (float32 or float64) along ``axis`` in the vector unit's ``order``.

    ``"seq"``: left to right, one rounding per add, starting from ``x[0]``;
    ``"pairwise"``: the tree of :func:`matmul`'s pairwise model; ``"exact"``: the exact
    sum rounded once. Each add is IEEE round-to-nearest-even in ``x.dtype``.
    """
    x = np.moveaxis(np.asarray(x), axis, -1)
    dt = x.dtype
    if x.shape[-1] == 0:
        return np.zeros(x.shape[:-1], dt)
    if order == "seq":
        s = x[..., 0].copy()
        for k in range(1, x.shape[-1]):
            s = s + x[..., k]
        return s
    if order == "pairwise":
        while x.shape[-1] > 1:
            n2 = x.shape[-1] // 2
            y = x[..., 0 : 2 * n2 : 2] + x[..., 1 : 2 * n2 : 2]
            if x.shape[-1] % 2:
                y = np.concatenate([y, x[..., -1:]], axis=-1)
            x = y
        return x[..., 0]
    if order == "exact":
        out = "fp32" if dt == np.float32 else "fp64"
        ones = np.ones((*x.shape[-1:], 1))
        return _exact(x.astype(np.float64)[..., None, :], ones, out, "rne")[..., 0, 0]
    raise ValueError(f"unknown row-sum order {order!r}")


# --------------------------------------------------------------------------- internals


def _pairwise(prods: np.ndarray, out: str, mode: str) -> np.ndarray:
    x = prods
    if x.shape[-1] == 0:
        return np.zeros(x.shape[:-1])
    if x.shape[-1] == 1:  # a single product still gets its one rounding
        return _round64(_round_odd(x[..., 0], np.zeros(x.shape[:-1])), out, mode).astype(np.float64)
    while x.shape[-1] > 1:
        n2 = x.shape[-1] // 2
        y = add_rounded(x[..., 0 : 2 * n2 : 2], x[..., 1 : 2 * n2 : 2], out, mode).astype(
            np.float64
        )
        if x.shape[-1] % 2:
            y = np.concatenate([y, x[..., -1:]], axis=-1)
        x = y
    return x[..., 0]


def _block_fma(prods: np.ndarray, acc: Accumulation, out: str) -> np.ndarray:
    p = 24 if out == "fp32" else 53
    c = np.zeros(prods.shape[:-1])
    for k0 in range(0, prods.shape[-1], acc.block):
        terms = np.concatenate([c[..., None], prods[..., k0 : k0 + acc.block]], axis=-1)
        _, e1 = np.frexp(terms)
        e = np.where(terms == 0, -1000, e1.astype(np.int64) - 1).max(axis=-1, keepdims=True)
        qe = np.maximum(e, -1000) - (p - 1) - acc.extra_bits
        scaled = np.ldexp(terms, -qe)
        cut = np.trunc(scaled) if acc.align_rounding == "rz" else np.round(scaled)
        total = np.ldexp(cut.sum(axis=-1), qe[..., 0])  # exact: few short integers
        c = _round64(total, out, acc.out_rounding).astype(np.float64)
    return c.astype(_DTYPES[out])

"""The "exact" accumulation model's certified sum: ``a @ b`` rounded once, bit for bit.

Private to :mod:`amla_numerics.flash.accumulate` (its module docstring states the model).
A float64 BLAS product is exact when every product is a multiple of the operands' smallest
quanta and the row/column norms stay below ``2**53`` of them; otherwise it obeys
``|s - x| <= (K + 2) 2**-52 sum_k |a_ik| max|b|``, and the elements whose interval does not
round to one output value are settled from their own products (exactness test, tight
bound, round-to-odd, ``math.fsum``) or by splitting ``a`` into a large part and a tail.
Long 2-D sums (``K > 4096``) sum 256-key BLAS blocks under a tighter bound first.
Written by hand: no library rounds a float64 matrix product's exact value to FP32.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import numpy as np

from amla_numerics.formats import FP32, FP64
from amla_numerics.rounding import round_to

__all__ = ["add_rounded", "column_stats", "min_nonzero_abs", "quantum_exp_from_min"]

_FORMATS = {"fp32": FP32, "fp64": FP64}
_DTYPES = {"fp32": np.float32, "fp64": np.float64}


def _round_odd(t: np.ndarray | np.floating, err: np.ndarray | np.floating) -> np.ndarray:
    """Round-to-odd float64 of ``t + err`` where ``t = fl(t + err)`` (nearest)."""
    t = np.asarray(t, dtype=np.float64)
    even = (t.view(np.int64) & 1) == 0
    fix = (err != 0) & even & np.isfinite(t)
    if not np.any(fix):
        return t
    toward = np.where(err > 0, np.inf, -np.inf)
    return np.where(fix, np.nextafter(t, toward), t)


def _round64(y: np.ndarray, out: str, mode: str) -> np.ndarray:
    """Round exact float64 values to fp32/fp64 with ``mode`` (float64 passes through)."""
    if out == "fp64":
        return np.asarray(y, dtype=np.float64)
    if mode == "rne":
        with np.errstate(over="ignore"):
            return np.asarray(y, dtype=np.float64).astype(np.float32)
    return round_to(np.asarray(y, dtype=np.float64), FP32, mode)


def add_rounded(x: np.ndarray, y: np.ndarray, out: str, mode: str = "rne") -> np.ndarray:
    """``fl(x + y)`` for exact float64 ``x, y``, rounded once to ``out`` (fp32/fp64)."""
    with np.errstate(invalid="ignore", over="ignore"):
        s = x + y
        if out == "fp64":
            return s
        bb = s - x
        err = (x - (s - bb)) + (y - bb)
        err = np.where(np.isfinite(s), err, 0.0)
    return _round64(_round_odd(s, err), out, mode)


def _exact(
    a64, b64, out: str, mode: str, p: int | None = None, b_stats=None, b_absmax=None, a_stats=None
):
    if out != "fp64" and p is not None:
        return _exact_bounded(a64, b64, out, mode, p, b_stats, b_absmax, a_stats)
    if out == "fp64":
        return _exact_fp64(a64, b64)
    with np.errstate(invalid="ignore", over="ignore"):
        s = a64 @ b64
    k = a64.shape[-1]
    with np.errstate(over="ignore", invalid="ignore"):
        na = np.sqrt(np.einsum("...mk,...mk->...m", a64, a64))[..., :, None]
        nb = np.sqrt(np.einsum("...kn,...kn->...n", b64, b64))[..., None, :]
        res = _round64(s, out, mode)
        # (1) BLAS was exact: every product is a multiple of Q = 2**(qa_i + qb_j) and
        # sum |a b| <= ||a|| ||b|| < 2**53 Q, so every partial sum (any order) is representable.
        qe = _min_quantum_exp(a64, -1, p)[..., :, None] + _min_quantum_exp(b64, -2, p)[..., None, :]
        exact = (na * nb * (1 + 2.0**-40) < np.ldexp(1.0, np.clip(qe + 53, -1100, 1100))) & (
            qe >= -1074
        )
        if np.all(exact):
            return res
        # (2) otherwise |s - x| <= bound (float64 dot-product error bound, underflow included)
        bound = (k + 2) * 2.0**-52 * (na * nb) + k * 2.0**-1074
        lo = _round64(s - bound, out, mode)
        hi = _round64(s + bound, out, mode)
    bad = (lo != hi) & ~exact & np.isfinite(s) & np.isfinite(bound)
    if np.any(bad):
        res = res.copy()
        _fix_bad(a64, b64, res, bad, out, mode)
    return res


_FEW = 256  # ambiguous elements settled one by one (math.fsum); more: the split path
_GATHER = 1 << 21  # products gathered for the per-element tests; more: the split path
_LONG = 4096  # longer sums without row statistics go to the split path directly
_LIM = 2.0**53 / (1 + 2.0**-39)  # the exactness test's limit of ``||a_i|| ||b_j|| / Q``

_Index = tuple[np.ndarray, ...]  # elements of the product, as from ``numpy.nonzero``
_Stats = tuple[np.ndarray, np.ndarray]  # (norms, quantum exponents) of rows or columns


def _exact_bounded(a64, b64, out, mode, p, b_stats=None, b_absmax=None, a_stats=None):
    """The exact model from one float64 BLAS product ``s`` and rounding certificates.

    (1) With ``a_stats`` and ``b_stats`` (row and column ``(norms, quantum exponents)``):
    if every row passes the exactness test of :func:`_exact_split`, ``s`` is exact.
    (2) ``s`` is within ``B_i = (K + 2) 2**-52 R_i`` of the exact sum, ``R_i = sum_k |a_ik|
    max|b| >= sum_k |a_ik b_kj|`` (the float64 dot-product bound in any summation order; the
    slack over ``gamma_K`` also covers the roundings of ``R_i`` and of ``s -+ B_i``, so the
    computed ends enclose the exact value); where both ends round to the same number, it
    is the answer (rounding is monotonic). (3) The rest (a few per thousand: mostly exact
    ties, P~ V sums of few bits): the (row, column) exactness test (with ``b_stats``), then
    the element's ``K`` exact products: ``s`` is exact when ``sum |prod| < 2**53 Q`` (``Q``
    their common quantum; ``p``-bit operands give ``2p``-bit products), else the tight bound
    ``(K + 2) 2**-52 sum |prod|`` may settle it, else :func:`_fsum_round`; if more than
    ``_FEW`` remain, :func:`_exact_split` decides them all.
    """
    k = a64.shape[-1]
    if k > _LONG and a_stats is None:  # long sums (an unblocked P V)
        return _exact_long_sum(a64, b64, out, mode, p, b_stats, b_absmax)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        s = a64 @ b64
        res = _round64(s, out, mode)
        rows = cols = None
        if b_stats is not None:
            cols = _scaled_norms(b_stats)
            if a_stats is not None:  # (1)
                rows = _scaled_norms(a_stats)
                done = _exact_rows(a64, b64, out, mode, p, res, rows, cols, b_stats[0], b_absmax)
                if done is not None:
                    return done
        idx = _open_by_bound(a64, b64, s, out, mode, b_absmax)  # (2)
        if idx is None:
            return _exact_split(a64, b64, out, mode, p, b_stats)
        if idx[0].size and cols is not None:  # (3) exact (row, column) pairs
            idx = _open_pairs(a64, p, idx, rows, cols, res.shape)
        if not idx[0].size:
            return res
        if idx[0].size * k > _GATHER and a64.ndim == 2 and b64.ndim == 2:
            # too many products to gather (long rows): the split path on the open rows x columns
            r, c = np.unique(idx[0]), np.unique(idx[1])
            res[np.ix_(r, c)] = _exact_split(a64[r], b64[:, c], out, mode, p)
            return res
        still = _open_by_products(a64, b64, s, out, mode, p, idx)  # (3)
        if not still[0].size:
            return res
        if still[0].size > _FEW:
            return _exact_split(a64, b64, out, mode, p, b_stats)
        bad = np.zeros(res.shape, bool)
        bad[still] = True
    res = res.copy() if not res.flags.writeable else res
    _fix_bad(a64, b64, res, bad, out, mode)
    return res


def _exact_long_sum(a64, b64, out, mode, p, b_stats, b_absmax):
    """A long sum without row statistics (an unblocked P V): :func:`_exact_long`, else the
    split path, under the true column norms (they set the split) and the caller's quanta."""
    res = _exact_long(a64, b64, out, mode, p, b_absmax)
    if res is not None:
        return res
    if b_stats is not None:
        b_stats = (np.sqrt(np.einsum("...kn,...kn->...n", b64, b64)), b_stats[1])
    return _exact_split(a64, b64, out, mode, p, b_stats)


def _scaled_norms(stats: _Stats) -> _Stats:
    """``(norm / Q, quantum exponent)`` from ``(norm, quantum exponent)`` statistics."""
    norms, q = stats
    return np.ldexp(norms, -np.clip(q, -1100, 1100)), q


def _exact_rows(
    a64: np.ndarray,
    b64: np.ndarray,
    out: str,
    mode: str,
    p: int,
    res: np.ndarray,
    rows: _Stats,
    cols: _Stats,
    b_norms: np.ndarray,
    b_absmax: Any,
) -> np.ndarray | None:
    """Step (1) of :func:`_exact_bounded`: ``res`` when every row passes the exactness test
    against every column; for 2-D operands where at most a quarter of the columns fail it
    against some row, ``res`` with those columns decided alone; else None."""
    x_row, qa = rows
    y_col, qb = cols
    row_ok = (x_row * y_col.max(axis=-1, keepdims=True) < _LIM) & (
        qa + qb.min(axis=-1, keepdims=True) >= -1074
    )
    if row_ok.all():
        return res
    if a64.ndim == 2 and b64.ndim == 2 and y_col.ndim == 1 and qa.ndim == 1:
        # the exact columns (against every row) stay; the others are decided alone
        col_ok = (x_row.max() * y_col < _LIM) & (qa.min() + qb >= -1074)
        bad = np.flatnonzero(~col_ok)
        if 4 * bad.size <= col_ok.size:
            res[:, bad] = _exact_bounded(
                a64, b64[:, bad], out, mode, p, (b_norms[bad], qb[bad]), b_absmax
            )
            return res
    return None


def _open_by_bound(
    a64: np.ndarray, b64: np.ndarray, s: np.ndarray, out: str, mode: str, b_absmax: Any
) -> _Index | None:
    """Step (2) of :func:`_exact_bounded`: the elements where ``s -+ B_i`` round to
    different numbers; None when ``R_i`` is not below ``2**1000`` (also NaN: inputs with
    inf/NaN, or huge sums)."""
    k = a64.shape[-1]
    if b_absmax is None:
        b_absmax = np.max(np.abs(b64), axis=(-2, -1), keepdims=True) if b64.size else 0.0
    if a64.size and a64.min() >= 0:  # sum |a| by a matrix-vector product (rounding: in the slack)
        r_row = (a64 @ np.ones((k, 1))) * b_absmax
    else:
        r_row = np.add.reduce(np.abs(a64), axis=-1, keepdims=True) * b_absmax
    if not np.all(r_row < 2.0**1000):
        return None
    bound = r_row * ((k + 2) * 2.0**-52 * (1 + 2.0**-20))
    bound += k * 2.0**-1074
    lo = _round64(s - bound, out, mode)
    hi = _round64(s + bound, out, mode)
    bad = lo != hi
    return np.unravel_index(np.flatnonzero(bad), bad.shape)


def _open_pairs(
    a64: np.ndarray,
    p: int,
    idx: _Index,
    rows: _Stats | None,
    cols: _Stats,
    shape: tuple[int, ...],
) -> _Index:
    """Step (3) of :func:`_exact_bounded`, first test: the open elements ``idx`` whose (row,
    column) pair fails the exactness test (the rows' statistics computed here when the
    caller gave none)."""
    if rows is None:
        na = np.sqrt(np.einsum("...mk,...mk->...m", a64, a64))
        rows = _scaled_norms((na, _min_quantum_exp_fast(a64, p)))
    x_row, qa = rows
    y_col, qb = cols
    xr = np.broadcast_to(x_row, shape[:-1])[idx[:-1]]
    qr = np.broadcast_to(qa, shape[:-1])[idx[:-1]]
    yc = np.broadcast_to(y_col, shape[:-2] + shape[-1:])[idx[:-2] + idx[-1:]]
    qc = np.broadcast_to(qb, shape[:-2] + shape[-1:])[idx[:-2] + idx[-1:]]
    open_ = ~((xr * yc < _LIM) & (qr + qc >= -1074))
    return tuple(i[open_] for i in idx)


def _open_by_products(
    a64: np.ndarray, b64: np.ndarray, s: np.ndarray, out: str, mode: str, p: int, idx: _Index
) -> _Index:
    """Step (3) of :func:`_exact_bounded` from each open element's ``K`` exact products:
    the elements neither exact (``sum |prod| < 2**53 Q``) nor settled by the tight bound
    ``(K + 2) 2**-52 sum |prod|``."""
    k = a64.shape[-1]
    shape = s.shape
    ab = np.broadcast_to(a64, shape[:-1] + a64.shape[-1:])
    bb = np.broadcast_to(np.swapaxes(b64, -1, -2), shape[:-2] + shape[-1:] + b64.shape[-2:-1])
    prods = np.abs(ab[idx[:-1]] * bb[idx[:-2] + idx[-1:]])
    total = np.add.reduce(prods, axis=-1)
    small = np.min(prods, axis=-1, where=prods != 0, initial=np.inf)
    e = np.frexp(np.where(np.isfinite(small), small, 1.0))[1].astype(np.int64) - 1
    exact_el = ~np.isfinite(small) | (
        total * (1 + 2.0**-40) < np.ldexp(1.0, np.clip(e - 2 * p + 1 + 53, -1100, 1100))
    )
    tight = total * ((k + 2) * 2.0**-52 * (1 + 2.0**-20))
    tight += k * 2.0**-1074
    sb = s[idx]
    still = ~exact_el & (_round64(sb - tight, out, mode) != _round64(sb + tight, out, mode))
    return tuple(i[still] for i in idx)


_ELEMENTS = 4096  # open elements settled from their own products by :func:`_exact_long`
_LONG_BLOCK = 256  # consecutive k per BLAS product of :func:`_exact_long`


def _exact_long(a64, b64, out, mode, p, b_absmax=None):
    """The exact model of a long 2-D product (``K > _LONG``) from blocked BLAS products, or None.

    ``s = sum_c S_c`` (float64, in block order), ``S_c = a[:, c] @ b[c]`` over blocks ``c`` of
    ``_LONG_BLOCK`` consecutive ``k``. (1) ``|s - x| <= (n_c + 2) 2**-52 sum_c |S_c| + (L + 2)
    2**-52 sum_c (sum_{k in c} |a_ik|) max_{k in c} |b_kj|`` (``L`` the block length, ``n_c``
    the number of blocks: the float64 bounds of the outer sum and of each block's dot
    products, any summation order; the slack covers the roundings of the bound itself):
    where ``s -+ B`` round to the same number, that is the answer. (2) Each open element
    (up to ``_ELEMENTS``; more: None, the caller's split path) from its ``K`` exact
    products: :func:`_settle`. None also for non-2-D, non-FP32 or non-finite cases.
    """
    if a64.ndim != 2 or b64.ndim != 2 or out != "fp32" or not a64.size or not b64.size:
        return None
    k = a64.shape[-1]
    L = _LONG_BLOCK
    starts = list(range(0, k, L))
    with np.errstate(over="ignore", invalid="ignore"):
        s = np.zeros((a64.shape[0], b64.shape[1]))
        for c0 in starts:
            s += a64[:, c0 : c0 + L] @ b64[c0 : c0 + L]
        if not np.all(np.isfinite(s)):
            return None
        a_abs = a64 if a64.min() >= 0 else np.abs(a64)
        k0 = k - k % L
        a_sum = np.add.reduce(a_abs[:, :k0].reshape(a64.shape[0], k0 // L, L), axis=-1)
        if k0 < k:  # the short last block
            a_sum = np.concatenate([a_sum, np.add.reduce(a_abs[:, k0:], axis=-1)[:, None]], axis=1)
        if b_absmax is not None:  # the caller's bound of max |b|: R_ij = sum_k |a_ik| max |b|
            b_max = np.full((1, 1), float(np.max(b_absmax)))
            a_sum = np.add.reduce(a_sum, axis=-1, keepdims=True)
        else:
            b_main = b64[:k0].reshape(k0 // L, L, b64.shape[1])
            b_max = np.maximum(
                np.maximum.reduce(b_main, axis=1), -np.minimum.reduce(b_main, axis=1)
            )
            if k0 < k:
                b_max = np.concatenate([b_max, np.max(np.abs(b64[k0:]), axis=0)[None, :]], axis=0)
        if not (np.all(a_sum < 2.0**400) and np.all(b_max < 2.0**400)):  # also NaN
            return None
        bound = (
            a_sum @ b_max
        )  # R >= sum_c (...) (1 - n_c 2**-53) >= sum_c |S_c| (1 - ...): in the slack
        bound *= (L + len(starts) + 4) * 2.0**-52 * (1 + 2.0**-20)
        bound += (k + len(starts)) * 2.0**-1074
        res = _round64(s, out, mode)
        open_ = _round64(s - bound, out, mode) != _round64(s + bound, out, mode)
    ii, jj = np.nonzero(open_)
    if not ii.size:
        return res
    if ii.size > _ELEMENTS:
        return None
    order = np.lexsort((ii, jj))  # by column: the gather below reads b's rows in order
    ii, jj = ii[order], jj[order]
    step = max(1, (1 << 21) // k)
    for e0 in range(0, ii.size, step):
        i, j = ii[e0 : e0 + step], jj[e0 : e0 + step]
        prods = b64.T[j]  # (n, K), a new array
        prods *= a64[i]  # the exact products
        res[i, j] = _settle(prods, s[i, j], out, mode, p)
    return res


def _settle(prods, s, out, mode, p):
    """Each row of exact products ``prods`` (n, K) summed exactly and rounded once.

    ``s`` (n,) is their float64 BLAS sum. (a) The tight bound ``(K + 2) 2**-52 sum |prod|``
    around ``s``; (b) the products of magnitude at least ``2**e`` with ``2**(e - 2p + 1 +
    53) > sum |prod|`` (``p``-bit operands: ``2p``-bit products) are multiples of ``2**(e -
    2p + 1)`` with a sum below ``2**53`` times that, so their float64 sum ``s_hi`` is exact
    in any order; the rest sum to ``s_lo``, exact by the same test on its smallest
    product, else within ``(K + 2) 2**-52 sum |lo|``; ``s_hi + (s_lo -+ w)`` rounded
    exactly (TwoSum, round to odd) settles the element when both ends agree; (c) else
    :func:`_fsum_round`.
    """
    k = prods.shape[-1]
    g = (k + 2) * 2.0**-52 * (1 + 2.0**-20)
    up = 1 + (k + 2) * 2.0**-52  # a computed sum of k non-negative terms, times up: >= the sum
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        mag = np.abs(prods)
        total = np.add.reduce(mag, axis=-1) * up
        tight = total * g + k * 2.0**-1074
        res = _round64(s, out, mode)
        rest = np.nonzero(_round64(s - tight, out, mode) != _round64(s + tight, out, mode))[0]
        if not rest.size:
            return res
        if 2 * rest.size <= total.size:  # few open: their products only
            prods, mag, total = prods[rest], mag[rest], total[rest]
        else:  # most: all of them (the settled ones get the same value again)
            rest = slice(None)
        f = np.frexp(np.where(total > 0, total, 1.0))[1].astype(np.int64)  # total < 2**f
        # hi: |prod| >= 2**e, multiples of 2**(e - 2p + 1) >= 2**-1074, sum < 2**(e - 2p + 54)
        e = np.maximum(f - 54 + 2 * p, -1074 + 2 * p - 1)
        lo_mask = mag < np.ldexp(1.0, np.clip(e, -1100, 1100))[:, None]
        s_hi = np.add.reduce(prods, axis=-1, where=~lo_mask)
        s_lo = np.add.reduce(prods, axis=-1, where=lo_mask)
        t_lo = np.add.reduce(mag, axis=-1, where=lo_mask) * up
        small = np.min(mag, axis=-1, where=lo_mask & (mag != 0), initial=np.inf)
        e_lo = (
            np.frexp(np.where(np.isfinite(small), small, 1.0))[1].astype(np.int64) - 1 - 2 * p + 1
        )
        lo_exact = ~np.isfinite(small) | (
            (t_lo < np.ldexp(1.0, np.clip(e_lo + 53, -1100, 1100))) & (e_lo >= -1074)
        )
        bd = np.where(lo_exact, 0.0, t_lo * g + k * 2.0**-1074)
        widen = np.where(
            bd == 0, 0.0, bd + 2 * np.abs(np.spacing(s_lo))
        )  # covers fl(s_lo -+ bound)
        r1 = add_rounded(s_hi, s_lo - widen, out, mode)
        r2 = add_rounded(s_hi, s_lo + widen, out, mode)
    still = np.nonzero(r1 != r2)[0]
    if still.size:
        r1 = r1.copy()
        r1[still] = [_fsum_round(terms, out, mode) for terms in prods[still].tolist()]
    res[rest] = r1
    return res


def _min_quantum_exp_fast(x: np.ndarray, p: int) -> np.ndarray:
    """:func:`_min_quantum_exp` with ``p`` along the last axis of a float64 array, from its bits."""
    if x.shape[-1] == 0:
        return np.full(x.shape[:-1], 10**6)
    low = np.ascontiguousarray(x).view(np.uint64) & np.uint64(0x7FFFFFFFFFFFFFFF)
    low -= np.uint64(1)  # zeros wrap to the largest value
    low = low.min(axis=-1)
    low += np.uint64(1)  # all-zero lines wrap back to 0
    small = low.view(np.float64)
    small[low == 0] = np.inf
    return quantum_exp_from_min(small, p)


def _exact_split(a64, b64, out, mode, p, b_stats=None, check_full=True):
    """The exact model by a split ``a = a_hi + a_lo``: ``a_hi @ b`` exact, ``a_lo @ b`` bounded.

    ``a_hi`` keeps the entries of each row large enough that their products with any
    column are multiples of a quantum ``Q`` with ``||a|| ||b_j|| < 2**52 Q`` (so the BLAS
    sum ``s_hi`` is exact in any order); the small rest (softmax tails, tiny entries)
    contributes ``s_lo``, exact as well when ``a_lo``'s quantum passes the same test, else
    with error ``B = (K + 2) 2**-52 ||a_lo|| ||b_j||``. Three checks,
    each on what the previous left open: (1) ``fl(s_hi + s_lo) +- (|t| 2**-50 + B)`` round to
    the same number; (2) the exact ends ``s_hi + (s_lo -+ B)`` (TwoSum, round to odd) agree;
    (3) :func:`_fsum_round` (ties whose tail decides). Before all that, (0): where the whole
    row passes the exactness test, the plain BLAS product is the answer.
    """
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        if b_stats is None:
            nb = np.sqrt(np.einsum("...kn,...kn->...n", b64, b64))
            qb = _min_quantum_exp(b64, -2, p)
        else:
            nb, qb = b_stats
        nb, qb = nb[..., None, :], qb[..., None, :]
        na = np.sqrt(np.einsum("...mk,...mk->...m", a64, a64))[..., :, None]
        # (0) the whole product is exact where ||a_i|| ||b_j|| < 2**53 2**(qa_i + qb_j)
        if check_full:
            # ok[i, j] = x_i y_j (1 + 2**-40) < 2**53 and qa_i + qb_j >= -1074 is an outer
            # test: decided from the row and column factors without forming the (M, N) array
            qa = _min_quantum_exp_fast(a64, p)[..., :, None]
            x_row = np.ldexp(na, -np.clip(qa, -1100, 1100))[..., :, 0]
            y_col = np.ldexp(nb, -np.clip(qb, -1100, 1100))[..., 0, :]
            lim = 2.0**53 / (1 + 2.0**-39)
            qa1, qb1 = qa[..., :, 0], qb[..., 0, :]
            row_bad = (x_row * y_col.max(axis=-1, keepdims=True) >= lim) | (
                qa1 + qb1.min(axis=-1, keepdims=True) < -1074
            )
            if not row_bad.any():
                return _round64(a64 @ b64, out, mode)
            if a64.ndim == 2 and b64.ndim == 2:  # split only the failing (rows x columns)
                bad_r = np.nonzero(row_bad)[0]
                bad_c = np.nonzero(
                    (y_col * x_row[bad_r].max() >= lim) | (qb1 + qa1[bad_r].min() < -1074)
                )[0]
                if 2 * bad_c.size > b64.shape[1]:  # most columns fail: whole rows
                    res = np.empty((a64.shape[0], b64.shape[1]), _DTYPES[out])
                    good = np.nonzero(~row_bad)[0]
                    if good.size:
                        res[good] = _round64(a64[good] @ b64, out, mode)
                    stats = (nb[0], qb[0])
                    res[bad_r] = _exact_split(
                        a64[bad_r], b64, out, mode, p, stats, check_full=False
                    )
                    return res
                res = _round64(a64 @ b64, out, mode)
                stats = (nb[0, bad_c], qb[0, bad_c])
                sub = _exact_split(a64[bad_r], b64[:, bad_c], out, mode, p, stats, check_full=False)
                res[np.ix_(bad_r, bad_c)] = sub
                return res
        c = np.where(nb > 0, np.log2(nb) - qb, -np.inf).max(axis=-1, keepdims=True)
        qa_hi = np.nan_to_num(
            np.floor(np.log2(na) + c) - 51 + p - 1, nan=0, posinf=1100, neginf=-1100
        )
        thr = np.ldexp(1.0, np.clip(qa_hi, -1100, 1100).astype(np.int64))
        lo_mask = (np.abs(a64) < thr) & (a64 != 0)
        if not lo_mask.any():
            return _round64(a64 @ b64, out, mode)
        a_hi = np.where(lo_mask, 0.0, a64)
        s_hi = a_hi @ b64
        res = _round64(s_hi, out, mode)
        if a64.ndim == 2 and b64.ndim == 2:  # work on the rows that have a tail only
            rows = np.nonzero(lo_mask.any(axis=-1))[0]
            sub = _split_tail(a64[rows], a_hi[rows], s_hi[rows], b64, nb, qb, out, mode, p)
            res[rows] = sub
            return res
        return _split_tail(a64, a_hi, s_hi, b64, nb, qb, out, mode, p)


def _split_tail(a64, a_hi, s_hi, b64, nb, qb, out, mode, p):
    k = a64.shape[-1]
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        a_lo = a64 - a_hi
        used = np.nonzero(np.any(a_lo != 0, axis=tuple(range(a_lo.ndim - 1))))[0]
        if 2 * used.size > k:  # most columns: the whole product (extra zero terms change no value)
            s_lo = a_lo @ b64
        else:  # a_lo is sparse: only its non-zero columns
            s_lo = a_lo[..., used] @ b64[..., used, :]
        n_lo = np.sqrt(np.einsum("...mk,...mk->...m", a_lo, a_lo))[..., :, None]
        # s_lo is exact too when a_lo's own quantum passes the same test:
        # (||a_lo|| 2**-qa_lo) (||b_j|| 2**-qb_j) < 2**53, in row and column factors
        qlo = _min_quantum_exp_fast(a_lo, p)[..., :, None]
        x_row = np.ldexp(n_lo, -np.clip(qlo, -1100, 1100))
        y_col = np.ldexp(nb, -np.clip(qb, -1100, 1100))
        lo_exact = (x_row * y_col * (1 + 2.0**-40) < 2.0**53) & (qlo + qb >= -1074)
        t = s_hi + s_lo
        res = _round64(t, out, mode)
        # |fl(s_hi + s_lo) - (s_hi + s_lo)| <= ulp(t) / 2 <= |t| 2**-53 (+ subnormal ulp)
        d = np.abs(t)
        d *= 2.0**-50
        d += 2.0**-1070
        if lo_exact.all():
            bound = np.zeros(())
        else:
            bound = (k + 2) * 2.0**-52 * (n_lo * nb) + k * 2.0**-1074
            bound *= 1 + 2.0**-40
            bound[np.broadcast_to(lo_exact | (n_lo == 0), bound.shape)] = 0.0
            d += bound
        open_ = _round64(t - d, out, mode) != _round64(t + d, out, mode)
        if not np.any(open_):
            return res
        idx = np.nonzero(open_)
        keep = np.isfinite(t[idx])
        idx = tuple(i[keep] for i in idx)
        sh, sl, bd = s_hi[idx], s_lo[idx], np.broadcast_to(bound, t.shape)[idx]
        widen = np.where(bd == 0, 0.0, bd + 2 * np.abs(np.spacing(sl)))  # covers fl(s_lo -+ bound)
        r1 = add_rounded(sh, sl - widen, out, mode)
        r2 = add_rounded(sh, sl + widen, out, mode)
        res[idx] = r1
        still = np.zeros(t.shape, bool)
        still[tuple(i[r1 != r2] for i in idx)] = True
    if np.any(still):
        _fix_bad(a64, b64, res, still, out, mode)
    return res


def _fix_bad(a64, b64, res, bad, out, mode) -> None:
    shape = res.shape
    ab = np.broadcast_to(a64, shape[:-1] + a64.shape[-1:])
    bb = np.broadcast_to(np.swapaxes(b64, -1, -2), shape[:-2] + shape[-1:] + b64.shape[-2:-1])
    idx = np.nonzero(bad)
    prods = (ab[idx[:-1]] * bb[idx[:-2] + idx[-1:]]).tolist()  # (n_bad, K) exact products
    res[idx] = [_fsum_round(terms, out, mode) for terms in prods]


def column_stats(b: np.ndarray, p: int) -> tuple[np.ndarray, np.ndarray]:
    """``(2-norms, quantum exponents)`` of the columns of ``b`` (..., K, N), for ``b_stats``.

    The exponent is ``floor(log2 min|b_kj|) - p + 1`` over the non-zero entries (a lower
    bound of their common quantum when they have at most ``p`` significant bits).
    """
    small = min_nonzero_abs(b, -2)
    return np.sqrt(np.einsum("...kn,...kn->...n", b, b)), quantum_exp_from_min(small, p)


def min_nonzero_abs(x: np.ndarray, axis: int) -> np.ndarray:
    """The smallest non-zero ``|x|`` along ``axis`` (inf where there is none)."""
    ax = np.abs(x)
    if ax.shape[axis] == 0:
        return np.full(np.delete(ax.shape, axis), np.inf)
    return np.min(ax, axis=axis, where=ax != 0, initial=np.inf)


def quantum_exp_from_min(small: np.ndarray, p: int) -> np.ndarray:
    """``floor(log2 small) - p + 1`` (at least -149; a huge value where ``small`` is inf)."""
    e = np.frexp(np.where(np.isfinite(small), small, 1.0))[1].astype(np.int64) - 1
    return np.where(np.isfinite(small), np.maximum(e - p + 1, -149), 10**6)


def _min_quantum_exp(x: np.ndarray, axis: int, p: int | None = None) -> np.ndarray:
    """An ``e`` such that every non-zero element along ``axis`` is a multiple of ``2**e``.

    Exact (the smallest such ``e``) without ``p``; with ``p`` (every element has at most
    ``p`` significant bits and a quantum of at least ``2**-149``) a cheaper lower bound from
    the smallest magnitude: ``floor(log2 min|x|) - p + 1``.
    """
    if p is not None:
        return quantum_exp_from_min(min_nonzero_abs(x, axis), p)
    bits = np.ascontiguousarray(x).view(np.int64) & 0x7FFFFFFFFFFFFFFF
    field_ = bits >> 52
    sig = bits & ((1 << 52) - 1)
    normal = field_ > 0
    sig = np.where(normal, sig | (1 << 52), sig)
    low = (sig & -sig).astype(np.float64)  # a power of two (0 for zeros)
    tz = (low.view(np.int64) >> 52) - 1023
    qe = np.where(normal, field_ - 1075, -1074) + tz
    qe = np.where((sig != 0) & (field_ < 2047), qe, 10**6)
    if qe.shape[axis] == 0:
        return np.full(np.delete(qe.shape, axis), 10**6)
    return qe.min(axis=axis)


_SPLIT = 134217729.0  # 2**27 + 1: Veltkamp's constant for float64
_CHUNK64 = 1 << 20  # products held at once by the FP64 exact product


def _two_sum(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def _veltkamp(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    c = _SPLIT * x
    hi = c - (c - x)
    return hi, x - hi


def _exact_fp64(a64: np.ndarray, b64: np.ndarray) -> np.ndarray:
    """``a @ b`` (float64 operands, any values) as the exact sum rounded once to float64.

    Per element, the ``K`` products are split exactly (Dekker's TwoProduct: ``a b = p + e``
    while no product underflows or overflows), the ``p`` are summed by a balanced TwoSum
    tree (exact: ``sum p = hi + sum t``), and ``lo`` is the float64 sum of the ``L = 2K - 1``
    error terms ``e, t``: ``|hi + lo - x| <= E = gamma_L sum |e, t| + 8 K 2**-1074`` (the
    last term: TwoProduct's loss when a product is near the subnormal range). Where
    ``fl(hi + fl(lo -+ w))`` agree (``w`` covers ``E`` and the rounding of ``lo -+ E``), that
    is ``fl(x)``; the other elements (ties, non-finite terms) are summed as exact integers.
    """
    shape = (*np.broadcast_shapes(a64.shape[:-2], b64.shape[:-2]), a64.shape[-2], b64.shape[-1])
    if a64.shape[-1] != b64.shape[-2]:
        raise ValueError(f"matmul: inner dimensions differ ({a64.shape[-1]} and {b64.shape[-2]})")
    k = a64.shape[-1]
    res = np.zeros(shape)
    if not res.size or k == 0:
        return res
    a3 = np.broadcast_to(a64, (*shape[:-2], *a64.shape[-2:])).reshape(-1, shape[-2], k)
    b3 = np.broadcast_to(b64, (*shape[:-2], *b64.shape[-2:])).reshape(-1, k, shape[-1])
    r3 = res.reshape(-1, shape[-2], shape[-1])
    n_terms = 2 * k - 1
    g = n_terms * 2.0**-53 / (1 - n_terms * 2.0**-53) * (1 + 2.0**-20)
    step = max(1, _CHUNK64 // max(1, k * shape[-1]))
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        for t in range(a3.shape[0]):
            bt = b3[t].T  # (N, K)
            bh, bl = _veltkamp(bt)
            for r0 in range(0, shape[-2], step):
                ar = a3[t, r0 : r0 + step]  # (m, K)
                ah, al = _veltkamp(ar)
                p = ar[:, None, :] * bt[None, :, :]  # (m, N, K)
                e = ((ah[:, None, :] * bh[None] - p) + ah[:, None, :] * bl[None]) + al[
                    :, None, :
                ] * bh[None]
                e += al[:, None, :] * bl[None]
                errs = [e]
                x = p
                while x.shape[-1] > 1:
                    n2 = x.shape[-1] // 2
                    s_, t_ = _two_sum(x[..., 0 : 2 * n2 : 2], x[..., 1 : 2 * n2 : 2])
                    errs.append(t_)
                    x = np.concatenate([s_, x[..., -1:]], axis=-1) if x.shape[-1] % 2 else s_
                hi = x[..., 0]
                lo_terms = np.concatenate(errs, axis=-1)
                lo = lo_terms.sum(axis=-1)
                mag = np.abs(lo_terms).sum(axis=-1)
                bound = g * mag + 8 * k * 2.0**-1074
                w = bound * (1 + 2.0**-50) + 2.0**-51 * np.abs(lo) + 2.0**-1074
                val = hi + lo
                ok = (hi + (lo - w) == hi + (lo + w)) & np.isfinite(val) & np.isfinite(w)
                ok &= np.isfinite(p).all(axis=-1) & np.isfinite(e).all(axis=-1)
                block = r3[t, r0 : r0 + step]
                block[...] = np.where(ok, val, 0.0)
                for i, j in zip(*np.nonzero(~ok), strict=True):
                    block[i, j] = _int_dot_round(ar[i], bt[j])
    return res


def _int_dot_round(a: np.ndarray, b: np.ndarray) -> float:
    """``sum a_k b_k`` of float64 vectors as exact integers, rounded once to float64."""
    ma, ea = np.frexp(a)
    mb, eb = np.frexp(b)
    ia = np.ldexp(ma, 53).astype(np.int64).tolist()
    ib = np.ldexp(mb, 53).astype(np.int64).tolist()
    ex = (ea.astype(np.int64) + eb.astype(np.int64) - 106).tolist()
    terms = [(x * y, e) for x, y, e in zip(ia, ib, ex, strict=True) if x and y]
    if not terms:
        return 0.0
    emin = min(e for _, e in terms)
    total = sum(m << (e - emin) for m, e in terms)
    return float(round_to(Fraction(total) * Fraction(2) ** emin, FP64))


def _fsum_round(terms: list[float], out: str, mode: str):
    t = math.fsum(terms)
    err = math.fsum([*terms, -t]) if math.isfinite(t) else 0.0
    return _round64(_round_odd(np.float64(t), np.float64(err)), out, mode)

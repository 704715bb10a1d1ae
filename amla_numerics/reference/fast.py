"""The certified fast oracle: vectorised softmax attention with a rigorous per-element bound.

Stages for one 2-D problem (q (M, Dk), k (N, Dk), v (N, Dv)), each with its bound:

1. Scores. ``q k^T`` exactly (:func:`~amla_numerics.reference.exactdot.exact_dot`, integer
   limbs in float64 GEMMs), summed to a double-double with bound ``e_dot``; times the scale
   as a dd (``1/sqrt(Dk)`` is irrational: its dd carries ``e_sc``), plus the mask:
   ``|s^ - s| <= e_s = 16u^2 |s^| + |sc| e_dot + e_sc |dot| + 4u^2 |s^|`` (``u = 2**-53``).
2. Weights. ``m = max_j s^_j`` (any float works as the shift), ``x = s^ - m`` in dd and
   ``p^ = exp_dd(x)`` with relative error ``rel_j = EXP_REL + 2**-100 |x_j| + 1.01 e_x``
   (``e_x = e_s + 4u^2 |x|``) plus ``EXP_ABS``.
3. Sums. ``p^`` (dd, below 2) is cut into integer limbs of ``b_p`` bits on a grid fixed by
   the row max 1 (at least ``P_BITS + 1`` bits; the truncation remainder ``tau_j`` is exact
   and goes into the error); ``v`` is cut per column into one exact limb of ``b_v`` bits plus
   a sparse remainder (``_split_rows``), or into as many exact limbs as it needs when the
   remainder is not sparse. ``(b_p + 1) + b_v <= 53 - ceil(log2 N)`` makes every GEMM
   ``V_t @ P_s^T`` exact; the sparse remainder is a float64 product with error
   ``(gamma_{k+1} + 2**-52) |V_lo| @ p^`` (``e_lo``). ``l`` is the exact row sum of the limbs.
   All terms are gathered in dd by Sum2 (error ``sum2``):
   ``|o^_c - o_c| <= E vmax_c + sum2_c + e_lo`` and ``|l^ - l| <= E + sum2_l`` with
   ``E = sum_j (rel_j p^_j + EXP_ABS + tau_j)`` (``rel_j`` bounded by its row maximum).
4. Output. ``out = o / l`` (dd division) and the float64 ``y = round(out)``:
   ``|y - out| <= (|do| + |out^| |dl|) / (l^ - |dl|) + 32u^2 |out^| + |out^ - y|``.

The certificate :attr:`FastResult.bound` is that last formula, evaluated in float64 and
inflated by ``(1 + 2**-40)`` to cover the roundings of the bound arithmetic itself.

Examples
--------
>>> import numpy as np
>>> q = np.array([[1.0, 0.0]]); k = np.array([[1.0, 0.0], [0.0, 1.0]]); v = np.array([[1.0], [0.0]])
>>> r = certified_attention(q, k, v, 1.0)
>>> float(r.out[0, 0]) == float(np.e / (np.e + 1)), bool(r.bound[0, 0] < 1e-16)
(True, True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import mpmath
import numpy as np

from amla_numerics.formats import FP64
from amla_numerics.reference._dd import (
    DD_REL,
    EXP_ABS,
    EXP_REL,
    _exp_dd,
    dd_add_d,
    dd_div,
    dd_mul,
    gamma,
    two_sum,
)
from amla_numerics.reference._inputs import Problem, as_f64, prepare
from amla_numerics.reference.exactdot import (
    ExactDot,
    Limbs,
    choose_widths,
    exact_bits,
    exact_dot,
    limbs,
    span_bits,
)
from amla_numerics.rounding import round_to

__all__ = ["FastResult", "FastUnavailable", "certified_attention", "fast_problem"]

#: Bits of the weights kept below the row max (truncation grid ``2**-P_BITS``).
P_BITS = 80
_INFLATE = 1 + 2.0**-40


class FastUnavailable(ValueError):
    """The inputs' exponent range is too wide for the float64 fast path."""


@dataclass(frozen=True)
class FastResult:
    """Output of the fast oracle (batch shape ``B`` flattened or restored by the caller).

    ``out``: float64 (..., M, Dv); ``bound``: rigorous ``|out - exact|`` bound, same shape;
    ``lse``, ``lse_bound``: (..., M); ``dots``: the exact dot products per batch element
    (kept for the mpmath fallback of method="auto").
    """

    out: np.ndarray
    bound: np.ndarray
    lse: np.ndarray
    lse_bound: np.ndarray
    dots: tuple[ExactDot, ...]


class _Sum2:
    """Sum2 (Ogita, Rump, Oishi) fed term by term: the key blocks' terms are folded in as
    they come (memory ``O(M Dv)``, not one array per term of every block); ``result`` is
    ``(hi, lo, err)`` with ``err = gamma_{n-1}**2 sum |terms|`` (inflated)."""

    def __init__(self) -> None:
        self.n = 0
        self.hi: Any = None
        self.lo: Any = None
        self.mag: Any = None

    def add(self, terms: list[np.ndarray]) -> None:
        for t in terms:
            if self.n == 0:
                self.hi, self.lo, self.mag = t, np.zeros_like(t), np.abs(t)
            else:
                self.hi, e = two_sum(self.hi, t)
                self.lo += e
                self.mag += np.abs(t)
            self.n += 1

    def result(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        hi, lo = two_sum(self.hi, self.lo)
        n = self.n
        err = (gamma(n - 1) ** 2 * self.mag * _INFLATE) if n > 1 else np.zeros_like(hi)
        return hi, lo, err


_CHUNK = 1 << 14


def _weights(dots, rows, mask, sc, ph, pl, rel_out, mxs_out, dead_out, shift=None) -> None:
    """Scores -> weights for a block of rows, written into the output views.

    ``rel_out[r]`` is the row's largest relative weight error (``EXP_REL + 2**-100 |x| +
    1.01 e_x`` maximised over the row: one bound per row is enough, see ``_one_inner``).
    ``shift`` (per row, optional): the shift ``m`` to use instead of the row max of these
    scores (a key block of a longer row: any ``m`` at or above every score of the row keeps
    the weights in (0, 1]); ``dead_out`` then marks rows with no key in this block.
    """
    dh, dl, edot = dots.to_dd(rows)
    sch, scl, esc = sc
    sh, sl = dd_mul(dh, dl, np.float64(sch), np.float64(scl))
    es = DD_REL["mul"] * np.abs(sh) + abs(sch) * 1.000001 * edot + esc * np.abs(dh) * 1.000001
    if mask is not None:
        keep = mask != -np.inf
        sh, sl = dd_add_d(sh, sl, np.where(keep, mask, 0.0))
        es = es + DD_REL["add_d"] * np.abs(sh)
        sh = np.where(keep, sh, -np.inf)
        sl = np.where(keep, sl, 0.0)
        fin = np.where(keep, sh, 0.0)
    else:
        fin = sh
    big = np.abs(fin).max() if fin.size else 0.0
    if not big <= 2.0**900:  # also catches NaN / inf
        raise FastUnavailable("scores too large for the fast path")
    mx = sh.max(axis=1)
    dead = mx == -np.inf
    if shift is not None:
        mx = shift
    mxs = np.where(dead | ~np.isfinite(mx), 0.0, mx)
    xh, xl = dd_add_d(sh, sl, -mxs[:, None])
    if mask is not None:
        xh = np.where(keep, xh, -np.inf)
        xl = np.where(keep, xl, 0.0)
        xa = np.where(keep, -xh, 0.0)  # |x| (x <= 0 on kept keys)
    else:
        xa = -xh
    # row maxima of the score error e_x = e_s + 4u^2 |x| and of |x|
    ex_row = es.max(axis=1) + DD_REL["add_d"] * xa.max(axis=1)
    if (ex_row > 1e-3).any():
        raise FastUnavailable("score error too large for the fast path")
    ph[...], pl[...] = _exp_dd(np.minimum(xh, 1.0), xl)
    rel_out[...] = EXP_REL + 2.0**-100 * xa.max(axis=1) + 1.01 * ex_row
    mxs_out[...] = mxs
    dead_out[...] = dead


def _sparse_split(vt: np.ndarray, total: int, prec: int = 53, amax: np.ndarray | None = None):
    """``V = V_hi + V_lo``: ``V_hi`` one exact limb of ``b_v`` bits, ``V_lo`` sparse.

    A column's span is set by its few smallest values; cutting every column on the grid
    ``2**(e_c - b_v)`` leaves a remainder that is nonzero only where a value has bits below
    that grid (about 0.15 % of Gaussian BF16 values for ``b_v = 18``). ``P @ V_hi`` then needs
    ``ceil(81 / b_p)`` exact GEMMs instead of twice that, and ``P @ V_lo`` is a sparse float64
    product with its own bound (``V_lo`` is None when the remainder is zero). Returns None
    when the remainder is not sparse (> 5 %) or ``N`` leaves too few bits.

    Only candidates are truncated: a value of a format with ``prec`` significant bits and
    ``|v| < 2**E`` has no bit below ``2**(E - prec)``, so a scaled value ``|y| >= 2**(prec-1)``
    (hence ``E >= e_c - b_v + prec``) is already an integer; the others (few) are cut exactly.
    """
    nl = 4
    bp = math.ceil((P_BITS + 1) / nl)
    bv = total - bp
    if bv < 12:
        return None
    v: Any = vt.T  # (N, Dv): vt is usually the transposed view of a C array
    if amax is None:
        amax = _col_absmax(v)
    _, exps = np.frexp(amax)
    exps = exps.astype(np.int64)
    if exps.min() < -900 or exps.max() > 900:
        return None
    factor = np.ldexp(1.0, bv - exps)  # per column of v, exact powers of two
    thr = 2.0 ** (prec - 1) if prec <= 53 else np.inf
    y = np.empty(v.shape)  # our own C-contiguous array
    small = np.empty(v.shape, dtype=bool)
    step = max(1, (1 << 15) // max(1, v.shape[1]))  # row blocks that stay in cache
    for r0 in range(0, v.shape[0], step):
        blk = slice(r0, r0 + step)
        yb = y[blk]
        np.multiply(v[blk], factor, out=yb)  # exact
        ab = np.abs(yb)
        np.less(ab, thr, out=small[blk])
    cand: Any = np.flatnonzero(small)  # a bool mask first: much faster than nonzero on floats
    del small
    yf = y.reshape(-1)  # y is our own C-contiguous array
    if cand.size > 0.25 * y.size:  # many candidates (wider formats): cut every value
        cand = None
        yc = yf.copy()
        np.trunc(yf, out=yf)
    else:
        yc = yf[cand]
        yf[cand] = np.trunc(yc)
    yc -= yf if cand is None else yf[cand]  # the exact remainder
    nzm = yc != 0
    flat = np.flatnonzero(nzm) if cand is None else cand[nzm]
    rows, cols = np.divmod(flat, y.shape[1])  # key j, column c of v
    if rows.size > 0.05 * y.size:
        return None
    lo = None
    if rows.size:
        from scipy import sparse

        vals = yc[nzm] / factor[cols]  # exact: rem * 2**(exps - bv)
        lo = sparse.csr_matrix((vals, (cols, rows)), shape=(y.shape[1], y.shape[0]))
    return bp, bv, Limbs((y.T,), exps, bv, None), lo


def _col_absmax(v: np.ndarray) -> np.ndarray:
    """``|v|`` column maxima of ``v`` (N, Dv) without an ``|v|`` copy."""
    return np.maximum(v.max(axis=0), -v.min(axis=0))


def _one(*args, **kw):
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):  # masked -inf lanes
        return _one_inner(*args, **kw)


def _one_inner(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    mask: np.ndarray | None,
    sc: tuple[float, float, float],
    prec: tuple[int, int, int],
    want_lse: bool,
    v_of_k: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, Any]:
    """One 2-D problem; keys in blocks of at most :data:`KEY_BLOCK` (memory ``O(M block)``).

    ``k`` and ``v`` may be in their input format (BF16...): each key block is converted to
    float64 (exactly) when it is used, so the float64 copy of the keys is never whole;
    ``v_of_k``: ``v`` is ``k[:, :Dv]`` (its block is a view of k's converted block).

    A single block is the plain algorithm (the shift is the exact row max). Several blocks:
    the shift of a row is a float64 upper bound of its largest score (a plain float64 GEMM
    plus its rounding bound, see :func:`_row_shift`), so every weight is in (0, 1] and every
    block's weights sit on the same limb grid; each block contributes its exact GEMM terms
    (exact on its own key count) and its exact limb sums to the same Sum2, and its error
    terms add up. The exact dot products are not kept: the mpmath fallback recomputes a
    row's from ``q[i]`` and ``k`` (:class:`_LazyDots`).
    """
    m_rows, n = q.shape[0], k.shape[0]
    blocks = [(j0, min(n, j0 + KEY_BLOCK)) for j0 in range(0, n, KEY_BLOCK)]
    if len(blocks) == 1:
        shift = None
        kb, vb = _kv_block(k, v, v_of_k, 0, n)
        vmax = _col_absmax(vb)  # |v| column maxima over every key
    else:
        shift, vmax = _row_shift(q, k, v, v_of_k, mask, sc)
    if vmax.size and vmax.max() > 2.0**900:
        raise FastUnavailable("values too large for the fast path")
    terms, lterms = _Sum2(), _Sum2()  # every block's exact terms, folded in as they come
    rel = np.zeros(m_rows)
    psum = np.zeros(m_rows)
    tau_sum = np.zeros(m_rows)
    e_lo: Any = 0.0
    dead_row = np.ones(m_rows, dtype=bool)
    mxs = np.zeros(m_rows)
    dots: Any = None
    for j0, j1 in blocks:
        if len(blocks) > 1:
            kb, vb = _kv_block(k, v, v_of_k, j0, j1)
        mb = None if mask is None else mask[:, j0:j1]
        res = _block(q, kb, vb, mb, sc, prec, shift, vmax)
        terms.add(res["terms"])
        lterms.add(res["lterms"])
        rel = np.maximum(rel, res["rel"])
        psum += res["psum"]
        tau_sum += res["tau_sum"]
        e_lo = e_lo + res["e_lo"]
        dead_row &= res["dead"]
        mxs = res["mxs"] if shift is None else np.where(np.isfinite(shift), shift, 0.0)
        dots = res["dots"] if len(blocks) == 1 else _LazyDots(q, k)
    # sum_j err_p_j with err_p_j = rel_j p_j + EXP_ABS + tau_j <= rel_row p_j + EXP_ABS + tau_j
    big_e = (rel * psum * _INFLATE + n * EXP_ABS + tau_sum) * (1 + gamma(n + 1))
    if not lterms.n:  # no live weight anywhere: every row is fully masked
        terms, lterms = _Sum2(), _Sum2()
        terms.add([np.zeros((v.shape[1], m_rows))])
        lterms.add([np.zeros(m_rows)])
    oh, ol, e2 = terms.result()
    e2 = e2 + e_lo
    lh, ll, el = lterms.result()
    d_l = big_e + el
    denom = lh - d_l * _INFLATE
    out, bound = _divide(oh.T, ol.T, e2.T, lh, ll, denom, big_e[:, None] * vmax[None, :], d_l)
    out[dead_row] = np.nan
    bound[dead_row] = 0.0
    lse = np.full(m_rows, -np.inf)
    lse_b = np.zeros(m_rows)
    if want_lse:
        _lse(lse, lse_b, mxs, lh, ll, d_l, denom, dead_row)
    return out, bound, lse, lse_b, dots


def _divide(
    oh: np.ndarray,
    ol: np.ndarray,
    e2: np.ndarray,
    lh: np.ndarray,
    ll: np.ndarray,
    denom: np.ndarray,
    e_v: np.ndarray,
    d_l: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Stage 4: ``out = o / l`` (dd division), the float64 ``y`` and its bound ``(|do| +
    |out^| |dl|) / (l^ - |dl|) + 32u^2 |out^| + |out^ - y|`` (``do = E vmax + sum2 + e_lo``:
    ``e_v = E vmax``; inf where ``l^ - |dl| <= 0``)."""
    d_o = e_v * _INFLATE + e2
    yh, yl = dd_div(oh, ol, lh[:, None], ll[:, None])
    with np.errstate(divide="ignore", invalid="ignore"):
        bound = (d_o + np.abs(yh) * d_l[:, None]) / denom[:, None] * _INFLATE
    bound = (bound + DD_REL["div"] * np.abs(yh) + np.abs(yl)) * _INFLATE
    bound = np.where(denom[:, None] > 0, bound, np.inf)
    return yh + yl, bound


def _lse(
    lse: np.ndarray,
    lse_b: np.ndarray,
    mxs: np.ndarray,
    lh: np.ndarray,
    ll: np.ndarray,
    d_l: np.ndarray,
    denom: np.ndarray,
    dead_row: np.ndarray,
) -> None:
    """``lse = m + ln(l)`` of every live row, correctly rounded from 120 bits, and its bound
    (``l``'s relative error, the rounding, the log's), written into ``lse`` and ``lse_b``."""
    for i in range(mxs.shape[0]):
        if dead_row[i]:
            continue
        with mpmath.workprec(120):
            val = mpmath.mpf(mxs[i]) + mpmath.log(mpmath.mpf(lh[i]) + mpmath.mpf(ll[i]))
            lse[i] = float(round_to(val, FP64))
            dev = abs(mpmath.mpf(lse[i]) - val)
            lse_b[i] = (
                (
                    d_l[i] / denom[i] * 1.01
                    + float(round_to(dev, FP64, mode="ru"))
                    + 2.0**-100 * (abs(lse[i]) + abs(mxs[i]) + 1)
                )
                * _INFLATE
                if denom[i] > 0
                else np.inf
            )


#: Keys per block of the fast path (its working memory is ``O(M * KEY_BLOCK)``). 4096 keys
#: keep every per-block array (the key limbs, 4096 x 576 float64, 19 MB) under glibc's
#: 32 MB mmap threshold, so freed blocks are reused from the heap instead of page-faulted
#: afresh (32K-key blocks: 1.5-2x slower in one A/B run, see docs/reference.md).
KEY_BLOCK = 1 << 12


def _kv_block(
    k: np.ndarray, v: np.ndarray, v_of_k: bool, j0: int, j1: int
) -> tuple[np.ndarray, np.ndarray]:
    """Keys ``j0:j1`` of ``k`` and ``v`` as float64 (exact; a view if already float64)."""
    kb = as_f64(k[j0:j1])
    return kb, (kb[:, : v.shape[1]] if v_of_k else as_f64(v[j0:j1]))


class _LazyDots:
    """Exact dot products of one query row at a time (the mpmath fallback of long rows).

    Computed key block by key block (each block's values are exact, so the row is the
    same as one product over every key), without a float64 copy of the whole of ``k``.
    """

    def __init__(self, q: np.ndarray, k: np.ndarray) -> None:
        self.q, self.k = q, k

    def row_mpf(self, i: int) -> list[mpmath.mpf]:
        from amla_numerics.reference.exactdot import exact_dot_any

        row: list[mpmath.mpf] = []
        for j0 in range(0, self.k.shape[0], KEY_BLOCK):
            kb = as_f64(self.k[j0 : j0 + KEY_BLOCK])
            row += exact_dot_any(self.q[i : i + 1], kb).row_mpf(0)
        return row


def _row_shift(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    v_of_k: bool,
    mask: np.ndarray | None,
    sc: tuple[float, float, float],
) -> tuple[np.ndarray, np.ndarray]:
    """Per row, a float64 ``m >= max_j (scale q_i . k_j + mask_ij)`` (the exact scores),
    and (same pass over the key blocks) the column maxima of ``|v|``.

    ``fl(q k^T)`` per key block, plus its rounding bound ``gamma_{Dk} |q||k|^T`` (bounded by
    ``gamma_{Dk} ||q_i||_1 max|k|``), times ``|sc_hi| + |sc_lo| + e_sc``, plus the mask's,
    rounded up by a relative ``2**-40``. Dead rows (every key masked) get ``-inf``.
    """
    sch, scl, esc = sc
    s_abs = abs(sch) + abs(scl) + esc
    qn = np.abs(q).sum(axis=1)
    best = np.full(q.shape[0], -np.inf)
    vmax = np.zeros(v.shape[1])
    for j0 in range(0, k.shape[0], KEY_BLOCK):
        kb, vb = _kv_block(k, v, v_of_k, j0, min(k.shape[0], j0 + KEY_BLOCK))
        kcol = _col_absmax(kb)  # one pass over the block for max|k| and (MLA) max|v|
        np.maximum(vmax, kcol[: v.shape[1]] if v_of_k else _col_absmax(vb), out=vmax)
        kmax = float(kcol.max()) if kb.size else 0.0
        g = q @ kb.T  # float64, any order: |g - q.k| <= gamma_Dk |q||k|
        slack = (gamma(q.shape[1] + 2) * qn * kmax) * s_abs
        with np.errstate(over="ignore", invalid="ignore"):
            top = g * sch
            if mask is not None:
                mb = mask[:, j0 : j0 + KEY_BLOCK]
                top = np.where(mb == -np.inf, -np.inf, top + mb)
            row = top.max(axis=1)
        # the products fl(g * sch) and the mask add: a relative 2**-52 each
        dot_max = np.abs(g).max(axis=1) + gamma(q.shape[1] + 2) * qn * kmax
        cap = row + slack + np.abs(row) * 2.0**-50 + dot_max * (abs(scl) + esc) + 2.0**-1000
        best = np.maximum(best, np.where(row == -np.inf, -np.inf, cap))
    return np.where(np.isfinite(best), best * (1 + np.sign(best) * 2.0**-40), best), vmax


@dataclass
class _WeightLimbs:
    """One key block's weights ``p^`` (stage 2) cut into ``nlimb`` integer limbs of ``bp``
    bits (stage 3): ``stacked`` holds every limb's rows (limb ``s`` at rows ``s M:(s+1) M``),
    ``psums`` their exact row sums, ``tau_sum`` the rows' exact truncation remainders."""

    ph: np.ndarray  # (M, n) the weights' high parts
    stacked: np.ndarray  # (nlimb M, n)
    nonzero: list[bool]  # per limb: any non-zero entry
    psums: np.ndarray  # (nlimb, M)
    tau_sum: np.ndarray  # (M,)
    rel: np.ndarray  # (M,) the row's largest relative weight error
    mxs: np.ndarray  # (M,) the shift used
    dead: np.ndarray  # (M,) bool: no key of the row in this block


def _block(q, k, v, mask, sc, prec, shift, vmax) -> dict[str, Any]:
    """One key block's exact GEMM terms, limb sums and error terms (see ``_one_inner``)."""
    m_rows, n = q.shape[0], k.shape[0]
    dots = exact_dot(q, k, precision_a=prec[0], precision_b=prec[1], checked=True)
    # limbs of v's columns (rows of the contiguous v.T) first: they fix the width b_p of p's
    bp, bv, lv, v_lo = _v_limbs(v.T, n, prec[2], vmax, m_rows)
    w = _weight_limbs(dots, mask, sc, shift, m_rows, n, bp)
    terms, lterms = _limb_terms(w, lv, bp, bv, m_rows)
    e_lo: Any = 0.0
    if v_lo is not None:
        lo_term, e_lo = _sparse_term(v_lo, w.ph)
        terms.append(lo_term)
    return {
        "terms": terms,
        "lterms": lterms,
        "rel": w.rel,
        "psum": w.ph.sum(axis=1),
        "tau_sum": w.tau_sum,
        "e_lo": e_lo,
        "dead": w.dead,
        "mxs": w.mxs,
        "dots": dots,
    }


def _v_limbs(
    vt: np.ndarray, n: int, prec_v: int, vmax: np.ndarray, m_rows: int
) -> tuple[int, int, Limbs, Any]:
    """Stage 3's cut of ``v``'s columns (``vt``: the rows of ``v.T``, a view: BLAS takes the
    transposed layout without a copy): ``(b_p, b_v, limbs, sparse remainder or None)``."""
    total = exact_bits(n) - 1  # one bit for the dd (hi + lo) limb sum
    split = _sparse_split(vt, total, prec_v, amax=vmax)
    if split is not None:  # one exact V limb + a sparse remainder (see _sparse_split)
        bp, bv, lv, v_lo = split
    else:
        span_v = span_bits(vt, prec_v)
        bp, bv = choose_widths(P_BITS + 1, span_v, total, m_rows, vt.shape[0])
        bp = max(bp, 2)
        lv, v_lo = limbs(vt, bv, single=span_v <= bv), None
    if lv.exps.min() < -900:
        raise FastUnavailable("values too small for the fast path")
    return bp, bv, lv, v_lo


def _weight_limbs(
    dots: ExactDot,
    mask: np.ndarray | None,
    sc: tuple[float, float, float],
    shift: np.ndarray | None,
    m_rows: int,
    n: int,
    bp: int,
) -> _WeightLimbs:
    """Stages 2-3 for the weights: block of rows by block of rows (the block stays in
    cache), ``p`` (dd, at most 1 + tiny) on the grid fixed by ``2**1``, as
    ``limbs(ph, bp, lo=pl, exps=1)``."""
    nlimb = math.ceil((P_BITS + 1) / bp)
    w = _WeightLimbs(
        ph=np.empty((m_rows, n)),
        stacked=np.empty((nlimb * m_rows, n)),  # every limb's rows: one GEMM reads V once
        nonzero=[False] * nlimb,
        psums=np.empty((nlimb, m_rows)),
        tau_sum=np.empty(m_rows),
        rel=np.empty(m_rows),
        mxs=np.empty(m_rows),
        dead=np.empty(m_rows, dtype=bool),
    )
    parts = [w.stacked[s_ * m_rows : (s_ + 1) * m_rows] for s_ in range(nlimb)]
    step = max(1, _CHUNK // n)  # row blocks small enough to stay in cache
    pl = np.empty((min(step, m_rows), n))
    f_p = 2.0 ** (bp - 1)
    p2 = 2.0**bp
    back = 2.0 ** (1 - nlimb * bp)  # unit of the remainder after the last limb
    for r0 in range(0, m_rows, step):
        rows = slice(r0, min(m_rows, r0 + step))
        plr = pl[: rows.stop - r0]
        _weights(
            dots,
            rows,
            None if mask is None else mask[rows],
            sc,
            w.ph[rows],
            plr,
            w.rel[rows],
            w.mxs[rows],
            w.dead[rows],
            None if shift is None else shift[rows],
        )
        yh = w.ph[rows] * f_p  # exact: powers of two
        yl = plr * f_p
        # while |yl| < 1 its limb is +-0 and adding it changes nothing: skipped (as limbs())
        top_l = float(np.abs(yl).max()) if yl.size else 0.0
        for s_ in range(nlimb):
            th = parts[s_][rows]  # a view: the limb is written in place
            np.trunc(yh, out=th)
            yh -= th  # exact (fractional part)
            if top_l >= 1.0:
                tl = np.trunc(yl)
                yl -= tl
                th += tl  # exact: integers below 2**(bp+1)
            w.psums[s_, rows] = th.sum(axis=1)  # exact: integers below 2**53
            w.nonzero[s_] = w.nonzero[s_] or bool(th.any())
            if s_ + 1 < nlimb:
                yh *= p2
                yl *= p2
                top_l = top_l * p2 if top_l < 1.0 else 1.0  # exact bound, or "may matter"
        yh *= back
        yl *= back
        yh += yl
        w.tau_sum[rows] = np.abs(yh, out=yh).sum(axis=1)  # the exact truncated remainders
    return w


def _limb_terms(
    w: _WeightLimbs, lv: Limbs, bp: int, bv: int, m_rows: int
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Stage 3's exact GEMM terms ``V_t @ P_s^T`` (scaled to their limbs' units) and the
    exact limb sums of ``l``."""
    fcol = np.ldexp(1.0, lv.exps)[:, None]
    terms, lterms = [], []
    live = [s for s in range(len(w.nonzero)) if w.nonzero[s]]
    # one GEMM per V limb over the nonzero weight limbs side by side: every entry is the
    # same exact integer sum as a GEMM per limb pair (exact in any order), V is read once
    if live and live == list(range(live[0], live[-1] + 1)):
        pstack = w.stacked[live[0] * m_rows : (live[-1] + 1) * m_rows]
    else:
        parts = [w.stacked[s * m_rows : (s + 1) * m_rows] for s in live]
        pstack = np.concatenate(parts) if live else w.stacked[:0]
    gs = [vpart @ pstack.T for vpart in lv.parts]  # (Dv, N) @ (N, L M): BLAS's fast layout
    for i, s in enumerate(live):
        fs = 2.0 ** (1 - bp - s * bp)
        lterms.append(w.psums[s] * fs)  # exact: integers below 2**53, times 2**k
        for t, g_all in enumerate(gs):
            g = g_all[:, i * m_rows : (i + 1) * m_rows]
            terms.append((g * (fcol * 2.0 ** (-bv - t * bv))) * fs)
    return terms, lterms


def _sparse_term(v_lo: Any, ph: np.ndarray) -> tuple[np.ndarray, Any]:
    """The sparse remainder's float64 product with ``p_hi`` and its bound ``e_lo``:
    ``(gamma_{k+1} + 2**-52) * (|V_lo| @ p_hi)`` (``p_lo`` neglected, ``|p_lo| <= 2**-52
    p_hi``; ``k`` = nonzeros per column)."""
    from scipy import sparse

    kmax = int(np.diff(v_lo.indptr).max())
    # V_lo and |V_lo| in one sparse product (one C-contiguous copy of p^T inside scipy);
    # every output row is the same sequential sum as in a separate product
    both = np.asarray(sparse.vstack([v_lo, abs(v_lo)], format="csr") @ ph.T)
    dvv = v_lo.shape[0]
    mag = both[dvv:] * (1 + 2 * gamma(kmax + 1))
    return both[:dvv], (gamma(kmax + 1) + 2.0**-52) * mag * _INFLATE


def fast_problem(prob: Problem, want_lse: bool = False) -> FastResult:
    """Run the fast oracle on a validated :class:`~amla_numerics.reference._inputs.Problem`."""
    sc = prob.scale.dd()
    outs, bounds, lses, lbs, dots = [], [], [], [], []
    for b in range(prob.q.shape[0]):
        mask = None if prob.mask is None else prob.mask[b]
        try:
            o, bd, ls, lb, d = _one(
                prob.q[b],
                prob.k_in[b],
                prob.v_in[b],
                mask,
                sc,
                prob.precision,
                want_lse,
                prob.v_of_k,
            )
        except FastUnavailable:
            raise
        except ValueError as exc:  # limb / exponent-range limits
            raise FastUnavailable(str(exc)) from None
        outs.append(o)
        bounds.append(bd)
        lses.append(ls)
        lbs.append(lb)
        dots.append(d)
    shp = prob.batch_shape
    m, dv = prob.q.shape[1], prob.v_in.shape[2]
    return FastResult(
        np.stack(outs).reshape(*shp, m, dv),
        np.stack(bounds).reshape(*shp, m, dv),
        np.stack(lses).reshape(*shp, m),
        np.stack(lbs).reshape(*shp, m),
        tuple(dots),
    )


def certified_attention(
    q: Any, k: Any, v: Any, scale: Any = None, *, mask: Any = None, return_lse: bool = False
) -> FastResult:
    """Softmax attention with a certified per-element error bound (no mpmath fallback).

    Parameters
    ----------
    q, k, v, scale, mask
        As for :func:`amla_numerics.reference.attention`.
    return_lse : bool
        Also compute ``lse`` and ``lse_bound`` (otherwise they are ``-inf`` and 0).

    Returns
    -------
    FastResult
        ``out`` (float64) with ``|out - exact| <= bound`` element by element.

    Raises
    ------
    ValueError
        Bad input, or :class:`FastUnavailable` (a ValueError) when the exponent range of the
        inputs is beyond the float64 fast path (use method="mpmath").
    """
    return fast_problem(prepare(q, k, v, scale, mask), return_lse)

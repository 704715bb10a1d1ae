"""The mpmath truth: softmax attention rows to ``dps`` digits and correctly rounded to float64.

Per row, from the *exact* dot products (:mod:`amla_numerics.reference.exactdot`):
``s_j = scale * D_j + mask_j``, ``m = max s_j``, ``p_j = exp(s_j - m)``, ``l = sum p_j``,
``out_c = sum_j p_j v_jc / l`` and ``lse = m + log l``, all at a working precision ``prec``
(bits) inside ``mpmath.workprec`` (mpmath's global precision is never changed).

Keys with identical exact ``(D_j, mask_j)`` form one group (same ``p``), and their values are
summed exactly first. That makes two facts decidable: ``out_c`` is *rational* exactly when
every group has the same mean value ``w_gc / n_g`` (then it equals that mean: one key, ties,
an all-zero column); otherwise by Lindemann-Weierstrass it is irrational (the ``p_g`` are
exponentials of distinct algebraic numbers), so it is never a rounding midpoint.

Error model (the ``Notes`` formula): every ``p_g`` has relative error at most
``rel_g = 2**(1-prec) + 1.01 eps_g`` with ``eps_g = 2**(1-prec) (|scale D_g| + |s_g| + |x_g|)``
(argument rounding; mpmath's ``exp`` taken as correct to 2 ulp). The sums ``o_c`` and ``l``
of the rounded weights are then *exact* (Python integers on a common binary grid), so
``|o^ - o| <= rel * sum p |w|`` and ``|l^ - l| <= rel * l``, and ``out = o^/l^`` (one
rounding) has relative error ``beta <= 1.01 rel (sum p |w| / |o^| + 1) + 4 * 2**(1-prec)``.
Ziv's strategy: a column is accepted when ``beta <= 2**-(3.33 dps + 2)`` and both ends of
``out (1 +- beta)`` round to the same float64; otherwise ``prec`` doubles (a RuntimeError
past 64 times the start, which only a pathological exponent range can reach).

Examples
--------
>>> import numpy as np
>>> from amla_numerics.reference.exactdot import exact_dot
>>> from amla_numerics.reference._inputs import make_scale
>>> q = np.array([[1.0, 0.0]]); k = np.array([[1.0, 0.0], [0.0, 1.0]]); v = np.array([[1.0], [0.0]])
>>> row = attention_row(exact_dot(q, k).row_mpf(0), None, v, make_scale(1.0, 2), 30)
>>> float(row.out[0]) == float(np.e / (np.e + 1))
True
>>> mpmath.nstr(mp_logsumexp([0.0, 0.0], dps=20), 20)
'0.69314718055994530942'
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import mpmath
import numpy as np
from mpmath.libmp import from_man_exp

from amla_numerics.formats import FP64
from amla_numerics.reference._inputs import Scale, make_scale
from amla_numerics.reference.exactdot import exact_dot_any
from amla_numerics.rounding import round_to, to_fraction

__all__ = [
    "OnlineTrace",
    "RowResult",
    "attention_row",
    "mp_logsumexp",
    "mp_softmax",
    "online_softmax",
]

_BITS_PER_DIGIT = math.log2(10)


def _bits(dps: int) -> int:
    return math.ceil(dps * _BITS_PER_DIGIT)


def _dyadic(fr: Fraction) -> mpmath.mpf:
    """An exact mpf from a Fraction whose denominator is a power of two."""
    den = fr.denominator
    e = den.bit_length() - 1
    if den != 1 << e:
        raise ValueError("not a dyadic rational")
    return mpmath.mp.make_mpf(from_man_exp(fr.numerator, -e))


def _f64(x: Any) -> float:
    """Correctly rounded float64 of an exact value (mpf or Fraction) via round_to."""
    return float(round_to(x, FP64))


@dataclass(frozen=True)
class RowResult:
    """One row: ``out[c]`` (float64, correctly rounded) and ``out_mpf[c]`` for the columns
    asked for; ``lse`` likewise (``-inf`` and NaN outputs for a fully masked row)."""

    out: dict[int, float]
    out_mpf: dict[int, Any]
    lse: float | None
    lse_mpf: Any
    prec: int


def _groups(dots: list, mask_row: np.ndarray | None) -> tuple[list, list, list]:
    """Keys grouped by identical exact (dot, mask): (dot, mask value, member indices)."""
    table: dict = {}
    for j, d in enumerate(dots):
        mv = 0.0 if mask_row is None else float(mask_row[j])
        if mv == -math.inf:
            continue
        table.setdefault((d, mv), []).append(j)
    keys = list(table)
    return [k[0] for k in keys], [k[1] for k in keys], [table[k] for k in keys]


def attention_row(
    dots: list,
    mask_row: np.ndarray | None,
    v: np.ndarray,
    scale: Scale,
    dps: int,
    cols: list[int] | None = None,
    *,
    want_lse: bool = False,
    max_prec: int | None = None,
) -> RowResult:
    """One softmax-attention row from exact dot products (see the module docstring).

    Parameters
    ----------
    dots : list of mpmath.mpf
        Exact ``q_i . k_j`` for every key (from ``ExactDot.row_mpf``).
    mask_row : numpy.ndarray or None
        Additive mask for the row (``-inf`` drops a key).
    v : numpy.ndarray, shape (N, Dv)
        Values (float64, exact).
    scale : Scale
        The exact scale.
    dps : int
        Decimal digits the mpf results are good to.
    cols : list of int, optional
        Output columns to compute (default all).
    want_lse : bool
        Also compute ``log sum exp`` of the scores.
    """
    ncols = v.shape[1]
    cols = list(range(ncols)) if cols is None else list(cols)
    dg, mg, members = _groups(dots, mask_row)
    if not dg:
        nan = {c: math.nan for c in cols}
        nan_mpf = {c: mpmath.mpf("nan") for c in cols}
        return RowResult(nan, nan_mpf, -math.inf, mpmath.mpf("-inf"), 0)
    sizes = [len(mb) for mb in members]
    target = _bits(dps)
    all_single = all(n == 1 for n in sizes)
    out, out_mpf, pending = _rational_columns(v, cols, members, target)
    wint, ev, wabs = _exact_columns(v, pending, members, all_single)
    slot = {c: i for i, c in enumerate(pending)}  # column -> its index in wint, ev, wabs
    lse = lse_mpf = None
    lse_pending = want_lse
    if want_lse and len(dg) == 1 and sizes[0] == 1 and scale.value is not None:
        s = scale.value * to_fraction(dg[0]) + Fraction(mg[0])  # one key: lse = s exactly
        lse = _f64(s)
        with mpmath.workprec(target + 10):
            lse_mpf = mpmath.mpf(s.numerator) / s.denominator
        lse_pending = False
    prec = target + 30 + 2 * max(1, math.ceil(math.log2(len(dots) + 1)))
    start = prec
    cap = max_prec or max(64 * start, 4096)
    while pending or lse_pending:  # Ziv's loop: the precision doubles until all settle
        if prec > cap:
            raise RuntimeError(
                f"Ziv loop did not converge below {cap} bits (row columns {pending})"
            )
        with mpmath.workprec(prec):
            g = _grid(prec, scale, dg, mg, sizes)
            if pending:
                cs = (wint, ev, wabs, slot)
                pending = _settle_columns(g, pending, cs, target, out, out_mpf)
            if lse_pending:
                y = _settled_lse(g, target)
                if y is not None:
                    lse, lse_mpf = _f64(y), y
                    lse_pending = False
        if pending or lse_pending:
            prec *= 2
    return RowResult(out, out_mpf, lse, lse_mpf, prec)


def _rational_columns(
    v: np.ndarray, cols: list[int], members: list, target: int
) -> tuple[dict[int, float], dict[int, Any], list[int]]:
    """The columns known exactly (rational: every group has the same mean), as float64 and
    mpf, and the other columns (pending)."""
    out: dict[int, float] = {}
    out_mpf: dict[int, Any] = {}
    pending = []
    sizes = [len(mb) for mb in members]
    if all(n == 1 for n in sizes):
        reps = [mb[0] for mb in members]
        vr = v[reps][:, cols]
        const = (vr == vr[:1]).all(axis=0)
        for c, is_const in zip(cols, const.tolist(), strict=True):
            if is_const:
                out[c] = float(v[reps[0], c])
                with mpmath.workprec(target + 10):
                    out_mpf[c] = _dyadic(Fraction(out[c]))
            else:
                pending.append(c)
        return out, out_mpf, pending
    for c in cols:
        ws = [sum((Fraction(float(v[j, c])) for j in mb), Fraction(0)) for mb in members]
        means = [w / n for w, n in zip(ws, sizes, strict=True)]
        if all(mu == means[0] for mu in means):
            out[c] = _f64(means[0])
            with mpmath.workprec(target + 10):
                out_mpf[c] = mpmath.mpf(means[0].numerator) / means[0].denominator
        else:
            pending.append(c)
    return out, out_mpf, pending


@dataclass(frozen=True)
class _Grid:
    """A row's weights at one working precision (see the module docstring's error model).

    ``p`` the rounded weights ``exp(s_g - smax)`` (relative error ``rel`` each), ``pint``
    them as integers on the common grid ``2**emin`` (weights below ``2**-cut``, exponents
    astronomically far down, are ``drop``-ped: each is below ``two_cut = 2**-cut`` and
    ``l >= 1``), ``l_mp`` the exact sum of the grid weights (relative error ``rel_l``).
    """

    p: list
    pint: np.ndarray
    drop: np.ndarray
    emin: int
    l_mp: Any
    smax: Any
    rel: Any
    rel_l: Any
    two_cut: Any
    tiny: Any  # 2**(1 - prec)


def _grid(prec: int, scale: Scale, dg: list, mg: list, sizes: list[int]) -> _Grid:
    """The row's :class:`_Grid` at the working precision ``prec`` (inside its workprec)."""
    # bound arithmetic in mpf (float64 would underflow past ~1070 bits)
    tiny = mpmath.ldexp(mpmath.mpf(1), 1 - prec)
    sc = scale.mpf()
    sd = [sc * d for d in dg]
    sv = [a + b if b else a for a, b in zip(sd, mg, strict=True)]
    smax = max(sv)
    x = [a - smax for a in sv]
    p = [mpmath.exp(a) for a in x]
    eps = max(abs(a) + abs(b) + abs(c) for a, b, c in zip(sd, sv, x, strict=True))
    rel = tiny + 1.01 * tiny * eps
    # exact sums of the (rounded) weights: integers on a common grid
    pm = [pi._mpf_ for pi in p]
    cut = 4 * prec + 64
    drop = np.array([t[2] + t[3] < -cut for t in pm])
    emin = min(t[2] for t, d in zip(pm, drop, strict=True) if not d)
    pint = np.empty(len(dg), dtype=object)
    pint[:] = [0 if d else t[1] << (t[2] - emin) for t, d in zip(pm, drop, strict=True)]
    l_mp = mpmath.mp.make_mpf(
        from_man_exp(sum(int(a) * n for a, n in zip(pint, sizes, strict=True)), emin)
    )
    two_cut = mpmath.ldexp(mpmath.mpf(1), -cut)
    rel_l = rel + int(np.dot(drop, sizes)) * two_cut
    return _Grid(p, pint, drop, emin, l_mp, smax, rel, rel_l, two_cut, tiny)


def _settle_columns(
    g: _Grid,
    pending: list[int],
    columns: tuple[np.ndarray, np.ndarray, np.ndarray, dict[int, int]],
    target: int,
    out: dict[int, float],
    out_mpf: dict[int, Any],
) -> list[int]:
    """Ziv's test of the open columns at ``g``'s precision: ``o_c / l`` with ``o_c`` the
    exact grid sum (or :func:`_floating_column` where it is zero or tiny); the settled
    columns go into ``out`` and ``out_mpf``; returns those still open. ``columns`` are
    :func:`_exact_columns`'s ``(wint, ev, wabs)`` and each column's index in them."""
    wint, ev, wabs, slot = columns
    tiny, rel, rel_l, l_mp = g.tiny, g.rel, g.rel_l, g.l_mp
    sel = [slot[c] for c in pending]
    wab = wabs[:, sel]
    pf = np.array([0.0 if d else float(pi) for pi, d in zip(g.p, g.drop, strict=True)])
    amag = (pf @ wab) * 1.01 + len(g.p) * 2.0**-1070 * wab.max(axis=0)  # bound only
    dmag = g.drop.astype(float) @ wab * 1.01
    oint = g.pint.dot(wint[:, sel])
    evs = ev[sel]
    still, cand, ys, betas = [], [], [], []
    for idx, c in enumerate(pending):
        o = mpmath.mp.make_mpf(from_man_exp(int(oint[idx]), g.emin + int(evs[idx])))
        if o == 0 or abs(o) < _TINY * l_mp:
            # the grid sum is zero or the result is near float64's underflow: the
            # dropped weights may decide it, so every group's term is summed in mpf
            y, beta = _floating_column(g.p, wint[:, slot[c]], int(ev[slot[c]]), rel, l_mp)
            if y == 0:
                still.append(c)
            else:
                cand.append(c)
                ys.append(y)
                betas.append(1.01 * rel_l + beta)
            continue
        ao = abs(o)
        ratio = mpmath.mpf(float(amag[idx])) / ao
        drop_o = g.two_cut * float(dmag[idx]) / ao
        cand.append(c)
        ys.append(o / l_mp)
        # 4 tiny: rounding of the quotient and of y +- d in the Ziv test
        betas.append(1.01 * (rel * ratio + rel_l + drop_o) + 4 * tiny)
    ok, f64 = _settled_many(ys, betas, target)
    for c, y, good, f in zip(cand, ys, ok, f64, strict=True):
        if good:
            out[c] = f
            out_mpf[c] = y
        else:
            still.append(c)
    return still


def _settled_lse(g: _Grid, target: int) -> Any:
    """``lse = smax + log l`` at ``g``'s precision when Ziv's test settles it, else None."""
    lg = mpmath.log(g.l_mp)
    y = g.smax + lg
    if y != 0:
        err = 1.01 * g.rel_l + g.tiny * (abs(g.smax) + abs(lg) + abs(y))
        beta = err / abs(y) + g.tiny
        if _settled(y, beta, target):
            return y
    return None


#: Below this relative size of ``o / l`` a column is also summed in mpf (float64's smallest
#: normal is 2**-1022; the grid sum drops weights below ``2**-(4 prec + 64)``).
_TINY = mpmath.ldexp(mpmath.mpf(1), -1000)


def _floating_column(p: list, w: np.ndarray, ev: int, rel: Any, l_mp: Any) -> tuple[Any, Any]:
    """``y = sum_g p_g w_g / l`` with every group's term in mpf (no common grid, so no weight
    is dropped however small), and its relative error from the weights and the sum.

    ``p`` are the rounded weights (relative error ``rel``), ``w`` the exact group sums of
    the column as integers on the grid ``2**ev``. Each term and partial sum rounds once at the
    working precision ``2**(1-prec)``: ``|Y - sum p w| <= (rel + (G + 2) 2**(1-prec)) sum p |w|``
    (with ``1.01`` for the products of the small error terms). ``l``'s own error is the
    caller's. Returns ``(y, beta)``; ``y`` is zero where the terms cancelled (undecided).
    """
    terms = [
        pi * mpmath.mp.make_mpf(from_man_exp(int(wi), ev)) for pi, wi in zip(p, w, strict=True)
    ]
    big = mpmath.fsum([abs(t) for t in terms])
    y_sum = mpmath.fsum(terms)
    if y_sum == 0:
        return y_sum, big
    tiny = mpmath.ldexp(mpmath.mpf(1), 1 - mpmath.mp.prec)
    err = 1.01 * (rel + (len(p) + 2) * tiny) * big
    return y_sum / l_mp, 1.01 * err / abs(y_sum) + 4 * tiny


def _exact_columns(v: np.ndarray, cols: list[int], members: list, single: bool):
    """Group sums of ``v[:, cols]`` as exact integers on a per-column grid ``2**ev``.

    Returns ``(wint (G, C) object, ev (C,), wabs (G, C) float)`` with ``wabs`` the group sums
    of ``|v|`` (an upper bound of ``|w|`` for the error bound).
    """
    if not cols:
        return (
            np.zeros((len(members), 0), dtype=object),
            np.zeros(0, dtype=np.int64),
            np.zeros((len(members), 0)),
        )
    sel = v[:, cols]
    mant, ex = np.frexp(sel)
    m53 = np.ldexp(mant, 53).astype(np.int64)  # exact: a float's 53-bit significand
    e53 = ex.astype(np.int64) - 53
    nz = m53 != 0
    ev = np.where(nz, e53, np.iinfo(np.int64).max).min(axis=0)
    ev = np.where(nz.any(axis=0), ev, 0)
    shift = np.where(nz, e53 - ev[None, :], 0)
    vint = m53.astype(object) << shift.astype(object)
    vabs = np.abs(sel)
    if single:
        idx = [mb[0] for mb in members]
        return vint[idx], ev, vabs[idx]
    wint = np.array([vint[mb].sum(axis=0) for mb in members], dtype=object).reshape(
        len(members), len(cols)
    )
    wabs = np.array([vabs[mb].sum(axis=0) for mb in members]) * 1.01
    return wint, ev, wabs


def _settled(y: mpmath.mpf, beta: float, target: int) -> bool:
    """Accurate to ``target`` bits and both ends of ``y (1 +- beta)`` round alike."""
    return bool(_settled_many([y], [beta], target)[0][0])


_UNDER = mpmath.ldexp(mpmath.mpf(1), -1100)


def _clip_tiny(x: Any) -> Any:
    """``x``, or ``+-2**-1100`` where ``0 < |x| < 2**-1100``: both round to the same float64
    zero (below half the smallest subnormal), and the exact rounding of a value with an
    astronomically small exponent (``exp(-1e12)``) is never formed."""
    return x if x == 0 or abs(x) >= _UNDER else (_UNDER if x > 0 else -_UNDER)


def _settled_many(ys: list, betas: list, target: int) -> tuple[list[bool], list[float]]:
    """Vectorised :func:`_settled`; also returns each ``y`` correctly rounded to float64."""
    if not ys:
        return [], []
    lo = np.empty(len(ys), dtype=object)
    hi = np.empty(len(ys), dtype=object)
    mid = np.empty(len(ys), dtype=object)
    for i, (y, b) in enumerate(zip(ys, betas, strict=True)):
        d = abs(y) * b
        lo[i], hi[i], mid[i] = _clip_tiny(y - d), _clip_tiny(y + d), _clip_tiny(y)
    rl = round_to(lo, FP64).astype(np.float64)
    rh = round_to(hi, FP64).astype(np.float64)
    rm = round_to(mid, FP64).astype(np.float64)
    lim = mpmath.ldexp(mpmath.mpf(1), -(target + 2))
    ok = [bool(b < lim and a == c) for b, a, c in zip(betas, rl, rh, strict=True)]
    return ok, rm.tolist()


def mp_softmax(scores: Any, dps: int = 50) -> np.ndarray:
    """Softmax along the last axis of exact scores, as an object array of mpf.

    Scores are taken exactly (floats, mpf, Fractions); ``-inf`` drops an entry. Computed at
    ``dps`` digits plus guard bits (``2 log2 N + 20``): each result has relative error below
    ``N 2**-(prec-2)``.

    Examples
    --------
    >>> p = mp_softmax([0.0, 0.0, -math.inf], dps=20)
    >>> [float(x) for x in p]
    [0.5, 0.5, 0.0]
    """
    arr = np.asarray(scores, dtype=object)
    flat = arr.reshape(-1, arr.shape[-1]) if arr.ndim else arr.reshape(1, 1)
    n = flat.shape[-1]
    res = np.empty(flat.shape, dtype=object)
    with mpmath.workprec(_bits(dps) + 20 + 2 * math.ceil(math.log2(n + 1))):
        for r, row in enumerate(flat):
            vals = [
                mpmath.mpf(x)
                if not isinstance(x, Fraction)
                else mpmath.mpf(x.numerator) / x.denominator
                for x in row
            ]
            m = max(vals)
            if m == -mpmath.inf:
                res[r] = [mpmath.mpf("nan")] * n
                continue
            p = [mpmath.exp(x - m) for x in vals]
            tot = mpmath.fsum(p)
            res[r] = [x / tot for x in p]
    return res.reshape(arr.shape)


def mp_logsumexp(scores: Any, dps: int = 50) -> Any:
    """``log sum exp`` of exact scores along the last axis (mpf or object array of mpf).

    Examples
    --------
    >>> float(mp_logsumexp([1.0, -math.inf], dps=20))
    1.0
    """
    arr = np.asarray(scores, dtype=object)
    flat = arr.reshape(-1, arr.shape[-1])
    n = flat.shape[-1]
    out = []
    with mpmath.workprec(_bits(dps) + 20 + 2 * math.ceil(math.log2(n + 1))):
        for row in flat:
            vals = [mpmath.mpf(x) for x in row]
            m = max(vals)
            if m == -mpmath.inf:
                out.append(m)
                continue
            out.append(m + mpmath.log(mpmath.fsum(mpmath.exp(x - m) for x in vals)))
    if arr.ndim == 1:
        return out[0]
    return np.array(out, dtype=object).reshape(arr.shape[:-1])


@dataclass(frozen=True)
class OnlineTrace:
    """The online-softmax state after every KV block, to ``dps`` digits.

    ``m[i, j]`` running max, ``l[i, j]`` running sum ``sum exp(s - m_j)`` and ``o[i, j, :]``
    the unnormalised accumulator ``sum exp(s - m_j) v`` over blocks ``0..j`` (object arrays
    of mpf); ``out = o[:, -1] / l[:, -1]``.
    """

    m: np.ndarray
    l: np.ndarray
    o: np.ndarray
    block: int

    def as_float64(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(m, l, o)`` correctly rounded to float64 (with ``round_to``)."""
        m, l, o = (round_to(a, FP64).astype(np.float64) for a in (self.m, self.l, self.o))
        return m, l, o


def online_softmax(
    q: Any,
    k: Any,
    v: Any,
    scale: Any = None,
    *,
    block: int = 512,
    mask: Any = None,
    dps: int = 50,
) -> OnlineTrace:
    """The FlashAttention recurrence at arbitrary precision, block by block.

    ``m_j = max(m_{j-1}, max S_j)``, ``a_j = exp(m_{j-1} - m_j)``,
    ``l_j = a_j l_{j-1} + sum exp(S_j - m_j)``, ``O_j = a_j O_{j-1} + exp(S_j - m_j) @ V_j``,
    with exact scores ``S = scale * q k^T + mask`` (2-D q, k, v). Working precision is ``dps``
    digits plus ``2 log2 N + 20`` guard bits, so every entry is good to about ``dps`` digits
    (relative to the sums of magnitudes).

    Examples
    --------
    >>> import numpy as np
    >>> q = np.ones((1, 2)); k = np.array([[0.0, 0.0], [1.0, 1.0]]); v = np.array([[1.0], [3.0]])
    >>> t = online_softmax(q, k, v, 1.0, block=1, dps=20)
    >>> [float(x) for x in t.m[0]], round(float(t.o[0, -1, 0] / t.l[0, -1]), 12)
    ([0.0, 2.0], 2.761594155956)
    """
    qa = np.asarray(q, dtype=np.float64)
    ka = np.asarray(k, dtype=np.float64)
    va = np.asarray(v, dtype=np.float64)
    if qa.ndim != 2 or ka.ndim != 2 or va.ndim != 2 or ka.shape[0] != va.shape[0]:
        raise ValueError("online_softmax takes 2-D q (M, Dk), k (N, Dk), v (N, Dv)")
    if not isinstance(block, int) or block < 1:
        raise ValueError(f"argument 'block' must be a positive int, got {block!r}")
    sc = make_scale(scale, qa.shape[1])
    dots = exact_dot_any(qa, ka)
    mrow = (
        None
        if mask is None
        else np.broadcast_to(np.asarray(mask, dtype=np.float64), (qa.shape[0], ka.shape[0]))
    )
    n = ka.shape[0]
    nb = -(-n // block)
    m_out = np.empty((qa.shape[0], nb), dtype=object)
    l_out = np.empty((qa.shape[0], nb), dtype=object)
    o_out = np.empty((qa.shape[0], nb, va.shape[1]), dtype=object)
    with mpmath.workprec(_bits(dps) + 20 + 2 * math.ceil(math.log2(n + 1))):
        scm = sc.mpf()
        for i in range(qa.shape[0]):
            d = dots.row_mpf(i)
            s = [scm * x for x in d]
            if mrow is not None:
                s = [a + float(b) for a, b in zip(s, mrow[i], strict=True)]
            m = mpmath.mpf("-inf")
            lsum = mpmath.mpf(0)
            o = [mpmath.mpf(0)] * va.shape[1]
            for b in range(nb):
                sl = s[b * block : (b + 1) * block]
                mn = max([m, *sl])
                a = mpmath.exp(m - mn) if m != -mpmath.inf else mpmath.mpf(0)
                p = [mpmath.exp(x - mn) if mn != -mpmath.inf else mpmath.mpf(0) for x in sl]
                lsum = a * lsum + mpmath.fsum(p)
                vb = va[b * block : (b + 1) * block]
                o = [a * oc + mpmath.fdot(p, vb[:, c].tolist()) for c, oc in enumerate(o)]
                m = mn
                m_out[i, b], l_out[i, b] = m, lsum
                o_out[i, b, :] = o
    return OnlineTrace(m_out, l_out, o_out, block)

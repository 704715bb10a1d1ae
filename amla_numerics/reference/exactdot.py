"""Exact dot products of float arrays as a few float64 GEMMs on integer slices.

Every finite float of width <= 64 bits is an integer times a power of two. Scale each row
``a_r`` of ``A`` by ``2**(b_a - e_r)`` where ``|a_r| < 2**e_r`` (a power of two: exact), and
cut it into integer *limbs* of ``b_a`` bits: ``a_r = 2**(e_r - b_a) * sum_s A_s[r] 2**(-s b_a)``
with ``|A_s| < 2**b_a`` (the limbs come from ``trunc`` and the exact remainder, so the
decomposition is exact, and it stops when the remainder is zero). Do the same to ``B`` with
``b_b`` bits. Then every entry of ``A_s @ B_t.T`` is a sum of ``K`` integers each below
``2**(b_a + b_b)``; with ``b_a + b_b <= 53 - ceil(log2 K)`` every partial sum is an integer
below ``2**53``, so a float64 GEMM computes it *exactly, in any summation order, with or
without FMA*. The dot product is the exact sum of the terms ``G_st * 2**(...)``.

Why integer slicing rather than a TwoSum cascade: it keeps the work inside BLAS (a BF16 row
of a few hundred Gaussian values spans about 20 bits, so one or two limbs per operand and
1-4 GEMMs), where an error-free cascade over ``M x N x K`` products would be elementwise
numpy work hundreds of times slower. The limb widths are chosen from the operands' bit
spans (exponent range plus the format's precision) to minimise the number of GEMMs.

Limbs are per row: a row whose own span fits in ``b`` bits is a single scaled limb, and limb
``s`` is nonzero only on rows whose span exceeds ``s b`` (a row's few tiny values set its
span). Each limb pair's GEMM runs on the rows where both limbs are nonzero; the result is a
*block* term (zero elsewhere), so a BF16 case whose worst rows need two limbs pays for the
second limb only on those rows. Exactness is per entry and unaffected.

Examples
--------
>>> import numpy as np
>>> from fractions import Fraction
>>> a = np.array([[1.0, 2.0**-60, 3.0]])
>>> b = np.array([[1.0, 1.0, -1.0], [2.0**70, 1.0, 0.0]])
>>> d = exact_dot(a, b)
>>> d.to_fractions()[0] == [Fraction(-2) + Fraction(1, 2**60), 2**70 + Fraction(1, 2**60)]
True
>>> hi, lo, err = d.to_dd()
>>> float(hi[0, 0]), float(lo[0, 0]), bool(err[0, 0] < 2.0**-100)
(-2.0, 8.673617379884035e-19, True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import mpmath
import numpy as np
from mpmath.libmp import from_man_exp

from amla_numerics.reference._dd import gamma, two_sum

__all__ = [
    "ExactDot",
    "IntDot",
    "Limbs",
    "choose_widths",
    "choose_widths_rows",
    "exact_dot",
    "exact_dot_any",
    "limbs",
    "row_spans",
    "span_bits",
]

#: Refuse more limbs than this per operand (float64 rows spanning > ~1000 binades).
MAX_LIMBS = 48


@dataclass(frozen=True)
class Limbs:
    """``x[r] = 2**(exps[r] - bits) * sum_s parts[s][r] * 2**(-s * bits) + rest[r]``.

    ``parts`` are integer-valued float64 arrays with ``|part| < 2**bits`` (``2**(bits+1)``
    for a double-double input); ``rest`` is the exact remainder (None for an exact split).
    """

    parts: tuple[np.ndarray, ...]
    exps: np.ndarray
    bits: int
    rest: np.ndarray | None


def row_range(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the largest magnitude and the smallest nonzero magnitude (inf if none)."""
    if not x.shape[1]:
        return np.zeros(x.shape[0]), np.full(x.shape[0], np.inf)
    amax = np.empty(x.shape[0])
    amin = np.empty(x.shape[0])
    step = max(1, (1 << 16) // x.shape[1])  # blocks of rows that stay in cache
    for r0 in range(0, x.shape[0], step):
        ax = np.abs(x[r0 : r0 + step])
        amax[r0 : r0 + step] = ax.max(axis=1)
        ax[ax == 0] = np.inf
        amin[r0 : r0 + step] = ax.min(axis=1)
    return amax, amin


def span_bits(x: np.ndarray, precision: int, rng: tuple | None = None) -> int:
    """Bits from the top of each row's largest value to the lowest bit a row can hold.

    An upper bound: ``max_r (E_top(r) - E_min(r) + precision)`` with ``E`` the ``frexp``
    exponents of the row's largest and smallest nonzero values and ``precision`` the input
    format's significant bits (a value ``m 2**(E-p)`` has no bit below ``2**(E-p)``).
    """
    if x.size == 0:
        return 1
    amax, amin = row_range(x) if rng is None else rng
    ok = np.isfinite(amin)
    if not ok.any():
        return 1
    _, top = np.frexp(amax[ok])
    _, low = np.frexp(amin[ok])
    return int(max(1, (top - low).max() + precision))


def limbs(
    x: np.ndarray,
    bits: int,
    *,
    lo: np.ndarray | None = None,
    exps: np.ndarray | None = None,
    max_limbs: int | None = None,
    single: bool = False,
) -> Limbs:
    """Split the rows of ``x`` (2-D, finite) into integer limbs of ``bits`` bits.

    Parameters
    ----------
    x : numpy.ndarray of float64
        The values (rows are scaled independently).
    bits : int
        Limb width.
    lo : numpy.ndarray, optional
        A low part (double-double input ``x + lo``), split on the same grid.
    exps : numpy.ndarray, optional
        Row exponents to use (``|x[r]| < 2**exps[r]``); by default from ``frexp`` of the row max.
    max_limbs : int, optional
        Truncate after this many limbs (``rest`` holds the exact remainder). Without it the
        split is exact, and ValueError is raised past :data:`MAX_LIMBS`.
    single : bool
        The caller has proven (by :func:`span_bits`) that one limb holds every row exactly:
        skip the truncation loop.
    """
    if exps is None:
        amax = np.abs(x).max(axis=1) if x.shape[1] else np.zeros(x.shape[0])
        _, exps = np.frexp(amax)
    exps = np.asarray(exps, dtype=np.int64)
    shift = bits - exps
    if shift.size and (shift.max() > 1000 or shift.min() < -1000):
        raise ValueError("operand exponent range too wide for the fast path")
    factor = np.ldexp(1.0, shift)[:, None]  # exact powers of two
    parts_in = [x] if lo is None else [x, lo]
    scaled = []
    for arr in parts_in:
        y = arr * factor
        if (shift < 0).any() and not np.array_equal(y / factor, arr):
            raise ValueError("values too small to scale exactly for the fast path")
        scaled.append(y)
    if single and lo is None:
        return Limbs((scaled[0],), exps, bits, None)
    out = []
    cap = max_limbs if max_limbs is not None else MAX_LIMBS
    p2 = float(2**bits)
    # a part whose magnitude is below 1 contributes nothing yet: skip it until it matters
    top = [float(np.abs(y).max()) if y.size else 0.0 for y in scaled]
    while True:
        limb = None
        for i, y in enumerate(scaled):
            if top[i] < 1.0:
                continue
            t = np.trunc(y)
            y -= t  # exact: the fractional part of a float (in place: y is our own array)
            top[i] = 1.0  # below 1 now, but any value may become significant next limb
            limb = t if limb is None else limb + t  # exact: |t| < 2**(bits+1) for dd input
        out.append(np.zeros_like(x) if limb is None else limb)
        done = all((top[i] == 0.0) if top[i] < 1.0 else not y.any() for i, y in enumerate(scaled))
        if done or len(out) >= cap:
            break
        for i, y in enumerate(scaled):
            y *= p2
            if top[i] < 1.0:
                top[i] *= p2
    if not done and max_limbs is None:
        raise ValueError(f"operand spans more than {MAX_LIMBS} limbs of {bits} bits")
    rest = None
    if not done:
        rest = np.zeros_like(x)
        # scaled[i] holds the remainder in units of the last limb: 2**(exps - len(out) * bits)
        back = np.ldexp(1.0, exps - len(out) * bits)[:, None]  # powers of two, no underflow
        for y in scaled:
            rest += y * back
    return Limbs(tuple(out), exps, bits, rest)


def choose_widths(
    span_a: int, span_b: int, total: int, rows_a: int = 1, rows_b: int = 1
) -> tuple[int, int]:
    """Limb widths ``(b_a, b_b)`` with ``b_a + b_b <= total`` minimising the estimated time.

    Cost per inner index (a rough model of this machine: a GEMM multiply-add ~0.075 ns,
    one limb of the split loop ~20 ns per element, a single scaled limb ~3 ns):
    ``0.075 c_a c_b rows_a rows_b + split(c_a, rows_a) + split(c_b, rows_b)`` with
    ``c = ceil(span / b)`` limbs. Exactness never depends on this choice.
    """
    if total < 2:
        raise ValueError("inner dimension too large for exact float64 GEMMs")

    def split(c: int, rows: int) -> float:
        return 3.0 * rows if c == 1 else 20.0 * c * rows

    best = None
    for ba in range(1, total):
        bb = total - ba
        ca, cb = math.ceil(span_a / ba), math.ceil(span_b / bb)
        cost = 0.075 * ca * cb * rows_a * rows_b + split(ca, rows_a) + split(cb, rows_b)
        key = (cost, abs(ba - bb))
        if best is None or key < best[0]:
            best = (key, ba, bb)
    assert best is not None  # total >= 2: the loop ran
    return best[1], best[2]


def exact_bits(k: int) -> int:
    """``53 - ceil(log2 k)``: the product width whose k-term integer sums stay below 2**53."""
    return 53 - max(0, math.ceil(math.log2(max(k, 1))))


@dataclass(frozen=True)
class ExactDot:
    """The exact value of ``a @ b.T`` as a sum of exact float64 terms.

    ``value[i, j] = sum_(s,t) G[(s,t)][i, j] * 2**(ea[i] + eb[j] + shift[(s,t)])``.

    ``blocks`` (optional, one entry per term): ``None`` for a full ``(M, N)`` term, or
    ``(rows, cols)`` (sorted index arrays, either None for "all") when the term is stored
    compactly as ``G[np.ix_(rows, cols)]``; it is zero outside that block.
    """

    terms: tuple[np.ndarray, ...]
    shifts: tuple[int, ...]
    ea: np.ndarray
    eb: np.ndarray
    blocks: tuple | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return (self.ea.size, self.eb.size)

    def _block(self, n: int):
        if self.blocks is None or self.blocks[n] is None:
            return None, None
        return self.blocks[n]

    def to_dd(self, rows: slice = slice(None)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(hi, lo, err)`` for ``rows``: a double-double and a rigorous absolute error bound.

        Sum2 (Ogita, Rump, Oishi 2005) of the exact terms: the dd result is off by at most
        ``gamma_{T-1}**2 * sum |terms|`` plus ``2**-1074`` per term (underflow in ``ldexp``).
        A compact (block) term is added only on its block: elsewhere it is zero, and
        ``TwoSum(hi, 0) = (hi, 0)`` leaves the sum unchanged. Raises ValueError if a term
        can overflow.
        """
        if rows.step not in (None, 1):  # elementwise: the same values as slicing the whole
            whole = self.to_dd()
            return whole[0][rows], whole[1][rows], whole[2][rows]
        ea = self.ea[rows]
        fast = self._power_scaling(ea)
        fb = np.ldexp(1.0, self.eb)[None, :]
        hi: Any = None  # hi, lo, mag: set by the first term
        lo: Any = None
        mag: Any = None
        for n, (g, sh) in enumerate(zip(self.terms, self.shifts, strict=True)):
            br, bc = self._block(n)
            if br is None and bc is None:
                g = g[rows]
                if fast:  # two exact power-of-two products, no ldexp over M x N
                    t = (g * np.ldexp(1.0, ea + sh)[:, None]) * fb
                else:
                    t = np.ldexp(g, ea[:, None] + self.eb[None, :] + sh)
                if hi is None:
                    hi, lo, mag = t, np.zeros_like(t), np.abs(t)
                    continue
                hi, e = two_sum(hi, t)
                lo += e
                mag += np.abs(t)
                continue
            if hi is None:  # a block term first: start from zeros
                shape = (ea.size, self.eb.size)
                hi, lo, mag = np.zeros(shape), np.zeros(shape), np.zeros(shape)
            self._add_block_term((hi, lo, mag), n, rows, fast, fb)
        hi, lo = two_sum(hi, lo)
        n = len(self.terms)
        err = (gamma(max(n - 1, 0)) ** 2 if n > 1 else 0.0) * mag * (1 + 2**-40)
        err = err + n * 2.0**-1074
        return hi, lo, err

    def _power_scaling(self, ea: np.ndarray) -> bool:
        """Whether every term of rows with exponents ``ea`` scales by two exact
        power-of-two products (else ``ldexp``); ValueError if a term can overflow."""
        empty = ea.size == 0 or self.eb.size == 0
        bmax = 0 if empty else int(ea.max() + self.eb.max())
        bmin = 0 if empty else int(ea.min() + self.eb.min())
        if bmax + max(self.shifts) + 53 > 1020:
            raise ValueError("dot products too large for the fast path")
        return bool(
            empty
            or (
                bmin + min(self.shifts) > -960
                and -1000 < self.eb.min()
                and self.eb.max() < 1000
                and -1000 < ea.min() + min(self.shifts)
                and ea.max() + max(self.shifts) < 1000
            )
        )

    def _add_block_term(
        self,
        acc: tuple[np.ndarray, np.ndarray, np.ndarray],
        n: int,
        rows: slice,
        fast: bool,
        fb: np.ndarray,
    ) -> None:
        """Sum2-add the compact term ``n``, restricted to ``rows``, on its block of the
        ``(hi, lo, mag)`` accumulators ``acc`` (in place)."""
        hi, lo, mag = acc
        g, sh = self.terms[n], self.shifts[n]
        br, bc = self._block(n)
        r0, r1, _ = rows.indices(self.ea.size)
        ea = self.ea[rows]
        # restrict the block to the requested rows
        if br is None:
            sel = np.arange(ea.size)
            gr = g[rows]
        else:
            a, b = np.searchsorted(br, [r0, r1])
            sel = br[a:b] - r0
            gr = g[a:b]
        if sel.size == 0:
            return
        cols = np.arange(self.eb.size) if bc is None else bc
        eab = ea[sel][:, None] + sh
        if fast:
            t = (gr * np.ldexp(1.0, eab)) * fb[:, cols]
        else:
            t = np.ldexp(gr, eab + self.eb[cols][None, :])
        ix = np.ix_(sel, cols)
        h, e = two_sum(hi[ix], t)
        hi[ix] = h
        lo[ix] += e
        mag[ix] += np.abs(t)

    def row_ints(self, i: int) -> tuple[list[int], list[int]]:
        """Row ``i`` as exact ``(mantissa, exponent)`` integer pairs."""
        smin = min(self.shifts)
        acc = np.zeros(self.shape[1], dtype=object)
        for n, (g, sh) in enumerate(zip(self.terms, self.shifts, strict=True)):
            br, bc = self._block(n)
            if br is None:
                row = g[i]
            else:
                pos = int(np.searchsorted(br, i))
                if pos >= br.size or br[pos] != i:
                    continue
                row = g[pos]
            vals = row.astype(np.int64).astype(object) << (sh - smin)
            if bc is None:
                acc = acc + vals
            else:
                acc[bc] = acc[bc] + vals
        exps = (self.ea[i] + self.eb + smin).tolist()
        return acc.tolist(), exps

    def row_mpf(self, i: int) -> list[mpmath.mpf]:
        """Row ``i`` as exact mpmath values (no rounding, whatever the context precision)."""
        mans, exps = self.row_ints(i)
        make = mpmath.mp.make_mpf
        return [make(from_man_exp(m, e)) for m, e in zip(mans, exps, strict=True)]

    def to_fractions(self) -> list[list[Fraction]]:
        """Every entry as an exact Fraction (slow: for tests and small sizes)."""
        rows = []
        for i in range(self.shape[0]):
            mans, exps = self.row_ints(i)
            rows.append([Fraction(m) * Fraction(2) ** e for m, e in zip(mans, exps, strict=True)])
        return rows


def exact_dot(
    a: np.ndarray,
    b: np.ndarray,
    *,
    precision_a: int = 53,
    precision_b: int = 53,
    checked: bool = False,
) -> ExactDot:
    """The exact products ``a @ b.T`` of two float arrays (2-D, finite), as :class:`ExactDot`.

    Parameters
    ----------
    a : array_like, shape (M, K)
    b : array_like, shape (N, K)
        Float values of any dtype up to float64 (taken exactly).
    precision_a, precision_b : int
        Significant bits of the input formats (BF16: 8); only the limb widths depend on it,
        never the result. Defaults are right for any input.
    checked : bool
        The caller has already checked that both are finite 2-D float64 arrays (skips the
        finiteness scan).

    Returns
    -------
    ExactDot
        Exact terms; ``.to_dd()`` for a double-double with an error bound, ``.row_mpf(i)``
        or ``.to_fractions()`` for exact values.

    Raises
    ------
    ValueError
        Shapes mismatch, non-finite values, or an exponent range the fast split cannot cover.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"argument 'b' shape {b.shape} does not match 'a' shape {a.shape}")
    if not checked and not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("arguments 'a' and 'b' must be finite")
    k = a.shape[1]
    total = exact_bits(k)
    ra, rb = row_range(a), row_range(b)
    spa, spb = row_spans(ra, precision_a), row_spans(rb, precision_b)
    ba, bb = choose_widths_rows(spa, spb, total)
    ea, eb = np.frexp(ra[0])[1], np.frexp(rb[0])[1]
    la = _row_limbs(a, ba, ea, spa)
    lb = _row_limbs(b, bb, eb, spb)
    terms: list[np.ndarray] = []
    shifts: list[int] = []
    blocks: list[Any] = []
    for s, rs, pa in la:
        for t, rt, pb in lb:
            if rs is None and rt is None:
                terms.append(pa @ pb.T)
                blocks.append(None)
            else:  # only the rows where a limb is nonzero: the rest of the term is zero
                terms.append(pa @ pb.T)
                blocks.append((rs, rt))
            shifts.append(-ba - bb - s * ba - t * bb)
    if not terms:
        terms, shifts, blocks = [np.zeros((a.shape[0], b.shape[0]))], [0], [None]
    return ExactDot(
        tuple(terms),
        tuple(shifts),
        np.asarray(ea, dtype=np.int64),
        np.asarray(eb, dtype=np.int64),
        tuple(blocks),
    )


def row_spans(rng: tuple[np.ndarray, np.ndarray], precision: int) -> np.ndarray:
    """Per row, :func:`span_bits` of that row alone (0 for an all-zero row).

    A row whose span is at most ``b`` is held exactly by one limb of ``b`` bits on its own
    grid; a row of span ``S`` has no nonzero limb beyond the first ``ceil(S / b)``.
    """
    amax, amin = rng
    ok = np.isfinite(amin)
    _, top = np.frexp(amax)
    _, low = np.frexp(np.where(ok, amin, 1.0))
    return np.where(ok, np.maximum(1, top.astype(np.int64) - low + precision), 0)


def choose_widths_rows(spans_a: np.ndarray, spans_b: np.ndarray, total: int) -> tuple[int, int]:
    """Limb widths ``(b_a, b_b)``, ``b_a + b_b = total``, from the per-row spans.

    Limb ``s`` of ``A`` is nonzero only on the rows with span ``> s b_a``, and the GEMMs are
    run on those rows only, so the cost is ``0.075 (sum_s n_a(s)) (sum_t n_b(t))`` per inner
    index (``n_a(s)`` = rows with a nonzero limb ``s``, all rows for ``s = 0``) plus the split
    (3 per row, and 20 per limb per row for the rows needing more than one limb), the model
    of :func:`choose_widths`. Exactness never depends on this choice.
    """
    if total < 2:
        raise ValueError("inner dimension too large for exact float64 GEMMs")
    sa, sb = np.sort(spans_a), np.sort(spans_b)

    def counts(sp: np.ndarray, bits: int) -> tuple[float, float]:
        rows = sp.size
        top = int(sp[-1]) if rows else 0
        c = max(1, -(-top // bits))
        above = np.searchsorted(sp, np.arange(1, c) * bits, side="right")  # one call, c - 1 limbs
        n = [rows] + [rows - int(x) for x in above]
        multi = n[1] if c > 1 else 0
        return float(sum(n)), 3.0 * rows + 20.0 * c * multi

    best = None
    for ba in range(1, total):
        bb = total - ba
        na, ca = counts(sa, ba)
        nb, cb = counts(sb, bb)
        cost = 0.075 * na * nb + ca + cb
        key = (cost, abs(ba - bb))
        if best is None or key < best[0]:
            best = (key, ba, bb)
    assert best is not None  # total >= 2: the loop ran
    return best[1], best[2]


def _row_limbs(x: np.ndarray, bits: int, exps: np.ndarray, spans: np.ndarray) -> list:
    """Limbs of ``x`` (as :func:`limbs`, exact), each as ``(s, rows, part)``: ``s`` the limb
    index, ``rows`` None for a full ``part``, else the sorted rows where the limb is nonzero
    and ``part`` those rows (all-zero limbs beyond the first are left out).

    Rows with span ``<= bits`` are one scaled limb (integers below ``2**bits``, see
    :func:`row_spans`); only the others go through the truncation loop.
    """
    multi = np.flatnonzero(spans > bits)
    if multi.size == 0:
        return [(0, None, limbs(x, bits, exps=exps, single=True).parts[0])]
    if multi.size == x.shape[0]:
        parts = limbs(x, bits, exps=exps).parts
        out: list[tuple[int, Any, np.ndarray]] = [(0, None, parts[0])]
    else:
        p0 = limbs(x, bits, exps=exps, single=True).parts[0]  # our own array
        sub = limbs(x[multi], bits, exps=exps[multi])
        p0[multi] = sub.parts[0]
        out = [(0, None, p0)]  # same type as below
        for s, p in enumerate(sub.parts[1:], start=1):
            nz = p.any(axis=1)
            if nz.any():
                out.append((s, multi[nz], p[nz]))
        return out
    for s, p in enumerate(parts[1:], start=1):
        nz = p.any(axis=1)
        if nz.all():
            out.append((s, None, p))
        elif nz.any():
            out.append((s, np.flatnonzero(nz), p[nz]))
    return out


@dataclass(frozen=True)
class IntDot:
    """Exact ``a @ b.T`` by Python integer arithmetic: slow, but no exponent-range limit.

    The fallback of the mpmath path for inputs :func:`exact_dot` refuses (float64 rows that
    span more than :data:`MAX_LIMBS` limbs). Same row interface as :class:`ExactDot`.
    """

    mans: tuple[tuple[int, ...], ...]
    exps: tuple[tuple[int, ...], ...]

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.mans), len(self.mans[0]) if self.mans else 0)

    def row_ints(self, i: int) -> tuple[list[int], list[int]]:
        return list(self.mans[i]), list(self.exps[i])

    def row_mpf(self, i: int) -> list[mpmath.mpf]:
        make = mpmath.mp.make_mpf
        return [make(from_man_exp(m, e)) for m, e in zip(self.mans[i], self.exps[i], strict=True)]

    def to_fractions(self) -> list[list[Fraction]]:
        return [
            [Fraction(m) * Fraction(2) ** e for m, e in zip(mr, er, strict=True)]
            for mr, er in zip(self.mans, self.exps, strict=True)
        ]


def _int_parts(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mant, ex = np.frexp(x)
    return np.ldexp(mant, 53).astype(np.int64), ex.astype(np.int64) - 53


def exact_dot_any(a: np.ndarray, b: np.ndarray, **kw) -> ExactDot | IntDot:
    """:func:`exact_dot`, or :class:`IntDot` when the limb split refuses the exponent range.

    Examples
    --------
    >>> d = exact_dot_any(np.array([[1e-300, 1e300]]), np.array([[1e300, 1e-300]]))
    >>> type(d).__name__, d.to_fractions()[0][0] == 2 * Fraction(1e300) * Fraction(1e-300)
    ('IntDot', True)
    """
    try:
        return exact_dot(a, b, **kw)
    except ValueError:
        pass
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    ma, ea = _int_parts(a)
    mb, eb = _int_parts(b)
    mans, exps = [], []
    for i in range(a.shape[0]):
        rm, re_ = [], []
        for j in range(b.shape[0]):
            terms = [
                (int(x) * int(y), int(e) + int(f))
                for x, y, e, f in zip(ma[i], mb[j], ea[i], eb[j], strict=True)
                if x and y
            ]
            if not terms:
                rm.append(0)
                re_.append(0)
                continue
            e0 = min(t[1] for t in terms)
            rm.append(sum(m << (e - e0) for m, e in terms))
            re_.append(e0)
        mans.append(tuple(rm))
        exps.append(tuple(re_))
    return IntDot(tuple(mans), tuple(exps))

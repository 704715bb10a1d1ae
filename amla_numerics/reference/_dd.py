"""Vectorised double-double arithmetic and a certified double-double ``exp``.

A double-double (dd) is an unevaluated sum ``hi + lo`` of two float64 arrays. The error-free
transformations (``two_sum``, ``two_prod`` with Veltkamp splitting, no FMA needed) are exact
barring overflow and underflow; the dd operations have the relative error bounds of
Joldes, Muller and Popescu ("Tight and rigorous error bounds for basic building blocks of
double-word arithmetic", ACM TOMS 2017), which we round up generously:

=================  ===========================  ==================
operation          algorithm (JMP name)         bound used here
=================  ===========================  ==================
``dd_add``         AccurateDWPlusDW             ``4 u**2 |a + b|``
``dd_add_d``       DWPlusFP                     ``4 u**2 |a + b|``
``dd_mul``         DWTimesDW1 (no ``lo*lo``)    ``16 u**2 |a b|``
``dd_mul_d``       DWTimesFP1                   ``4 u**2 |a b|``
``dd_div``         DWDivDW1                     ``32 u**2 |a / b|``
=================  ===========================  ==================

with ``u = 2**-53``. The constants are exported as :data:`DD_REL`.

``exp_dd`` evaluates ``exp(x)`` for ``x = xh + xl <= 1`` with a relative error of at most
``EXP_REL + 2**-100 |xh|`` plus an absolute ``EXP_ABS = 2**-1070`` (underflow), by the
table method: ``x = (1024 k + i) ln2/1024 + r`` with ``ln2/1024`` split in three pieces
(the first two with 32 bits, so ``n * C0`` and ``n * C1`` are exact for ``|n| < 2**21``),
``2**(i/1024)`` tabulated in dd from mpmath, and ``exp(r) = 1 + r + r**2/2 + h`` with
``|r| <= 2**-11.5``: ``r**2/2`` in dd, ``h`` (degree 3..6) in float64. Error budget
(relative): Taylor remainder ``|r|**7/7! * e**|r| < 2**-93``; float64 evaluation of
``h`` (``|h| < 2**-37``, eight roundings) ``< 2**-86``; table ``2**-105``; reduction
``< 2**-100 (1 + |x|)``; about ten dd operations ``< 2**-99``. Total ``< 2**-85``:
``EXP_REL = 2**-84`` leaves a factor-two margin.

Examples
--------
>>> import numpy as np
>>> hi, lo = exp_dd(np.array([0.0, -1.0]), np.zeros(2))
>>> hi[0], lo[0]
(np.float64(1.0), np.float64(0.0))
>>> import mpmath
>>> with mpmath.workprec(200):
...     err = abs(mpmath.mpf(hi[1]) + mpmath.mpf(lo[1]) - mpmath.exp(-1))
...     bool(err < 2.0**-84 * mpmath.exp(-1))
True
"""

from __future__ import annotations

import functools

import mpmath
import numpy as np

from amla_numerics.formats import FP64
from amla_numerics.rounding import round_to

__all__ = [
    "DD_REL",
    "EXP_ABS",
    "EXP_REL",
    "U",
    "dd_add",
    "dd_add_d",
    "dd_div",
    "dd_mul",
    "dd_mul_d",
    "exp_dd",
    "fast_two_sum",
    "gamma",
    "two_prod",
    "two_sum",
]

#: Unit roundoff of float64.
U = 2.0**-53
#: Relative error bounds of the dd operations (see the module docstring).
DD_REL = {
    "add": 4 * U * U,
    "add_d": 4 * U * U,
    "mul": 16 * U * U,
    "mul_d": 4 * U * U,
    "div": 32 * U * U,
}
#: Relative error bound of :func:`exp_dd` (plus ``2**-100 |x|``).
EXP_REL = 2.0**-84
#: Absolute error bound of :func:`exp_dd` (results in or below the subnormal range).
EXP_ABS = 2.0**-1070

_SPLITTER = 134217729.0  # 2**27 + 1
_TABLE_BITS = 10
_TABLE_N = 1 << _TABLE_BITS


def gamma(n: int | float) -> float:
    """Higham's ``gamma_n = n u / (1 - n u)`` for float64, rounded up a little."""
    nu = n * U
    if nu >= 0.5:
        raise ValueError(f"gamma_n undefined for n = {n}")
    return nu / (1.0 - nu) * (1.0 + 2**-40)


def two_sum(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Knuth's TwoSum: ``s + e == a + b`` exactly, ``s = fl(a + b)``."""
    s = a + b
    bb = s - a
    e = (a - (s - bb)) + (b - bb)
    return s, e


def fast_two_sum(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dekker's FastTwoSum (needs ``|a| >= |b|`` or ``a == 0``)."""
    s = a + b
    e = b - (s - a)
    return s, e


def _split(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    c = _SPLITTER * a
    hi = c - (c - a)
    return hi, a - hi


def two_prod(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dekker's TwoProduct: ``p + e == a * b`` exactly (no overflow, no underflow)."""
    p = a * b
    ah, al = _split(a)
    bh, bl = _split(b)
    e = ((ah * bh - p) + ah * bl + al * bh) + al * bl
    return p, e


def dd_add(ah, al, bh, bl):
    """AccurateDWPlusDW: ``(ah + al) + (bh + bl)`` as a normalised dd."""
    s, e = two_sum(ah, bh)
    t, f = two_sum(al, bl)
    e = e + t
    s, e = fast_two_sum(s, e)
    e = e + f
    return fast_two_sum(s, e)


def dd_add_d(ah, al, b):
    """DWPlusFP: ``(ah + al) + b``."""
    s, e = two_sum(ah, b)
    e = e + al
    return fast_two_sum(s, e)


def dd_mul(ah, al, bh, bl):
    """DWTimesDW1: ``(ah + al) * (bh + bl)``."""
    p, e = two_prod(ah, bh)
    e = e + (ah * bl + al * bh)
    return fast_two_sum(p, e)


def dd_mul_d(ah, al, b):
    """DWTimesFP1: ``(ah + al) * b``."""
    p, e = two_prod(ah, b)
    e = e + al * b
    return fast_two_sum(p, e)


def dd_div(ah, al, bh, bl):
    """DWDivDW1: ``(ah + al) / (bh + bl)``."""
    q1 = ah / bh
    ph, pl = dd_mul_d(bh, bl, q1)
    dh, dl = two_sum(ah, -ph)
    dl = dl - pl
    dl = dl + al
    q2 = (dh + dl) / bh
    return fast_two_sum(q1, q2)


@functools.cache
def _constants() -> tuple[np.ndarray, np.ndarray, float, float, float, float]:
    """The table ``2**(i/1024)`` in dd and ``ln2/1024`` in three pieces (from mpmath)."""
    with mpmath.workprec(256):
        vals = [mpmath.power(2, mpmath.mpf(i) / _TABLE_N) for i in range(_TABLE_N)]
        hi = round_to(np.array(vals, dtype=object), FP64).astype(np.float64)
        lo = round_to(
            np.array([v - mpmath.mpf(h) for v, h in zip(vals, hi, strict=True)], dtype=object),
            FP64,
        ).astype(np.float64)
        c = mpmath.log(2) / _TABLE_N
        c0 = mpmath.floor(c * mpmath.mpf(2) ** 42) / mpmath.mpf(2) ** 42
        c1 = mpmath.floor((c - c0) * mpmath.mpf(2) ** 74) / mpmath.mpf(2) ** 74
        c2 = round_to(c - c0 - c1, FP64).astype(np.float64)
        inv = round_to(1 / c, FP64).astype(np.float64)
        ratio = c / c0  # needed by the exact first reduction step of _exp_dd
        if not 1 + mpmath.mpf(2) ** -40 < ratio < 1 + mpmath.mpf(2) ** -30:
            raise AssertionError("ln2/1024 split: C / c0 out of range")
        # c0 and c1 have at most 32 significant bits: exact in float64.
        return hi, lo, float(c0), float(c1), float(c2), float(inv)


def _scale2(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    """``x * 2**k`` (``k >= -1100``): exact powers of two built from their bits (faster
    than ``ldexp``); below ``2**-1000`` a second factor ``2**-600`` rounds once, by at
    most ``2**-1075`` (inside ``EXP_ABS``)."""
    low = k < -1000
    kk = np.where(low, k + 600, k) if low.any() else k
    f = ((kk + 1023).astype(np.int64) << 52).view(np.float64)
    y = x * f
    if low.any():
        y = np.where(low, y * 2.0**-600, y)
    return y


def _pow2(k: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """The factor(s) of :func:`_scale2` for ``k``: ``(f, low)``, computed once for hi and lo."""
    low = k < -1000
    if not low.any():
        return ((k + 1023).astype(np.int64) << 52).view(np.float64), None
    kk = np.where(low, k + 600, k)
    return ((kk + 1023).astype(np.int64) << 52).view(np.float64), low


def _apply2(x: np.ndarray, f: np.ndarray, low: np.ndarray | None) -> np.ndarray:
    """``_scale2(x, k)`` from ``_pow2(k)`` (the same operations, so the same result)."""
    y = x * f
    if low is not None:
        y = np.where(low, y * 2.0**-600, y)
    return y


def exp_dd(xh: np.ndarray, xl: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``exp(xh + xl)`` in double-double for ``xh <= 1`` (see the module docstring).

    Parameters
    ----------
    xh, xl : numpy.ndarray of float64
        The argument as a normalised dd (``|xl| <= 2**-52 |xh|``); ``xh = -inf`` gives 0.

    Returns
    -------
    (hi, lo) : tuple of numpy.ndarray
        ``|hi + lo - exp(x)| <= (EXP_REL + 2**-100 |xh|) exp(x) + EXP_ABS``.
    """
    xh = np.asarray(xh, dtype=np.float64)
    xl = np.asarray(xl, dtype=np.float64)
    if xh.size and not xh.max() <= 1.0 and not np.isnan(xh).all():
        raise ValueError("exp_dd: argument 'xh' must be <= 1")
    return _exp_dd(xh, xl)


def _exp_dd(xh: np.ndarray, xl: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`exp_dd` without the argument check (float64 arrays, ``xh <= 1`` or NaN).

    ``xc - n*c0`` is exact (Sterbenz): for ``n != 0``, ``n = rint(fl(xc * inv))`` gives
    ``xc / (n c0) = (z / n) (C / c0) / ((1 + d1)(1 + d2))`` with ``z = fl(xc * inv)``,
    ``|d1|, |d2| <= u``, ``z / n`` in ``(1/2, 3/2]`` (``|z| = 1/2`` rounds to ``n = 0``;
    a float ``z > 1/2`` is at least ``1/2 + 2**-53``) and ``1 + 2**-40 < C / c0 < 1 + 2**-30``
    (checked in :func:`_constants`), so the ratio is in ``[1/2, 2]``. Knuth's TwoSum there
    would return an error of exactly 0; it is skipped.
    """
    thi, tlo, c0, c1, c2, inv = _constants()
    dead = xh < -746.0  # exp(x) < 2**-1076: returned as 0, inside EXP_ABS
    any_dead = bool(dead.any())
    xc = np.where(dead, 0.0, xh) if any_dead else xh
    xlc = np.where(dead, 0.0, xl) if any_dead else xl
    n = np.rint(xc * inv)
    # r = x - n*C with C = c0 + c1 + c2: n*c0, n*c1 exact (|n| < 2**21, 32-bit constants)
    th = xc - n * c0  # exact (see above): TwoSum's error term is 0
    th, tl = dd_add_d(th, 0.0, -(n * c1))
    rh, rl = dd_add_d(th, tl, xlc - n * c2)
    # exp(r) - 1 = r + r**2/2 + h; r**2 by TwoProduct with the split of r done once
    sh = rh * rh
    ah_, al_ = _split(rh)
    sl = ((ah_ * ah_ - sh) + ah_ * al_ + al_ * ah_) + al_ * al_
    sh = sh * 0.5
    sl = sl * 0.5 + rh * rl
    h = rh * rh * rh * (1 / 6 + rh * (1 / 24 + rh * (1 / 120 + rh * (1 / 720))))
    ah, al = dd_add(rh, rl, sh, sl)
    ah, al = dd_add_d(ah, al, h)
    ni = n.astype(np.int64)
    idx = ni & (_TABLE_N - 1)
    k = (ni - idx) >> _TABLE_BITS
    bh, bl = thi[idx], tlo[idx]
    ph, pl = dd_mul(bh, bl, ah, al)
    ph, pl = dd_add(bh, bl, ph, pl)
    f, low = _pow2(k)
    hi, lo = _apply2(ph, f, low), _apply2(pl, f, low)
    if any_dead:
        hi[dead] = 0.0
        lo[dead] = 0.0
    return hi, lo

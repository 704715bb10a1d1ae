"""Correct rounding of exact values to any :class:`~amla_numerics.formats.Format`.

``round_to`` rounds the *exact* value of its input once. Float arrays of any width up to
float64 (bfloat16 and the FP8 types included) are exact in float64, so they are decomposed
there; mpmath ``mpf`` values, :class:`fractions.Fraction`, Python ints and ``longdouble``
take an exact integer path and are never passed through ``float()`` first (which would
round twice: ``mpf(1 + 2**-8 + 2**-70)`` is BF16 ``1 + 2**-7``, but via float64 it becomes the
tie ``1 + 2**-8`` and rounds to 1).

Both paths reduce an input to the same description: sign, integer significand ``k`` at
quantum ``2**qe`` (``qe = max(E, emin) - p + 1`` where ``2**E <= |x| < 2**(E+1)``), and how the
discarded remainder compares with half a quantum. One shared step then applies the
rounding mode, and one shared step handles overflow, flush-to-zero and signs, so the two
paths cannot disagree.

Examples
--------
>>> import mpmath
>>> from amla_numerics.formats import BF16, E4M3
>>> with mpmath.workprec(100):
...     x = mpmath.mpf(1) + mpmath.mpf(2) ** -8 + mpmath.mpf(2) ** -70
>>> float(round_to(x, BF16))
1.0078125
>>> float(round_to(float(x), BF16))  # float(x) is the tie 1 + 2**-8: the wrong answer
1.0
>>> round_to([1 + 2**-8], BF16).astype(float)  # an exact tie: ties to even
array([1.])
>>> round_to([1 + 2**-8], BF16, mode="rna").astype(float)  # Ascend CAST_ROUND
array([1.0078125])
>>> round_to([500.0], E4M3, saturate=True).astype(float)
array([448.])
"""

from __future__ import annotations

import math
import numbers
from fractions import Fraction
from typing import Any

import ml_dtypes
import mpmath
import numpy as np

from amla_numerics.formats import Format, get_format

__all__ = [
    "MODES",
    "Parts",
    "as_real_array",
    "bf16_round_bits",
    "decompose",
    "round_to",
    "to_fraction",
]

#: The rounding modes: ties to even, ties away from zero (Ascend's CAST_ROUND), toward
#: zero, toward +inf, toward -inf, and stochastic rounding with a limited number of bits.
MODES: tuple[str, ...] = ("rne", "rna", "rz", "ru", "rd", "stochastic")

# (input dtype, target dtype) pairs whose plain ``astype`` is correctly rounded to nearest
# even with IEEE overflow. Each pair is proven in tests/test_rounding.py against the exact
# Fraction oracle (every BF16/FP16 code exhaustively, FP32 on a strided sample, the full 2**32
# sweep under the ``slow`` marker). float64 -> bfloat16 is NOT here: ml_dtypes converts it
# through float32 and rounds twice.
_ASTYPE_RNE_EXACT = {
    (np.dtype(np.float32), np.dtype(ml_dtypes.bfloat16)),
    (np.dtype(np.float32), np.dtype(np.float16)),
    (np.dtype(np.float64), np.dtype(np.float32)),
    (np.dtype(np.float64), np.dtype(np.float16)),
}

_FLOAT_KINDS = "fV"  # ml_dtypes' float types have kind 'V'
_BF16 = np.dtype(ml_dtypes.bfloat16)

# Increment added to the FP32 magnitude bits before truncating the low 16 bits, per mode
# (the sign-dependent ones take a pair: positive, negative).
_BF16_BIAS = {"rna": (0x8000, 0x8000), "rz": (0, 0), "ru": (0xFFFF, 0), "rd": (0, 0xFFFF)}


def round_to(
    x: Any,
    fmt: Format | str,
    mode: str = "rne",
    *,
    ftz: bool = False,
    saturate: bool = False,
    rng: np.random.Generator | None = None,
    random_bits: int = 32,
) -> np.ndarray:
    """Round the exact value of ``x`` to format ``fmt``.

    Parameters
    ----------
    x : array_like, mpmath.mpf, Fraction or int
        Values to round: a float array of any dtype up to float64 (bfloat16 and FP8
        included), integers, or exact scalars (mpf, Fraction, int, longdouble) alone, in
        lists or in object arrays.
    fmt : Format or str
        Target format (``FP32``, ``"bf16"``, ``Format.custom(...)``...).
    mode : {"rne", "rna", "rz", "ru", "rd", "stochastic"}
        Rounding mode (see :data:`MODES`).
    ftz : bool
        Flush results whose rounded magnitude is below ``fmt.min_normal`` to a zero of
        the same sign (the test happens after rounding).
    saturate : bool
        Clamp overflows (and infinite inputs) to ``+-fmt.max_finite`` instead of producing
        inf (or NaN for a format without infinities).
    rng : numpy.random.Generator, optional
        Source of randomness; required for ``mode="stochastic"``.
    random_bits : int
        Number of random bits of stochastic rounding, 1..52: the remainder is truncated
        to ``random_bits`` bits below the quantum and the result rounds away from zero with
        probability ``floor(rem * 2**random_bits) / 2**random_bits``.

    Returns
    -------
    numpy.ndarray
        An array of ``fmt.storage`` (the format's dtype; float64 for custom formats)
        with the input's shape (0-d for a scalar).

    Raises
    ------
    ValueError
        Unknown ``fmt`` or ``mode``, ``random_bits`` out of range, or a missing ``rng``.
    TypeError
        ``x`` holds something that is not a real number.

    Notes
    -----
    Rounding model: the result is ``fl(x)``, the member of ``fmt`` (with subnormals, its
    exponent range unbounded above) picked by ``mode`` from the two neighbours of the exact
    ``x``; so ``|fl(x) - x| <= u |x|`` with ``u = 2**-p`` for the nearest modes on the normal
    range and ``|fl(x) - x| < 2**(max(E, emin) - p + 1)`` (one quantum) for every mode.
    Overflow (``|fl(x)| > max_finite``): nearest and stochastic modes give inf, ``rz``
    gives ``max_finite``, ``ru``/``rd`` give inf toward their infinity and ``max_finite``
    the other way; a format without inf (E4M3) gives NaN where inf would be. NaN stays NaN.
    """
    fmt = get_format(fmt)
    if mode not in MODES:
        raise ValueError(f"unknown rounding mode {mode!r} for argument 'mode'; valid: {MODES}")
    if mode == "stochastic":
        if rng is None:
            raise ValueError("argument 'rng' (a numpy.random.Generator) is required for stochastic")
        if not isinstance(random_bits, int) or not 1 <= random_bits <= 52:
            raise ValueError(f"argument 'random_bits' must be an int in [1, 52], got {random_bits}")
    arr = as_real_array(x)
    if arr.dtype.kind != "O":
        if (
            mode == "rne"
            and not ftz
            and not saturate
            and (arr.dtype, fmt.storage) in _ASTYPE_RNE_EXACT
        ):
            with np.errstate(over="ignore", invalid="ignore"):  # inf, nan: specified results
                return arr.astype(fmt.storage)
        if arr.dtype == np.float32 and fmt.storage == _BF16 and not (ftz or saturate):
            if mode != "stochastic":
                return _float32_to_bf16_bits(arr, mode)
        if arr.dtype == fmt.storage and fmt.dtype is not None and not (ftz or saturate):
            return arr.copy()
    parts = decompose(arr, fmt, mode, random_bits)
    return _compose(parts, fmt, mode, ftz=ftz, saturate=saturate, rng=rng, bits=random_bits)


def to_fraction(v: Any) -> Fraction:
    """The exact value of a finite real scalar (mpf, Fraction, int, numpy or Python float).

    Raises
    ------
    ValueError
        If ``v`` is infinite or NaN.
    TypeError
        If ``v`` is not a real number.

    Examples
    --------
    >>> import mpmath
    >>> with mpmath.workprec(100):
    ...     x = -(mpmath.mpf("0.5") + mpmath.mpf(2) ** -80)
    >>> to_fraction(x) == -(Fraction(1, 2) + Fraction(1, 2**80))
    True
    """
    if isinstance(v, Fraction):
        return v
    if isinstance(v, mpmath.mpf):
        if not mpmath.isfinite(v):
            raise ValueError(f"cannot take the exact value of {v}")
        man, exp = v.man_exp  # man_exp is the magnitude: the sign is kept apart
        mag = Fraction(int(man)) * (Fraction(2) ** int(exp))
        return -mag if v < 0 else mag
    if isinstance(v, bool | np.bool_):
        return Fraction(int(v))
    if isinstance(v, numbers.Integral):
        return Fraction(int(v))
    if isinstance(v, float | np.floating) or (
        isinstance(v, np.generic) and v.dtype.kind in _FLOAT_KINDS
    ):
        f = v if isinstance(v, float | np.longdouble) else np.float64(v)
        if not math.isfinite(float(f)):
            raise ValueError(f"cannot take the exact value of {v}")
        return Fraction(*f.as_integer_ratio())
    raise TypeError(f"expected a real number, got {type(v).__name__}")


# --------------------------------------------------------------------------- internals


def bf16_round_bits(x: np.ndarray, mode: str) -> np.ndarray:
    """FP32 -> BF16 rounding on the bit pattern: the rounded values as FP32 bit patterns (uint32).

    The one FP32 -> BF16 rounder of the package (written by hand: ml_dtypes casts only with
    rne); :func:`round_to` and the emulator's casts both use it. BF16 is FP32 with the low 16
    mantissa bits dropped and the same exponent range, so adding a per-mode increment to the
    magnitude bits and truncating at bit 16 is correct for normals, subnormals, overflow (the
    carry reaches the inf pattern exactly when IEEE says inf) and infinities. NaN: ``rne``
    gives the canonical quiet NaN ``0x7FC0`` (as ml_dtypes' cast does), the other modes keep
    the payload, quieted; the sign is kept. Proven against the generic path over every BF16
    neighbourhood in tests.

    Parameters
    ----------
    x : numpy.ndarray
        float32 values.
    mode : {"rne", "rna", "rz", "ru", "rd"}

    Examples
    --------
    >>> hex(int(bf16_round_bits(np.float32([1 + 2**-8]), "rna")[0]))  # a tie, away from zero
    '0x3f810000'
    """
    b = np.asarray(x, dtype=np.float32).view(np.uint32)
    mag = b & np.uint32(0x7FFFFFFF)
    if mode == "rne":
        top = mag >> np.uint32(16)
        top &= np.uint32(1)
        top += np.uint32(0x7FFF)
        top += mag
    elif mode in _BF16_BIAS:
        pos_bias, neg_bias = _BF16_BIAS[mode]
        if pos_bias == neg_bias:
            top = mag + np.uint32(pos_bias)
        else:
            top = np.where(b >> np.uint32(31), np.uint32(neg_bias), np.uint32(pos_bias))
            top += mag
    else:
        raise ValueError(f"unknown rounding mode {mode!r} for argument 'mode'; valid: {MODES[:5]}")
    top &= np.uint32(0xFFFF0000)
    nan = mag > np.uint32(0x7F800000)
    if nan.any():
        if mode == "rne":
            top[nan] = 0x7FC00000
        else:
            top[nan] = ((mag[nan] >> np.uint32(16)) | np.uint32(0x40)) << np.uint32(16)
    top |= b & np.uint32(0x80000000)
    return top


def _float32_to_bf16_bits(x: np.ndarray, mode: str) -> np.ndarray:
    """FP32 -> BF16 (a bfloat16 array) through :func:`bf16_round_bits`."""
    return (bf16_round_bits(x, mode) >> np.uint32(16)).astype(np.uint16).view(_BF16)


class Parts:
    """The reduced description of every element (see the module docstring).

    Shared with :mod:`amla_numerics.ulp`, which reads ``qe`` (the ULP exponent), ``k`` and
    ``inexact`` (representability) from it.
    """

    __slots__ = ("half", "inexact", "k", "qe", "sign", "special", "tail")

    def __init__(self, sign, k, qe, half, inexact, tail, special):
        self.sign = sign  # bool array: negative (negative zero included)
        self.k = k  # float64 array: floor(|x| / 2**qe), an integer < 2**53
        self.qe = qe  # int64 array: exponent of the quantum
        self.half = half  # int8 array: sign(rem - 1/2) for rem = |x|/2**qe - k
        self.inexact = inexact  # bool array: rem > 0
        self.tail = tail  # float64 array: floor(rem * 2**bits) (stochastic only) or None
        self.special = special  # float64 array: the result for inf/nan inputs, else 0


def decompose(arr: np.ndarray, fmt: Format, mode: str = "rne", bits: int = 32) -> Parts:
    """Reduce an array from :func:`as_real_array` to :class:`Parts` for ``fmt``."""
    if arr.dtype.kind == "O":
        return _decompose_exact(arr, fmt, mode, bits)
    return _decompose_float(arr.astype(np.float64), fmt, mode, bits)


def as_real_array(x: Any, argument: str = "x") -> np.ndarray:
    """``x`` as an array that holds its exact values: a float/int/bool array, or object.

    Exact scalars (mpf, Fraction, longdouble, ints of 2**53 or more) give an object array.
    """
    if isinstance(x, np.ndarray):
        arr = x
    elif isinstance(x, mpmath.mpf | Fraction | np.longdouble):
        arr = np.array(x, dtype=object)
    else:
        try:
            arr = np.asarray(x)
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"argument {argument!r} is not an array of real numbers: {exc}"
            ) from None
    if arr.dtype.kind in _FLOAT_KINDS:
        if arr.dtype.itemsize > 8 and arr.dtype.kind == "f":  # longdouble: exact path
            return arr.astype(object)
        return arr
    if arr.dtype.kind in "iu":
        if arr.size and np.max(np.abs(arr.astype(object))) >= 2**53:
            return arr.astype(object)
        return arr
    if arr.dtype.kind == "b":
        return arr
    if arr.dtype.kind == "O":
        return arr
    raise TypeError(f"argument {argument!r} must hold real numbers, got dtype {arr.dtype}")


def _decompose_float(a: np.ndarray, fmt: Format, mode: str, bits: int) -> Parts:
    """Vectorised reduction of a float64 array (every value exact)."""
    sign = np.signbit(a)
    mag = np.abs(a)
    finite = np.isfinite(mag)
    special = np.where(finite, 0.0, mag)  # inf or nan
    mag = np.where(finite, mag, 0.0)
    _, e1 = np.frexp(mag)  # mag = f * 2**e1, f in [0.5, 1)
    e = np.where(mag == 0, fmt.emin, e1.astype(np.int64) - 1)  # frexp(0) has no binade
    qe = np.maximum(e, fmt.emin) - (fmt.p - 1)
    s = np.ldexp(mag, -qe)  # exact: a power-of-two scaling that stays in range
    k = np.floor(s)
    rem = s - k  # exact
    half = np.sign(rem - 0.5).astype(np.int8)
    tail = np.floor(np.ldexp(rem, bits)) if mode == "stochastic" else None
    return Parts(sign, k, qe, half, rem > 0, tail, special)


def _decompose_exact(arr: np.ndarray, fmt: Format, mode: str, bits: int) -> Parts:
    """Element-wise reduction with Python integers (mpf, Fraction, int, longdouble)."""
    n = arr.size
    sign = np.zeros(n, bool)
    k = np.zeros(n)
    qe = np.zeros(n, np.int64)
    half = np.full(n, -1, np.int8)
    inexact = np.zeros(n, bool)
    tail = np.zeros(n) if mode == "stochastic" else None
    special = np.zeros(n)
    for i, v in enumerate(arr.reshape(-1)):
        if isinstance(v, mpmath.mpf) and not mpmath.isfinite(v):
            special[i] = np.nan if mpmath.isnan(v) else np.inf
            sign[i] = bool(v < 0)
            continue
        if isinstance(v, float | np.floating) and not math.isfinite(float(v)):
            special[i] = abs(float(v))
            sign[i] = float(v) < 0
            continue
        q = to_fraction(v)
        sign[i] = q < 0 or (
            q == 0 and isinstance(v, float | np.floating) and math.copysign(1, v) < 0
        )
        num, den = abs(q.numerator), q.denominator
        if num == 0:
            qe[i] = fmt.emin - fmt.p + 1
            continue
        e = num.bit_length() - den.bit_length()  # 2**e <= |q| < 2**(e+1), up to one step
        if (num << max(0, -e)) < (den << max(0, e)):
            e -= 1
        q_e = max(e, fmt.emin) - fmt.p + 1
        qe[i] = q_e
        # |q| / 2**q_e = sn / sd exactly
        sn, sd = (num, den << q_e) if q_e >= 0 else (num << -q_e, den)
        ki, r = divmod(sn, sd)
        k[i] = float(ki)  # < 2**p <= 2**53: exact
        half[i] = (2 * r > sd) - (2 * r < sd)
        inexact[i] = r != 0
        if tail is not None:
            tail[i] = float((r << bits) // sd)
    shape = arr.shape
    return Parts(
        sign.reshape(shape),
        k.reshape(shape),
        qe.reshape(shape),
        half.reshape(shape),
        inexact.reshape(shape),
        None if tail is None else tail.reshape(shape),
        special.reshape(shape),
    )


def _compose(
    parts: Parts,
    fmt: Format,
    mode: str,
    *,
    ftz: bool,
    saturate: bool,
    rng: np.random.Generator | None,
    bits: int,
) -> np.ndarray:
    sign, k = parts.sign, parts.k
    # 1. the mode decides whether the magnitude rounds up by one quantum
    if mode == "rne":
        up = (parts.half > 0) | ((parts.half == 0) & (np.fmod(k, 2) == 1))
    elif mode == "rna":
        up = parts.half >= 0
    elif mode == "rz":
        up = np.zeros(k.shape, bool)
    elif mode == "ru":
        up = parts.inexact & ~sign
    elif mode == "rd":
        up = parts.inexact & sign
    else:  # stochastic (round_to checked that rng is given)
        assert rng is not None
        draws = rng.integers(0, 2**bits, size=k.shape, dtype=np.int64).astype(np.float64)
        up = parts.tail + draws >= 2.0**bits
    up &= parts.inexact
    with np.errstate(over="ignore"):  # only FP64's top binade carries to inf: an overflow
        mag = np.ldexp(k + up, parts.qe)  # exact: k + up <= 2**p, the quantum is in range
    # 2. overflow, flush to zero, specials, sign
    over = mag > fmt.max_finite
    if np.any(over):
        if saturate:
            to_inf = np.zeros(k.shape, bool)
        elif mode in ("rne", "rna", "stochastic"):
            to_inf = np.ones(k.shape, bool)
        elif mode == "rz":
            to_inf = np.zeros(k.shape, bool)
        else:
            to_inf = ~sign if mode == "ru" else sign
        big = np.inf if fmt.has_inf else np.nan
        mag = np.where(over, np.where(to_inf, big, fmt.max_finite), mag)
    if ftz:
        mag = np.where(mag < fmt.min_normal, 0.0, mag)
    special = parts.special
    if (special != 0).any():  # NaN counts as special (np.any on NaN warns)
        inf_to = (
            np.inf if fmt.has_inf and not saturate else (fmt.max_finite if saturate else np.nan)
        )
        mag = np.where(np.isnan(special), np.nan, np.where(special == np.inf, inf_to, mag))
    out = np.where(sign, -mag, mag)
    with np.errstate(over="ignore", invalid="ignore"):  # inf/nan here are the specified result
        return out.astype(fmt.storage)

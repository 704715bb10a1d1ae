"""The emulator's elementwise stages, each with its format and rounding stated exactly.

Every function works in the policy's *work* dtype (float32 for ``"fp32"``, float64 for
``"fp64"``): numpy's elementwise ``+ - * /`` on those dtypes are IEEE operations rounded to
nearest even (no FMA contraction, gradual underflow), so a stage written here as
``fl(a * b)`` is exactly one such operation. ``docs/numerics.md`` is the full spec.

Constants (the CANN MLA kernel's, in the work format):
``LN2 = fl(ln 2)`` and ``RECIP_LN2 = fl(1 / LN2)`` (a division in the work format, as the
kernel's ``constexpr float RECIP_OF_LN2 = 1 / LN2``).

Examples
--------
>>> import numpy as np
>>> exp_cr(np.float32([0.0, 1.0, -1.0]))
array([1.        , 2.7182817 , 0.36787945], dtype=float32)
>>> rna_int(np.float32([2.5, -2.5, 2.4999998]))
array([ 3., -3.,  2.], dtype=float32)
>>> cast(np.float32([1 + 2**-8]), "bf16", "rna")  # a tie, rounded away from zero
array([1.0078125], dtype=float32)
"""

from __future__ import annotations

import math

import mpmath
import numpy as np

from amla_numerics.flash.accumulate import matmul as _acc_matmul
from amla_numerics.flash.accumulate import saturated as _acc_saturated
from amla_numerics.flash.policy import MatmulPolicy, Policy
from amla_numerics.formats import BF16, E4M3, E5M2, FP16, FP32
from amla_numerics.rounding import bf16_round_bits, round_to

__all__ = [
    "EXP64_REL_ERR",
    "POLY_EXP2_COEFFS",
    "PRECISION",
    "cast",
    "cast_saturating",
    "constants",
    "exp_cr",
    "exp_poly",
    "matrix_product",
    "product_saturated",
    "rna_int",
    "round_input",
    "work_dtype",
]

_LOWP = {"bf16": BF16, "fp16": FP16, "e4m3": E4M3, "e5m2": E5M2}
#: Formats whose casts saturate to +-max_finite (PTX ``cvt.rn.satfinite.{e4m3,e5m2}x2.f32``:
#: ``.satfinite`` is part of every FP32 -> FP8 conversion instruction).
SATURATING = ("e4m3", "e5m2")
#: Relative error of the binary64 exp (the ``"exact"`` policy's): numpy's ``exp`` is faithful
#: (within one ulp), so within two unit roundoffs, ``2**-52`` (a test measures it on this
#: platform against mpmath).
EXP64_REL_ERR = 2.0**-52
#: Significant bits of the matrix-unit input formats (fp64 operands get no speed-up hint).
PRECISION = {"bf16": 8, "fp16": 11, "fp32": 24}
_DT = {"fp32": np.float32, "fp64": np.float64}
# Relative half-width of the window around numpy's float64 exp that surely holds the true
# value: 2**-49 is 16 float64 ulps (libm/numpy SIMD exp errors are below 4 ulps).
_EXP_WINDOW = 2.0**-49
_SMALL = 4096  # below: the plain window test (fewer numpy calls than the candidate filter)
_MP_BITS = 160  # enough for every FP32 exp hard case (they need < 24 + 2 * 30 bits)

#: Taylor coefficients ``fl32(ln(2)**i / i!)``, i = 0..7, of the polynomial exp2 model.
POLY_EXP2_COEFFS: tuple[float, ...] = tuple(
    float(np.float32(math.log(2.0) ** i / math.factorial(i))) for i in range(8)
)


def work_dtype(policy: Policy) -> type:
    """numpy dtype of the policy's vector stages (float32 or float64)."""
    return _DT[policy.work]


def constants(policy: Policy) -> dict[str, np.floating]:
    """The kernel constants in the work format: LN2, RECIP_LN2, LOG2E, TWO23.

    Examples
    --------
    >>> from amla_numerics.flash.policy import get_policy
    >>> c = constants(get_policy("ascend"))
    >>> float(c["RECIP_LN2"]) == float(np.float32(1) / np.float32(math.log(2)))
    True
    """
    dt = work_dtype(policy)
    ln2 = dt(math.log(2.0))
    return {
        "LN2": ln2,
        "RECIP_LN2": dt(1) / ln2,
        "LOG2E": dt(1.0 / math.log(2.0)),
        "TWO23": dt(2.0**23),
    }


def exp_cr(x: np.ndarray) -> np.ndarray:
    """``exp(x)`` correctly rounded (nearest even) to ``x``'s dtype (float32 or float64).

    float32: the float64 ``y = exp(x)`` is within 16 float64 ulps of the true value; where
    both ends of ``y (1 -+ 2**-49)`` round to the same float32, that is the answer (rounding
    is monotonic); the rare rest is recomputed with mpmath at 160 bits and rounded with
    :func:`~amla_numerics.rounding.round_to`. float64: numpy's exp (faithful, not claimed
    correctly rounded: only the ``"exact"`` policy uses it; :data:`EXP64_REL_ERR`).

    Examples
    --------
    >>> float(exp_cr(np.float32(-103.97)))  # subnormal FP32 result
    1.401298464324817e-45
    >>> float(exp_cr(np.float32(2.0**-24)))  # 1 + 2**-24 + tiny: a near-tie, resolved by mpmath
    1.0000001192092896
    """
    x = np.asarray(x)
    if x.dtype == np.float64:
        with np.errstate(over="ignore", under="ignore"):
            return np.exp(x)
    if x.dtype != np.float32:
        raise TypeError(f"exp_cr: argument 'x' must be float32 or float64, got {x.dtype}")
    return _exp32(x, force_mp=False)


def _exp32(x: np.ndarray, *, force_mp: bool) -> np.ndarray:
    shape = x.shape
    x64 = x.astype(np.float64).reshape(-1)
    if (
        x64.size < _SMALL and not force_mp
    ):  # short vectors (per-row scalars): the window test on all
        with np.errstate(over="ignore", under="ignore", invalid="ignore"):
            y = np.exp(x64)
            r = y.astype(np.float32)
            hard = (
                (y - y * _EXP_WINDOW).astype(np.float32) != (y + y * _EXP_WINDOW).astype(np.float32)
            ) & np.isfinite(y)  # exp(x) beyond float64 (x > 709.8) is inf in FP32 too
        if hard.any():
            idx = np.nonzero(hard)
            r[idx] = [_exp_mp(v) for v in x64[idx]]
        return r.reshape(shape)
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        y = np.exp(x64)
        r = y.astype(np.float32)
        # The window test below, run only where it can fire: for y in FP32's normal range
        # the FP32 rounding boundaries sit at the low 29 bits of y's float64 pattern = 2**28,
        # and the window y*(1 -+ 2**-49) spans at most 16 float64 ulps (+1 for its own
        # rounding) on either side; so only words within 32 units of 2**28, and the y outside
        # [2**-126, 2**128) (subnormal or overflowing FP32, 0, inf, NaN), are candidates.
        words = y.view(np.uint32)  # little-endian: [low, high] word pairs
        low = words[0::2] - np.uint32(2**28 - 32)
        low &= np.uint32(2**29 - 1)
        cand = low <= np.uint32(64)
        high = words[1::2] - np.uint32(897 << 20)  # biased exponent 897: 2**-126
        cand |= high >= np.uint32((1151 - 897) << 20)  # 1151: 2**128 (sign bit: y >= 0 here)
    if force_mp:
        hard = np.isfinite(x64)
    else:
        hard = np.zeros(x64.shape, bool)
        ci = np.flatnonzero(cand)
        if ci.size:
            yc = y[ci]
            with np.errstate(over="ignore", under="ignore", invalid="ignore"):
                lo = (yc - yc * _EXP_WINDOW).astype(np.float32)
                hi = (yc + yc * _EXP_WINDOW).astype(np.float32)
            hard[ci] = (lo != hi) & np.isfinite(yc)  # y = inf: x > 709.8, inf in FP32
    if np.any(hard):
        r = np.array(r, copy=True)
        idx = np.nonzero(hard)
        r[idx] = [_exp_mp(v) for v in x64[idx]]
    return r.reshape(shape)


def _exp_mp(v: float) -> np.ndarray:
    # beyond FP32's range the rounded result is known: +inf above ln(max (1 + 2**-25)) =
    # 88.72..., 0 below ln(2**-150) = -103.97... (and mpmath's exp of a huge argument is
    # an exact number with a huge exponent: a hang in the rounding)
    if v > 89.0:
        return np.asarray(np.inf, dtype=np.float32)
    if v < -104.0:
        return np.asarray(0.0, dtype=np.float32)
    with mpmath.workprec(_MP_BITS):
        return round_to(mpmath.exp(mpmath.mpf(v)), FP32)[()]


def exp_poly(x: np.ndarray) -> np.ndarray:
    """The polynomial exp2 model of a vector-unit ``exp``, in ``x``'s dtype.

    ``t = fl(x * LOG2E)``, ``k = rint(t)`` (ties to even), ``f = t - k`` (exact, in
    [-1/2, 1/2]), ``p = c7`` then ``p = fl(fl(p * f) + c_i)`` for i = 6..0 (Horner, one
    rounding per operation, coefficients :data:`POLY_EXP2_COEFFS` rounded to the dtype),
    result ``ldexp(p, k)`` (exact unless it lands in the subnormal range, where it rounds).
    Error: ``|exp_poly(x) / exp(x) - 1| <~ 2 |x| 2**-24 + 8 * 2**-24`` for float32 (the
    roundings of ``t`` and of the constant LOG2E dominate for large ``|x|``).

    Examples
    --------
    >>> float(exp_poly(np.float32(0.0)))
    1.0
    """
    x = np.asarray(x)
    dt = x.dtype.type
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        t = x * dt(1.0 / math.log(2.0))
        finite = np.isfinite(t)
        k = np.where(finite, np.rint(t), 0).astype(dt)
        f = np.where(finite, t - k, dt(0))
        p = np.full_like(f, dt(POLY_EXP2_COEFFS[7]))
        for c in POLY_EXP2_COEFFS[6::-1]:
            p = p * f + dt(c)
        kk = np.clip(k, -400, 400).astype(np.int32)
        y = np.ldexp(p, kk).astype(dt)
        y = np.where(finite, y, np.where(t > 0, dt(np.inf), dt(0)))
        return np.where(np.isnan(x), x, y).astype(dt)


def rna_int(t: np.ndarray) -> np.ndarray:
    """Round to the nearest integer, ties away from zero (Ascend ``CAST_ROUND``), exactly.

    Returned in ``t``'s dtype (integer values); no intermediate rounding (``t + 0.5`` is
    never formed).
    """
    t = np.asarray(t)
    with np.errstate(invalid="ignore"):
        n = np.trunc(t)
        frac = t - n  # exact
        return n + np.where(np.abs(frac) >= 0.5, np.sign(t), 0).astype(t.dtype)


def cast(x: np.ndarray, fmt: str | None, mode: str) -> np.ndarray:
    """Round ``x`` to ``fmt`` (``"bf16"``/``"fp16"``/``"e4m3"``/``"e5m2"``; None: identity)
    with ``mode``, in ``x``'s dtype. The FP8 formats saturate (:func:`cast_saturating`).

    Examples
    --------
    >>> cast(np.float32([0.3, 500.0, 2.0**-11]), "e4m3", "rne")  # 500 saturates; 2**-11 -> 0
    array([3.125e-01, 4.480e+02, 0.000e+00], dtype=float32)
    """
    if fmt is None:
        return x
    x = np.asarray(x)
    if fmt in SATURATING:
        return cast_saturating(x, fmt, mode)[0]
    if fmt == "bf16" and x.dtype == np.float32 and mode in _BF16_MODES:
        return bf16_round_bits(x, mode).view(np.float32)  # the same bits, kept as FP32
    return round_to(x, _LOWP[fmt], mode).astype(x.dtype)


_BF16_MODES = ("rne", "rna", "rz")


def cast_saturating(x: np.ndarray, fmt: str, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """``x`` rounded once to ``fmt`` with ``mode``, saturated, and where it saturated.

    The exact value of each element is rounded to ``fmt`` with an unbounded exponent
    range; where that result exceeds ``fmt.max_finite`` (an overflow of the non-saturating
    cast: NaN for E4M3, inf for E5M2) the result is ``+-max_finite`` instead and the mask
    is True. Infinite inputs saturate too (counted); NaN stays NaN. Returned in ``x``'s dtype.

    Examples
    --------
    >>> y, sat = cast_saturating(np.float32([448.0, 464.0, 465.0, -1e6]), "e4m3", "rne")
    >>> y.tolist(), sat.tolist()  # 464 is a tie: to the even 448 (no overflow)
    ([448.0, 448.0, 448.0, -448.0], [False, False, True, True])
    """
    x = np.asarray(x)
    f = _LOWP[fmt]
    y = round_to(x, f, mode).astype(x.dtype)
    sat = ~np.isfinite(y) & ~np.isnan(x)
    if sat.any():
        y = np.where(sat, np.copysign(x.dtype.type(f.max_finite), x), y)
    return y, sat


def round_input(x: np.ndarray, in_format: str) -> np.ndarray:
    """A matrix-unit operand rounded (rne) to ``in_format``, as float64 (exact values)."""
    x = np.asarray(x)
    if in_format == "fp64":
        return x.astype(np.float64)
    fmt = {"bf16": BF16, "fp16": FP16, "fp32": FP32}[in_format]
    if x.dtype == fmt.storage:  # already in the format: exact
        return x.astype(np.float64)
    return round_to(x, fmt, "rne").astype(np.float64)


def matrix_product(
    a: np.ndarray,
    b: np.ndarray,
    mm: MatmulPolicy,
    work: type,
    *,
    a_rounded: bool = False,
    b_rounded: bool = False,
    b_stats: tuple[np.ndarray, np.ndarray] | None = None,
    b_absmax: float | None = None,
    a_stats: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """``a @ b`` on the matrix unit: operands rounded to ``mm.in_format`` (rne; identity for
    values already in it), summed by ``mm.accumulation`` into ``mm.out_format``, then
    converted to the work dtype (rne; exact when ``out_format`` is no wider).
    ``a_rounded``/``b_rounded`` promise that the operand is a float64 array already in
    ``in_format`` (skips a rounding pass); ``b_stats`` are ``b``'s precomputed
    :func:`~amla_numerics.flash.accumulate.column_stats`, ``b_absmax`` a bound of
    ``max |b|`` and ``a_stats`` ``a``'s row statistics (speed-ups only).
    """
    a64 = a if a_rounded else round_input(a, mm.in_format)
    b64 = b if b_rounded else round_input(b, mm.in_format)
    prec = PRECISION.get(mm.in_format)
    res = _acc_matmul(
        a64,
        b64,
        mm.accumulation,
        mm.out_format,
        in_precision=prec,
        b_stats=b_stats,
        b_absmax=b_absmax,
        a_stats=a_stats,
    )
    with np.errstate(over="ignore"):
        return res.astype(work)


def product_saturated(
    a: np.ndarray,
    b: np.ndarray,
    mm: MatmulPolicy,
    *,
    a_rounded: bool = False,
    b_rounded: bool = False,
) -> np.ndarray:
    """Elements of :func:`matrix_product` whose accumulation overflowed its output format
    without showing it: an RZ accumulator saturates at its largest value instead of inf
    (:func:`~amla_numerics.flash.accumulate.saturated`; all False under RNE)."""
    a64 = a if a_rounded else round_input(a, mm.in_format)
    b64 = b if b_rounded else round_input(b, mm.in_format)
    return _acc_saturated(a64, b64, mm.accumulation, mm.out_format)

"""The accumulation stage: the matrix unit's sums and the row sum.

The relative error of one ``n``-term sum under each accumulation model (exact, pairwise,
sequential, block FMA), the block FMA's alignment floor, whether a model's errors can all
have one sign, and the P V output's subnormal spacing (``docs/bounds.md`` section 3).
"""

from __future__ import annotations

import math

from amla_numerics.analysis.bounds.arith import _F64_SLACK, _gamma
from amla_numerics.flash.accumulate import Accumulation
from amla_numerics.formats import get_format

__all__: list[str] = []


def _accumulation_gamma(model: str, n: int, u: float) -> float:
    """Relative error bound (times the sum of |terms|) of one accumulated sum of ``n`` terms.

    "exact": one rounding (u); "pairwise": ceil(log2 n) + 1 roundings; "fp32_seq"/"seq": n;
    "block_fma": see :func:`_matmul_gamma` (this generic form, 2 gamma_n, is kept for
    callers that know only the model's name).
    """
    if model == "exact":
        return u
    if model == "pairwise":
        return _gamma(math.ceil(math.log2(max(n, 1))) + 1, u)
    if model in ("fp32_seq", "seq"):
        return _gamma(n, u)
    if model == "block_fma":
        return 2.0 * _gamma(n, u)
    raise ValueError(f"unknown accumulation model {model!r}")


def _matmul_gamma(acc: Accumulation, n: int, out_format: str) -> float:
    """Relative error bound (times ``sum |a_k b_k|``) of one ``n``-term matrix-unit sum.

    Models other than ``block_fma``: :func:`_accumulation_gamma` with ``out_format``'s ``u``.
    ``block_fma`` (:mod:`~amla_numerics.flash.accumulate`; the accumulator has ``t =
    acc_bits`` bits, ``F = t - 1 + extra_bits`` alignment bits, blocks of ``nb`` products):
    block ``j`` adds ``c`` and at most ``nb`` products, each cut to the grid ``2**(eta -
    F)`` with an error below one grid step (half a step for rne), where ``2**eta <= max
    |term|`` (raw exponents of normal operands do not exceed the true ones), so the block's
    alignment error is at most ``alpha max|term|``, ``alpha = (nb + 1) 2**-F`` (rz; half for
    rne), and ``max|term| <= |c| + sum_block |a_k b_k|``; the result is then rounded to
    ``t`` bits, relative error ``r = 2**(1 - t)`` (rz) or ``2**-t`` (rne). By induction over
    the ``m = ceil(n / nb)`` blocks, ``|s_m - S| <= ((1 + r)^m (1 + alpha)^m - 1) sum |a_k
    b_k|``. Assumes normal operands (a subnormal one, whose raw exponent is its format's
    emin, can make ``2**eta`` exceed the largest term; the emulator passes BF16's emin, for
    which every value it multiplies is normal).
    """
    out = get_format(out_format)
    if acc.model != "block_fma":
        return _accumulation_gamma(acc.model, n, out.unit_roundoff)
    t = out.p if acc.acc_bits is None else acc.acc_bits
    frac = t - 1 + acc.extra_bits
    nb = min(acc.block, max(n, 1))
    alpha = (nb + 1) * 2.0**-frac * (0.5 if acc.align_rounding == "rne" else 1.0)
    r = 2.0 ** (1 - t) if acc.out_rounding == "rz" else 2.0**-t
    m = -(-max(n, 1) // acc.block)
    return math.expm1(m * (math.log1p(r) + math.log1p(alpha))) * _F64_SLACK


#: The block FMA's alignment floor: the smallest raw exponent of an operand (the emulator
#: passes BF16's, :data:`~amla_numerics.flash.accumulate.EMIN`) and of the accumulator
#: ``c`` (FP32's), as a power of two.
_ALIGN_EMIN = 2.0**-126


def _align_floor(acc: Accumulation, n: int, out_format: str) -> float:
    """Absolute error of one ``n``-term block-FMA sum beyond :func:`_matmul_gamma`'s
    relative one, per unit of ``max(1, |a|_max, |b|_max)`` (0 for the other models).

    A subnormal operand's raw exponent is the floor ``emin`` (not its own), and so is a
    subnormal accumulator's: the block's alignment exponent obeys ``2**eta <= max(max
    |term|, t, max_k max(|a_k|, t) max(|b_k|, t))`` rather than ``2**eta <= max |term|``,
    (``t = 2**-126``), and ``max(|a|, t) max(|b|, t) <= max(|a b|, t max(|a|, |b|, t))``.
    So each of the ``m = ceil(n / nb)`` blocks adds at most ``alpha t max(1, |a|_max,
    |b|_max)`` (for ``t <= 1``) on top of the relative term, ``alpha = (nb + 1) 2**-F``
    (half for rne), as in :func:`_matmul_gamma`.
    """
    if acc.model != "block_fma":
        return 0.0
    out = get_format(out_format)
    t = out.p if acc.acc_bits is None else acc.acc_bits
    frac = t - 1 + acc.extra_bits
    nb = min(acc.block, max(n, 1))
    alpha = (nb + 1) * 2.0**-frac * (0.5 if acc.align_rounding == "rne" else 1.0)
    m = -(-max(n, 1) // acc.block)
    return m * alpha * _ALIGN_EMIN * _F64_SLACK


def _biased(acc: Accumulation) -> bool:
    """True when a sum's errors can all have one sign (a directed rounding somewhere):
    the probabilistic bound's mean-zero model does not hold, the worst case is kept."""
    return acc.out_rounding == "rz" or (acc.model == "block_fma" and acc.align_rounding == "rz")


def _pv_sigma(acc: Accumulation, out_format: str) -> float:
    """Spacing of the P V result in its subnormal range: the output format's, or that of a
    reduced block-FMA accumulator (``2**(emin - acc_bits + 1)``)."""
    fmt = get_format(out_format)
    if acc.model == "block_fma" and acc.acc_bits is not None:
        return max(fmt.min_subnormal, fmt.min_normal * 2.0 ** (1 - acc.acc_bits))
    return fmt.min_subnormal

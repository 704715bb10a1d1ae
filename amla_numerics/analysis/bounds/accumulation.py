"""The accumulation stage: the matrix unit's sums and the row sum.

The relative error of one ``n``-term sum under each accumulation model (exact, pairwise,
sequential, block FMA), the block FMA's alignment floor, whether a model's errors can all
have one sign, and the P V output's subnormal spacing (``docs/bounds.md`` section 3).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from amla_numerics.analysis.bounds.arith import (
    _F64_SLACK,
    _cast_u,
    _count,
    _gamma,
    _prob_scale,
    _sigma,
)
from amla_numerics.analysis.bounds.result import Bound
from amla_numerics.flash.accumulate import Accumulation
from amla_numerics.formats import get_format
from amla_numerics.variants import spec

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


def _accumulation_fields(pol: Any, variant: str, head_dim: int, b: int, s_w: float) -> dict:
    """The :class:`Bound` fields of the accumulated sums under ``pol``: the matrix unit's
    formats and constants (QK^T over ``head_dim``, P V over a block of ``b`` keys, with
    the alignment floors; ``s_w`` the static P scale), the row sum, and O's storage
    between blocks (``fa_bf16``)."""
    u = get_format(pol.work).unit_roundoff
    sp = spec(variant)
    fa_bf16 = sp.o_storage == "bf16" and pol.o_lowp is not None
    qk_gamma = _matmul_gamma(pol.qk.accumulation, head_dim, pol.qk.out_format)
    pv_gamma = _matmul_gamma(pol.pv.accumulation, b, pol.pv.out_format)
    qk_align = _align_floor(pol.qk.accumulation, head_dim, pol.qk.out_format) * (1.0 + qk_gamma)
    # per tile, in the P frame: the scaled tile's floor divided by S
    pv_unit = _align_floor(pol.pv.accumulation, b, pol.pv.out_format) * (1.0 + pv_gamma) / s_w
    return {
        "qk_in": pol.qk.in_format,
        "pv_in": pol.pv.in_format,
        "u_o": _cast_u(pol.o_lowp, pol.o_lowp_rounding) if fa_bf16 else 0.0,
        "qk_gamma": qk_gamma,
        "pv_gamma": pv_gamma,
        "rowsum_gamma": _accumulation_gamma(pol.rowsum, b, u),
        "sigma_o": _sigma(pol.o_lowp) if fa_bf16 else 0.0,
        "sigma_pv_out": _pv_sigma(pol.pv.accumulation, pol.pv.out_format),
        "qk_biased": _biased(pol.qk.accumulation),
        "pv_biased": _biased(pol.pv.accumulation),
        "qk_align": qk_align,
        "pv_align": pv_unit,
    }


def _add_terms(
    b: Bound, s0: np.ndarray, own: np.ndarray, na: np.ndarray, ca: np.ndarray, prob: bool
) -> tuple[Any, Any]:
    """Per key, the roundings of its block's sums and of the later blocks' adds,
    numerator and denominator: the P V tile (``g_pv``) and the row sum, the add of the
    tile to O and l (``own``: blocks ``>= 1``), one add per later block (``na``: no
    change; ``ca``: a change block, with its multiply), ``fa_bf16``'s O storage."""
    u = b.u_work
    sp = spec(b.variant)
    bn = b.block_n if sp.tiled else s0.shape[-1]
    pv = _prob_scale(b.pv_gamma, bn, u) if prob and not b.pv_biased else b.pv_gamma
    rowsum = _prob_scale(b.rowsum_gamma, bn, u) if prob else b.rowsum_gamma
    if not sp.tiled:
        return np.full_like(s0, pv), np.full_like(s0, rowsum)
    den_blk = rowsum + _count(own, prob) * u + _count(na, prob) * u + _count(ca, prob) * 2.0 * u
    if sp.is_amla:
        return pv + _count(own, prob) * u + _count(na + ca, prob) * u, den_blk
    later_k = na + ca
    num_blk = pv + _count(own, prob) * u + _count(na, prob) * u + _count(ca, prob) * 2.0 * u
    num_blk = num_blk + _count(later_k + 1.0, prob) * b.u_o
    return num_blk, den_blk

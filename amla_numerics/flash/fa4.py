"""FlashAttention-4's softmax: exp2 with the scale folded into one FMA, a polynomial exp2, and
the conditional rescale in the log2 domain (variant ``fa4``).

FlashAttention-4 (Dao-AILab/flash-attention, ``flash_attn/cute``: ``utils.py``
``ex2_emulation`` / ``combine_int_frac_ex2`` and ``softmax.py``; described in the FA4
paper's softmax section) computes the probabilities of a block on the FMA pipes instead of
the MUFU ``ex2`` unit. All in FP32 (``fl`` = one rne operation, ``fma`` = one rounding of
the exact ``a b + c``), per row, with raw (unscaled) scores ``R = QK`` and the stale
running max ``m`` in raw units:

1. ``c = fl(scale * log2 e)`` (a host-side constant: the float64 product rounded once);
2. ``mc = fl(m * c)``; ``x = fma(R, c, -mc)`` (the scale folded into one FMA);
3. ``P = ex2(x)`` by :func:`ex2_emu`: ``x := max(x, -127)`` (subnormal ``x`` flushed to 0:
   ``.ftz``), ``n = floor(x)`` (FA4 adds ``1.5 * 2**23`` rounding down, ``add.rm``), ``f =
   x - n`` (exact, in ``[0, 1)``), the degree-3 Horner polynomial on FMAs with FA4's
   coefficients :data:`FA4_EX2_COEFFS` (``p = c3; p = fma(p, f, c_i)``, i = 2, 1, 0), and
   the integer add of ``n << 23`` to ``p``'s bits (int32, wrapping): ``2**n p`` exactly while
   the result is normal (``n >= -126``); for ``n = -127`` (``x`` in ``[-127, -126)``) the
   exponent field becomes 0 and the bits read as the subnormal ``(p - 1) 2**-126``, and
   ``x <= -127`` gives exactly +0 (masked scores included);
4. conditional rescale (FA4's ``rescale_threshold``, in log2 units): with ``m'`` = max of
   ``m`` and the block's raw max, ``g = fl(fl(m - m') * c)``; the row rescales iff ``g <
   -tau`` (``tau = 8``), with ``a = ex2_emu(g)``, ``O = fl(a O)``, ``l = fl(a l)``,
   ``m = m'``; otherwise it keeps the stale ``m`` (so ``P <= 2**tau``).

Then as ``lazy``: ``l = fl(l + rowsum P)``, P cast and ``P V``, ``O = fl(O + PV)``, ``out =
fl(O / l)``; ``lse = m scale + ln l`` (float64). Model choices: every element takes the
polynomial (FA4 splits the columns of a tile between the polynomial and MUFU ``ex2``, whose
exact behaviour is not public), and the rescale factor too.

Error of :func:`ex2_emu` on ``x >= -126``: ``|ex2_emu(x) / 2**x - 1| <= FA4_EX2_REL_ERR``,
the polynomial's ``max |p(f) / 2**f - 1| = 8.763e-5`` (sampled on 2**20 + 1 points; the
derivative of that error is below 1, so between samples it grows by at most ``2**-21``)
plus the three FMA roundings (``3.31 u``: ``u (2 + 1 + 0.305)`` on a result in ``[1, 2)``).

Examples
--------
>>> import numpy as np
>>> ex2_emu(np.float32([0.0, 1.0, -1.5, 3.25, -127.0, -200.0])).tolist()
[1.0, 2.0, 0.3535259962081909, 9.513713836669922, 0.0, 0.0]
>>> float(softmax_scale_log2(1 / 8))
0.1803368777036667
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from amla_numerics.flash.accumulate import add_rounded

__all__ = [
    "FA4_EX2_COEFFS",
    "FA4_EX2_POLY_ERR",
    "FA4_EX2_REL_ERR",
    "ex2_emu",
    "fa4_block",
    "fma32",
    "softmax_scale_log2",
]

#: FA4's degree-3 exp2 coefficients ``c0..c3`` (``POLY_EX2[3]``; each exact in FP32).
FA4_EX2_COEFFS: tuple[float, float, float, float] = (
    1.0,
    0.695146143436431884765625,
    0.227564394474029541015625,
    0.077119089663028717041015625,
)
#: ``max_{f in [0,1]} |p(f) / 2**f - 1|`` rounded up (8.763e-5 sampled + 2**-21, see above).
FA4_EX2_POLY_ERR: float = 8.82e-5
#: Relative error bound of :func:`ex2_emu` for ``x >= -126`` (polynomial + 3.31 u).
FA4_EX2_REL_ERR: float = FA4_EX2_POLY_ERR + 3.31 * 2.0**-24

_F32 = np.float32
_TINY = _F32(2.0**-126)


def fma32(a: Any, b: Any, c: Any) -> np.ndarray:
    """``a * b + c`` rounded once to FP32 (rne), float32 arrays (broadcast).

    The product of two FP32 numbers is exact in float64; the sum is then rounded once by
    :func:`~amla_numerics.flash.accumulate.add_rounded` (TwoSum and round-to-odd).

    Examples
    --------
    >>> x = np.float32(1 + 2**-12)
    >>> float(fma32(x, x, np.float32(-1.0)))  # 2**-11 + 2**-24: exact
    0.0004883408546447754
    """
    a64 = np.asarray(a, np.float32).astype(np.float64)
    b64 = np.asarray(b, np.float32).astype(np.float64)
    c64 = np.asarray(c, np.float32).astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        prod = a64 * b64
        out = add_rounded(prod, c64, "fp32", "rne")
    return np.asarray(out).astype(np.float32)


def softmax_scale_log2(scale: float, dtype: type = np.float32) -> np.floating:
    """``c = fl(scale * log2 e)``: FA4's ``softmax_scale_log2`` (host float64, then ``dtype``)."""
    return dtype(float(scale) * math.log2(math.e))


def ex2_emu(x: np.ndarray) -> np.ndarray:
    """FA4's polynomial ``2**x`` on float32 ``x`` (step 3 of the module docstring).

    ``x <= 127`` is assumed (FA4's too; larger ``x`` wraps the exponent field).
    """
    x = np.asarray(x, np.float32)
    with np.errstate(invalid="ignore", over="ignore"):
        x = np.where(np.abs(x) < _TINY, _F32(0), x)  # .ftz on the input
        x = np.fmax(x, _F32(-127.0))
        n = np.floor(x)
        f = (x - n).astype(np.float32)  # exact
        c0, c1, c2, c3 = (np.float32(c) for c in FA4_EX2_COEFFS)
        p = np.full(f.shape, c3, np.float32)
        for coef in (c2, c1, c0):
            p = fma32(p, f, np.full(f.shape, coef, np.float32))
        ni = np.where(np.isfinite(n), n, 0).astype(np.int64)
        bits = (p.view(np.uint32).astype(np.int64) + (ni << 23)) & 0xFFFFFFFF
    return bits.astype(np.uint32).view(np.float32).reshape(np.shape(x))


def fa4_block(
    raw: np.ndarray,
    m: np.ndarray | None,
    c: np.floating,
    tau: np.floating,
    *,
    exact: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One block of steps 2-4: ``(m_new, rescaled, P, a)`` for raw scores (..., M, B).

    ``m is None`` at the first visited block (``m_new`` = the block's max, nothing rescaled).
    Rows with no unmasked score yet use ``m := 0`` in step 2 (their ``P`` is 0).
    ``exact=True`` (float64 ``raw``, the ``"exact"`` policy): the same recurrence with
    ``x = fl(raw c - m c)`` and numpy's ``exp2`` (the recurrence alone, no FP32 model).
    """
    if exact:
        return _fa4_block_exact(np.asarray(raw, np.float64), m, c, tau)
    raw = np.asarray(raw, np.float32)
    with np.errstate(invalid="ignore", over="ignore"):
        mblk = raw.max(axis=-1)
        if m is None:
            m_new, resc = mblk, np.zeros(mblk.shape, bool)
            a = np.ones(mblk.shape, np.float32)
        else:
            cand = np.maximum(m, mblk)
            g = (m - cand) * c  # -inf -> finite: -inf (rescale, a = 0); both -inf: nan
            resc = g < -tau
            m_new = np.where(resc, cand, m)
            a = ex2_emu(np.where(resc, g, _F32(0)))
        m_eff = np.where(np.isfinite(m_new), m_new, _F32(0))
        mc = (m_eff * c).astype(np.float32)
        x = fma32(raw, np.float32(c), -mc[..., None])
    return m_new, resc, ex2_emu(x), a


def _fa4_block_exact(raw, m, c, tau):
    with np.errstate(invalid="ignore", over="ignore"):
        mblk = raw.max(axis=-1)
        if m is None:
            m_new, resc = mblk, np.zeros(mblk.shape, bool)
            a = np.ones(mblk.shape)
        else:
            cand = np.maximum(m, mblk)
            g = (m - cand) * c
            resc = g < -tau
            m_new = np.where(resc, cand, m)
            a = np.exp2(np.where(resc, g, 0.0))
        m_eff = np.where(np.isfinite(m_new), m_new, 0.0)
        return m_new, resc, np.exp2(raw * c - (m_eff * c)[..., None]), a

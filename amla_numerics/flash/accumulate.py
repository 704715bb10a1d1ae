"""Matrix-unit accumulation models and the vector unit's row-sum orders, bit for bit.

Every model takes operands whose values are exact (already rounded to the input format),
forms every product exactly (a BF16/FP16/FP32 product is exact in float64) and differs only
in how the products are summed and rounded to the output format (FP32 or FP64):

``"exact"``
    The exact sum of all ``K`` products, rounded once (``out_rounding``). Implemented as a
    float64 BLAS product ``s``, which is exact when every product is a multiple of
    ``Q = 2**(qa_i + qb_j)`` (the smallest quanta of row ``i`` and column ``j``) and
    ``||a_i|| ||b_j|| < 2**53 Q`` (the usual case for BF16 operands); otherwise it obeys
    ``|s - x| <= (K + 2) 2**-52 sum_k |a_ik| max|b|``: where both ends of that interval
    round to the same FP32 number it is the answer; elsewhere (mostly exact ties, a few
    per thousand for P V) the element's own products decide (exactness test, tight bound),
    then ``math.fsum``, or the split of ``a`` into a large part and a tail. Long 2-D sums
    (``K > 4096``: an unblocked P V) sum 256-key BLAS blocks under a tighter bound and settle
    the few open elements from their own products. The certificate lives in
    :mod:`amla_numerics.flash._exactsum`.
    For an FP64 output the BLAS result is returned as it is (error within that bound; only
    the ``"exact"`` policy uses it, to check recurrences to ~1e-12).
``"fp32_seq"``
    ``s_0 = 0``, ``s_k = fl(s_{k-1} + a_k b_k)`` for ``k = 1..K`` in index order: a chain of
    fused multiply-adds, one rounding each.
``"pairwise"``
    The exact products, then a balanced tree: each level adds neighbours ``(2i, 2i+1)``
    with one rounding; an odd last element moves up unchanged.
``"block_fma"``
    The block FMA of Khattak & Mikaitis (2025), arXiv:2512.07004 (after Fasi, Higham,
    Mikaitis & Pranesh 2021). Chunks of ``block`` products in index order; for each chunk
    the accumulator ``c`` (the previous chunk's result, 0 at first) and the chunk's products
    are aligned to ``eta``, the largest *raw* exponent among them (zeros ignored): a product
    ``a_k b_k`` has raw exponent ``e(a_k) + e(b_k)`` (its significand, in ``[1, 4)``, is not
    renormalised before the alignment), ``c`` its own exponent, where ``e(x) =
    max(floor(log2 |x|), emin)`` (``emin``: the operand format's smallest normal exponent,
    argument ``in_emin``; FP32's -126 for ``c``). Every term is cut to a multiple of
    ``2**(eta - F)``, ``F = (acc_bits - 1) + extra_bits``, with ``align_rounding`` (``"rz"``:
    truncation), the cut terms are summed exactly, and the sum is rounded to ``acc_bits``
    significant bits with ``out_rounding`` (FP32's exponent range: below ``2**-126`` the
    quantum is ``2**(-126 - (acc_bits - 1))``). ``acc_bits=None`` is the output format's
    precision (24 for FP32): the plain FP32 accumulator. A reduced ``acc_bits`` (Hopper's
    FP8 path: 14, i.e. 13 fraction bits) leaves every chunk's result with that many bits,
    which the next chunk takes as ``c``. Not modelled: the alignment floor of the authors'
    models (``eta >= -133``: only terms below ``2**-133`` differ), overflow, NaN and inf.
    See :data:`ACCUMULATION_PRESETS`.

The rounded additions are exact-then-round: a float64 TwoSum gives the sum and its error,
the sum is moved to the odd neighbour when the error is non-zero (round to odd, which
makes a second rounding to ``p <= 51`` bits correct in every mode), then rounded.

Examples
--------
>>> import numpy as np
>>> a = np.array([[1.0, 2.0**-24, 2.0**-24]])
>>> b = np.ones((3, 1))
>>> matmul(a, b, Accumulation("exact"), "fp32")  # 1 + 2**-23: exact sum, one rounding
array([[1.0000001]], dtype=float32)
>>> matmul(a, b, Accumulation("fp32_seq"), "fp32")  # each 2**-24 is a tie lost to even
array([[1.]], dtype=float32)
>>> float(vector_sum(np.float32([1.0, 2.0**-24, 2.0**-24, 2.0**-24]), "pairwise"))
1.0000001192092896
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from amla_numerics.flash._exactsum import (
    _exact,
    _round64,
    _round_odd,
    add_rounded,
    column_stats,
    min_nonzero_abs,
    quantum_exp_from_min,
)
from amla_numerics.formats import FP32, FP64

__all__ = [
    "ACCUMULATION_MODELS",
    "ACCUMULATION_PRESETS",
    "EMIN",
    "Accumulation",
    "add_rounded",
    "column_stats",
    "matmul",
    "min_nonzero_abs",
    "quantum_exp_from_min",
    "saturated",
    "vector_sum",
]

ACCUMULATION_MODELS: tuple[str, ...] = ("exact", "fp32_seq", "pairwise", "block_fma")
_ROUNDINGS = ("rne", "rz")


@dataclass(frozen=True)
class Accumulation:
    """How a matrix unit sums products (see the module docstring).

    Attributes
    ----------
    model : {"exact", "fp32_seq", "pairwise", "block_fma"}
    block : int
        Products per block FMA (``block_fma`` only).
    extra_bits : int
        Alignment bits kept beyond the accumulator's precision (``block_fma`` only).
    align_rounding : {"rz", "rne"}
        Rounding of aligned significands (``block_fma``; ``"rz"`` = truncation).
    out_rounding : {"rne", "rz"}
        Rounding of each result to the output format (``block_fma``: to ``acc_bits``).
    acc_bits : int or None
        Significant bits of the block FMA's accumulator, leading bit included (``block_fma``
        only; at most the output format's precision): the alignment grid is
        ``2**(eta - (acc_bits - 1) - extra_bits)`` and every block's result is rounded to
        ``acc_bits`` bits. None: the output format's precision (24 for FP32).

    Examples
    --------
    >>> Accumulation("block_fma", block=32, acc_bits=14).acc_bits
    14
    >>> Accumulation("block_fma", acc_bits=1)
    Traceback (most recent call last):
        ...
    ValueError: accumulation 'acc_bits' must be None or an int in [2, 53], got 1
    """

    model: str = "exact"
    block: int = 4
    extra_bits: int = 0
    align_rounding: str = "rz"
    out_rounding: str = "rne"
    acc_bits: int | None = None

    def __post_init__(self) -> None:
        if self.model not in ACCUMULATION_MODELS:
            raise ValueError(
                f"accumulation model must be one of {ACCUMULATION_MODELS}, got {self.model!r}"
            )
        if not isinstance(self.block, int) or self.block < 1:
            raise ValueError(f"accumulation 'block' must be an int >= 1, got {self.block!r}")
        if not isinstance(self.extra_bits, int) or not 0 <= self.extra_bits <= 20:
            raise ValueError(
                f"accumulation 'extra_bits' must be an int in [0, 20], got {self.extra_bits!r}"
            )
        if self.align_rounding not in _ROUNDINGS or self.out_rounding not in _ROUNDINGS:
            raise ValueError(f"accumulation roundings must be one of {_ROUNDINGS}")
        if self.acc_bits is not None and (
            isinstance(self.acc_bits, bool)
            or not isinstance(self.acc_bits, int)
            or not 2 <= self.acc_bits <= 53
        ):
            raise ValueError(
                f"accumulation 'acc_bits' must be None or an int in [2, 53], got {self.acc_bits!r}"
            )


#: Block-FMA presets, FP32 output. Sources: Fasi, Higham, Mikaitis & Pranesh (2021,
#: "Numerical behavior of NVIDIA tensor cores", PeerJ CS 7:e330) for V100/T4/A100, and
#: Khattak & Mikaitis (2025, "Accurate Models of NVIDIA Tensor Cores", arXiv:2512.07004)
#: read through the authors' MATLAB models that accompany the paper
#: (github.com/north-numerical-computing/MATLAB-tensor-core, models/*TC.m: ``fma`` = block,
#: ``neab`` = extra_bits, ``frmode`` = out_rounding; alignment by truncation,
#: products not renormalised). The paper's own text and tables could not be read here (only
#: its abstract); a second-hand reading of its Table 3 (13 fraction bits on the H100/H200
#: FP8 path) agrees with the models' numbers below.
#:
#: * ``"v100"``: 4 products + c, no extra bit, RZ (Fasi et al. 2021; V100TC.m: fma 4, neab 0).
#: * ``"t4"``: as V100 (Fasi et al. 2021; T4 is not in the 2025 models).
#: * ``"a100"``: 8 products + c, 1 extra alignment bit, RZ, FP16/BF16 inputs (A100TC.m:
#:   fma 8, neab 1; this preset had 0 extra bits before, which disagrees with the
#:   published A100 BF16 vectors on 1,003 of 5,000 rows).
#: * ``"h100"``: 16 products + c, 2 extra alignment bits, RZ, FP16/BF16 inputs (H100TC.m:
#:   fma 16, neab 2; the same numbers for H200TC.m and B200TC.m). This preset had 3 extra
#:   bits before ("inferred from the abstract"), which disagrees with the published H100
#:   BF16 vectors on 158 of 5,000 rows; 2 bits agree on all.
#: * ``"h100_fp8"``: the FP8 (E4M3/E5M2) path of H100/H200: 32 products + c per block
#:   ("FMA size is 16, but interleaved pattern is used to join two 16-element vectors",
#:   H100TC.m: fma 32), an accumulator of 14 significant bits (H100TC.m: neab = -10, i.e.
#:   23 - 10 = 13 fraction bits for the alignment grid and the RZ output), no extra bit.
#:   A second, independent source: DeepSeek-V3 (arXiv:2412.19437, section 3.3.2) reports
#:   that FP8 GEMM accumulation on H800 retains about 14 bits (its primary text could not
#:   be read here; third-party copies state it). Agrees bit for bit with the authors'
#:   published H100 E4M3 and E5M2 hardware vectors (5,000 32-term dot products each, run
#:   with c = 0); a full FP32 accumulator (acc_bits=None) disagrees on 2,989 of them.
#:
#: The published vectors (model_validation/ of the authors' repository) are not shipped;
#: tests/test_accumulate.py replays them when ``AMLA_TC_VECTORS`` names a copy (V100 FP16,
#: A100 BF16, H100 BF16/FP16/E4M3/E5M2: all 5,000 rows agree).
#:
#: B200's FP8 path is not a preset: with B200TC.m's numbers (fma 32, neab 2, RZ) this model
#: misses 1,793 of the 5,000 published B200 E4M3 rows, with B200TCRN.m's (RNE output) 246;
#: RNE with 8 or more extra bits fits all of them, but that is a fit here, not a source.
ACCUMULATION_PRESETS: dict[str, Accumulation] = {
    "v100": Accumulation(
        "block_fma", block=4, extra_bits=0, align_rounding="rz", out_rounding="rz"
    ),
    "t4": Accumulation("block_fma", block=4, extra_bits=0, align_rounding="rz", out_rounding="rz"),
    "a100": Accumulation(
        "block_fma", block=8, extra_bits=1, align_rounding="rz", out_rounding="rz"
    ),
    "h100": Accumulation(
        "block_fma", block=16, extra_bits=2, align_rounding="rz", out_rounding="rz"
    ),
    "h100_fp8": Accumulation(
        "block_fma", block=32, extra_bits=0, align_rounding="rz", out_rounding="rz", acc_bits=14
    ),
}

#: Smallest normal exponent of each input format (a subnormal operand's raw exponent in
#: the block-FMA alignment); ``matmul``'s ``in_emin`` takes these.
EMIN: dict[str, int] = {
    "bf16": -126,
    "fp16": -14,
    "fp32": -126,
    "fp64": -1022,
    "e4m3": -6,
    "e5m2": -14,
}

_FORMATS = {"fp32": FP32, "fp64": FP64}
_CHUNK = 1 << 22  # products held at once by the pairwise and block-FMA models (32 MB)
_DTYPES = {"fp32": np.float32, "fp64": np.float64}
_PREC = {"fp32": 24, "fp64": 53}
_EMIN_OUT = {"fp32": -126, "fp64": -1022}
_EMAX_OUT = {"fp32": 127, "fp64": 1023}
_NO_EXP = -(1 << 40)  # raw exponent of a zero term


def matmul(
    a: np.ndarray,
    b: np.ndarray,
    acc: Accumulation,
    out: str = "fp32",
    *,
    in_precision: int | None = None,
    b_stats: tuple[np.ndarray, np.ndarray] | None = None,
    b_absmax: float | None = None,
    a_stats: tuple[np.ndarray, np.ndarray] | None = None,
    in_emin: tuple[int, int] = (-126, -126),
) -> np.ndarray:
    """``a @ b`` (``a`` (..., M, K), ``b`` (..., K, N), exact values) under model ``acc``.

    Returns an array of the ``out`` format's dtype (float32 or float64), leading
    dimensions broadcast as in ``numpy.matmul``. ``in_precision`` (optional) promises that
    every operand has at most that many significant bits (BF16: 8, with a subnormal
    quantum no finer than ``2**-133``); it only speeds up the ``"exact"`` model, as does
    ``b_stats``, ``b``'s :func:`column_stats` computed once by the caller, and ``b_absmax``,
    an upper bound of ``max |b|`` (ditto), and ``a_stats``, ``a``'s row ``(norms, quantum
    exponents)`` (the row analogue of ``b_stats``). ``in_emin`` (``block_fma`` only) are the
    smallest normal exponents of ``a``'s and ``b``'s input formats (:data:`EMIN`): a
    subnormal operand's raw exponent in the alignment; the default is BF16's.

    Examples
    --------
    >>> a = np.array([[1.0, 2.0**-14, 2.0**-14]])
    >>> float(matmul(a, np.ones((3, 1)), ACCUMULATION_PRESETS["h100"])[0, 0])
    1.0001220703125
    >>> float(matmul(a, np.ones((3, 1)), ACCUMULATION_PRESETS["h100_fp8"])[0, 0])  # 13 bits
    1.0
    """
    if out not in _FORMATS:
        raise ValueError(f"argument 'out' must be 'fp32' or 'fp64', got {out!r}")
    if acc.model == "block_fma" and acc.acc_bits is not None and acc.acc_bits > _PREC[out]:
        raise ValueError(
            f"accumulation 'acc_bits' ({acc.acc_bits}) exceeds the {out} output's precision"
        )
    if out == "fp64" and acc.out_rounding != "rne":
        raise ValueError("an fp64 product supports only out_rounding='rne'")
    a64 = np.asarray(a, dtype=np.float64)
    b64 = np.asarray(b, dtype=np.float64)
    if acc.model == "exact":
        return _exact(a64, b64, out, acc.out_rounding, in_precision, b_stats, b_absmax, a_stats)
    if a64.shape[-1] != b64.shape[-2]:
        raise ValueError(f"matmul: inner dimensions differ ({a64.shape[-1]} and {b64.shape[-2]})")
    if acc.model == "fp32_seq":  # one outer product per step: no (M, N, K) array
        shape = (*np.broadcast_shapes(a64.shape[:-2], b64.shape[:-2]), a64.shape[-2], b64.shape[-1])
        s = np.zeros(shape)
        for k in range(a64.shape[-1]):
            s = add_rounded(
                s, a64[..., :, k : k + 1] * b64[..., k : k + 1, :], out, acc.out_rounding
            )
            s = s.astype(np.float64)
        return s.astype(_DTYPES[out])
    return _by_rows(a64, b64, acc, out, in_emin)[0]


def saturated(
    a: np.ndarray,
    b: np.ndarray,
    acc: Accumulation,
    out: str = "fp32",
    *,
    in_emin: tuple[int, int] = (-126, -126),
) -> np.ndarray:
    """Elements of :func:`matmul` ``(a, b, acc, out)`` whose RZ accumulation overflowed.

    Under round-toward-zero an overflow does not give inf but the largest finite value (of
    the accumulator's width), so a caller cannot see it in the result; under RNE it is inf
    and this mask is all False. ``block_fma`` tracks every block's rounding exactly; the
    other models report a result at the largest finite value whose ``sum |a b|`` reaches
    it (conservative: an exact sum in ``[max, 2**128)`` is flagged too). The mask is all
    False without a product walk when ``sum |a b|`` stays below the overflow threshold.

    Examples
    --------
    >>> h100 = ACCUMULATION_PRESETS["h100"]
    >>> saturated(np.array([[3e38, 3e38, 1.0]]), np.ones((3, 1)), h100).tolist()
    [[True]]
    >>> saturated(np.array([[3e38, -3e38, 1.0]]), np.ones((3, 1)), h100).tolist()
    [[False]]
    """
    a64 = np.asarray(a, dtype=np.float64)
    b64 = np.asarray(b, dtype=np.float64)
    shape = (*np.broadcast_shapes(a64.shape[:-2], b64.shape[:-2]), a64.shape[-2], b64.shape[-1])
    none = np.zeros(shape, bool)
    if acc.out_rounding != "rz" or out == "fp64":  # RNE overflow is inf; FP64 sums cannot
        return none
    top = 2.0 ** (_EMAX_OUT[out] + 1)
    reach = np.abs(a64) @ np.abs(b64)  # |partial sums| <= this (1 + K 2**-53)
    if not np.any(reach >= top * (1 - 2.0**-30)):
        return none
    if acc.model == "block_fma":
        return _by_rows(a64, b64, acc, out, in_emin)[1]
    res = matmul(a64, b64, acc, out).astype(np.float64)
    return (np.abs(res) == _largest(acc, out)) & (reach >= _largest(acc, out))


def _by_rows(
    a64: np.ndarray, b64: np.ndarray, acc: Accumulation, out: str, in_emin: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """``pairwise`` / ``block_fma`` products, a few rows of (..., M, N, K) at a time: the
    result and where a ``block_fma`` block overflowed (False for ``pairwise``)."""
    per_row = max(
        1, int(np.prod(np.broadcast_shapes(a64.shape[:-2], b64.shape[:-2]), dtype=np.int64))
    )
    per_row *= b64.shape[-1] * a64.shape[-1]
    step = max(1, _CHUNK // max(per_row, 1))
    parts, overs = [], []
    for r0 in range(0, a64.shape[-2], step):
        ar = a64[..., r0 : r0 + step, :]
        prods = ar[..., :, None, :] * np.swapaxes(b64, -1, -2)[..., None, :, :]  # (..., m, N, K)
        if acc.model == "pairwise":
            res = _pairwise(prods, out, acc.out_rounding).astype(_DTYPES[out])
            parts.append(res)
            overs.append(np.zeros(res.shape, bool))
        else:
            raw = (
                _raw_exponent(ar, in_emin[0])[..., :, None, :]
                + _raw_exponent(np.swapaxes(b64, -1, -2), in_emin[1])[..., None, :, :]
            )
            res, over = _block_fma(prods, np.where(prods == 0, _NO_EXP, raw), acc, out)
            parts.append(res)
            overs.append(over)
    if not parts:
        shape = (*np.broadcast_shapes(a64.shape[:-2], b64.shape[:-2]), 0, b64.shape[-1])
        return np.zeros(shape, _DTYPES[out]), np.zeros(shape, bool)
    return np.concatenate(parts, axis=-2), np.concatenate(overs, axis=-2)


def vector_sum(x: np.ndarray, order: str, axis: int = -1) -> np.ndarray:
    """Sum of ``x`` (float32 or float64) along ``axis`` in the vector unit's ``order``.

    ``"seq"``: left to right, one rounding per add, starting from ``x[0]``;
    ``"pairwise"``: the tree of :func:`matmul`'s pairwise model; ``"exact"``: the exact
    sum rounded once. Each add is IEEE round-to-nearest-even in ``x.dtype``.
    """
    x = np.moveaxis(np.asarray(x), axis, -1)
    dt = x.dtype
    if x.shape[-1] == 0:
        return np.zeros(x.shape[:-1], dt)
    if order == "seq":
        s = x[..., 0].copy()
        for k in range(1, x.shape[-1]):
            s = s + x[..., k]
        return s
    if order == "pairwise":
        while x.shape[-1] > 1:
            n2 = x.shape[-1] // 2
            y = x[..., 0 : 2 * n2 : 2] + x[..., 1 : 2 * n2 : 2]
            if x.shape[-1] % 2:
                y = np.concatenate([y, x[..., -1:]], axis=-1)
            x = y
        return x[..., 0]
    if order == "exact":
        out = "fp32" if dt == np.float32 else "fp64"
        ones = np.ones((*x.shape[-1:], 1))
        return _exact(x.astype(np.float64)[..., None, :], ones, out, "rne")[..., 0, 0]
    raise ValueError(f"unknown row-sum order {order!r}")


# --------------------------------------------------------------------------- internals


def _pairwise(prods: np.ndarray, out: str, mode: str) -> np.ndarray:
    x = prods
    if x.shape[-1] == 0:
        return np.zeros(x.shape[:-1])
    if x.shape[-1] == 1:  # a single product still gets its one rounding
        return _round64(_round_odd(x[..., 0], np.zeros(x.shape[:-1])), out, mode).astype(np.float64)
    while x.shape[-1] > 1:
        n2 = x.shape[-1] // 2
        y = add_rounded(x[..., 0 : 2 * n2 : 2], x[..., 1 : 2 * n2 : 2], out, mode).astype(
            np.float64
        )
        if x.shape[-1] % 2:
            y = np.concatenate([y, x[..., -1:]], axis=-1)
        x = y
    return x[..., 0]


def _raw_exponent(x: np.ndarray, emin: int) -> np.ndarray:
    """``max(floor(log2 |x|), emin)`` as int64 (zeros: ``emin``; masked by the caller)."""
    _, e = np.frexp(x)
    return np.maximum(e.astype(np.int64) - 1, emin)


def _round_bits(x: np.ndarray, bits: int, emin: int, mode: str) -> np.ndarray:
    """``x`` (float64, exact) rounded to ``bits`` significant bits, quantum floor
    ``2**(emin - bits + 1)`` (the output's subnormal range), ``mode`` rz or rne."""
    q = _raw_exponent(x, emin) - (bits - 1)
    s = np.ldexp(x, -q)
    return np.ldexp(np.trunc(s) if mode == "rz" else np.rint(s), q)


def _block_fma(
    prods: np.ndarray, raw: np.ndarray, acc: Accumulation, out: str
) -> tuple[np.ndarray, np.ndarray]:
    """The block-FMA sum of ``prods`` and where a block's rounding overflowed ``out``."""
    p = _PREC[out]
    bits = p if acc.acc_bits is None else acc.acc_bits
    frac = bits - 1 + acc.extra_bits
    emin = _EMIN_OUT[out]
    top = 2.0 ** (_EMAX_OUT[out] + 1)
    # |exact block sum| from which the rounding to ``bits`` bits reaches 2**(emax + 1)
    over_at = top if acc.out_rounding == "rz" else top * (1.0 - 2.0 ** -(bits + 1))
    c = np.zeros(prods.shape[:-1])
    over = np.zeros(c.shape, bool)
    for k0 in range(0, prods.shape[-1], acc.block):
        terms = np.concatenate([c[..., None], prods[..., k0 : k0 + acc.block]], axis=-1)
        ec = np.where(c == 0, _NO_EXP, _raw_exponent(c, emin))
        eta = np.maximum(raw[..., k0 : k0 + acc.block].max(axis=-1), ec)
        qe = np.where(eta == _NO_EXP, 0, eta - frac)  # all terms zero: any grid
        scaled = np.ldexp(terms, -qe[..., None])
        cut = np.trunc(scaled) if acc.align_rounding == "rz" else np.rint(scaled)
        total = np.ldexp(cut.sum(axis=-1), qe)  # exact: few short integers
        over |= np.abs(total) >= over_at
        if bits == p:
            c = _round64(total, out, acc.out_rounding).astype(np.float64)
        else:  # an overflow gives what IEEE gives: inf (RNE) or the largest value (RZ)
            c = _round_bits(total, bits, emin, acc.out_rounding)
            big = np.abs(c) >= top
            if big.any():
                c = np.where(big, np.copysign(_largest(acc, out, bits), c), c)
    return c.astype(_DTYPES[out]), over


def _largest(acc: Accumulation, out: str, bits: int | None = None) -> float:
    """What an overflow leaves in the accumulator: inf under RNE, else the largest value
    of ``bits`` (default: the accumulator's width) significant bits in ``out``."""
    if acc.out_rounding == "rne":
        return math.inf
    if bits is None:
        bits = _PREC[out] if acc.acc_bits is None else acc.acc_bits
    return 2.0 ** (_EMAX_OUT[out] + 1) * (1.0 - 2.0**-bits)

"""FlashMLA's FP8 KV cache: 656 bytes per token, quantised and dequantised bit for bit.

DeepSeek-V3.2's FlashMLA sparse decoding kernel stores each MLA latent token as
(``deepseek-ai/FlashMLA``, ``tests/quant.py``, ``quantize_k_cache`` /
``dequantize_k_cache``, layout ``V32_FP8Sparse``; ``flash_mla/flash_mla_interface.py``
documents the same layout):

==============  ========  ==========================================================
bytes           count     content
==============  ========  ==========================================================
``[0, 512)``    512       E4M3 codes of the 512 "nope" (latent) values
``[512, 528)``  4         FP32 scales, one per 128-value tile (little-endian)
``[528, 656)``  64        BF16 RoPE values, stored as they are (little-endian)
==============  ========  ==========================================================

Quantisation of tile ``t`` (values ``x``, BF16; all in FP32, ``fl`` = one rne operation):
``a = fl(max |x| / 448)``, ``sigma = 2**ceil(log2(max(a, fl(1e-4))))`` (the smallest power
of two ``>= max(a, 1e-4)``: a "UE8M0" scale stored as FP32), codes
``c = cast(fl(x / sigma), e4m3, rne)`` (``x / sigma`` is exact: a power-of-two division
inside FP32's normal range; ``|x / sigma| <= 448`` so nothing saturates). FlashMLA takes
``ceil`` of an FP32 ``log2``, which for ``a`` within a few FP32 ulps above a power of two
may return the lower power; the codes then reach ``448 (1 + 2**-22)``, which still round to
448: the only possible difference from this exact definition is that scale, never an
overflow.

Dequantisation (as FlashMLA's ``dequantize_k_cache`` and the kernel, which converts FP8 to
BF16 and applies the tile scale before its BF16 matrix products): ``x' = bf16(fl(c *
sigma))``, exact (a 4-bit significand times a power of two in BF16's range), so the
dequantised cache is a BF16 array and every emulator variant runs on it unchanged. The
RoPE part is exact.

The error of the quantisation itself (reference on ``x`` vs reference on ``x'``) and the
kernel's error (emulator on ``x'`` vs reference on ``x'``) are separated by
:func:`amla_numerics.analysis.kvquant.split_errors`.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> kv = rng.standard_normal((3, 576))
>>> packed = quantize_kv_fp8(kv)
>>> packed.shape, packed.dtype, BYTES_PER_TOKEN
((3, 656), dtype('uint8'), 656)
>>> back = dequantize_kv_fp8(packed)
>>> back.dtype.name, bool(np.all(back[:, 512:] == kv_bf16(kv)[:, 512:]))
('bfloat16', True)
"""

from __future__ import annotations

from typing import Any

import ml_dtypes
import numpy as np

from amla_numerics.formats import E4M3
from amla_numerics.rounding import round_to

__all__ = [
    "BYTES_PER_TOKEN",
    "D_NOPE",
    "D_ROPE",
    "TILE",
    "dequantize_kv_fp8",
    "kv_bf16",
    "kv_fp8_roundtrip",
    "quantize_kv_fp8",
    "tile_scales",
]

#: Latent ("nope") values per token, RoPE values per token, values per scale tile.
D_NOPE, D_ROPE, TILE = 512, 64, 128
_N_TILES = D_NOPE // TILE
#: 512 E4M3 bytes + 4 FP32 scales + 64 BF16 values.
BYTES_PER_TOKEN: int = D_NOPE + 4 * _N_TILES + 2 * D_ROPE
_SCALE_FLOOR = np.float32(1e-4)  # FlashMLA's clamp (HFAI FP8_AMAX_MARGIN)
_E4M3_MAX = np.float32(448.0)


def kv_bf16(kv: Any) -> np.ndarray:
    """``kv`` (..., N, 576) rounded once (rne) to BF16 (the cache's input format)."""
    kv = np.asarray(kv)
    if kv.ndim < 1 or kv.shape[-1] != D_NOPE + D_ROPE:
        raise ValueError(f"argument 'kv' must have shape (..., N, 576), got {kv.shape}")
    if kv.dtype.kind not in "fV" and kv.dtype.kind not in "iu":
        raise TypeError(f"argument 'kv' must be a real array, got dtype {kv.dtype}")
    x = kv.astype(np.float64) if kv.dtype != ml_dtypes.bfloat16 else kv
    if not np.all(np.isfinite(np.asarray(x, np.float64))):
        raise ValueError("argument 'kv' must be finite")
    return np.asarray(round_to(x, "bf16"))


def tile_scales(kv: Any) -> np.ndarray:
    """The FP32 scale ``sigma`` of every 128-value tile: shape (..., N, 4).

    Examples
    --------
    >>> import numpy as np
    >>> x = np.zeros((1, 576)); x[0, 0] = 448.0; x[0, 128] = 450.0; x[0, 256] = 1e-9
    >>> tile_scales(x).tolist()  # 448/448 = 1; 450/448 -> 2; tiny -> 2**-13 (>= 1e-4)
    [[1.0, 2.0, 0.0001220703125, 0.0001220703125]]
    """
    x = kv_bf16(kv).astype(np.float32)
    tiles = x[..., :D_NOPE].reshape(*x.shape[:-1], _N_TILES, TILE)
    a = np.abs(tiles).max(axis=-1) / _E4M3_MAX  # one FP32 division, rne
    a = np.maximum(a, _SCALE_FLOOR)
    mant, exp = np.frexp(a.astype(np.float64))  # a = mant 2**exp, mant in [1/2, 1)
    exp = np.where(mant == 0.5, exp - 1, exp)  # an exact power of two is its own ceiling
    return np.ldexp(np.float32(1), exp).astype(np.float32)


def quantize_kv_fp8(kv: Any) -> np.ndarray:
    """Pack ``kv`` (..., N, 576) into FlashMLA's FP8 cache: uint8 (..., N, 656)."""
    x = kv_bf16(kv)
    sigma = tile_scales(x)
    nope = x[..., :D_NOPE].astype(np.float32).reshape(*x.shape[:-1], _N_TILES, TILE)
    codes = round_to(nope / sigma[..., None], E4M3, "rne", saturate=True)
    out = np.empty((*x.shape[:-1], BYTES_PER_TOKEN), np.uint8)
    out[..., :D_NOPE] = codes.reshape(*x.shape[:-1], D_NOPE).view(np.uint8)
    out[..., D_NOPE : D_NOPE + 16] = sigma.astype("<f4").view(np.uint8)
    out[..., D_NOPE + 16 :] = np.ascontiguousarray(x[..., D_NOPE:]).view("<u2").view(np.uint8)
    return out


def dequantize_kv_fp8(packed: Any) -> np.ndarray:
    """The BF16 cache (..., N, 576) a packed FP8 cache stands for (exact, see module docs)."""
    p = np.asarray(packed)
    if p.dtype != np.uint8 or p.ndim < 1 or p.shape[-1] != BYTES_PER_TOKEN:
        raise ValueError(
            f"argument 'packed' must be a uint8 array of shape (..., N, {BYTES_PER_TOKEN}),"
            f" got {p.dtype} {p.shape}"
        )
    p = np.ascontiguousarray(p)
    lead = p.shape[:-1]
    codes = p[..., :D_NOPE].view(ml_dtypes.float8_e4m3fn).astype(np.float32)
    sigma = p[..., D_NOPE : D_NOPE + 16].view("<f4").astype(np.float32)
    nope = codes.reshape(*lead, _N_TILES, TILE) * sigma[..., None]  # exact
    out = np.empty((*lead, D_NOPE + D_ROPE), ml_dtypes.bfloat16)
    out[..., :D_NOPE] = nope.reshape(*lead, D_NOPE).astype(ml_dtypes.bfloat16)  # exact
    out[..., D_NOPE:] = p[..., D_NOPE + 16 :].view("<u2").view(ml_dtypes.bfloat16)
    return out


def kv_fp8_roundtrip(kv: Any) -> np.ndarray:
    """``dequantize_kv_fp8(quantize_kv_fp8(kv))``: the values an FP8-cache kernel computes on."""
    return dequantize_kv_fp8(quantize_kv_fp8(kv))

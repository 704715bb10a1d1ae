"""An FP8 KV cache's error split into the quantisation's and the kernel's (MLA decode).

The cache layout and its exact round trip are in :mod:`amla_numerics.flash.fp8kv`; this
module measures, against the certified reference, how much of the total error each part
causes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from amla_numerics import reference
from amla_numerics.flash.emulator import MLA_DV, MLA_SCALE, mla_attention
from amla_numerics.flash.fp8kv import kv_bf16, kv_fp8_roundtrip

__all__ = ["split_errors"]


def split_errors(q: Any, kv: Any, variant: str = "amla", **options: Any) -> dict[str, np.ndarray]:
    """The FP8 cache's quantisation error and the kernel's error, separately (MLA decode).

    ``ref`` is the certified reference on the BF16 cache ``kv``, ``ref_q`` the certified
    reference on the dequantised cache ``kv'`` (exact values), ``out`` the emulated
    ``variant`` on ``kv'`` (:func:`~amla_numerics.flash.emulator.mla_attention`;
    ``options`` go to it). Returns float64 arrays ``quant = ref_q - ref`` and
    ``kernel = out - ref_q`` (their sum is the total error ``out - ref``), and ``ref``,
    ``ref_q``, ``out``.
    """
    kvb = kv_bf16(kv)
    kvq = kv_fp8_roundtrip(kvb)
    scale = options.get("scale", MLA_SCALE)
    ref = np.asarray(reference.attention(q, kvb, kvb[..., :MLA_DV], scale, method="auto"))
    ref_q = np.asarray(reference.attention(q, kvq, kvq[..., :MLA_DV], scale, method="auto"))
    out = np.asarray(mla_attention(q, kvb, variant, kv_cache="fp8", **options).out, np.float64)
    return {"quant": ref_q - ref, "kernel": out - ref_q, "ref": ref, "ref_q": ref_q, "out": out}

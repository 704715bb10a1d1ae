"""Bit-exact FlashAttention emulator: FP32/BF16 rescaling, AMLA's INT32 exponent add and variants.

See :func:`attention` (:mod:`~amla_numerics.flash.emulator`), the precision
:class:`Policy` (:mod:`~amla_numerics.flash.policy`), the matrix-unit accumulation models
(:mod:`~amla_numerics.flash.accumulate`), the elementwise stages
(:mod:`~amla_numerics.flash.stages`), AMLA's rescale (:mod:`~amla_numerics.flash.amla`), the
split-KV combine (:mod:`~amla_numerics.flash.splitkv`), the FP8 P cast with its static scale
(:mod:`~amla_numerics.flash.fp8`), FlashMLA's FP8 KV cache (:mod:`~amla_numerics.flash.fp8kv`),
FlashAttention-4's softmax (:mod:`~amla_numerics.flash.fa4`) and ``docs/numerics.md`` (the
stage-by-stage spec).

Examples
--------
>>> from amla_numerics import flash
>>> flash.VARIANTS[:4]
('naive', 'fa_fp32', 'fa_bf16', 'amla')
"""

from amla_numerics.flash.accumulate import ACCUMULATION_MODELS, ACCUMULATION_PRESETS, Accumulation
from amla_numerics.flash.emulator import (
    MLA_DK,
    MLA_DV,
    MLA_SCALE,
    FlashResult,
    Trace,
    attention,
    mla_attention,
    rescale_probability,
)
from amla_numerics.flash.policy import PRESETS, MatmulPolicy, Policy, get_policy
from amla_numerics.flash.splitkv import COMBINES, SplitTrace
from amla_numerics.variants import AMLA_VARIANTS, VARIANTS

__all__ = [
    "ACCUMULATION_MODELS",
    "ACCUMULATION_PRESETS",
    "AMLA_VARIANTS",
    "COMBINES",
    "MLA_DK",
    "MLA_DV",
    "MLA_SCALE",
    "PRESETS",
    "VARIANTS",
    "Accumulation",
    "FlashResult",
    "MatmulPolicy",
    "Policy",
    "SplitTrace",
    "Trace",
    "attention",
    "get_policy",
    "mla_attention",
    "rescale_probability",
]

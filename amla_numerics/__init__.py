"""amla_numerics: exact accuracy and modelled cost of FlashAttention output rescaling.

The public API is what ``__all__`` lists; the modules hold the logic:
:mod:`~amla_numerics.formats` (formats), :mod:`~amla_numerics.rounding` (exact rounding),
:mod:`~amla_numerics.ulp` (ULP metrics), :mod:`~amla_numerics.exp2add` (the INT32
exponent add), :mod:`~amla_numerics.reference` (arbitrary-precision attention),
:mod:`~amla_numerics.flash` (bit-exact FlashAttention emulator), :mod:`~amla_numerics.analysis`
(metrics, bounds, budgets, reports) and :mod:`~amla_numerics.pipeline` (Ascend 910 model).
"""

from amla_numerics._version import __version__
from amla_numerics.exp2add import (
    HAZARDS,
    HazardReport,
    exp2_add,
    exp2_add_bits,
    exp2_add_bits_hazards,
    exp2_add_hazards,
)
from amla_numerics.formats import BF16, E4M3, E5M2, FP16, FP32, FP64, FORMATS, Format, get_format
from amla_numerics.rounding import MODES, round_to
from amla_numerics.ulp import signed_ulp_error, ulp, ulp_distance, ulp_error
from amla_numerics.variants import VARIANTS

__all__ = [
    "BF16",
    "E4M3",
    "E5M2",
    "FORMATS",
    "FP16",
    "FP32",
    "FP64",
    "HAZARDS",
    "MODES",
    "VARIANTS",
    "Format",
    "HazardReport",
    "__version__",
    "exp2_add",
    "exp2_add_bits",
    "exp2_add_bits_hazards",
    "exp2_add_hazards",
    "get_format",
    "round_to",
    "signed_ulp_error",
    "ulp",
    "ulp_distance",
    "ulp_error",
]

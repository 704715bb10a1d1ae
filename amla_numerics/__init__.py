"""amla_numerics: exact accuracy and modelled cost of FlashAttention output rescaling.

The public API is what ``__all__`` lists; the modules hold the logic:
:mod:`~amla_numerics.formats` (formats), :mod:`~amla_numerics.rounding` (exact rounding),
:mod:`~amla_numerics.ulp` (ULP metrics), :mod:`~amla_numerics.exp2add` (the INT32
exponent add), :mod:`~amla_numerics.reference` (arbitrary-precision attention),
:mod:`~amla_numerics.flash` (bit-exact FlashAttention emulator), :mod:`~amla_numerics.analysis`
(metrics, bounds, budgets, reports), :mod:`~amla_numerics.pipeline` (Ascend 910 model) and
:mod:`~amla_numerics.testing` (judge a real kernel's outputs; dumps in :mod:`.dumps`).
"""

import importlib
from typing import TYPE_CHECKING, Any

from amla_numerics._version import __version__

if TYPE_CHECKING:  # the names below are loaded on first access (see _LAZY)
    from amla_numerics.exp2add import (
        HAZARDS,
        HazardReport,
        exp2_add,
        exp2_add_bits,
        exp2_add_bits_hazards,
        exp2_add_hazards,
    )
    from amla_numerics.formats import (
        BF16,
        E4M3,
        E5M2,
        FORMATS,
        FP16,
        FP32,
        FP64,
        Format,
        get_format,
    )
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
    "analysis",
    "exp2_add",
    "exp2_add_bits",
    "exp2_add_bits_hazards",
    "exp2_add_hazards",
    "flash",
    "get_format",
    "pipeline",
    "reference",
    "round_to",
    "signed_ulp_error",
    "testing",
    "ulp",
    "ulp_distance",
    "ulp_error",
]

#: Every public name, imported on first access: ``import amla_numerics`` (and so the
#: command line's ``--help``) pays for neither ml_dtypes, mpmath, scipy nor matplotlib.
_LAZY: dict[str, str] = {
    **dict.fromkeys(
        (
            "HAZARDS",
            "HazardReport",
            "exp2_add",
            "exp2_add_bits",
            "exp2_add_bits_hazards",
            "exp2_add_hazards",
        ),
        "exp2add",
    ),
    **dict.fromkeys(
        ("BF16", "E4M3", "E5M2", "FORMATS", "FP16", "FP32", "FP64", "Format", "get_format"),
        "formats",
    ),
    **dict.fromkeys(("MODES", "round_to"), "rounding"),
    **dict.fromkeys(("signed_ulp_error", "ulp", "ulp_distance", "ulp_error"), "ulp"),
    "VARIANTS": "variants",
}

#: The subpackages, imported on first access (``amla_numerics.flash`` works after a bare
#: ``import amla_numerics``).
_SUBPACKAGES = ("analysis", "cli", "flash", "pipeline", "reference", "testing")


def __getattr__(name: str) -> Any:
    if name in _SUBPACKAGES:
        return importlib.import_module(f"amla_numerics.{name}")
    if name in _LAZY:
        value = getattr(importlib.import_module(f"amla_numerics.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'amla_numerics' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_SUBPACKAGES) | set(_LAZY))

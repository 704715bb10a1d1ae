"""The rescaling schemes' public names, shared by the emulator and the pipeline model.

One list, so that a variant measured for accuracy (:mod:`amla_numerics.flash`) and the
same variant costed on the Ascend pipeline (:mod:`amla_numerics.pipeline`) cannot drift
apart.

Examples
--------
>>> from amla_numerics.variants import VARIANTS, check_variant
>>> VARIANTS[:3]
('naive', 'fa_fp32', 'fa_bf16')
>>> check_variant("amla")
'amla'
"""

from __future__ import annotations

import math
from typing import Any

__all__ = [
    "AMLA_VARIANTS",
    "DEFAULT_C",
    "DEFAULT_SKIP_TAU",
    "DEFAULT_TAU",
    "FP8_P_VARIANTS",
    "STALE_MAX_VARIANTS",
    "TAU_UNITS",
    "VARIANTS",
    "VARIANT_DESCRIPTIONS",
    "check_c",
    "check_tau",
    "check_variant",
    "default_tau",
    "tau_log2",
]

#: name -> one-line description of what the scheme does to the output accumulator O.
VARIANT_DESCRIPTIONS: dict[str, str] = {
    "naive": "full (not tiled) softmax, then one P V product: the non-flash baseline",
    "fa_fp32": "FlashAttention-2: O rescaled by an FP32 multiply every block",
    "fa_bf16": "FlashAttention-2 with O stored in BF16 between blocks",
    "amla": "AMLA as in the CANN kernel: INT32 exponent add with compensation c*(cof ratio-1)",
    "amla_nocomp": "AMLA without error compensation (eps = 0)",
    "amla_exactcomp": "AMLA with the cof ratio applied as an exact FP32 multiply",
    "amla_fp32r": "AMLA folding the FP32 residual r (no BF16 rounding of r)",
    "amla_guarded": "AMLA with zero/subnormal/underflow elements rescaled by an FP32 multiply",
    "lazy": "FlashAttention-4-style: rescale only when the max grew by more than tau (log2)",
    "fa_fp8": "FlashAttention-3 FP8 P V: O rescaled by an FP32 multiply, P cast to FP8 (E4M3)",
    "amla_fp8": "AMLA's exponent-add rescale with the folded P r^ tile cast to FP8 (E4M3)",
    "fa4": "FlashAttention-4 softmax: scale folded into one FMA, polynomial exp2, lazy rescale",
    "skip_scale": "DeepSeek's Ascend skip-scale: FP32 multiply only if the max grew > tau (nats)",
}

#: The public variant names, in report order.
VARIANTS: tuple[str, ...] = tuple(VARIANT_DESCRIPTIONS)

#: The variants that rescale O by AMLA's power-of-two exponent add (and fold r^ into P).
AMLA_VARIANTS: tuple[str, ...] = (
    "amla",
    "amla_nocomp",
    "amla_exactcomp",
    "amla_fp32r",
    "amla_guarded",
    "amla_fp8",
)

#: Variants whose P (or AMLA's A = P r^) tile is cast to FP8 before P V: variant -> the
#: format used when the policy's ``p_cast`` is a 16-bit one (``"bf16"``/``"fp16"``); a
#: policy that already names an FP8 ``p_cast`` keeps it, and ``p_cast=None`` (the
#: ``"exact"`` preset) stays uncast. See :func:`amla_numerics.flash.fp8.variant_policy`.
FP8_P_VARIANTS: dict[str, str] = {"fa_fp8": "e4m3", "amla_fp8": "e4m3"}

#: AMLA's compensation coefficient in the CANN kernel: ``eps = 1.5 (cof ratio - 1) + 1e-6``.
DEFAULT_C: float = 1.5

#: The lazy (FlashAttention-4) rescale threshold, in log2 units (FA4's value).
DEFAULT_TAU: float = 8.0

#: The skip-scale rescale threshold, in nats (DeepSeek's Ascend kernels' value).
DEFAULT_SKIP_TAU: float = 6.0

#: Variants that keep a stale running max (rescale only past a threshold ``tau``) -> the
#: units of ``tau``: ``"log2"`` (the max's growth times log2 e) or ``"ln"`` (nats, the
#: growth of the max itself). With a stale max, P reaches ``2**tau`` or ``e**tau``.
TAU_UNITS: dict[str, str] = {"lazy": "log2", "fa4": "log2", "skip_scale": "ln"}

#: The variants of :data:`TAU_UNITS`, in report order.
STALE_MAX_VARIANTS: tuple[str, ...] = tuple(TAU_UNITS)


def check_variant(name: object, argument: str = "variant") -> str:
    """Return ``name`` if it is a known variant, else raise a ValueError listing them.

    Parameters
    ----------
    name : object
        The candidate variant name.
    argument : str
        The argument's name, used in the error message.

    Returns
    -------
    str
        ``name``, unchanged.

    Raises
    ------
    ValueError
        If ``name`` is not one of :data:`VARIANTS`.

    Examples
    --------
    >>> check_variant("fa_fp64")
    Traceback (most recent call last):
    ...
    ValueError: unknown variant 'fa_fp64' for argument 'variant'; valid: naive, fa_fp32, ...
    """
    if not isinstance(name, str) or name not in VARIANT_DESCRIPTIONS:
        raise ValueError(
            f"unknown variant {name!r} for argument {argument!r}; valid: {', '.join(VARIANTS)}"
        )
    return name


def _real(value: Any, argument: str) -> float:
    if isinstance(value, bool) or (
        not isinstance(value, int | float) and not hasattr(value, "__float__")
    ):
        raise TypeError(f"argument {argument!r} must be a real number, got {type(value).__name__}")
    x = float(value)
    if not math.isfinite(x):
        raise ValueError(f"argument {argument!r} must be finite, got {value!r}")
    return x


def check_c(c: Any, argument: str = "c") -> float:
    """AMLA's compensation coefficient as a float: finite and > 0 (ValueError/TypeError).

    Examples
    --------
    >>> check_c(1.5), check_c(2)
    (1.5, 2.0)
    >>> check_c(0)
    Traceback (most recent call last):
    ...
    ValueError: argument 'c' must be > 0, got 0
    """
    x = _real(c, argument)
    if x <= 0:
        raise ValueError(f"argument {argument!r} must be > 0, got {c!r}")
    return x


def default_tau(variant: str) -> float:
    """The threshold a variant runs with when none is given (:data:`DEFAULT_SKIP_TAU` for
    ``skip_scale``, :data:`DEFAULT_TAU` for every other variant, where only ``lazy`` and
    ``fa4`` read it).

    Examples
    --------
    >>> default_tau("skip_scale"), default_tau("lazy"), default_tau("amla")
    (6.0, 8.0, 8.0)
    """
    return DEFAULT_SKIP_TAU if variant == "skip_scale" else DEFAULT_TAU


def tau_log2(variant: str, tau: float) -> float:
    """A threshold in ``variant``'s units (:data:`TAU_UNITS`) converted to log2 units.

    ``skip_scale``'s nats are divided by ``ln 2`` and rounded up by one part in 2**40 (so
    the result, times ``ln 2``, is never below ``tau``); log2 thresholds are returned as
    they are.

    Examples
    --------
    >>> tau_log2("lazy", 8.0)
    8.0
    >>> round(tau_log2("skip_scale", 6.0), 6)
    8.65617
    """
    if TAU_UNITS.get(variant) == "ln":
        return float(tau) / math.log(2.0) * (1.0 + 2.0**-40)
    return float(tau)


def check_tau(tau: Any, argument: str = "tau") -> float:
    """A rescale threshold (``lazy``: log2 units, ``skip_scale``: nats) as a float: finite
    and >= 0.

    Examples
    --------
    >>> check_tau(8)
    8.0
    """
    x = _real(tau, argument)
    if x < 0:
        raise ValueError(f"argument {argument!r} must be >= 0, got {tau!r}")
    return x

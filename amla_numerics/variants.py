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

__all__ = ["VARIANTS", "VARIANT_DESCRIPTIONS", "check_variant"]

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
}

#: The public variant names, in report order.
VARIANTS: tuple[str, ...] = tuple(VARIANT_DESCRIPTIONS)


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
    ValueError: unknown variant 'fa_fp64' for argument 'variant'; valid: naive, fa_fp32, fa_bf16, amla, amla_nocomp, amla_exactcomp, amla_fp32r, amla_guarded, lazy
    """
    if not isinstance(name, str) or name not in VARIANT_DESCRIPTIONS:
        raise ValueError(
            f"unknown variant {name!r} for argument {argument!r}; valid: {', '.join(VARIANTS)}"
        )
    return name

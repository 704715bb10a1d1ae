"""The rescaling schemes: their public names and their facts, one table.

One :class:`VariantSpec` per variant in :data:`SPECS`, so that a variant measured for
accuracy (:mod:`amla_numerics.flash`), bounded (:mod:`amla_numerics.analysis.bounds`) and
costed on the Ascend pipeline (:mod:`amla_numerics.pipeline`) cannot drift apart: those
modules read the spec's fields, and the name lists below are derived from it.

Examples
--------
>>> from amla_numerics.variants import VARIANTS, check_variant
>>> VARIANTS[:3]
('naive', 'fa_fp32', 'fa_bf16')
>>> check_variant("amla")
'amla'
>>> spec("amla_guarded").guard, AMLA_VARIANTS == tuple(n for n in SPECS if spec(n).is_amla)
(True, True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

__all__ = [
    "AMLA_VARIANTS",
    "DEFAULT_C",
    "DEFAULT_SKIP_TAU",
    "DEFAULT_TAU",
    "FP8_P_VARIANTS",
    "SPECS",
    "STALE_MAX_VARIANTS",
    "TAU_UNITS",
    "VARIANTS",
    "VARIANT_DESCRIPTIONS",
    "VariantSpec",
    "check_c",
    "check_tau",
    "check_variant",
    "default_tau",
    "spec",
    "tau_log2",
]


@dataclass(frozen=True)
class VariantSpec:
    """The facts of one rescaling scheme: what it does to P, to O and to the running max.

    Every module that behaves differently per variant reads these fields (through
    :func:`spec`) instead of comparing variant names, so a scheme is described once.

    Attributes
    ----------
    name : str
        The public name (a key of :data:`SPECS`).
    rescale : {"multiply", "int_add", "none"}
        How O follows a grown running max: an FP32 multiply by ``exp(m_old - m_new)``,
        AMLA's INT32 add of ``N = (dn + eps) 2**23`` to O's bits (with ``r^`` folded into
        P), or not at all (``naive``: one block, no running max).
    stale_max : {"log2", "ln"} or None
        A stale running max, updated only when it grew by more than ``tau``; the value is
        the units of ``tau`` (``"log2"``: the growth times log2 e; ``"ln"``: nats).
    compensation : {"none", "additive", "exact"}
        AMLA's correction of the folded residual's rounding (``cof`` ratio): ``"additive"``
        adds ``eps = c (ratio - 1) + bias`` to the exponent increment, ``"exact"`` applies
        the ratio by an FP32 multiply after the add; ``"none"`` for the multiply schemes.
    guard : bool
        Elements whose integer add would be wrong (zero, subnormal, underflow, a clamped
        ``dn``) are rescaled by the FP32 multiply instead (detected and repaired).
    fold : {"r_hat", "r_fp32"} or None
        The residual folded into P before its cast: ``r`` rounded by the policy's
        ``r_cast`` (``"r_hat"``), ``r`` in FP32 (``"r_fp32"``), or nothing.
    p_cast : str or None
        The FP8 format P (AMLA: ``P r^``) is cast to when the policy casts P to a 16-bit
        format (:func:`amla_numerics.flash.fp8.variant_policy`); None: the policy's cast.
    o_storage : {"fp32", "bf16"}
        The format O is held in between blocks (``"bf16"``: the policy's ``o_lowp``).
    softmax : {"standard", "fa4"}
        ``"fa4"``: FlashAttention-4's exp2 softmax (scale folded into one FMA, polynomial
        exp2, raw running max); ``"standard"``: the policy's exp of ``s - m``.
    tiled : bool
        Whether keys are processed in blocks of ``block_n`` (False: ``naive``, one block).
    base : str or None
        The variant this one equals but for :attr:`p_cast` (None: itself).
    description : str
        One line: what the scheme does to the output accumulator O.

    Examples
    --------
    >>> s = spec("amla_fp32r")
    >>> s.rescale, s.fold, s.compensation, s.is_amla
    ('int_add', 'r_fp32', 'additive', True)
    >>> spec("skip_scale").stale_max, spec("fa_bf16").o_storage, spec("naive").tiled
    ('ln', 'bf16', False)
    """

    name: str
    rescale: str
    description: str
    stale_max: str | None = None
    compensation: str = "none"
    guard: bool = False
    fold: str | None = None
    p_cast: str | None = None
    o_storage: str = "fp32"
    softmax: str = "standard"
    tiled: bool = True
    base: str | None = None

    def __post_init__(self) -> None:
        choices = {
            "rescale": ("multiply", "int_add", "none"),
            "stale_max": ("log2", "ln", None),
            "compensation": ("none", "additive", "exact"),
            "fold": ("r_hat", "r_fp32", None),
            "p_cast": ("e4m3", "e5m2", None),
            "o_storage": ("fp32", "bf16"),
            "softmax": ("standard", "fa4"),
        }
        for field, valid in choices.items():
            if getattr(self, field) not in valid:
                raise ValueError(
                    f"VariantSpec {self.name!r}: {field} must be one of {valid}, "
                    f"got {getattr(self, field)!r}"
                )
        int_add = self.rescale == "int_add"
        if int_add != (self.fold is not None) or (not int_add and self.compensation != "none"):
            raise ValueError(
                f"VariantSpec {self.name!r}: fold and compensation belong to rescale 'int_add'"
            )
        if self.guard and not int_add:
            raise ValueError(f"VariantSpec {self.name!r}: guard belongs to rescale 'int_add'")
        if (self.rescale == "none") == self.tiled:
            raise ValueError(f"VariantSpec {self.name!r}: rescale 'none' is the untiled run")

    @property
    def is_amla(self) -> bool:
        """Whether O is rescaled by AMLA's exponent add (``rescale == "int_add"``)."""
        return self.rescale == "int_add"

    @property
    def tau_base(self) -> float | None:
        """The largest P of a stale max is ``tau_base ** tau`` (2 or e); None without one."""
        if self.stale_max is None:
            return None
        return 2.0 if self.stale_max == "log2" else math.e


#: The variants in report order: name -> :class:`VariantSpec`.
SPECS: dict[str, VariantSpec] = {
    s.name: s
    for s in (
        VariantSpec(
            "naive",
            "none",
            "full (not tiled) softmax, then one P V product: the non-flash baseline",
            tiled=False,
        ),
        VariantSpec(
            "fa_fp32", "multiply", "FlashAttention-2: O rescaled by an FP32 multiply every block"
        ),
        VariantSpec(
            "fa_bf16",
            "multiply",
            "FlashAttention-2 with O stored in BF16 between blocks",
            o_storage="bf16",
        ),
        VariantSpec(
            "amla",
            "int_add",
            "AMLA as in the CANN kernel: INT32 exponent add with compensation c*(cof ratio-1)",
            compensation="additive",
            fold="r_hat",
        ),
        VariantSpec(
            "amla_nocomp",
            "int_add",
            "AMLA without error compensation (eps = 0)",
            fold="r_hat",
        ),
        VariantSpec(
            "amla_exactcomp",
            "int_add",
            "AMLA with the cof ratio applied as an exact FP32 multiply",
            compensation="exact",
            fold="r_hat",
        ),
        VariantSpec(
            "amla_fp32r",
            "int_add",
            "AMLA folding the FP32 residual r (no BF16 rounding of r)",
            compensation="additive",
            fold="r_fp32",
        ),
        VariantSpec(
            "amla_guarded",
            "int_add",
            "AMLA with zero/subnormal/underflow elements rescaled by an FP32 multiply",
            compensation="additive",
            guard=True,
            fold="r_hat",
        ),
        VariantSpec(
            "lazy",
            "multiply",
            "FlashAttention-4-style: rescale only when the max grew by more than tau (log2)",
            stale_max="log2",
        ),
        VariantSpec(
            "fa_fp8",
            "multiply",
            "FlashAttention-3 FP8 P V: O rescaled by an FP32 multiply, P cast to FP8 (E4M3)",
            p_cast="e4m3",
            base="fa_fp32",
        ),
        VariantSpec(
            "amla_fp8",
            "int_add",
            "AMLA's exponent-add rescale with the folded P r^ tile cast to FP8 (E4M3)",
            compensation="additive",
            fold="r_hat",
            p_cast="e4m3",
            base="amla",
        ),
        VariantSpec(
            "fa4",
            "multiply",
            "FlashAttention-4 softmax: scale folded into one FMA, polynomial exp2, lazy rescale",
            stale_max="log2",
            softmax="fa4",
        ),
        VariantSpec(
            "skip_scale",
            "multiply",
            "DeepSeek's Ascend skip-scale: FP32 multiply only if the max grew > tau (nats)",
            stale_max="ln",
        ),
    )
}

#: name -> one-line description of what the scheme does to the output accumulator O.
VARIANT_DESCRIPTIONS: dict[str, str] = {n: s.description for n, s in SPECS.items()}

#: The public variant names, in report order.
VARIANTS: tuple[str, ...] = tuple(SPECS)

#: The variants that rescale O by AMLA's power-of-two exponent add (and fold r^ into P).
AMLA_VARIANTS: tuple[str, ...] = tuple(n for n, s in SPECS.items() if s.rescale == "int_add")

#: Variants whose P (or AMLA's A = P r^) tile is cast to FP8 before P V: variant -> the
#: format used when the policy's ``p_cast`` is a 16-bit one (``"bf16"``/``"fp16"``); a
#: policy that already names an FP8 ``p_cast`` keeps it, and ``p_cast=None`` (the
#: ``"exact"`` preset) stays uncast. See :func:`amla_numerics.flash.fp8.variant_policy`.
FP8_P_VARIANTS: dict[str, str] = {n: s.p_cast for n, s in SPECS.items() if s.p_cast is not None}

#: AMLA's compensation coefficient in the CANN kernel: ``eps = 1.5 (cof ratio - 1) + 1e-6``.
DEFAULT_C: float = 1.5

#: The lazy (FlashAttention-4) rescale threshold, in log2 units (FA4's value).
DEFAULT_TAU: float = 8.0

#: The skip-scale rescale threshold, in nats (DeepSeek's Ascend kernels' value).
DEFAULT_SKIP_TAU: float = 6.0

#: Variants that keep a stale running max (rescale only past a threshold ``tau``) -> the
#: units of ``tau``: ``"log2"`` (the max's growth times log2 e) or ``"ln"`` (nats, the
#: growth of the max itself). With a stale max, P reaches ``2**tau`` or ``e**tau``.
TAU_UNITS: dict[str, str] = {n: s.stale_max for n, s in SPECS.items() if s.stale_max is not None}

#: The variants of :data:`TAU_UNITS`, in report order.
STALE_MAX_VARIANTS: tuple[str, ...] = tuple(TAU_UNITS)


def spec(variant: object, argument: str = "variant") -> VariantSpec:
    """The :class:`VariantSpec` of a known variant (ValueError listing them otherwise).

    Examples
    --------
    >>> spec("fa_fp8").p_cast, spec("fa_fp8").base
    ('e4m3', 'fa_fp32')
    """
    return SPECS[check_variant(variant, argument)]


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
    return DEFAULT_SKIP_TAU if TAU_UNITS.get(variant) == "ln" else DEFAULT_TAU


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

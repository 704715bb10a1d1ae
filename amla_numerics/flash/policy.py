"""The precision policy: every stage's format, rounding and accumulation model, in one object.

A :class:`Policy` is a frozen, JSON-serialisable record. The emulator reads nothing else, so
two runs with equal policies (and equal inputs, variant and options) agree bit for bit.
The stages it fixes are defined in ``docs/numerics.md``; the field docs below only name them.

Presets
-------
``"ascend"`` (the default)
    BF16 matrix-unit inputs, FP32 accumulation (the "exact" model: one rounding to FP32 per
    output element), FP32 vector stages, correctly rounded FP32 exp, the P cast and the
    r^ cast to BF16 with round-half-away (Ascend ``CAST_ROUND``), pairwise FP32 row sums,
    O kept in BF16 between blocks with rne (``fa_bf16`` only; a plain cast),
    the INT32 exponent add with the kernel's ``-30`` clamp and ``1e-6`` bias.
``"cann"``
    ``"ascend"`` plus the CANN MLA kernel's final clean-up: before the division, O elements
    with ``|O| > 1e10`` or NaN are set to 0 (this hides most hazard garbage in the output;
    the hazard counts still show it).
``"exact"``
    Every stage in float64, no casts, matrix products in float64, and the integer add
    replaced by the exact scaling ``O * 2**dn * cof_{j-1}/cof_j`` (no clamp): the
    recurrences alone, to check them against the reference.

Examples
--------
>>> p = get_policy("ascend")
>>> p.work, p.p_cast, p.p_cast_rounding, p.qk.accumulation.model
('fp32', 'bf16', 'rna', 'exact')
>>> Policy.from_json(p.to_json()) == p
True
>>> get_policy("exact").rescale
'exact'
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from amla_numerics.flash.accumulate import Accumulation

__all__ = [
    "EXP_MODELS",
    "KV_ORDERS",
    "PRESETS",
    "P_CAST_FORMATS",
    "ROWSUM_ORDERS",
    "MatmulPolicy",
    "Policy",
    "get_policy",
]

#: exp models: correctly rounded in the working format, or a polynomial exp2 (see stages).
EXP_MODELS: tuple[str, ...] = ("cr", "poly")
#: Row-sum orders of the vector unit (see :func:`amla_numerics.flash.accumulate.vector_sum`).
ROWSUM_ORDERS: tuple[str, ...] = ("pairwise", "seq", "exact")
#: Formats of the P cast before ``P V`` (None: no cast). The FP8 ones saturate (see stages).
P_CAST_FORMATS: tuple[str | None, ...] = (None, "bf16", "fp16", "e4m3", "e5m2")
#: Orders in which the KV blocks are visited.
KV_ORDERS: tuple[str, ...] = ("forward", "reverse")
_WORK = ("fp32", "fp64")
_LOWP = (None, "bf16", "fp16")
_CAST_MODES = ("rne", "rna", "rz")
_RESCALE = ("int_add", "exact")


@dataclass(frozen=True)
class MatmulPolicy:
    """One matrix-unit product: its input format and accumulation model.

    Attributes
    ----------
    in_format : {"bf16", "fp16", "fp32", "fp64"}
        Both operands are rounded (rne) to this format before the product. A P tile that
        the policy already cast is representable, so that rounding is the identity.
    accumulation : Accumulation
        How the products are summed and rounded to ``out_format``.
    out_format : {"fp32", "fp64"}
        The format of the product tile (the L0C/Fixpipe output).
    """

    in_format: str = "bf16"
    accumulation: Accumulation = field(default_factory=Accumulation)
    out_format: str = "fp32"

    def __post_init__(self) -> None:
        if self.in_format not in ("bf16", "fp16", "fp32", "fp64"):
            raise ValueError(f"in_format must be bf16, fp16, fp32 or fp64, got {self.in_format!r}")
        if self.out_format not in _WORK:
            raise ValueError(f"out_format must be fp32 or fp64, got {self.out_format!r}")
        if not isinstance(self.accumulation, Accumulation):
            raise TypeError("accumulation must be an Accumulation")


@dataclass(frozen=True)
class Policy:
    """Per-stage formats and roundings of the emulated FlashAttention (see module docs).

    Attributes
    ----------
    name : str
        A label recorded in results.
    work : {"fp32", "fp64"}
        Format of every vector stage (scores scaling, max, exp, sums, O, rescale, division).
        Arithmetic is IEEE round-to-nearest-even with gradual underflow.
    qk, pv : MatmulPolicy
        The two matrix-unit products.
    exp : {"cr", "poly"}
        ``"cr"``: exp correctly rounded to ``work``; ``"poly"``: the polynomial exp2 model.
    p_cast, p_cast_rounding
        Format (None: no cast; one of :data:`P_CAST_FORMATS`) and rounding of the P (or
        A = P r^) cast before ``P V``. The FP8 formats saturate to their largest finite
        value (PTX ``cvt.rn.satfinite``); the 16-bit ones do not.
    p_scale : float
        The static scale ``S`` of the P cast: the cast sees ``fl(P * S)`` and the block's
        product is divided back, ``PV = fl(PV' / S)`` (``S`` rounded to ``work``; a power of
        two is exact outside the subnormal range). 1.0: no scaling (both steps skipped).
    kv_order : {"forward", "reverse"}
        The order in which the KV blocks are visited (block boundaries do not change).
    r_cast, r_cast_rounding
        Format and rounding of AMLA's r^ = cast(r) (None: r^ = r).
    o_lowp, o_lowp_rounding
        Format and rounding of O between blocks in ``fa_bf16`` (None: O stays in ``work``).
    rowsum : {"pairwise", "seq", "exact"}
        Order of the row sum of P within a block.
    rescale : {"int_add", "exact"}
        AMLA's rescale: the INT32 add of ``N_j`` to the FP32 bits, or the exact
        multiplication by ``2**dn_j * cof_{j-1}/cof_j`` it approximates.
    dn_clamp : int or None
        Lower clamp of ``dn_j`` in ``N_j`` (the kernel's -30); None: no clamp.
    eps_bias : float
        The constant added to ``eps_j`` (the kernel's 1e-6).
    o_clip : float or None
        If set, elements of the final O with ``|O| > o_clip`` or NaN are replaced by 0
        before the final division (the CANN MLA kernel's second vector stage does this
        with 1e10; preset ``"cann"``). None (``"ascend"``): hazards stay visible.
    """

    name: str = "custom"
    work: str = "fp32"
    qk: MatmulPolicy = field(default_factory=MatmulPolicy)
    pv: MatmulPolicy = field(default_factory=MatmulPolicy)
    exp: str = "cr"
    p_cast: str | None = "bf16"
    p_cast_rounding: str = "rna"
    p_scale: float = 1.0
    kv_order: str = "forward"
    r_cast: str | None = "bf16"
    r_cast_rounding: str = "rna"
    o_lowp: str | None = "bf16"
    o_lowp_rounding: str = "rne"
    rowsum: str = "pairwise"
    rescale: str = "int_add"
    dn_clamp: int | None = -30
    eps_bias: float = 1e-6
    o_clip: float | None = None

    def __post_init__(self) -> None:
        checks = [
            ("work", self.work, _WORK),
            ("exp", self.exp, EXP_MODELS),
            ("p_cast", self.p_cast, P_CAST_FORMATS),
            ("kv_order", self.kv_order, KV_ORDERS),
            ("r_cast", self.r_cast, _LOWP),
            ("o_lowp", self.o_lowp, _LOWP),
            ("p_cast_rounding", self.p_cast_rounding, _CAST_MODES),
            ("r_cast_rounding", self.r_cast_rounding, _CAST_MODES),
            ("o_lowp_rounding", self.o_lowp_rounding, _CAST_MODES),
            ("rowsum", self.rowsum, ROWSUM_ORDERS),
            ("rescale", self.rescale, _RESCALE),
        ]
        for arg, value, valid in checks:
            if value not in valid:
                raise ValueError(f"policy field {arg!r} must be one of {valid}, got {value!r}")
        if self.dn_clamp is not None and (not isinstance(self.dn_clamp, int) or self.dn_clamp > 0):
            raise ValueError(
                f"policy field 'dn_clamp' must be a non-positive int or None, got {self.dn_clamp!r}"
            )
        if self.o_clip is not None and not (
            isinstance(self.o_clip, (int, float)) and self.o_clip > 0
        ):
            raise ValueError(
                f"policy field 'o_clip' must be a positive number or None, got {self.o_clip!r}"
            )
        if (
            isinstance(self.p_scale, bool)
            or not isinstance(self.p_scale, (int, float))
            or not (0 < self.p_scale < float("inf"))
        ):
            raise ValueError(
                f"policy field 'p_scale' must be a positive finite number, got {self.p_scale!r}"
            )
        if not isinstance(self.eps_bias, (int, float)):
            raise TypeError(f"policy field 'eps_bias' must be a number, got {self.eps_bias!r}")
        if self.rescale == "int_add" and self.work != "fp32":
            raise ValueError(
                "policy field 'rescale'='int_add' needs work='fp32' (it adds to FP32 bits)"
            )
        for mm in (self.qk, self.pv):
            if not isinstance(mm, MatmulPolicy):
                raise TypeError("policy fields 'qk' and 'pv' must be MatmulPolicy")

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (JSON-serialisable) of every field, nested ones included."""
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        """The policy as a JSON string (keys sorted)."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Policy:
        """Inverse of :meth:`to_dict`."""
        d = dict(d)
        for key in ("qk", "pv"):
            if isinstance(d.get(key), dict):
                mm = dict(d[key])
                mm["accumulation"] = Accumulation(**mm.get("accumulation", {}))
                d[key] = MatmulPolicy(**mm)
        return cls(**d)

    @classmethod
    def from_json(cls, s: str) -> Policy:
        """Inverse of :meth:`to_json`."""
        return cls.from_dict(json.loads(s))

    def replace(self, **changes: Any) -> Policy:
        """A copy with some fields changed (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)


def _ascend() -> Policy:
    return Policy(name="ascend")


def _exact() -> Policy:
    mm = MatmulPolicy("fp64", Accumulation("exact"), "fp64")
    return Policy(
        name="exact",
        work="fp64",
        qk=mm,
        pv=mm,
        p_cast=None,
        r_cast=None,
        o_lowp=None,
        rowsum="pairwise",
        rescale="exact",
        dn_clamp=None,
        eps_bias=0.0,
    )


def _cann() -> Policy:
    return Policy(name="cann", o_clip=1e10)


#: Preset name -> policy.
PRESETS: dict[str, Policy] = {"ascend": _ascend(), "exact": _exact(), "cann": _cann()}


def get_policy(policy: Policy | str | dict | None) -> Policy:
    """Resolve a policy argument: None (``"ascend"``), a preset name, a dict or a Policy.

    Raises
    ------
    ValueError
        Unknown preset name.
    TypeError
        Anything else.
    """
    if policy is None:
        return PRESETS["ascend"]
    if isinstance(policy, Policy):
        return policy
    if isinstance(policy, str):
        if policy not in PRESETS:
            raise ValueError(
                f"unknown policy {policy!r} for argument 'policy'; valid: {', '.join(PRESETS)}"
            )
        return PRESETS[policy]
    if isinstance(policy, dict):
        return Policy.from_dict(policy)
    raise TypeError(
        f"argument 'policy' must be a Policy, a preset name or a dict, got {type(policy).__name__}"
    )

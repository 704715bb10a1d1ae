"""The design space: one rescaling design per point, a grid of them, and the measurement setup.

A :class:`DesignPoint` fixes the rescale arithmetic (a variant: ``fa_fp32``'s FP32 multiply,
AMLA's INT32 exponent add with each compensation, ``lazy``/``fa4``/``skip_scale``'s stale max
with its threshold ``tau``), the P cast format and static scale, the matrix-unit accumulator,
the KV block size, the split count and the chip. A :class:`Grid` is the product of its axes
(the threshold axis applies to the stale-max variants only, in their own units: log2 for
``lazy``/``fa4``, nats for ``skip_scale``). :class:`Measure` fixes the workloads, seeds and
the throughput shape.

The FP8 P path is the ``p_cast`` axis: ``fa_fp32``/``amla`` with an FP8 ``p_cast`` are
costed on the pipeline as ``fa_fp8``/``amla_fp8`` (P in one byte); the other variants keep
two-byte P in the pipeline model (their FP8 data movement is not modelled).

Examples
--------
>>> g = Grid(variants=("amla", "skip_scale"), taus_ln=(0.0, 6.0), p_casts=("bf16", "e4m3"))
>>> len(g.points())
6
>>> p = g.points()[-1]
>>> p.variant, p.tau, p.p_cast, p.tau_units, p.pipeline_variant
('skip_scale', 6.0, 'e4m3', 'ln', 'skip_scale')
>>> p.policy().p_cast, p.policy().p_cast_rounding
('e4m3', 'rne')
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from amla_numerics.analysis.workloads import WORKLOADS
from amla_numerics.flash.accumulate import ACCUMULATION_PRESETS, Accumulation
from amla_numerics.flash.policy import MatmulPolicy, Policy, get_policy
from amla_numerics.pipeline.hardware import HARDWARE_NAMES
from amla_numerics.variants import SPECS, TAU_UNITS, default_tau

__all__ = [
    "ACCUMULATORS",
    "DESIGN_VARIANTS",
    "P_CASTS",
    "SINK_WORKLOAD",
    "DesignPoint",
    "Grid",
    "Measure",
]

#: The rescale arithmetics the explorer varies (the FP8 P path is the ``p_cast`` axis).
DESIGN_VARIANTS: tuple[str, ...] = (
    "fa_fp32",
    "amla",
    "amla_nocomp",
    "amla_exactcomp",
    "amla_fp32r",
    "amla_guarded",
    "lazy",
    "fa4",
    "skip_scale",
)
#: P cast formats (BF16 rounds as the policy says, ties away on Ascend; FP8 rne, saturating).
P_CASTS: tuple[str, ...] = ("bf16", "e4m3", "e5m2")
#: Accumulators: ``"exact"`` (one rounding to FP32 per output) or a matrix-unit preset.
ACCUMULATORS: tuple[str, ...] = ("exact", *ACCUMULATION_PRESETS)
#: The extra workload name: 4 StreamingLLM sink keys 12 nats up (analysis.sinks).
SINK_WORKLOAD = "sinks"
#: A variant -> its FP8 P twin (the variant with the same base and an FP8 ``p_cast``).
_FP8_PIPELINE = {s.base: n for n, s in SPECS.items() if s.base is not None and s.p_cast}


def _names(values: object, valid: tuple[str, ...], arg: str) -> tuple[str, ...]:
    if isinstance(values, str) or not isinstance(values, tuple | list) or not values:
        raise TypeError(f"argument {arg!r} must be a non-empty tuple of names")
    for v in values:
        if v not in valid:
            raise ValueError(
                f"unknown {arg[:-1]} {v!r} in argument {arg!r}; valid: {', '.join(valid)}"
            )
    return tuple(values)


def _numbers(values: object, arg: str, *, positive: bool, integer: bool = False) -> tuple:
    if isinstance(values, str) or not isinstance(values, tuple | list) or not values:
        raise TypeError(f"argument {arg!r} must be a non-empty tuple of numbers")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise TypeError(f"argument {arg!r} must hold numbers, got {v!r}")
        if integer and (not isinstance(v, int) or v < 1):
            raise ValueError(f"argument {arg!r} must hold integers >= 1, got {v!r}")
        if not math.isfinite(v) or (v <= 0 if positive else v < 0):
            bound = "> 0" if positive else ">= 0"
            raise ValueError(f"argument {arg!r} must hold finite numbers {bound}, got {v!r}")
        out.append(int(v) if integer else float(v))
    return tuple(out)


@dataclass(frozen=True)
class DesignPoint:
    """One rescaling design on one chip (see the module docstring)."""

    variant: str
    tau: float | None
    p_cast: str
    p_scale: float
    accumulator: str
    block_n: int | None
    splits: int
    hardware: str

    @property
    def tau_units(self) -> str | None:
        """``"log2"``, ``"ln"`` or None (no threshold)."""
        return TAU_UNITS.get(self.variant)

    @property
    def pipeline_variant(self) -> str:
        """The name the pipeline model costs (FP8 P: ``fa_fp8``/``amla_fp8`` where modelled)."""
        if self.p_cast != "bf16":
            return _FP8_PIPELINE.get(self.variant, self.variant)
        return self.variant

    def policy(self) -> Policy:
        """The emulator's policy: ``"ascend"`` with this P cast, scale and accumulator."""
        pol = get_policy("ascend")
        if self.p_cast != "bf16":
            pol = pol.replace(p_cast=self.p_cast, p_cast_rounding="rne")
        if self.p_scale != 1.0:
            pol = pol.replace(p_scale=self.p_scale)
        if self.accumulator != "exact":
            acc: Accumulation = ACCUMULATION_PRESETS[self.accumulator]
            pol = pol.replace(
                qk=MatmulPolicy(pol.qk.in_format, acc, pol.qk.out_format),
                pv=MatmulPolicy(pol.pv.in_format, acc, pol.pv.out_format),
            )
        return pol

    @property
    def label(self) -> str:
        """A short unique label, e.g. ``skip_scale tau=6ln e4m3 S=1 exact B512 x1 ascend910c``."""
        tau = "" if self.tau is None else f" tau={self.tau:g}{self.tau_units}"
        block = "Bdef" if self.block_n is None else f"B{self.block_n}"
        return (
            f"{self.variant}{tau} {self.p_cast} S={self.p_scale:g} {self.accumulator} "
            f"{block} x{self.splits} {self.hardware}"
        )

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict (with ``tau_units`` and ``pipeline_variant``)."""
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["tau_units"] = self.tau_units
        d["pipeline_variant"] = self.pipeline_variant
        return d


@dataclass(frozen=True)
class Grid:
    """The product of the design axes (validated; ValueError/TypeError naming the axis).

    ``taus_log2`` applies to ``lazy`` and ``fa4``, ``taus_ln`` to ``skip_scale`` (None: the
    variant's default, 8 log2 units or 6 nats); ``block_ns`` None entries mean the chip's
    kernel block (512 on Ascend, 64 on a GPU).
    """

    variants: tuple[str, ...] = ("fa_fp32", "amla", "lazy", "skip_scale")
    taus_log2: tuple[float, ...] | None = None
    taus_ln: tuple[float, ...] | None = None
    p_casts: tuple[str, ...] = ("bf16",)
    p_scales: tuple[float, ...] = (1.0,)
    accumulators: tuple[str, ...] = ("exact",)
    block_ns: tuple[int | None, ...] = (None,)
    splits: tuple[int, ...] = (1,)
    hardware: tuple[str, ...] = ("ascend910c",)

    def __post_init__(self) -> None:
        _names(self.variants, DESIGN_VARIANTS, "variants")
        _names(self.p_casts, P_CASTS, "p_casts")
        _names(self.accumulators, ACCUMULATORS, "accumulators")
        _names(self.hardware, HARDWARE_NAMES, "hardware")
        _numbers(self.p_scales, "p_scales", positive=True)
        _numbers(self.splits, "splits", positive=True, integer=True)
        for arg in ("taus_log2", "taus_ln"):
            if getattr(self, arg) is not None:
                _numbers(getattr(self, arg), arg, positive=False)
        blocks = (
            [b for b in self.block_ns if b is not None] if isinstance(self.block_ns, tuple) else []
        )
        if not isinstance(self.block_ns, tuple) or not self.block_ns:
            raise TypeError("argument 'block_ns' must be a non-empty tuple of integers or None")
        if blocks:
            _numbers(tuple(blocks), "block_ns", positive=True, integer=True)

    def _taus(self, variant: str) -> tuple[float | None, ...]:
        units = TAU_UNITS.get(variant)
        if units is None:
            return (None,)
        given = self.taus_log2 if units == "log2" else self.taus_ln
        return tuple(float(t) for t in given) if given is not None else (default_tau(variant),)

    def points(self) -> tuple[DesignPoint, ...]:
        """Every design point, variants outermost, chips innermost."""
        out = []
        for v in self.variants:
            for tau, pc, s, acc, b, sp, hw in itertools.product(
                self._taus(v),
                self.p_casts,
                self.p_scales,
                self.accumulators,
                self.block_ns,
                self.splits,
                self.hardware,
            ):
                out.append(DesignPoint(v, tau, pc, float(s), acc, b, int(sp), hw))
        return tuple(out)


@dataclass(frozen=True)
class Measure:
    """Where and how the points are measured.

    Attributes
    ----------
    workloads : tuple of str
        Names of :data:`amla_numerics.analysis.workloads.WORKLOADS` or ``"sinks"``.
    seeds : int
        Seeds per workload (0 .. seeds-1); the error interval is Student's t over them.
    rows, kv_len, head_dim : int
        The emulated shape (MLA: ``head_dim = 576``, V the first 512 columns).
    throughput : bool
        Model the throughput (pipeline) too.
    batch, q_len, tp_kv_len : int
        The modelled decode shape (MLA, 128 heads).
    bounds : bool
        Bound the modelled throughput over the chip's unsourced-parameter box
        (:func:`amla_numerics.pipeline.evaluate` with ``bounds=True``: vertices and a
        pattern search, the calibrated constant re-fitted at every point; about a minute a
        point on 2 cores). False: the nominal value only.
    """

    workloads: tuple[str, ...] = ("mla", "drift", SINK_WORKLOAD)
    seeds: int = 3
    rows: int = 8
    kv_len: int = 2048
    head_dim: int = 576
    throughput: bool = True
    batch: int = 32
    q_len: int = 2
    tp_kv_len: int = 4096
    bounds: bool = False

    def __post_init__(self) -> None:
        _names(self.workloads, (*WORKLOADS, SINK_WORKLOAD), "workloads")
        for arg in ("seeds", "rows", "kv_len", "head_dim", "batch", "q_len", "tp_kv_len"):
            v = getattr(self, arg)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"argument {arg!r} must be an integer >= 1, got {v!r}")
        for arg in ("throughput", "bounds"):
            if not isinstance(getattr(self, arg), bool):
                raise TypeError(f"argument {arg!r} must be a bool")

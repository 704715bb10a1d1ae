"""Published anchors, and the fit of each calibration constant on exactly one of them.

An :class:`Anchor` is a published figure with the configuration it is compared to.
Its ``role`` says whether a calibration constant is *fitted* on it (the figure then
matches by construction, and proves nothing) or whether it *checks* the model (every
constant already fixed elsewhere). :func:`fit_constant` reproduces each shipped
constant from its anchor by bisection, so a reader can see the value was fitted, not tuned.

==================  ==========  ================================  ======================
anchor              hardware    role                              published
==================  ==========  ================================  ======================
amla_614            ascend910c  fits ``mmad_overhead_cycles``     614 TFLOPS (86.8 %)
flashmla_660        h800_sxm5   fits ``block_overhead_cycles``    660 TFLOPS
flashmla_3000       h800_sxm5   checks ``hbm_efficiency``         3000 GB/s
==================  ==========  ================================  ======================

Examples
--------
>>> a = ANCHORS["flashmla_3000"]
>>> a.metric, a.target, a.tolerance
('hbm_gbps', 3000.0, 0.1)
>>> abs(anchor_value(a) / a.target - 1) < a.tolerance
True
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from types import MappingProxyType

from amla_numerics.pipeline.hardware import Hardware, load_hardware
from amla_numerics.pipeline.model import PipelineResult, run
from amla_numerics.pipeline.schedule import default_schedule
from amla_numerics.pipeline.shape import AttentionShape

__all__ = ["ANCHORS", "Anchor", "anchor_result", "anchor_value", "fit_constant"]


@dataclasses.dataclass(frozen=True)
class Anchor:
    """A published figure and the configuration the model reproduces it with.

    Attributes
    ----------
    name, hardware, rescale : str
        Anchor name, hardware file, rescale variant.
    workload : Mapping[str, int]
        Keyword arguments of :class:`~amla_numerics.pipeline.shape.AttentionShape`.
    metric : str
        ``"tflops"`` or ``"hbm_gbps"``.
    target, tolerance : float
        The published figure and the accepted relative deviation.
    role : str
        ``"fit <field>"`` or ``"check"``.
    source : str
        Where the figure comes from.
    """

    name: str
    hardware: str
    rescale: str
    workload: Mapping[str, int]
    metric: str
    target: float
    tolerance: float
    role: str
    source: str


def _anchor(
    name: str,
    hardware: str,
    rescale: str,
    metric: str,
    target: float,
    tol: float,
    role: str,
    source: str,
    **workload: int,
) -> Anchor:
    return Anchor(
        name, hardware, rescale, MappingProxyType(workload), metric, target, tol, role, source
    )


#: The published anchors, by name.
ANCHORS: Mapping[str, Anchor] = MappingProxyType(
    {
        a.name: a
        for a in (
            _anchor(
                "amla_614",
                "ascend910c",
                "amla",
                "tflops",
                614.0,
                0.05,
                "fit mmad_overhead_cycles",
                "AMLA abstract: up to 614 TFLOPS, 86.8 % of the theoretical peak on Ascend 910",
                batch=128,
                q_len=2,
                kv_len=16384,
            ),
            _anchor(
                "flashmla_660",
                "h800_sxm5",
                "fa_fp32",
                "tflops",
                660.0,
                0.10,
                "fit block_overhead_cycles",
                "FlashMLA README: 660 TFLOPS compute-bound on H800 SXM5 (s_q = 2)",
                batch=128,
                q_len=2,
                kv_len=8192,
            ),
            _anchor(
                "flashmla_3000",
                "h800_sxm5",
                "fa_fp32",
                "hbm_gbps",
                3000.0,
                0.10,
                "check",
                "FlashMLA README: 3000 GB/s memory-bound on H800 SXM5 (s_q = 1; 16 query heads)",
                batch=128,
                q_len=1,
                kv_len=8192,
                heads=16,
            ),
        )
    }
)


def anchor_result(anchor: Anchor, hw: Hardware | None = None) -> PipelineResult:
    """Simulate ``anchor``'s configuration (on ``hw``, default: its shipped hardware file)."""
    hw = hw or load_hardware(anchor.hardware)
    res = run(hw, AttentionShape(**anchor.workload), default_schedule(hw, anchor.rescale))
    assert isinstance(res, PipelineResult)
    return res


def anchor_value(anchor: Anchor, hw: Hardware | None = None) -> float:
    """The modelled value of ``anchor.metric`` for ``anchor``'s configuration."""
    return float(getattr(anchor_result(anchor, hw), anchor.metric))


def fit_constant(
    anchor: Anchor, field: str, lo: float = 0.0, hi: float = 4000.0, tol: float = 0.5
) -> float:
    """Fit a non-negative overhead ``field`` so that the model meets ``anchor.target``.

    The metric decreases as the overhead grows, so bisection applies; if even ``lo``
    undershoots the target, ``lo`` is returned (the overhead cannot be negative).

    Examples
    --------
    >>> fit_constant(ANCHORS["flashmla_660"], "block_overhead_cycles")
    0.0
    """
    base = load_hardware(anchor.hardware)

    def f(x: float) -> float:
        return anchor_value(anchor, base.replace(**{field: x})) - anchor.target

    if f(lo) <= 0:
        return lo
    if f(hi) > 0:
        raise ValueError(f"fit_constant: {field} above {hi} still overshoots {anchor.name}")
    while hi - lo > tol:
        mid = 0.5 * (lo + hi)
        if f(mid) > 0:
            lo = mid
        else:
            hi = mid
    return round(0.5 * (lo + hi))

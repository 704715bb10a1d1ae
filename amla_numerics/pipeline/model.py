"""The pipeline model's front door: simulate one configuration and report its throughput.

`run` takes a hardware description, an attention shape and a schedule; it computes the
plan once (capacity, split, costs), builds the busiest core's operation graph, simulates
it and reports time,
TFLOPS, utilisation against every named peak, achieved HBM bandwidth, per-engine busy
fractions, the binding engine and the critical-path attribution, next to the analytic
roofline. :func:`evaluate` is the keyword interface the numerics report calls once per
variant.

Examples
--------
>>> r = evaluate("ascend910c", "amla", batch=48, q_len=2, kv_len=4096)
>>> r.bound, r.peak_name, r.blocks_per_core
('AIC.Cube', '48 AIC at 1.8 GHz = 707.8 TFLOPS', 8)
>>> r.roofline_tflops > r.tflops   # the simulation can only be slower than the roofline
True
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from types import MappingProxyType

from amla_numerics.pipeline.analytic import Analytic, analyze
from amla_numerics.pipeline.des import SimResult, simulate
from amla_numerics.pipeline.graph import build_graph
from amla_numerics.pipeline.hardware import Hardware, load_hardware
from amla_numerics.pipeline.plan import make_plan
from amla_numerics.pipeline.schedule import Schedule, default_schedule
from amla_numerics.pipeline.shape import AttentionShape

__all__ = ["PipelineResult", "evaluate", "run"]


@dataclasses.dataclass(frozen=True)
class PipelineResult:
    """Modelled throughput of one configuration (all rates for the whole chip).

    Attributes
    ----------
    hardware, rescale, schedule : str
        Hardware name, rescale variant, schedule order (``preload`` or ``serial``).
    batch, q_len, kv_len, heads : int
        The workload.
    time_us : float
        Simulated kernel time in microseconds.
    tflops : float
        Useful FLOPs (2 b s_q h s_k (d_qk + d_v)) / time.
    utilization : float
        ``tflops / peak_tflops``.
    peak_tflops, peak_name : float, str
        The derived peak (cores x FLOP/cycle x clock) and its name.
    peaks : Mapping[str, float]
        Utilisation against every named peak (derived, sustained, public).
    hbm_gbps : float
        Compulsory HBM bytes (KV cache once, Q and output) / time.
    bound : str
        The binding engine or shared resource: the largest share of the critical path.
    engines : Mapping[str, float]
        Pipe or shared resource -> busy fraction of the simulated time.
    critical_path : Mapping[str, float]
        Pipe, resource or ``latency`` -> fraction of the critical path.
    roofline_tflops, roofline_bound : float, str
        The analytic layer's bound (the simulation can only be slower).
    blocks_per_core, active_cores : int
        The busiest core's KV blocks and the cores that received work.
    """

    hardware: str
    rescale: str
    schedule: str
    batch: int
    q_len: int
    kv_len: int
    heads: int
    time_us: float
    tflops: float
    utilization: float
    peak_tflops: float
    peak_name: str
    peaks: Mapping[str, float]
    hbm_gbps: float
    bound: str
    engines: Mapping[str, float]
    critical_path: Mapping[str, float]
    roofline_tflops: float
    roofline_bound: str
    blocks_per_core: int
    active_cores: int

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict of every field.

        Examples
        --------
        >>> import json
        >>> d = evaluate("ascend910c", "fa_fp32", batch=2, q_len=1, kv_len=1024).to_dict()
        >>> {"tflops", "utilization", "peak_tflops", "peak_name", "bound", "engines",
        ...  "time_us", "hbm_gbps"} <= set(d)
        True
        >>> json.loads(json.dumps(d))["engines"]["AIC.Cube"] == d["engines"]["AIC.Cube"]
        True
        """
        out: dict[str, object] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out[f.name] = dict(v) if isinstance(v, Mapping) else v
        return out


def _bound(sim: SimResult, cp: Mapping[str, float]) -> str:
    """The engine or resource holding the largest share of the critical path."""
    cands = {k: v for k, v in cp.items() if k != "latency"}
    if not cands:
        return "latency"
    best = max(cands, key=cands.__getitem__)
    return "latency" if cp.get("latency", 0.0) > cands[best] else best


def run(
    hw: Hardware, wl: AttentionShape, sch: Schedule, *, keep_sim: bool = False
) -> PipelineResult | tuple[PipelineResult, SimResult]:
    """Simulate ``wl`` under ``sch`` on ``hw``.

    Parameters
    ----------
    hw, wl, sch
        Hardware description, workload and schedule.
    keep_sim : bool
        Also return the :class:`~amla_numerics.pipeline.des.SimResult` (for traces and plots).

    Raises
    ------
    ValueError
        If the tiling does not fit (naming the schedule field and the buffer).

    Examples
    --------
    >>> hw = load_hardware("ascend910c")
    >>> wl = AttentionShape(batch=48, q_len=2, kv_len=4096)
    >>> pre = run(hw, wl, default_schedule(hw, "fa_fp32"))
    >>> ser = run(hw, wl, default_schedule(hw, "fa_fp32", order="serial"))
    >>> ser.time_us > pre.time_us
    True
    """
    plan = make_plan(hw, wl, sch)
    ana: Analytic = analyze(plan)
    built = build_graph(plan)
    sim = simulate(built.graph)
    cycles = sim.makespan
    time_us = cycles / built.clock_ghz * 1e-3
    tflops = wl.flops / time_us * 1e-6
    peaks = hw.peaks()
    name, peak = peaks[0]
    engines = {k: v / cycles for k, v in sim.pipe_busy().items()}
    engines.update({k: v / cycles for k, v in sim.resource_busy().items()})
    cp = sim.critical_path_attribution()
    res = PipelineResult(
        hardware=hw.name,
        rescale=sch.rescale,
        schedule=sch.order,
        batch=wl.batch,
        q_len=wl.q_len,
        kv_len=wl.kv_len,
        heads=wl.heads,
        time_us=time_us,
        tflops=tflops,
        utilization=tflops / peak,
        peak_tflops=peak,
        peak_name=name,
        peaks=MappingProxyType({n: tflops / p for n, p in peaks}),
        hbm_gbps=wl.hbm_bytes / time_us * 1e-3,
        bound=_bound(sim, cp),
        engines=MappingProxyType(engines),
        critical_path=MappingProxyType(cp),
        roofline_tflops=ana.tflops,
        roofline_bound=ana.bound,
        blocks_per_core=built.blocks,
        active_cores=built.active_cores,
    )
    return (res, sim) if keep_sim else res


def evaluate(
    hardware: str | os.PathLike[str] | Hardware = "ascend910c",
    rescale: str = "amla",
    *,
    batch: int = 128,
    q_len: int = 2,
    kv_len: int = 16384,
    heads: int = 128,
    rescale_prob: float | None = None,
    schedule: str = "preload",
) -> PipelineResult:
    """Modelled throughput of the MLA decode kernel for one rescale variant.

    Parameters
    ----------
    hardware : str, path or Hardware
        A shipped hardware name (``ascend910c`` ...), a TOML path, or a loaded description.
    rescale : str
        Any name in :data:`amla_numerics.variants.VARIANTS`.
    batch, q_len, kv_len, heads : int
        The MLA decode workload (d_qk 576, d_v 512, BF16 cache).
    rescale_prob : float, optional
        ``lazy`` only: the fraction of blocks that rescale (None: the documented default
        :data:`~amla_numerics.pipeline.rescale.DEFAULT_LAZY_RESCALE_PROB`).
    schedule : str
        ``"preload"`` (depth 2, as in the AMLA kernel) or ``"serial"``. On ``h800_sxm5``
        the FlashMLA model's own order is ``"serial"`` (see docs/pipeline.md).

    Returns
    -------
    PipelineResult

    Examples
    --------
    >>> a = evaluate(rescale="amla", batch=32, kv_len=4096)
    >>> f = evaluate(rescale="fa_fp32", batch=32, kv_len=4096)
    >>> a.tflops > f.tflops
    True
    """
    hw = hardware if isinstance(hardware, Hardware) else load_hardware(hardware)
    wl = AttentionShape(batch=batch, q_len=q_len, kv_len=kv_len, heads=heads)
    sch = default_schedule(hw, rescale, order=schedule, rescale_prob=rescale_prob)
    return run(hw, wl, sch)  # type: ignore[return-value]

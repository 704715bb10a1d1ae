"""The pipeline model's front door: simulate one configuration and report its throughput.

`run` takes a hardware description, an attention shape and a schedule; it computes the
plan once (capacity, split, costs), builds the busiest core's operation graph, simulates
it and reports time,
TFLOPS, utilisation against every named peak, achieved HBM bandwidth, per-engine busy
fractions, the binding engine and the critical-path attribution, next to the analytic
roofline. :func:`~amla_numerics.pipeline.evaluation.evaluate` is the keyword interface
the numerics report calls once per variant.

Examples
--------
>>> from amla_numerics.pipeline import AttentionShape, default_schedule, load_hardware
>>> hw = load_hardware("ascend910c")
>>> r = run(hw, AttentionShape(48, 2, 4096), default_schedule(hw, "amla"))
>>> r.bound, r.peak_name, r.blocks_per_core
('AIC.Cube', '48 AIC at 1.8 GHz = 707.8 TFLOPS', 8)
>>> r.roofline_tflops > r.tflops   # the simulation can only be slower than the roofline
True
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from types import MappingProxyType

from amla_numerics.pipeline.analytic import Analytic, analyze, block_demand, piece_demand
from amla_numerics.pipeline.des import SimResult, simulate
from amla_numerics.pipeline.graph import build_graph
from amla_numerics.pipeline.hardware import Hardware
from amla_numerics.pipeline.periodic import PeriodicSim, PeriodicSimulator
from amla_numerics.pipeline.plan import (
    Combine,
    Plan,
    chip_bandwidth,
    combine_cost,
    make_plan,
    tile_keys,
)
from amla_numerics.pipeline.schedule import Schedule
from amla_numerics.pipeline.shape import AttentionShape

__all__ = ["PipelineResult", "kernel_traffic", "run"]


@dataclasses.dataclass(frozen=True)
class PipelineResult:
    """Modelled throughput of one configuration (all rates for the whole chip).

    Attributes
    ----------
    hardware, variant, schedule : str
        Hardware name, variant or model design, schedule order (``preload`` or ``serial``).
    batch, q_len, kv_len, heads, kv_heads : int
        The shape.
    time_us : float
        Kernel time in microseconds: the simulated busiest core, plus the fixed launch
        cost, plus the split-KV combine.
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
    launch_us, combine_us : float
        The fixed launch cost and the split-KV combine's time (0 without split tasks).
    splits : int
        The largest number of pieces a task was split into (1: no combine).
    l2_working_set, l2_spill : float
        Bytes of GM workspaces all cores keep live, and the fraction of their traffic that
        spills to HBM (0 when they fit L2).
    traffic_bytes : Mapping[str, float]
        Whole-kernel ``hbm_read``, ``hbm_write``, ``l2_read``, ``l2_write`` bytes.
    tflops_range, time_us_range, utilization_range : tuple of float or None
        (lo, hi) bounds over the unsourced parameters' box (:mod:`.sensitivity`); None
        unless asked for.
    range_points : Mapping or None
        ``fastest`` / ``slowest`` -> the parameter values (and the re-fitted constant) that
        reach each end of ``time_us_range``.
    range_note : str or None
        How the ends were found (search, calibration, excluded points).
    """

    hardware: str
    variant: str
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
    kv_heads: int = 1
    launch_us: float = 0.0
    combine_us: float = 0.0
    splits: int = 1
    l2_working_set: float = 0.0
    l2_spill: float = 0.0
    traffic_bytes: Mapping[str, float] = dataclasses.field(
        default_factory=lambda: MappingProxyType({})
    )
    tflops_range: tuple[float, float] | None = None
    time_us_range: tuple[float, float] | None = None
    utilization_range: tuple[float, float] | None = None
    range_points: Mapping[str, Mapping[str, float]] | None = None
    range_note: str | None = None

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict of every field.

        Examples
        --------
        >>> import json
        >>> from amla_numerics.pipeline import AttentionShape, default_schedule, load_hardware
        >>> hw = load_hardware("ascend910c")
        >>> d = run(hw, AttentionShape(2, 1, 1024), default_schedule(hw, "fa_fp32")).to_dict()
        >>> {"tflops", "utilization", "peak_tflops", "peak_name", "bound", "engines",
        ...  "time_us", "hbm_gbps"} <= set(d)
        True
        >>> json.loads(json.dumps(d))["engines"]["AIC.Cube"] == d["engines"]["AIC.Cube"]
        True
        """
        out: dict[str, object] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Mapping):
                v = {k: dict(x) if isinstance(x, Mapping) else x for k, x in v.items()}
            out[f.name] = v
        return out


def _bound(cp: Mapping[str, float]) -> str:
    """The engine or resource holding the largest share of the critical path."""
    cands = {k: v for k, v in cp.items() if k != "latency"}
    if not cands:
        return "latency"
    best = max(cands, key=cands.__getitem__)
    return "latency" if cp.get("latency", 0.0) > cands[best] else best


def _shared_rates(plan: Plan, demand: dict[str, float], span: float) -> dict[str, float]:
    """Rates one core sees if it runs ``span`` cycles and moves ``demand`` bytes per chip resource.

    Processor sharing among the N active cores, which run the same work out of phase: the
    other N - 1 use ``demand / span`` bytes per cycle each on average, so this core gets
    what they leave, ``B - (N - 1) demand / span``, and never less than the static share B / N.
    """
    n = plan.split.active_cores
    chip = chip_bandwidth(plan.hw)
    rates = dict(plan.rates)
    for r, b in chip.items():
        rates[r] = max(b / n, b - (n - 1) * demand.get(r, 0.0) / span)
    return rates


def _simulate(
    plan: Plan, ana: Analytic, reference: bool = False
) -> tuple[Plan, SimResult | PeriodicSim, float]:
    """Simulate with the chip resources processor-shared among the active cores.

    The rates depend on the kernel time T (:func:`_shared_rates`) and T on the rates: a
    fixed point T = sim(rates(T)). f(T) = sim(rates(T)) - T decreases in T; it is >= 0 at
    the analytic roofline T0 (a lower bound) and <= 0 at T1 = sim(rates(T0)), so one
    regula-falsi step between them and a final simulation give the root (3 simulations; 1
    when the rates do not move or the chip resources hold < 1 % of the critical path: a
    faster resource that binds nothing changes nothing). The result is also held to the
    chip-bandwidth roofline (N cores x bytes / B).

    Each simulation runs the block sequence with its periodic runs extrapolated
    (:mod:`~amla_numerics.pipeline.periodic`); ``reference`` simulates every block.
    """
    chip = chip_bandwidth(plan.hw)
    demand = {r: ana.engine_cycles.get(r, 0.0) * plan.rates[r] for r in chip}  # bytes
    t0 = max(ana.engine_cycles.values())
    if reference:
        graph = build_graph(plan).graph  # the ops do not depend on the rates: built once

        def sim_at(span: float) -> SimResult | PeriodicSim:
            graph.set_rates(_shared_rates(plan, demand, span))
            return simulate(graph)

    else:
        fast = PeriodicSimulator(plan)

        def sim_at(span: float) -> SimResult | PeriodicSim:
            return fast(_shared_rates(plan, demand, span))

    sim = sim_at(t0)
    t1 = sim.makespan
    r0, r1 = _shared_rates(plan, demand, t0), _shared_rates(plan, demand, t1)
    on_path = sum(sim.critical_path_attribution().get(r, 0.0) for r in chip)
    if on_path > 0.01 and max(abs(r1[r] / r0[r] - 1.0) for r in chip) > 0.005:
        f0 = t1 - t0
        f1 = sim_at(t1).makespan - t1
        t2 = t0 + f0 * (t1 - t0) / (f0 - f1) if f0 - f1 > 0 else t1
        sim = sim_at(t2)
    floor = max((ana.engine_cycles.get(r, 0.0) for r in chip), default=0.0)
    return plan, sim, max(sim.makespan, floor)


def kernel_traffic(plan: Plan, combine: Combine) -> dict[str, float]:
    """Whole-kernel HBM and L2 read/write bytes (every task, no split, plus the combine)."""
    wl = plan.shape
    tiles = plan.split.row_tiles
    hbm = l2r = l2w = 0.0
    for t, m in enumerate(tiles):
        keys = tile_keys(wl, plan.schedule, t)
        nb = -(-keys // plan.schedule.kv_block)
        sizes = [plan.schedule.kv_block] * (nb - 1) + [keys - (nb - 1) * plan.schedule.kv_block]
        for d in [piece_demand(plan, m)] + [
            block_demand(plan, m, n, rescaled=j > 0) for j, n in enumerate(sizes)
        ]:
            hbm += d.traffic["HBM (chip share)"]
            if plan.hw.kind == "gpu":
                l2r += d.traffic["L2 read (per SM)"]
            else:
                l2r += d.traffic["L2 read port"]
                l2w += d.traffic["L2 write port"]
    g = wl.groups
    out = wl.groups * wl.rows * wl.d_v * 2  # the BF16 output of every group
    if plan.hw.kind == "gpu":  # O leaves the registers once: the output store
        return {
            "hbm_read": hbm * g - out,
            "hbm_write": float(out),
            "l2_read": l2r * g + combine.read,
            "l2_write": float(out) + combine.write,
        }
    hbm_write = out + plan.spill * max(0.0, l2w * g - out)
    hbm_total = hbm * g  # the Ascend piece demand charges the output store to HBM
    return {
        "hbm_read": hbm_total - hbm_write,
        "hbm_write": hbm_write,
        "l2_read": l2r * g + combine.read,
        "l2_write": l2w * g + combine.write,
    }


def run(
    hw: Hardware,
    wl: AttentionShape,
    sch: Schedule,
    *,
    keep_sim: bool = False,
    reference: bool = False,
) -> PipelineResult | tuple[PipelineResult, SimResult]:
    """Simulate ``wl`` under ``sch`` on ``hw``.

    Parameters
    ----------
    hw, wl, sch
        Hardware description, shape and schedule.
    keep_sim : bool
        Also return the :class:`~amla_numerics.pipeline.des.SimResult` of every block (for
        traces and plots; implies ``reference``).
    reference : bool
        Simulate every block of the busiest core (the reference event simulation) instead of
        extrapolating its periodic runs (:mod:`~amla_numerics.pipeline.periodic`; equal to
        rounding, tested on a benchmark set).

    Raises
    ------
    ValueError
        If the tiling does not fit (naming the schedule field and the buffer).

    Examples
    --------
    >>> from amla_numerics.pipeline import AttentionShape, default_schedule, load_hardware
    >>> hw = load_hardware("ascend910c")
    >>> wl = AttentionShape(batch=48, q_len=2, kv_len=4096)
    >>> pre = run(hw, wl, default_schedule(hw, "fa_fp32"))
    >>> ser = run(hw, wl, default_schedule(hw, "fa_fp32", order="serial"))
    >>> ser.time_us > pre.time_us
    True
    """
    plan = make_plan(hw, wl, sch)
    ana: Analytic = analyze(plan)
    _, sim, cycles = _simulate(plan, ana, reference or keep_sim)
    comb = combine_cost(plan)
    launch = hw["launch_us"]
    time_us = cycles / plan.clock_ghz * 1e-3 + launch + comb.time_us
    tflops = wl.flops / time_us * 1e-6
    peaks = hw.peaks()
    name, peak = peaks[0]
    engines = {k: v / cycles for k, v in sim.pipe_busy().items()}
    engines.update({k: v / cycles for k, v in sim.resource_busy().items()})
    cp = sim.critical_path_attribution()
    roof_us = ana.time_us + launch + comb.time_us
    res = PipelineResult(
        hardware=hw.name,
        variant=sch.variant,
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
        bound=_bound(cp),
        engines=MappingProxyType(engines),
        critical_path=MappingProxyType(cp),
        roofline_tflops=wl.flops / roof_us * 1e-6,
        roofline_bound=ana.bound,
        blocks_per_core=plan.split.blocks_per_core,
        active_cores=plan.split.active_cores,
        kv_heads=wl.kv_heads,
        launch_us=launch,
        combine_us=comb.time_us,
        splits=plan.split.max_splits,
        l2_working_set=float(plan.capacity["L2"][0]),
        l2_spill=plan.spill,
        traffic_bytes=MappingProxyType(kernel_traffic(plan, comb)),
    )
    if keep_sim:
        assert isinstance(sim, SimResult)
        return res, sim
    return res

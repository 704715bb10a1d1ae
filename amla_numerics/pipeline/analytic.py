"""The analytic layer: per-KV-block demand on every engine, and the roofline bound.

For one KV block of ``n`` tokens and a row tile of ``m`` rows, :func:`block_demand`
sums the plan's stage costs (:class:`~amla_numerics.pipeline.plan.Plan`) into the
cycles each engine needs (Cube, MTE1, MTE2, Fixpipe, Vector, MTE3 on Ascend; tensor
cores, SIMT and the load pipe on a GPU) and the bytes each shared resource
carries (L2 ports, the core's share of chip L2 and HBM
bandwidth).
:func:`analyze` sums them over the busiest core's blocks: the largest total is the
roofline bound of the schedule, which the discrete-event simulation can only exceed.

Examples
--------
>>> from amla_numerics.pipeline import AttentionShape, default_schedule, load_hardware, make_plan
>>> hw = load_hardware("ascend910c")
>>> a = analyze(make_plan(hw, AttentionShape(128, 2, 16384), default_schedule(hw, "amla")))
>>> a.bound, a.blocks_per_core
('AIC.Cube', 86)
>>> round(a.demand.flops / 2**20)   # 2*256*512*1088 FLOP per block
272
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from types import MappingProxyType

from amla_numerics.pipeline.plan import Plan

__all__ = [
    "Analytic",
    "BlockDemand",
    "analyze",
    "block_demand",
    "piece_demand",
    "workload_totals",
]


@dataclasses.dataclass(frozen=True)
class BlockDemand:
    """Demand of one KV block on one core.

    ``engines`` maps an engine (``"AIC.Cube"``, ``"AIV.Vector"`` ...; the AIV entries are
    per vector core) to cycles; ``traffic`` maps a shared resource to bytes.
    """

    flops: float
    engines: Mapping[str, float]
    traffic: Mapping[str, float]


def block_demand(plan: Plan, m: int, n: int, *, rescaled: bool = True) -> BlockDemand:
    """Per-engine cycles and per-resource bytes of one block of ``m`` rows x ``n`` tokens.

    The sum of the plan's stage costs (:mod:`~amla_numerics.pipeline.plan`); ``m`` is the
    (16-padded) row tile, ``n`` the block's real token count. ``rescaled`` False is the
    first block of a piece (no rescale of O); otherwise the variant's rescale probability
    weighs the O work.

    Notes
    -----
    Ascend, with p the rescale probability, b the KV bytes per element and o the O bytes
    per element in GM::

        Cube   = 2 m n16 (d_qk + d_v) / FLOP_per_cycle + overhead x (MMAD tiles)
        MTE2   = K (n d_qk b) + V (n d_v b) + A (m n 2) bytes
        FIX    = S (m n 4) + PV (m d_v o) bytes
        Vector = (m/2) n 4 / 256 (softmax passes) + p (m/2) d_v 4 / 256 (O passes) repeats
        HBM    = n d_qk b / (row tiles per request)  (K read once per request; V = K[:, :d_v])

    Examples
    --------
    >>> from amla_numerics.pipeline import (AttentionShape, default_schedule, load_hardware,
    ...     make_plan)
    >>> hw = load_hardware("ascend910c")
    >>> plan = make_plan(hw, AttentionShape(1, 2, 512), default_schedule(hw, "fa_fp32"))
    >>> d = block_demand(plan, 256, 512)
    >>> d.engines["AIC.Cube"], d.traffic["HBM (chip share)"]   # 34816 + 16 tiles x 279
    (39280.0, 589824.0)
    """
    hw, wl = plan.hw, plan.shape
    p = plan.cost.probability if rescaled else 0.0
    flops = 2.0 * m * n * (wl.d_qk + wl.d_v)
    if hw.kind == "gpu":
        g = plan.gpu_block(m, n, p)
        engines = {
            "SM.Tensor": g.qk + g.pv,
            "SM.SIMT": g.simt,
            "SM.Load": g.load / hw["l2_read_bpc"],
        }
        traffic = {"L2 read (per SM)": g.load, "HBM (chip share)": g.hbm}
        return BlockDemand(flops, MappingProxyType(engines), MappingProxyType(traffic))
    c1, c2, v1 = plan.c1(m, n), plan.c2(m, n), plan.v1(m, n)
    nv = plan.nv
    if plan.cost.design == "atomic":
        ro = plan.rescale_o(m)
        o = (p * ro.read, p * ro.vec, p * ro.write, p * ro.atomic, p * ro.hbm)
    else:
        o = plan.update_o(m, first=not rescaled)
    aic_mte2 = c1.mte2 + c2.mte2
    fix = c1.fix + c2.fix
    aiv_read = v1.read + o[0]
    aiv_write = v1.write + o[2]
    aiv_atomic = o[3]
    l2r = aic_mte2 + nv * aiv_read
    l2w = fix + nv * (aiv_write + aiv_atomic)
    rmw = c1.fix + plan.fix_l2_bytes(c2.fix) - fix + nv * aiv_atomic * plan.rmw
    engines = {
        "AIC.MTE2": aic_mte2 / hw["l2_read_bpc"],
        "AIC.MTE1": (c1.mte1 + c2.mte1) / hw["mte1_bpc"],
        "AIC.Cube": c1.cube + c2.cube,
        "AIC.FIX": fix / hw["fix_bpc"],
        "AIV.MTE2": aiv_read / hw["aiv_mte2_bpc"],
        "AIV.Vector": v1.vec + o[1],
        "AIV.MTE3": aiv_write / hw["mte3_bpc"] + aiv_atomic / hw["atomic_bpc"],
    }
    traffic = {
        "L2 read port": l2r,
        "L2 write port": l2w,
        "L2 (chip share)": l2r + l2w + rmw,
        "HBM (chip share)": c1.hbm + c2.hbm + nv * (v1.hbm + o[4]),
    }
    return BlockDemand(flops, MappingProxyType(engines), MappingProxyType(traffic))


def piece_demand(plan: Plan, m: int) -> BlockDemand:
    """The once-per-piece work: load Q of the row tile; on Ascend also normalise and store O.

    Examples
    --------
    >>> from amla_numerics.pipeline import (AttentionShape, default_schedule, load_hardware,
    ...     make_plan)
    >>> hw = load_hardware("ascend910c")
    >>> d = piece_demand(make_plan(hw, AttentionShape(1, 2, 512), default_schedule(hw)), 256)
    >>> d.traffic["HBM (chip share)"] == 256 * (576 + 512) * 2   # Q in, output out (BF16)
    True
    """
    hw = plan.hw
    q = plan.q_bytes(m)
    if hw.kind == "gpu":  # Q in; the tile's BF16 output stored once (TMA store to HBM)
        out = plan.out_bytes(m)
        engines = {"SM.Load": (q + out) / hw["l2_read_bpc"]}
        traffic = {"L2 read (per SM)": q, "HBM (chip share)": q + out}
        return BlockDemand(0.0, MappingProxyType(engines), MappingProxyType(traffic))
    nv = plan.nv
    v2 = plan.v2(m)
    engines = {
        "AIC.MTE2": q / hw["l2_read_bpc"],
        "AIV.MTE2": v2.read / hw["aiv_mte2_bpc"],
        "AIV.Vector": v2.vec,
        "AIV.MTE3": v2.write / hw["mte3_bpc"],
    }
    traffic = {
        "L2 read port": q + nv * v2.read,
        "L2 write port": nv * v2.write,
        "L2 (chip share)": q + nv * (v2.read + v2.write),
        "HBM (chip share)": q + nv * v2.hbm,
    }
    return BlockDemand(0.0, MappingProxyType(engines), MappingProxyType(traffic))


@dataclasses.dataclass(frozen=True)
class Analytic:
    """The roofline of one configuration on its busiest core.

    Attributes
    ----------
    demand : BlockDemand
        A steady-state block (full size, rescaled).
    blocks_per_core : int
        Blocks the busiest core processes.
    active_cores : int
        Cores that receive work.
    engine_cycles : Mapping[str, float]
        Engine or resource -> total cycles on the busiest core.
    bound : str
        The engine or resource with the most cycles.
    time_us : float
        The roofline time (the bound's cycles / clock).
    tflops : float
        Workload FLOPs / roofline time.
    clock_ghz : float
        The clock the cycles are counted in.
    """

    demand: BlockDemand
    blocks_per_core: int
    active_cores: int
    engine_cycles: Mapping[str, float]
    bound: str
    time_us: float
    tflops: float
    clock_ghz: float


def analyze(plan: Plan) -> Analytic:
    """Sum per-block demands over the busiest core and take the largest (the roofline)."""
    rates = plan.rates
    totals: dict[str, float] = {}
    for m, sizes in plan.split.pieces:
        demands = [piece_demand(plan, m)]
        demands += [block_demand(plan, m, n, rescaled=j > 0) for j, n in enumerate(sizes)]
        for d in demands:
            for k, v in d.engines.items():
                totals[k] = totals.get(k, 0.0) + v
            for k, v in d.traffic.items():
                totals[k] = totals.get(k, 0.0) + v / rates[k]
    clock = plan.clock_ghz
    bound = max(totals, key=totals.__getitem__)
    time_us = totals[bound] / clock * 1e-3
    m0 = plan.split.row_tiles[0]
    steady = block_demand(plan, m0, min(plan.schedule.kv_block, plan.shape.kv_len))
    return Analytic(
        steady,
        plan.split.blocks_per_core,
        plan.split.active_cores,
        MappingProxyType(totals),
        bound,
        time_us,
        plan.shape.flops / time_us * 1e-6,
        clock,
    )


def workload_totals(plan: Plan) -> dict[str, float]:
    """Useful FLOPs and HBM bytes summed over every block of every task, plus Q in and out.

    Independent of how work is split across cores; must equal the closed forms
    :attr:`AttentionShape.flops` and :attr:`AttentionShape.hbm_bytes` (tested against Fractions).

    Examples
    --------
    >>> from amla_numerics.pipeline import (AttentionShape, default_schedule, load_hardware,
    ...     make_plan)
    >>> hw = load_hardware("ascend910c")
    >>> wl = AttentionShape(4, 2, 1000)
    >>> t = workload_totals(make_plan(hw, wl, default_schedule(hw)))
    >>> t["flops"] == wl.flops, t["hbm_bytes"] == wl.hbm_bytes
    (True, True)
    """
    plan = dataclasses.replace(plan, spill=0.0)  # compulsory bytes: no workspace spills
    wl, sch = plan.shape, plan.schedule
    nb = math.ceil(wl.kv_len / sch.kv_block)
    sizes = [sch.kv_block] * (nb - 1) + [wl.kv_len - (nb - 1) * sch.kv_block]
    flops = hbm = 0.0
    for t, m in enumerate(plan.split.row_tiles):
        real = min(sch.m_tile, wl.rows - t * sch.m_tile)
        for j, n in enumerate(sizes):
            d = block_demand(plan, m, n, rescaled=j > 0)
            flops += d.flops / m * real  # d.flops is a multiple of m: exact
            hbm += d.traffic["HBM (chip share)"]
    per_group_io = wl.rows * (wl.d_qk + wl.d_v) * 2  # Q in (BF16), output out (BF16)
    return {"flops": flops * wl.groups, "hbm_bytes": (hbm + per_group_io) * wl.groups}

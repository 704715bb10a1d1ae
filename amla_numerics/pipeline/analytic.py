"""The analytic layer: per-KV-block demand on every engine, and the roofline bound.

For one KV block of ``n`` tokens and a row tile of ``m`` rows, :func:`block_demand`
returns the cycles each engine needs (Cube, MTE1, MTE2, Fixpipe, Vector, MTE3 on
Ascend; tensor cores, SIMT and the load pipe on a GPU) and the bytes each shared
resource carries (L2 ports, the core's share of chip L2 and HBM bandwidth).
:func:`analyze` sums them over the busiest core's blocks: the largest total is the
roofline bound of the schedule, which the discrete-event simulation can only exceed.

Examples
--------
>>> from amla_numerics.pipeline.hardware import load_hardware
>>> from amla_numerics.pipeline.workload import Workload, default_schedule
>>> hw = load_hardware("ascend910c")
>>> a = analyze(hw, Workload(128, 2, 16384), default_schedule(hw, "amla"))
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

from amla_numerics.pipeline.hardware import Hardware
from amla_numerics.pipeline.rescale import SOFTMAX_PASSES, RescaleCost, rescale_cost
from amla_numerics.pipeline.workload import Schedule, Workload, check_capacity

__all__ = [
    "Analytic",
    "BlockDemand",
    "WorkSplit",
    "analyze",
    "block_demand",
    "piece_demand",
    "resource_rates",
    "split_work",
    "workload_totals",
]


def _pad16(x: int) -> int:
    return -(-x // 16) * 16


@dataclasses.dataclass(frozen=True)
class WorkSplit:
    """How the (request, row tile, KV block) work lands on cores.

    ``pieces`` lists the busiest core's pieces as (rows m, list of block token counts).
    """

    tasks: int
    blocks_per_task: int
    active_cores: int
    blocks_per_core: int
    pieces: tuple[tuple[int, tuple[int, ...]], ...]
    row_tiles: tuple[int, ...]


def split_work(hw: Hardware, wl: Workload, sch: Schedule) -> WorkSplit:
    """Distribute the work: whole tasks round-robin, or KV-split evenly (``split_kv``).

    Examples
    --------
    >>> from amla_numerics.pipeline.hardware import load_hardware
    >>> from amla_numerics.pipeline.workload import default_schedule
    >>> hw = load_hardware("ascend910c")
    >>> s = split_work(hw, Workload(128, 2, 16384), default_schedule(hw))
    >>> s.tasks, s.blocks_per_task, s.blocks_per_core, s.active_cores, len(s.pieces)
    (128, 32, 86, 48, 3)
    """
    row_tiles = tuple(_pad16(min(sch.m_tile, wl.rows - i)) for i in range(0, wl.rows, sch.m_tile))
    nb = math.ceil(wl.kv_len / sch.kv_block)
    sizes = [sch.kv_block] * (nb - 1) + [wl.kv_len - (nb - 1) * sch.kv_block]
    cores = int(hw["cores"])
    tasks = wl.batch * len(row_tiles)
    if sch.split_kv:
        total = tasks * nb
        per = math.ceil(total / cores)
        active = math.ceil(total / per)
        # the busiest core: blocks [0, per) of the flattened (task, block) list
        pieces = []
        b = 0
        while b < per:
            task, j = divmod(b, nb)
            take = min(nb - j, per - b)
            pieces.append((row_tiles[task % len(row_tiles)], tuple(sizes[j : j + take])))
            b += take
    else:
        per_tasks = math.ceil(tasks / cores)
        active = math.ceil(tasks / per_tasks)
        per = per_tasks * nb
        pieces = [(row_tiles[t % len(row_tiles)], tuple(sizes)) for t in range(per_tasks)]
    return WorkSplit(tasks, nb, active, per, tuple(pieces), row_tiles)


def resource_rates(hw: Hardware, active_cores: int) -> dict[str, float]:
    """Shared resources seen by one core, in bytes per cycle of the simulation clock."""
    if hw.kind == "gpu":
        clock = hw["sustained_clock_ghz"]
        return {
            "L2 read (per SM)": hw["l2_read_bpc"],
            "HBM (chip share)": hw["hbm_gbps"] * hw["hbm_efficiency"] / clock / active_cores,
        }
    clock = hw["clock_ghz"]
    return {
        "L2 read port": hw["l2_read_bpc"],
        "L2 write port": hw["l2_write_bpc"],
        "L2 (chip share)": hw["l2_chip_gbps"] / clock / active_cores,
        "HBM (chip share)": hw["hbm_gbps"] * hw["hbm_efficiency"] / clock / active_cores,
    }


def spills(hw: Hardware, wl: Workload, sch: Schedule, active_cores: int) -> bool:
    """Whether the naive schedule's whole-row S and P workspaces overflow L2 into HBM."""
    per_task = sch.m_tile * wl.kv_len * (4 + 2)
    return active_cores * per_task > hw["l2_bytes"]


@dataclasses.dataclass(frozen=True)
class BlockDemand:
    """Demand of one KV block on one core.

    ``engines`` maps an engine (``"AIC.Cube"``, ``"AIV.Vector"`` ...; the AIV entries are
    per vector core) to cycles; ``traffic`` maps a shared resource to bytes.
    """

    flops: float
    engines: Mapping[str, float]
    traffic: Mapping[str, float]


def block_demand(
    hw: Hardware,
    wl: Workload,
    sch: Schedule,
    m: int,
    n: int,
    *,
    rescaled: bool = True,
    cost: RescaleCost | None = None,
    spill: bool = False,
) -> BlockDemand:
    """Per-engine cycles and per-resource bytes of one block of ``m`` rows x ``n`` tokens.

    ``m`` is the (16-padded) row tile; ``n`` the block's real token count (the Cube
    computes on ``n`` padded to 16; bytes and useful FLOPs use ``n``).

    Notes
    -----
    Ascend, with p the rescale probability (0 for the first block of a piece),
    b the KV bytes per element and o the O bytes per element in GM::

        Cube   = 2 m n16 (d_qk + d_v) / FLOP_per_cycle + overhead x (MMAD tiles)
        MTE2   = K (n d_qk b) + V (n d_v b) + A (m n 2) bytes
        FIX    = S (m n 4) + PV (m d_v o) bytes
        Vector = (m/2) n 4 / 256 (softmax passes) + p (m/2) d_v 4 / 256 (O passes) repeats
        HBM    = n d_qk b / (row tiles per request)  (K read once per request; V = K[:, :d_v])

    Examples
    --------
    >>> from amla_numerics.pipeline.hardware import load_hardware
    >>> from amla_numerics.pipeline.workload import default_schedule
    >>> hw = load_hardware("ascend910c")
    >>> d = block_demand(hw, Workload(1, 2, 512), default_schedule(hw, "fa_fp32"), 256, 512)
    >>> d.engines["AIC.Cube"], d.traffic["HBM (chip share)"]   # 34816 + 16 tiles x 274
    (39200.0, 589824.0)
    """
    cost = cost or rescale_cost(sch.rescale, sch.rescale_prob)
    p = cost.probability if rescaled else 0.0
    d_qk, d_v, kvb = wl.d_qk, wl.d_v, wl.kv_bytes
    flops = 2.0 * m * n * (d_qk + d_v)
    n16 = _pad16(n)
    k_bytes = n * d_qk * kvb
    tiles = math.ceil(wl.rows / sch.m_tile)
    if hw.kind == "gpu":
        lanes = hw["fp32_lanes"]
        tensor = 2.0 * sch.m_tile * n16 * (d_qk + d_v) / hw.flop_per_cycle
        tensor += hw["block_overhead_cycles"]
        passes = SOFTMAX_PASSES + cost.softmax_extra_passes + (1 if cost.two_pass else 0)
        simt = (
            sch.m_tile * n * passes / lanes
            + sch.m_tile * n / hw["sfu_per_cycle"]
            + p * sch.m_tile * d_v * cost.o_passes / lanes
            + cost.row_ops * sch.m_tile / lanes
        )
        hbm = k_bytes / tiles
        ws = (m * n * (4 * 3 + 2 * 2)) if cost.two_pass else 0.0
        rate = hw["l2_read_bpc"]
        engines = {"SM.Tensor": tensor, "SM.SIMT": simt, "SM.Load": (k_bytes + ws) / rate}
        traffic = {"L2 read (per SM)": k_bytes + ws, "HBM (chip share)": hbm + (ws if spill else 0)}
        return BlockDemand(flops, MappingProxyType(engines), MappingProxyType(traffic))
    tm = math.ceil(m / sch.cube_m)
    tn = math.ceil(n / sch.cube_n)
    tv = math.ceil(d_v / sch.cube_n)
    fpc = hw.flop_per_cycle
    cube = 2.0 * m * n16 * (d_qk + d_v) / fpc + hw["mmad_overhead_cycles"] * (tm * tn + tm * tv)
    mte1 = tn * m * d_qk * 2 + tm * n * d_qk * 2 + tv * m * n * 2 + tm * n * d_v * 2
    aic_mte2 = k_bytes + n * d_v * kvb + m * n * 2
    s_bytes = m * n * 4
    fix = s_bytes + m * d_v * cost.o_store_bytes
    r = m / int(hw["vector_per_core"])
    rep = hw["vector_bytes_per_repeat"]
    s_passes = SOFTMAX_PASSES + cost.softmax_extra_passes
    aiv_read = r * n * 4 + p * r * d_v * cost.o_read_bytes
    aiv_write = r * n * 2 + p * r * d_v * cost.o_write_bytes
    aiv_atomic = p * r * d_v * cost.o_atomic_bytes
    if cost.two_pass:  # a max pass re-reads S; no rescale
        aiv_read += r * n * 4
        s_passes += 1
    vec = (
        r * n * 4 / rep * s_passes
        + p * r * d_v * 4 / rep * cost.o_passes
        + cost.row_ops * math.ceil(r * 4 / rep)
    ) / hw["vector_repeats_per_cycle"]
    mte3 = aiv_write / hw["mte3_bpc"] + aiv_atomic / hw["atomic_bpc"]
    nv = int(hw["vector_per_core"])
    l2r = aic_mte2 + nv * aiv_read
    l2w = fix + nv * (aiv_write + aiv_atomic)
    hbm = k_bytes / tiles
    if cost.two_pass and spill:
        hbm += s_bytes * 3 + m * n * 2 * 2  # S written, read twice; P written, read once
    engines = {
        "AIC.MTE2": aic_mte2 / hw["l2_read_bpc"],
        "AIC.MTE1": mte1 / hw["mte1_bpc"],
        "AIC.Cube": cube,
        "AIC.FIX": fix / hw["fix_bpc"],
        "AIV.MTE2": aiv_read / hw["aiv_mte2_bpc"],
        "AIV.Vector": vec,
        "AIV.MTE3": mte3,
    }
    traffic = {
        "L2 read port": l2r,
        "L2 write port": l2w,
        "L2 (chip share)": l2r + l2w,
        "HBM (chip share)": hbm,
    }
    return BlockDemand(flops, MappingProxyType(engines), MappingProxyType(traffic))


def piece_demand(hw: Hardware, wl: Workload, sch: Schedule, m: int) -> BlockDemand:
    """The once-per-piece work: load Q of the row tile; on Ascend also normalise and store O.

    Examples
    --------
    >>> from amla_numerics.pipeline.hardware import load_hardware
    >>> from amla_numerics.pipeline.workload import default_schedule
    >>> hw = load_hardware("ascend910c")
    >>> d = piece_demand(hw, Workload(1, 2, 512), default_schedule(hw), 256)
    >>> d.traffic["HBM (chip share)"] == 256 * (576 + 512) * 2   # Q in, output out (BF16)
    True
    """
    q = m * wl.d_qk * 2
    if hw.kind == "gpu":
        engines = {"SM.Load": q / hw["l2_read_bpc"]}
        traffic = {"L2 read (per SM)": q, "HBM (chip share)": q}
        return BlockDemand(0.0, MappingProxyType(engines), MappingProxyType(traffic))
    nv = int(hw["vector_per_core"])
    r = m / nv
    o_read, out = r * wl.d_v * 4, r * wl.d_v * 2
    engines = {
        "AIC.MTE2": q / hw["l2_read_bpc"],
        "AIV.MTE2": o_read / hw["aiv_mte2_bpc"],
        "AIV.Vector": 2 * o_read / hw["vector_bytes_per_repeat"] / hw["vector_repeats_per_cycle"],
        "AIV.MTE3": out / hw["mte3_bpc"],
    }
    traffic = {
        "L2 read port": q + nv * o_read,
        "L2 write port": nv * out,
        "L2 (chip share)": q + nv * (o_read + out),
        "HBM (chip share)": q + nv * out,
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


def analyze(hw: Hardware, wl: Workload, sch: Schedule) -> Analytic:
    """Sum per-block demands over the busiest core and take the largest (the roofline)."""
    check_capacity(hw, wl, sch)
    cost = rescale_cost(sch.rescale, sch.rescale_prob)
    split = split_work(hw, wl, sch)
    rates = resource_rates(hw, split.active_cores)
    spill = cost.two_pass and spills(hw, wl, sch, split.active_cores)
    totals: dict[str, float] = {}
    for m, sizes in split.pieces:
        demands = [piece_demand(hw, wl, sch, m)]
        demands += [
            block_demand(hw, wl, sch, m, n, rescaled=j > 0, cost=cost, spill=spill)
            for j, n in enumerate(sizes)
        ]
        for d in demands:
            for k, v in d.engines.items():
                totals[k] = totals.get(k, 0.0) + v
            for k, v in d.traffic.items():
                totals[k] = totals.get(k, 0.0) + v / rates[k]
    clock = hw["sustained_clock_ghz"] if hw.kind == "gpu" else hw["clock_ghz"]
    bound = max(totals, key=totals.__getitem__)
    time_us = totals[bound] / clock * 1e-3
    m0 = split.row_tiles[0]
    steady = block_demand(hw, wl, sch, m0, min(sch.kv_block, wl.kv_len), cost=cost, spill=spill)
    return Analytic(
        steady,
        split.blocks_per_core,
        split.active_cores,
        MappingProxyType(totals),
        bound,
        time_us,
        wl.flops / time_us * 1e-6,
        clock,
    )


def workload_totals(hw: Hardware, wl: Workload, sch: Schedule) -> dict[str, float]:
    """Useful FLOPs and HBM bytes summed over every block of every task, plus Q in and out.

    Independent of how work is split across cores; must equal the closed forms
    :attr:`Workload.flops` and :attr:`Workload.hbm_bytes` (tested against Fractions).

    Examples
    --------
    >>> from amla_numerics.pipeline.hardware import load_hardware
    >>> from amla_numerics.pipeline.workload import default_schedule
    >>> hw = load_hardware("ascend910c")
    >>> wl = Workload(4, 2, 1000)
    >>> t = workload_totals(hw, wl, default_schedule(hw))
    >>> t["flops"] == wl.flops, t["hbm_bytes"] == wl.hbm_bytes
    (True, True)
    """
    cost = rescale_cost(sch.rescale, sch.rescale_prob)
    split = split_work(hw, wl, sch)
    nb = split.blocks_per_task
    sizes = [sch.kv_block] * (nb - 1) + [wl.kv_len - (nb - 1) * sch.kv_block]
    flops = hbm = 0.0
    for t, m in enumerate(split.row_tiles):
        real = min(sch.m_tile, wl.rows - t * sch.m_tile)
        for j, n in enumerate(sizes):
            d = block_demand(hw, wl, sch, m, n, rescaled=j > 0, cost=cost)
            flops += d.flops / m * real  # d.flops is a multiple of m: exact
            hbm += d.traffic["HBM (chip share)"]
    per_request_io = wl.rows * (wl.d_qk + wl.d_v) * 2  # Q in (BF16), output out (BF16)
    return {"flops": flops * wl.batch, "hbm_bytes": (hbm + per_request_io) * wl.batch}

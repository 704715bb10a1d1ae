"""The plan of one configuration, computed once: capacity, work split, rates, spills, clock,
and the per-block cost formulas (the only place they are written).

Both layers read a :class:`Plan`: the analytic roofline
(:mod:`~amla_numerics.pipeline.analytic`) sums its stage costs per engine, the event
simulation (:mod:`~amla_numerics.pipeline.graph`) cuts the same stage costs into
operations. So the two layers cannot disagree on what a block costs.

Stage costs of one KV block of ``m`` rows x ``n`` tokens (Ascend):

- :meth:`Plan.c1` S = Q K^T on the AIC: K bytes through MTE2, MTE1 bytes, Cube cycles, S out by FIX;
- :meth:`Plan.v1` softmax on one AIV (its ``m / vector_per_core`` rows): S in, A out;
- :meth:`Plan.rescale_o` the variant's rescale of O on one AIV (a rescaled block only);
- :meth:`Plan.c2` O += A V on the AIC: V and A in, PV out by FIX;
- :meth:`Plan.v2` once per piece on one AIV: O in, normalise, BF16 out;
- :meth:`Plan.gpu_block` a GPU block: load, tensor (QK, PV), SIMT.

Examples
--------
>>> from amla_numerics.pipeline.hardware import load_hardware
>>> from amla_numerics.pipeline.schedule import default_schedule
>>> from amla_numerics.pipeline.shape import AttentionShape
>>> hw = load_hardware("ascend910c")
>>> p = make_plan(hw, AttentionShape(128, 2, 16384), default_schedule(hw, "amla"))
>>> p.split.blocks_per_core, p.split.active_cores, p.clock_ghz
(86, 48, 1.8)
>>> p.c1(256, 512).cube   # 2*256*512*576/8192 + 274 x (2 x 4 output tiles)
20624.0
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import NamedTuple

from amla_numerics.pipeline.hardware import Hardware
from amla_numerics.pipeline.rescale import SOFTMAX_PASSES, RescaleCost, rescale_cost
from amla_numerics.pipeline.schedule import Schedule, check_capacity
from amla_numerics.pipeline.shape import AttentionShape

__all__ = [
    "CubeStage",
    "GpuBlock",
    "Plan",
    "VectorStage",
    "WorkSplit",
    "make_plan",
    "pad16",
    "resource_rates",
    "spills",
    "split_work",
]


def pad16(x: int) -> int:
    """``x`` rounded up to a multiple of 16 (the Cube's fractal size)."""
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


def split_work(hw: Hardware, wl: AttentionShape, sch: Schedule) -> WorkSplit:
    """Distribute the work: whole tasks round-robin, or KV-split evenly (``split_kv``).

    Examples
    --------
    >>> from amla_numerics.pipeline.hardware import load_hardware
    >>> from amla_numerics.pipeline.schedule import default_schedule
    >>> hw = load_hardware("ascend910c")
    >>> s = split_work(hw, AttentionShape(128, 2, 16384), default_schedule(hw))
    >>> s.tasks, s.blocks_per_task, s.blocks_per_core, s.active_cores, len(s.pieces)
    (128, 32, 86, 48, 3)
    """
    row_tiles = tuple(pad16(min(sch.m_tile, wl.rows - i)) for i in range(0, wl.rows, sch.m_tile))
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


def spills(hw: Hardware, wl: AttentionShape, sch: Schedule, active_cores: int) -> bool:
    """Whether the naive schedule's whole-row S and P workspaces overflow L2 into HBM."""
    per_task = sch.m_tile * wl.kv_len * (4 + 2)
    return active_cores * per_task > hw["l2_bytes"]


class CubeStage(NamedTuple):
    """One AIC stage of a block (totals; the graph cuts them into ``chunks x tm`` ops).

    ``mte2`` bytes through the AIC's MTE2 (L2 read port), ``hbm`` of them from HBM,
    ``mte1`` bytes L1 -> L0, ``cube`` cycles, ``fix`` bytes out through the Fixpipe;
    ``cols`` output column tiles, ``kc`` L1 chunks per column, ``tm`` row sub-tiles.
    """

    mte2: float
    hbm: float
    mte1: float
    cube: float
    fix: float
    cols: int
    kc: int
    tm: int


class VectorStage(NamedTuple):
    """One AIV stage on one vector core (totals over its rows).

    ``read`` bytes GM -> UB, ``vec`` Vector cycles, ``write`` bytes UB -> GM, ``atomic``
    bytes atomically added UB -> GM, ``hbm`` bytes of those from or to HBM.
    """

    read: float
    vec: float
    write: float
    atomic: float
    hbm: float


class GpuBlock(NamedTuple):
    """One GPU block: ``load`` bytes (L2 -> SM), ``hbm`` of them from HBM, tensor cycles of
    QK and PV, SIMT cycles."""

    load: float
    hbm: float
    qk: float
    pv: float
    simt: float


@dataclasses.dataclass(frozen=True)
class Plan:
    """Everything decided before simulating: computed once by :func:`make_plan`.

    Attributes
    ----------
    hw, shape, schedule
        The configuration.
    capacity : Mapping[str, tuple[int, int]]
        Buffer -> (used, capacity) bytes (:func:`~amla_numerics.pipeline.schedule.check_capacity`).
    cost : RescaleCost
        The variant's rescale cost.
    split : WorkSplit
        The busiest core's work.
    rates : Mapping[str, float]
        Shared resource -> bytes per cycle seen by one core.
    spill : bool
        The two-pass workspaces overflow L2.
    clock_ghz : float
        Clock of the simulated cycles.
    """

    hw: Hardware
    shape: AttentionShape
    schedule: Schedule
    capacity: Mapping[str, tuple[int, int]]
    cost: RescaleCost
    split: WorkSplit
    rates: Mapping[str, float]
    spill: bool
    clock_ghz: float

    @property
    def tiles(self) -> int:
        """Row tiles per request (the KV cache is read once per request)."""
        return math.ceil(self.shape.rows / self.schedule.m_tile)

    @property
    def nv(self) -> int:
        """Vector cores per AI core."""
        return int(self.hw["vector_per_core"])

    # -- Ascend stage costs ------------------------------------------------------------
    def q_bytes(self, m: int) -> float:
        """Q of a row tile (BF16), loaded once per piece."""
        return m * self.shape.d_qk * 2

    def c1(self, m: int, n: int) -> CubeStage:
        """S = Q K^T of one block."""
        hw, wl, sch = self.hw, self.shape, self.schedule
        n16 = pad16(n)
        tm, tn = math.ceil(m / sch.cube_m), math.ceil(n / sch.cube_n)
        kq = wl.d_qk // sch.l1_k_qk
        k_bytes = n * wl.d_qk * wl.kv_bytes
        cube = 2.0 * m * n16 * wl.d_qk / hw.flop_per_cycle + hw["mmad_overhead_cycles"] * tm * tn
        mte1 = tn * m * wl.d_qk * 2 + tm * n * wl.d_qk * 2
        return CubeStage(k_bytes, k_bytes / self.tiles, mte1, cube, m * n * 4, tn, kq, tm)

    def c2(self, m: int, n: int) -> CubeStage:
        """O += A V of one block (V = the first d_v columns of the cached rows)."""
        hw, wl, sch = self.hw, self.shape, self.schedule
        n16 = pad16(n)
        tm, tv = math.ceil(m / sch.cube_m), math.ceil(wl.d_v / sch.cube_n)
        kp = math.ceil(n / sch.l1_k_pv)
        mte2 = n * wl.d_v * wl.kv_bytes + m * n * 2  # V slice of the cache + A
        cube = 2.0 * m * n16 * wl.d_v / hw.flop_per_cycle + hw["mmad_overhead_cycles"] * tm * tv
        mte1 = tv * m * n * 2 + tm * n * wl.d_v * 2
        fix = m * wl.d_v * self.cost.o_store_bytes
        return CubeStage(mte2, 0.0, mte1, cube, fix, tv, kp, tm)

    def v1(self, m: int, n: int) -> VectorStage:
        """Online softmax of one block on one AIV (the two-pass schedule re-reads S)."""
        hw, cost = self.hw, self.cost
        r = m / self.nv
        rep, speed = hw["vector_bytes_per_repeat"], hw["vector_repeats_per_cycle"]
        s_passes = SOFTMAX_PASSES + cost.softmax_extra_passes
        read = r * n * 4
        hbm = 0.0
        if cost.two_pass:
            read += r * n * 4
            s_passes += 1
            if self.spill:  # S written, read twice; P written, read once
                hbm = (m * n * 4 * 3 + m * n * 2 * 2) / self.nv
        vec = (r * n * 4 / rep * s_passes + cost.row_ops * math.ceil(r * 4 / rep)) / speed
        return VectorStage(read, vec, r * n * 2, 0.0, hbm)

    def rescale_o(self, m: int) -> VectorStage:
        """The variant's rescale of O on one AIV, for one rescaled block."""
        hw, cost = self.hw, self.cost
        ro = m / self.nv * self.shape.d_v
        vec = ro * 4 / hw["vector_bytes_per_repeat"] * cost.o_passes
        vec /= hw["vector_repeats_per_cycle"]
        return VectorStage(
            ro * cost.o_read_bytes, vec, ro * cost.o_write_bytes, ro * cost.o_atomic_bytes, 0.0
        )

    def v2(self, m: int) -> VectorStage:
        """Normalise O and write the BF16 output, once per piece, on one AIV."""
        hw = self.hw
        r = m / self.nv
        o_read = r * self.shape.d_v * 4
        out = r * self.shape.d_v * 2
        vec = 2 * o_read / hw["vector_bytes_per_repeat"] / hw["vector_repeats_per_cycle"]
        return VectorStage(o_read, vec, out, 0.0, out)

    # -- GPU stage costs ---------------------------------------------------------------
    def gpu_block(self, m: int, n: int, p: float) -> GpuBlock:
        """One block of the ``m``-row tile x ``n`` tokens on one SM (the SM computes a full
        ``m_tile``); ``p`` the fraction of O rescaled (1 or 0 in the simulation)."""
        hw, wl, sch, cost = self.hw, self.shape, self.schedule, self.cost
        k_bytes = n * wl.d_qk * wl.kv_bytes
        ws = m * n * (4 * 3 + 2 * 2) if cost.two_pass else 0.0
        m = sch.m_tile
        lanes = hw["fp32_lanes"]
        passes = SOFTMAX_PASSES + cost.softmax_extra_passes + (1 if cost.two_pass else 0)
        simt = (
            m * n * passes / lanes
            + m * n / hw["sfu_per_cycle"]
            + p * m * wl.d_v * cost.o_passes / lanes
            + cost.row_ops * m / lanes
        )
        fpc = hw.flop_per_cycle
        qk = 2.0 * m * pad16(n) * wl.d_qk / fpc + hw["block_overhead_cycles"]
        pv = 2.0 * m * pad16(n) * wl.d_v / fpc
        hbm = k_bytes / self.tiles + (ws if self.spill else 0.0)
        return GpuBlock(k_bytes + ws, hbm, qk, pv, simt)


def make_plan(hw: Hardware, shape: AttentionShape, schedule: Schedule) -> Plan:
    """Check the tiling and compute the plan of ``shape`` under ``schedule`` on ``hw``.

    Raises
    ------
    ValueError
        If the tiling does not fit a buffer (naming the schedule field and the buffer).
    """
    capacity = check_capacity(hw, shape, schedule)
    cost = rescale_cost(schedule.rescale, schedule.rescale_prob)
    split = split_work(hw, shape, schedule)
    rates = resource_rates(hw, split.active_cores)
    spill = cost.two_pass and spills(hw, shape, schedule, split.active_cores)
    clock = hw["sustained_clock_ghz"] if hw.kind == "gpu" else hw["clock_ghz"]
    return Plan(
        hw,
        shape,
        schedule,
        MappingProxyType(capacity),
        cost,
        split,
        MappingProxyType(rates),
        spill,
        clock,
    )

"""The plan of one configuration, computed once: capacity, work split, rates, spills, clock,
and the per-block cost formulas (the only place they are written).

Both layers read a :class:`Plan`: the analytic roofline
(:mod:`~amla_numerics.pipeline.analytic`) sums its stage costs per engine, the event
simulation (:mod:`~amla_numerics.pipeline.graph`) cuts the same stage costs into
operations. So the two layers cannot disagree on what a block costs.

Stage costs of one KV block of ``m`` rows x ``n`` tokens (Ascend):

- :meth:`Plan.c1` S = Q K^T on the AIC: K bytes through MTE2, MTE1 bytes, Cube cycles, S out by FIX;
- :meth:`Plan.v1` softmax on one AIV (its ``m / vector_per_core`` rows): S in, A out;
- :meth:`Plan.rescale_o` the variant's rescale of O on one AIV (``atomic`` design);
- :meth:`Plan.update_o` the partial-plus-old-O update on one AIV (``workspace``/``ub`` designs);
- :meth:`Plan.c2` O += A V on the AIC: V and A in, PV out by FIX;
- :meth:`Plan.v2` once per piece on one AIV: O in, normalise, BF16 out;
- :meth:`Plan.gpu_block` a GPU block: load, tensor (QK, PV), SIMT.

Examples
--------
>>> from amla_numerics.pipeline import AttentionShape, default_schedule, load_hardware
>>> hw = load_hardware("ascend910c")
>>> p = make_plan(hw, AttentionShape(128, 2, 16384), default_schedule(hw, "amla"))
>>> p.split.blocks_per_core, p.split.active_cores, p.clock_ghz
(86, 48, 1.8)
>>> p.c1(256, 512).cube   # 2*256*512*576/8192 + 279 x (2 x 4 output tiles)
20664.0
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
from amla_numerics.pipeline.split_rules import (
    FLASHMLA_OVERHEAD_BLOCKS,
    CoreRuns,
    cann_core_loads,
    cann_split,
    flashmla_parts,
    flashmla_split,
)

__all__ = [
    "CHIP_RESOURCES",
    "LONG_SIMULATION_BLOCKS",
    "MAX_SIMULATED_BLOCKS",
    "Combine",
    "CubeStage",
    "GpuBlock",
    "Plan",
    "VectorStage",
    "WorkSplit",
    "check_size",
    "chip_bandwidth",
    "combine_cost",
    "estimated_blocks",
    "l2_working_set",
    "make_plan",
    "pad16",
    "resource_rates",
    "split_work",
    "tile_keys",
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
    split_tasks: int = 0
    partials: int = 0
    max_splits: int = 1


def _split_counts(runs: CoreRuns, tasks: int) -> list[int]:
    """Pieces of each task: one, plus one per run that starts inside it (block > 0)."""
    counts = [1] * tasks
    for segs in runs.runs:
        if segs and segs[0][1] > 0:
            counts[segs[0][0]] += 1
    return counts


def _kernel_split(
    hw: Hardware, wl: AttentionShape, sch: Schedule, row_tiles: tuple[int, ...]
) -> tuple[CoreRuns, int]:
    """The kernel's own split (:mod:`~amla_numerics.pipeline.split_rules`): CANN's
    ``SplitCore`` on Ascend, FlashMLA's metadata on a GPU; with the cores each run stands
    for (GPU: a part's KV heads x row tiles SMs; Ascend: one)."""
    cores = int(hw["cores"])
    tiles = tuple(
        (min(sch.m_tile, wl.rows - t * sch.m_tile), tile_keys(wl, sch, t))
        for t in range(len(row_tiles))
    )
    if hw.kind == "gpu":
        nb = max(-(-k // sch.kv_block) for _, k in tiles)
        parts = flashmla_parts(cores, wl.kv_heads, len(row_tiles))
        return flashmla_split(nb, wl.batch, parts), wl.kv_heads * len(row_tiles)
    return cann_split(tiles, wl.groups, sch.kv_block, cores), 1


def split_work(hw: Hardware, wl: AttentionShape, sch: Schedule) -> WorkSplit:
    """Distribute the work: the kernel's own split (``split_kv``), S pieces per task
    (``splits``), or whole tasks round-robin.

    ``split_kv`` follows the kernel of the hardware kind
    (:mod:`~amla_numerics.pipeline.split_rules`): on Ascend CANN's cost-balanced runs of
    (task, KV block), on a GPU FlashMLA's metadata (one part per KV head x row tile SMs).
    The busiest core is the one with the largest load in the kernel's own cost unit.

    Examples
    --------
    >>> from amla_numerics.pipeline import default_schedule, load_hardware
    >>> hw = load_hardware("ascend910c")
    >>> s = split_work(hw, AttentionShape(128, 2, 16384), default_schedule(hw))
    >>> s.tasks, s.blocks_per_task, s.blocks_per_core, s.active_cores, len(s.pieces)
    (128, 32, 86, 48, 4)
    """
    check_size(hw, wl, sch)
    row_tiles = tuple(pad16(min(sch.m_tile, wl.rows - i)) for i in range(0, wl.rows, sch.m_tile))
    tile_sizes = [_block_sizes(tile_keys(wl, sch, t), sch.kv_block) for t in range(len(row_tiles))]
    nb = max(len(x) for x in tile_sizes)
    cores = int(hw["cores"])
    tasks = wl.groups * len(row_tiles)
    lengths = [len(tile_sizes[t % len(row_tiles)]) for t in range(tasks)]
    big = max(range(len(row_tiles)), key=lambda t: len(tile_sizes[t]))
    if sch.splits is not None:
        # S pieces per task (at most one per block), dealt round-robin to the cores
        counts = [min(sch.splits, n) for n in lengths]
        total_pieces = sum(counts)
        per_core = math.ceil(total_pieces / cores)
        active = math.ceil(total_pieces / per_core)
        # the busiest core: per_core of the largest pieces (ceil(blocks / S) blocks each)
        sizes = tile_sizes[big]
        k = min(sch.splits, len(sizes))
        piece = tuple(sizes[: -(-len(sizes) // k)])
        pieces = [(row_tiles[big], piece)] * per_core
    elif sch.split_kv:
        runs, per_part = _kernel_split(hw, wl, sch, row_tiles)
        active = len(runs.runs) * per_part
        if per_part == 1:  # CANN: a segment's task is a (group, row tile)
            counts = _split_counts(runs, tasks)
            pieces = [
                (row_tiles[t % len(row_tiles)], tuple(tile_sizes[t % len(row_tiles)][a:b]))
                for t, a, b in runs.runs[runs.busiest]
            ]
        else:  # FlashMLA: a segment's task is a request, run by all its tiles' SMs
            per_request = _split_counts(runs, wl.batch)
            counts = [per_request[t // per_part] for t in range(tasks)]
            pieces = [
                (row_tiles[big], tuple(tile_sizes[big][a:b])) for _, a, b in runs.runs[runs.busiest]
            ]
    else:
        counts = [1] * tasks
        per_tasks = math.ceil(tasks / cores)
        active = math.ceil(tasks / per_tasks)
        pieces = [
            (row_tiles[t % len(row_tiles)], tuple(tile_sizes[t % len(row_tiles)]))
            for t in range(per_tasks)
        ]
    per = sum(len(x) for _, x in pieces)
    split = [c for c in counts if c > 1]
    return WorkSplit(
        tasks, nb, active, per, tuple(pieces), row_tiles, len(split), sum(split), max(counts)
    )


#: The most KV blocks the event simulation runs on the busiest core. Measured on the 2-core
#: development machine (batch 128, s_q 2, 1.6M keys: 8,534 blocks): the reference simulation
#: of every block takes 29 s and 1.8 GB (about 3.4 ms and 210 KB a block), so the cap is about
#: 35 s and 2 GB when every block is simulated (the fast path took 0.3 s there: its periodic
#: runs are cut); beyond it a configuration is refused.
MAX_SIMULATED_BLOCKS: int = 10_000
#: Above this many blocks on the busiest core, the CLI notes the estimated time on stderr.
LONG_SIMULATION_BLOCKS: int = 1_000


def estimated_blocks(hw: Hardware, wl: AttentionShape, sch: Schedule) -> int:
    """An upper estimate of the KV blocks the busiest core simulates, from sizes alone.

    O(1), except CANN's split (Ascend, ``split_kv``): its per-core loads, O(cores^2 x row
    tiles) whatever the batch and KV length, and the largest block count of any core.
    FlashMLA: a part's blocks are at most its payload less one request's overhead,
    ceil(batch x (blocks + overhead) / parts).

    Examples
    --------
    >>> from amla_numerics.pipeline import default_schedule, load_hardware
    >>> hw = load_hardware("ascend910c")
    >>> estimated_blocks(hw, AttentionShape(128, 2, 16384), default_schedule(hw))
    86
    """
    nb = math.ceil(wl.kv_len / sch.kv_block)
    tasks = wl.groups * math.ceil(wl.rows / sch.m_tile)
    cores = int(hw["cores"])
    if sch.splits is not None:
        k = min(sch.splits, nb)
        return math.ceil(tasks * k / cores) * math.ceil(nb / k)
    if sch.split_kv and hw.kind == "gpu":
        parts = flashmla_parts(cores, wl.kv_heads, math.ceil(wl.rows / sch.m_tile))
        return math.ceil(wl.batch * (nb + FLASHMLA_OVERHEAD_BLOCKS) / parts)
    if sch.split_kv:
        tiles = tuple(
            (min(sch.m_tile, wl.rows - t * sch.m_tile), tile_keys(wl, sch, t))
            for t in range(math.ceil(wl.rows / sch.m_tile))
        )
        return max(x[3] for x in cann_core_loads(tiles, wl.groups, sch.kv_block, cores))
    return math.ceil(tasks / cores) * nb


def check_size(hw: Hardware, wl: AttentionShape, sch: Schedule) -> int:
    """Refuse (ValueError, one sentence) a configuration too big to simulate.

    Returns the estimated blocks on the busiest core (:func:`estimated_blocks`).
    """
    blocks = estimated_blocks(hw, wl, sch)
    if blocks > MAX_SIMULATED_BLOCKS:
        raise ValueError(
            f"the configuration needs about {blocks:,} KV blocks on the busiest core, more than "
            f"the {MAX_SIMULATED_BLOCKS:,} the event simulation handles (about 35 s, 2 GB);"
            " use a shorter kv_len, a larger block, or fewer requests per core"
        )
    return blocks


def _block_sizes(keys: int, block: int) -> list[int]:
    nb = math.ceil(keys / block)
    return [block] * (nb - 1) + [keys - (nb - 1) * block]


def tile_keys(wl: AttentionShape, sch: Schedule, tile: int) -> int:
    """Keys row tile ``tile`` visits: all of them, or (causal) up to its last query's position.

    Rows are ordered (query position, head) as FlashMLA packs them (``q_seq_per_hk``).

    Examples
    --------
    >>> from amla_numerics.pipeline.schedule import Schedule
    >>> wl = AttentionShape(1, 4, 1000, heads=64, causal=True)
    >>> [tile_keys(wl, Schedule(m_tile=128), t) for t in range(2)]
    [998, 1000]
    """
    if not wl.causal:
        return wl.kv_len
    last_row = min((tile + 1) * sch.m_tile, wl.rows) - 1
    position = last_row // (wl.heads // wl.kv_heads)
    return wl.kv_len - wl.q_len + position + 1


#: The shared chip resources whose bandwidth the active cores divide among themselves.
CHIP_RESOURCES: tuple[str, ...] = ("L2 (chip share)", "HBM (chip share)")


def chip_bandwidth(hw: Hardware) -> dict[str, float]:
    """Chip-wide bytes per cycle (simulation clock) of each shared chip resource."""
    clock = hw["sustained_clock_ghz"] if hw.kind == "gpu" else hw["clock_ghz"]
    out = {"HBM (chip share)": hw["hbm_gbps"] * hw["hbm_efficiency"] / clock}
    if hw.kind != "gpu":
        out["L2 (chip share)"] = hw["l2_chip_gbps"] / clock
    return out


def resource_rates(
    hw: Hardware, active_cores: int, busy: Mapping[str, float] | None = None
) -> dict[str, float]:
    """Shared resources seen by one core, in bytes per cycle of the simulation clock.

    ``busy`` maps a chip resource to the fraction u of the time this core has a transfer
    on it. The other ``active_cores - 1`` cores run the same kind of work out of phase, so
    on average ``(active_cores - 1) u`` of them share the resource with it at any moment
    (processor sharing): its rate is ``B / (1 + (active_cores - 1) u)``. None (or u = 1)
    is the static share ``B / active_cores``; a core alone gets all of ``B``.
    """
    chip = chip_bandwidth(hw)
    busy = busy or {}

    def share(name: str) -> float:
        u = min(1.0, max(0.0, busy.get(name, 1.0)))
        return chip[name] / (1.0 + (active_cores - 1) * u)

    if hw.kind == "gpu":
        return {
            "L2 read (per SM)": hw["l2_read_bpc"],
            "HBM (chip share)": share("HBM (chip share)"),
        }
    return {
        "L2 read port": hw["l2_read_bpc"],
        "L2 write port": hw["l2_write_bpc"],
        "L2 (chip share)": share("L2 (chip share)"),
        "HBM (chip share)": share("HBM (chip share)"),
    }


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


def l2_working_set(
    hw: Hardware, wl: AttentionShape, sch: Schedule, cost: RescaleCost, active: int
) -> float:
    """Bytes of GM workspaces that must stay in L2 at once, all active cores together.

    Per core: ``depth`` slots of S (FP32) and of P (``p_bytes``) for a row tile x KV block,
    the O accumulator in GM (``atomic`` and ``workspace`` designs, FP32 or BF16) and
    ``depth`` P V partial slots (``workspace`` and ``ub``); the two-pass schedule keeps S
    and P of whole rows. The KV cache itself streams (read once from HBM per request).
    """
    m, n, d = sch.m_tile, sch.kv_block, sch.depth
    if cost.two_pass:
        per_core = m * wl.kv_len * (4 + 2)
    else:
        per_core = d * m * n * (4 + cost.p_bytes)
        if cost.design in ("atomic", "workspace"):
            per_core += m * wl.d_v * cost.o_store_bytes
        if cost.design in ("workspace", "ub"):
            per_core += d * m * wl.d_v * 4
    if hw.kind == "gpu" and not cost.two_pass:
        return 0.0  # S, P and O live in registers and shared memory
    return float(active * per_core)


@dataclasses.dataclass(frozen=True)
class Plan:
    """Everything decided before simulating: computed once by :func:`make_plan`.

    Attributes
    ----------
    hw, shape, schedule
        The configuration.
    capacity : Mapping[str, tuple[int, int]]
        Buffer -> (used, capacity) bytes (:func:`~amla_numerics.pipeline.schedule.check_capacity`),
        including ``"L2"`` (the workspaces of all active cores against the L2 size).
    cost : RescaleCost
        The variant's cost.
    split : WorkSplit
        The busiest core's work.
    rates : Mapping[str, float]
        Shared resource -> bytes per cycle seen by one core.
    spill : float
        Fraction of the GM workspace traffic that misses L2 and goes to HBM (0 when the
        working set fits; ``1 - L2 / working set`` otherwise, each byte read or written).
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
    spill: float
    clock_ghz: float

    @property
    def tiles(self) -> int:
        """Row tiles per (request, KV head): its KV cache is read from HBM once, then from L2."""
        return math.ceil(self.shape.rows / self.schedule.m_tile)

    @property
    def nv(self) -> int:
        """Vector cores per AI core."""
        return int(self.hw["vector_per_core"])

    @property
    def rmw(self) -> float:
        """1 if an atomic add costs a read and a write inside L2 (the switchable assumption)."""
        return float(self.hw.values.get("atomic_rmw", 0.0))

    def with_rates(self, rates: Mapping[str, float]) -> Plan:
        """The same plan with other shared-resource rates."""
        return dataclasses.replace(self, rates=MappingProxyType(dict(rates)))

    # -- Ascend stage costs ------------------------------------------------------------
    def q_bytes(self, m: int) -> float:
        """Q of a row tile (BF16), loaded once per piece."""
        return m * self.shape.d_qk * 2

    def c1(self, m: int, n: int) -> CubeStage:
        """S = Q K^T of one block; S (FP32) to the GM workspace."""
        hw, wl, sch = self.hw, self.shape, self.schedule
        n16 = pad16(n)
        tm, tn = math.ceil(m / sch.cube_m), math.ceil(n / sch.cube_n)
        kq = wl.d_qk // sch.l1_k_qk
        k_bytes = n * wl.k_token_bytes
        cube = 2.0 * m * n16 * wl.d_qk / hw.flop_per_cycle + hw["mmad_overhead_cycles"] * tm * tn
        mte1 = tn * m * wl.d_qk * 2 + tm * n * wl.d_qk * 2  # BF16 in L0 (an FP8 cache dequantised)
        s_bytes = m * n * 4
        hbm = k_bytes / self.tiles + self.spill * s_bytes
        return CubeStage(k_bytes, hbm, mte1, cube, s_bytes, tn, kq, tm)

    def c2(self, m: int, n: int) -> CubeStage:
        """O += P V of one block (MLA: V = the first d_v columns of the cached rows)."""
        hw, wl, sch, cost = self.hw, self.shape, self.schedule, self.cost
        n16 = pad16(n)
        tm, tv = math.ceil(m / sch.cube_m), math.ceil(wl.d_v / sch.cube_n)
        kp = math.ceil(n / sch.l1_k_pv)
        v_bytes = n * wl.v_token_bytes
        p_bytes = m * n * cost.p_bytes
        mte2 = v_bytes + p_bytes
        cube = 2.0 * m * n16 * wl.d_v / hw.flop_per_cycle + hw["mmad_overhead_cycles"] * tm * tv
        mte1 = tv * m * n * 2 + tm * n * wl.d_v * 2
        fix = m * wl.d_v * (cost.o_store_bytes if cost.design == "atomic" else 4)
        hbm = (0.0 if wl.shared_kv else v_bytes / self.tiles) + self.spill * (p_bytes + fix)
        return CubeStage(mte2, hbm, mte1, cube, fix, tv, kp, tm)

    def fix_l2_bytes(self, fix: float) -> float:
        """Chip-L2 bytes of a P V drain: an atomic add reads and writes (``atomic_rmw``)."""
        return fix * (1.0 + self.rmw) if self.cost.design == "atomic" else fix

    def v1(self, m: int, n: int) -> VectorStage:
        """Online softmax of one block on one AIV (the two-pass schedule re-reads S)."""
        hw, cost = self.hw, self.cost
        r = m / self.nv
        rep, speed = hw["vector_bytes_per_repeat"], hw["vector_repeats_per_cycle"]
        s_passes = SOFTMAX_PASSES + cost.softmax_extra_passes
        read = r * n * 4
        if cost.two_pass:
            read += r * n * 4
            s_passes += 1
        write = r * n * cost.p_bytes
        vec = (
            r * n * 4 / rep * (s_passes + hw["exp_cost_per_repeat"])
            + cost.row_ops * math.ceil(r * 4 / rep)
        ) / speed
        hbm = self.spill * (read + write)
        return VectorStage(read, vec, write, 0.0, hbm)

    def rescale_o(self, m: int) -> VectorStage:
        """``atomic`` design: the variant's rescale of O in GM on one AIV, one rescaled block."""
        hw, cost = self.hw, self.cost
        ro = m / self.nv * self.shape.d_v
        vec = ro * 4 / hw["vector_bytes_per_repeat"] * cost.o_passes
        vec /= hw["vector_repeats_per_cycle"]
        rd, wr, at = ro * cost.o_read_bytes, ro * cost.o_write_bytes, ro * cost.o_atomic_bytes
        return VectorStage(rd, vec, wr, at, self.spill * (rd + wr + at))

    def update_o(self, m: int, first: bool) -> VectorStage:
        """``workspace``/``ub`` designs: read the P V partial (and the old O), RowMuls + Add,
        write O (``workspace``), on one AIV; the first block of a piece only moves the partial."""
        hw, cost = self.hw, self.cost
        ro = m / self.nv * self.shape.d_v
        passes = 1.0 if first else cost.o_passes
        vec = ro * 4 / hw["vector_bytes_per_repeat"] * passes / hw["vector_repeats_per_cycle"]
        read = ro * 4 + (0.0 if first else ro * cost.o_read_bytes)
        write = ro * (4 if cost.design == "workspace" else 0)
        return VectorStage(read, vec, write, 0.0, self.spill * (read + write))

    def v2(self, m: int) -> VectorStage:
        """Normalise O and write the BF16 output, once per piece, on one AIV (``ub``: O in UB)."""
        hw = self.hw
        r = m / self.nv
        o_read = 0.0 if self.cost.design == "ub" else r * self.shape.d_v * 4
        out = r * self.shape.d_v * 2
        vec = 2 * r * self.shape.d_v * 4 / hw["vector_bytes_per_repeat"]
        vec /= hw["vector_repeats_per_cycle"]
        return VectorStage(o_read, vec, out, 0.0, out + self.spill * o_read)

    # -- GPU stage costs ---------------------------------------------------------------
    def out_bytes(self, m: int) -> float:
        """The BF16 output of an ``m``-row tile (a GPU stores it once per piece)."""
        return float(m * self.shape.d_v * 2)

    def gpu_block(self, m: int, n: int, p: float) -> GpuBlock:
        """One block of the ``m``-row tile x ``n`` tokens on one SM (the SM computes a full
        ``m_tile``); ``p`` the fraction of O rescaled (1 or 0 in the simulation)."""
        hw, wl, sch, cost = self.hw, self.shape, self.schedule, self.cost
        k_bytes = n * wl.cache_token_bytes
        ws = m * n * (4 * 3 + 2 * 2) if cost.two_pass else 0.0
        m = sch.m_tile
        lanes = hw["fp32_lanes"]
        passes = SOFTMAX_PASSES + cost.softmax_extra_passes + (1 if cost.two_pass else 0)
        # O lives in registers and the P V MMA accumulates into it: the Add of a
        # workspace design is free on a GPU, only the RowMuls pass remains
        o_passes = cost.o_passes - (1 if cost.design != "atomic" else 0)
        simt = (
            m * n * passes / lanes
            + m * n * hw["exp_cost_per_repeat"] / hw["sfu_per_cycle"]
            + p * m * wl.d_v * o_passes / lanes
            + cost.row_ops * m / lanes
        )
        fpc = hw.flop_per_cycle
        qk = 2.0 * m * pad16(n) * wl.d_qk / fpc + hw["block_overhead_cycles"]
        pv = 2.0 * m * pad16(n) * wl.d_v / fpc
        hbm = k_bytes / self.tiles + self.spill * ws
        return GpuBlock(k_bytes + ws, hbm, qk, pv, simt)


class Combine(NamedTuple):
    """The split-KV combine: ``time_us`` (fixed cost + transfer/vector time), ``read`` and
    ``write`` bytes (partials and lse out of the pieces and back in, the BF16 output)."""

    time_us: float
    fixed_us: float
    read: float
    write: float


def combine_cost(plan: Plan) -> Combine:
    """Time and traffic of merging the split tasks' partial outputs.

    Each piece of a split task writes its partial O (FP32) and its lse (FP32 max and sum,
    8 bytes per row) instead of the BF16 output; the combine reads them all back, weighs
    each by exp(lse_s - lse) and writes the BF16 output. Ascend runs it in the same kernel
    on the vector cores after an all-core synchronisation (``sync_us``; CANN
    ``FiaBlockVecFlashDecode`` after ``ComputeLogSumExpAndCopyToGm``); a GPU launches a
    second kernel (``launch_us``; FlashMLA ``mla_combine``). The bytes move at the chip's
    L2 bandwidth (the partials are small and recent), the vector work (4 FP32 passes:
    exp weight, multiply, add, cast) runs on every vector unit.

    Examples
    --------
    >>> from amla_numerics.pipeline import default_schedule, load_hardware
    >>> hw = load_hardware("ascend910c")
    >>> combine_cost(make_plan(hw, AttentionShape(48, 2, 16384), default_schedule(hw))).time_us
    0.0
    >>> c = combine_cost(make_plan(hw, AttentionShape(1, 1, 65536), default_schedule(hw)))
    >>> c.fixed_us > 0 and c.read > 0
    True
    """
    sp, hw, wl = plan.split, plan.hw, plan.shape
    if sp.split_tasks == 0:
        return Combine(0.0, 0.0, 0.0, 0.0)
    m = plan.schedule.m_tile
    part = m * (wl.d_v * 4 + 8)
    read = sp.partials * part
    write = sp.partials * part + sp.split_tasks * m * wl.d_v * 2
    clock = plan.clock_ghz
    if hw.kind == "gpu":
        fixed = hw["launch_us"]
        bw = hw["l2_read_bpc"] * hw["cores"] * clock  # GB/s
        lanes = hw["fp32_lanes"] * hw["cores"]
        vec_us = sp.partials * m * wl.d_v * 4 / lanes / clock * 1e-3
    else:
        fixed = hw["sync_us"]
        bw = hw["l2_chip_gbps"]
        units = hw["cores"] * hw["vector_per_core"]
        per_rep = hw["vector_bytes_per_repeat"] * hw["vector_repeats_per_cycle"]
        vec_us = sp.partials * m * wl.d_v * 4 * 4 / per_rep / units / clock * 1e-3
    xfer_us = (read + write) / bw * 1e-3
    return Combine(fixed + max(xfer_us, vec_us), fixed, read, write)


def make_plan(
    hw: Hardware, shape: AttentionShape, schedule: Schedule, busy: Mapping[str, float] | None = None
) -> Plan:
    """Check the tiling and compute the plan of ``shape`` under ``schedule`` on ``hw``.

    ``busy`` is passed to :func:`resource_rates` (None: static shares).

    Raises
    ------
    ValueError
        If the tiling does not fit a buffer (naming the schedule field and the buffer).
    """
    capacity = dict(check_capacity(hw, shape, schedule))
    cost = rescale_cost(schedule.variant, schedule.rescale_prob)
    split = split_work(hw, shape, schedule)
    rates = resource_rates(hw, split.active_cores, busy)
    ws = l2_working_set(hw, shape, schedule, cost, split.active_cores)
    l2 = hw["l2_bytes"]
    capacity["L2"] = (int(ws), int(l2))
    spill = 0.0 if ws <= l2 else 1.0 - l2 / ws
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

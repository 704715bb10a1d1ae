"""Build the discrete-event graph of the busiest core: each pipe's program order and its waits.

One core is simulated (every core runs the same kind of work; shared L2 and HBM bandwidth
enter as the core's share of the chip, :func:`~amla_numerics.pipeline.analytic.resource_rates`).
Its work is the list of (row tile, KV blocks) pieces from
:func:`~amla_numerics.pipeline.analytic.split_work`, flattened into blocks ``0 .. B-1``.

Ascend (one AIC and ``vector_per_core`` AIVs), per block ``t``:

- **C1(t)** on the AIC, S = Q K^T: per L1 chunk (``cube_n`` tokens x ``l1_k_qk`` of K)
  one MTE2 load, one MTE1 L1->L0 move, one Cube op per ``cube_m`` row sub-tile; after
  the last K chunk of each output tile, a FIX op writes S (FP32) to the GM workspace.
- **V1(t)** on every AIV, per ``vec_rows`` sub-tile: MTE2 reads S, the Vector runs the
  online softmax (plus the variant's per-row work), MTE3 writes A (BF16); then the
  variant's rescale of O, as data movement (see :mod:`~amla_numerics.pipeline.rescale`).
- **C2(t)** on the AIC, O += A V: per L1 chunk (``l1_k_pv`` tokens x ``cube_n`` of V, with
  the matching A slice) MTE2, MTE1 and Cube ops; FIX atomically adds each tile into O.
- **V2** at the end of each piece: every AIV reads its O rows, normalises, writes BF16.

Waits (each cross-core wait carries the flag latency ``flag_latency_cycles``):
C2(t) loads A only after V1(t) wrote it; C2(t)'s FIX adds into O only after the rescale
of block t; the rescale of block t starts only after C2(t-1)'s FIX (the two updates of O
do not commute); the S and A workspaces have ``depth`` slots each; L1 chunks, L0A/L0B
pairs, L0C tiles and UB tiles are tokens (an op waits for the op that frees its buffer).

Program order on the AIC, depth d (``preload``): C1(0) .. C1(d-1), then C2(t-d+1)
after each C1(t); ``serial`` (d = 1) is C1(t), C2(t). A GPU (FlashMLA) is one SM with
Load (TMA), Tensor and SIMT pipes, O in registers and no cross-core flags.

Examples
--------
>>> from amla_numerics.pipeline.hardware import load_hardware
>>> from amla_numerics.pipeline.workload import Workload, default_schedule
>>> hw = load_hardware("ascend910c")
>>> b = build_graph(hw, Workload(1, 2, 1024), default_schedule(hw, "amla", split_kv=False))
>>> b.blocks, b.graph.pipes[:4]
(2, ['AIC.MTE2', 'AIC.MTE1', 'AIC.Cube', 'AIC.FIX'])
"""

from __future__ import annotations

import dataclasses
import math

from amla_numerics.pipeline.analytic import resource_rates, spills, split_work
from amla_numerics.pipeline.des import OpGraph
from amla_numerics.pipeline.hardware import Hardware
from amla_numerics.pipeline.rescale import SOFTMAX_PASSES, RescaleCost, rescale_cost
from amla_numerics.pipeline.workload import Schedule, Workload, check_capacity

__all__ = ["Built", "build_graph", "rescaled_blocks"]


def _pad16(x: int) -> int:
    return -(-x // 16) * 16


@dataclasses.dataclass(frozen=True)
class Built:
    """A graph ready to simulate, with what is needed to turn cycles into rates.

    Attributes
    ----------
    graph : OpGraph
        The operations of the busiest core.
    blocks : int
        KV blocks on that core.
    active_cores : int
        Cores that receive work.
    clock_ghz : float
        Clock of the simulated cycles.
    cost : RescaleCost
        The variant's rescale cost that was applied.
    """

    graph: OpGraph
    blocks: int
    active_cores: int
    clock_ghz: float
    cost: RescaleCost


def rescaled_blocks(count: int, probability: float) -> list[bool]:
    """Which blocks of a piece rescale O: never the first; otherwise a fraction ``probability``.

    Deterministic and evenly spread (block j rescales when floor(j p) > floor((j-1) p)),
    so ``sum == floor((count-1) p)`` for a fraction p.

    Examples
    --------
    >>> rescaled_blocks(9, 0.25)
    [False, False, False, False, True, False, False, False, True]
    >>> rescaled_blocks(3, 1.0)
    [False, True, True]
    """
    return [
        j > 0 and math.floor(j * probability) > math.floor((j - 1) * probability)
        for j in range(count)
    ]


class _Ascend:
    """Emits the ops of one Ascend AI core (1 AIC + nv AIVs) in program order."""

    def __init__(
        self,
        hw: Hardware,
        wl: Workload,
        sch: Schedule,
        cost: RescaleCost,
        rates: dict[str, float],
        spill: bool,
    ) -> None:
        self.hw, self.wl, self.sch, self.cost, self.spill = hw, wl, sch, cost, spill
        self.nv = int(hw["vector_per_core"])
        pipes = ["AIC.MTE2", "AIC.MTE1", "AIC.Cube", "AIC.FIX"]
        for v in range(self.nv):
            pipes += [f"AIV{v}.MTE2", f"AIV{v}.Vector", f"AIV{v}.MTE3"]
        self.g = OpGraph(pipes, rates)
        self.lat = hw["flag_latency_cycles"]
        self.tiles = math.ceil(wl.rows / sch.m_tile)
        self.l1_last_use: list[int] = []  # per L1 chunk loaded: the last MTE1 op reading it
        self.mte2_ops: list[int] = []
        self.depth = sch.depth
        self.cube_ops: list[int] = []
        self.fix_ops: list[int] = []
        self.ub_out: list[list[int]] = [[] for _ in range(self.nv)]  # AIV MTE3 ops (UB frees)
        # per block: last FIX of C1, first MTE2 of C2 (.. last), last FIX of C2,
        # per AIV: last S read, last A write, last rescale write
        self.c1_fix: dict[int, int] = {}
        self.c2_mte2_last: dict[int, int] = {}
        self.c2_fix_last: dict[int, int] = {}
        self.s_read_last: dict[int, list[int]] = {}
        self.a_write_last: dict[int, list[int]] = {}
        self.rescale_last: dict[int, list[int]] = {}

    # -- AIC ---------------------------------------------------------------------------
    def _output_column(
        self,
        label: str,
        kc: int,
        tm: int,
        mte2_bytes: float,
        hbm: float,
        mte1_bytes: float,
        cube: float,
        fix_bytes: float,
        load_deps: list[tuple[int, float]],
        fix_deps: list[tuple[int, float]],
    ) -> None:
        """One output column tile: ``kc`` L1 chunks in, then per row sub-tile (each in its own
        L0C tile, ping-pong) one MTE1 move and one MMAD per chunk, then its FIX out."""
        g, sch = self.g, self.sch
        loads = []
        for i in range(kc):
            d = list(load_deps) if i == 0 else []
            back = sch.l1_stream_buffers  # an L1 block is free once its last use moved on
            if len(self.l1_last_use) >= back:
                d.append((self.l1_last_use[-back], 0.0))
            loads.append(
                g.add(
                    "AIC.MTE2",
                    0.0,
                    d,
                    [
                        ("L2 read port", mte2_bytes),
                        ("L2 (chip share)", mte2_bytes),
                        ("HBM (chip share)", hbm),
                    ],
                    label,
                )
            )
            self.l1_last_use.append(-1)
        self.mte2_ops.append(loads[-1])
        for i_m in range(tm):
            for i in range(kc):
                d1 = [(loads[i], 0.0)]
                if len(self.cube_ops) >= sch.l0_buffers:  # L0A/L0B ping-pong
                    d1.append((self.cube_ops[-sch.l0_buffers], 0.0))
                m1 = g.add("AIC.MTE1", mte1_bytes / self.hw["mte1_bpc"], d1, (), label)
                self.l1_last_use[len(self.l1_last_use) - kc + i] = m1
                dc = [(m1, 0.0)]
                if i == 0 and len(self.fix_ops) >= sch.l0c_buffers:  # a free L0C tile
                    dc.append((self.fix_ops[-sch.l0c_buffers], 0.0))
                self.cube_ops.append(g.add("AIC.Cube", cube, dc, (), label))
            self.fix_ops.append(
                g.add(
                    "AIC.FIX",
                    fix_bytes / self.hw["fix_bpc"],
                    [(self.cube_ops[-1], 0.0), *(fix_deps if i_m == 0 else [])],
                    [("L2 write port", fix_bytes), ("L2 (chip share)", fix_bytes)],
                    label,
                )
            )

    def c1(self, t: int, m: int, n: int, first_of_piece: bool) -> None:
        hw, wl, sch, g = self.hw, self.wl, self.sch, self.g
        label = f"C1 {t}"
        if first_of_piece:  # Q of the new row tile stays resident in L1
            qb = m * wl.d_qk * 2
            g.add(
                "AIC.MTE2",
                0.0,
                (),
                [("L2 read port", qb), ("L2 (chip share)", qb), ("HBM (chip share)", qb)],
                f"Q {t}",
            )
        n16 = _pad16(n)
        tm, tn = math.ceil(m / sch.cube_m), math.ceil(n / sch.cube_n)
        kq = wl.d_qk // sch.l1_k_qk
        chunks = tn * kq
        k_bytes = n * wl.d_qk * wl.kv_bytes
        cube = (
            2.0 * m * n16 * wl.d_qk / hw.flop_per_cycle + hw["mmad_overhead_cycles"] * tm * tn
        ) / (chunks * tm)
        mte1 = (tn * m * wl.d_qk * 2 + tm * n * wl.d_qk * 2) / (chunks * tm)
        s_free = (
            [(op, self.lat) for op in self.s_read_last[t - self.depth]]
            if t - self.depth in self.s_read_last
            else []
        )  # S workspace slot
        for i_n in range(tn):
            self._output_column(
                label,
                kq,
                tm,
                k_bytes / chunks,
                k_bytes / self.tiles / chunks,
                mte1,
                cube,
                m * n * 4 / (tn * tm),
                [],
                s_free if i_n == 0 else [],
            )
        self.c1_fix[t] = self.fix_ops[-1]

    def c2(self, t: int, m: int, n: int, rescaled: bool) -> None:
        hw, wl, sch = self.hw, self.wl, self.sch
        label = f"C2 {t}"
        n16 = _pad16(n)
        tm, tv = math.ceil(m / sch.cube_m), math.ceil(wl.d_v / sch.cube_n)
        kp = math.ceil(n / sch.l1_k_pv)
        chunks = tv * kp
        v_bytes = n * wl.d_v * wl.kv_bytes + m * n * 2  # V slice of the cache + A
        cube = (
            2.0 * m * n16 * wl.d_v / hw.flop_per_cycle + hw["mmad_overhead_cycles"] * tm * tv
        ) / (chunks * tm)
        mte1 = (tv * m * n * 2 + tm * n * wl.d_v * 2) / (chunks * tm)
        a_ready = [(op, self.lat) for op in self.a_write_last[t]]
        o_ready = [(op, self.lat) for op in self.rescale_last.get(t, [])] if rescaled else []
        for i_v in range(tv):
            self._output_column(
                label,
                kp,
                tm,
                v_bytes / chunks,
                0.0,
                mte1,
                cube,
                m * wl.d_v * self.cost.o_store_bytes / (tv * tm),
                a_ready if i_v == 0 else [],
                o_ready if i_v == 0 else [],
            )
        self.c2_mte2_last[t] = self.mte2_ops[-1]  # the A workspace slot is read
        self.c2_fix_last[t] = self.fix_ops[-1]

    # -- AIV ---------------------------------------------------------------------------
    def _sub(
        self,
        v: int,
        label: str,
        read: float,
        vec: float,
        write: float,
        atomic: float,
        hbm: float,
        deps: list[tuple[int, float]],
        write_deps: list[tuple[int, float]],
    ) -> tuple[int, int]:
        g, hw = self.g, self.hw
        ub = self.ub_out[v]
        d = list(deps)
        if len(ub) >= self.sch.ub_buffers:
            d.append((ub[-self.sch.ub_buffers], 0.0))
        prev = None
        if read > 0 or hbm > 0:
            prev = g.add(
                f"AIV{v}.MTE2",
                read / hw["aiv_mte2_bpc"],
                d,
                [("L2 read port", read), ("L2 (chip share)", read), ("HBM (chip share)", hbm)],
                label,
            )
            d = []
        vo = g.add(
            f"AIV{v}.Vector", vec, d + ([(prev, 0.0)] if prev is not None else []), (), label
        )
        cyc = write / hw["mte3_bpc"] + atomic / hw["atomic_bpc"]
        wo = g.add(
            f"AIV{v}.MTE3",
            cyc,
            [(vo, 0.0), *write_deps],
            [("L2 write port", write + atomic), ("L2 (chip share)", write + atomic)],
            label,
        )
        ub.append(wo)
        return (vo if prev is None else prev), wo

    def v1(self, t: int, m: int, n: int, rescaled: bool) -> None:
        hw, wl, sch, cost = self.hw, self.wl, self.sch, self.cost
        r = m / self.nv
        subs = max(1, math.ceil(r / sch.vec_rows))
        rep, speed = hw["vector_bytes_per_repeat"], hw["vector_repeats_per_cycle"]
        s_passes = SOFTMAX_PASSES + cost.softmax_extra_passes
        read = r * n * 4
        hbm = 0.0
        if cost.two_pass:
            read += r * n * 4
            s_passes += 1
            if self.spill:
                hbm = (m * n * 4 * 3 + m * n * 2 * 2) / self.nv
        vec = (r * n * 4 / rep * s_passes + cost.row_ops * math.ceil(r * 4 / rep)) / speed
        s_ready = [(self.c1_fix[t], self.lat)]
        a_free = (
            [(self.c2_mte2_last[t - self.depth], self.lat)]
            if t - self.depth in self.c2_mte2_last
            else []
        )
        s_last, a_last, o_last = [], [], []
        for v in range(self.nv):
            for s in range(subs):
                rd, wo = self._sub(
                    v,
                    f"V1 {t}",
                    read / subs,
                    vec / subs,
                    r * n * 2 / subs,
                    0.0,
                    hbm / subs,
                    s_ready if s == 0 else [],
                    a_free if s == 0 else [],
                )
            s_last.append(rd)
            a_last.append(wo)
            if rescaled:
                o_after = [(self.c2_fix_last[t - 1], self.lat)] if t - 1 in self.c2_fix_last else []
                ro = r * wl.d_v
                for s in range(subs):
                    _, wo = self._sub(
                        v,
                        f"R {t}",
                        ro * cost.o_read_bytes / subs,
                        ro * 4 / rep * cost.o_passes / subs / speed,
                        ro * cost.o_write_bytes / subs,
                        ro * cost.o_atomic_bytes / subs,
                        0.0,
                        o_after if s == 0 else [],
                        [],
                    )
                o_last.append(wo)
        self.s_read_last[t] = s_last
        self.a_write_last[t] = a_last
        self.rescale_last[t] = o_last

    def v2(self, t: int, m: int) -> None:
        hw, wl, sch = self.hw, self.wl, self.sch
        r = m / self.nv
        subs = max(1, math.ceil(r / sch.vec_rows))
        rep, speed = hw["vector_bytes_per_repeat"], hw["vector_repeats_per_cycle"]
        ready = [(self.c2_fix_last[t], self.lat)]
        for v in range(self.nv):
            for s in range(subs):
                out = r * wl.d_v * 2 / subs
                self._sub(
                    v,
                    f"V2 {t}",
                    r * wl.d_v * 4 / subs,
                    2 * r * wl.d_v * 4 / rep / subs / speed,
                    out,
                    0.0,
                    out,
                    ready if s == 0 else [],
                    [],
                )


def _build_ascend(
    hw: Hardware, wl: Workload, sch: Schedule, cost: RescaleCost, split, rates: dict[str, float]
) -> OpGraph:
    em = _Ascend(
        hw, wl, sch, cost, rates, cost.two_pass and spills(hw, wl, sch, split.active_cores)
    )
    blocks = []  # (m, n, first, last, rescaled)
    for m, sizes in split.pieces:
        resc = rescaled_blocks(len(sizes), cost.probability)
        for j, n in enumerate(sizes):
            blocks.append((m, n, j == 0, j == len(sizes) - 1, resc[j]))
    nblk = len(blocks)
    d = sch.depth
    c1_done = c2_done = v1_done = 0  # blocks emitted per stage
    v2_queue: list[int] = []

    def drain() -> None:
        nonlocal v1_done
        while True:
            if v2_queue and c2_done > v2_queue[0] and (v1_done >= min(v2_queue[0] + d, nblk)):
                t = v2_queue.pop(0)
                em.v2(t, blocks[t][0])
                continue
            t = v1_done
            if t < nblk and c1_done > t and (t == 0 or c2_done >= t):
                m, n, _, last, resc = blocks[t]
                em.v1(t, m, n, resc)
                v1_done += 1
                if last:
                    v2_queue.append(t)
                continue
            return

    for it in range(nblk + d - 1):
        if it < nblk:
            m, n, first, _, _ = blocks[it]
            em.c1(it, m, n, first)
            c1_done += 1
            drain()
        c = it - (d - 1)
        if c >= 0:
            m, n, _, _, resc = blocks[c]
            em.c2(c, m, n, resc)
            c2_done += 1
            drain()
    drain()
    if v2_queue or v1_done != nblk:  # pragma: no cover - an emission-order bug
        raise RuntimeError("pipeline schedule builder left work unemitted")
    return em.g


def _build_gpu(
    hw: Hardware, wl: Workload, sch: Schedule, cost: RescaleCost, split, rates: dict[str, float]
) -> OpGraph:
    g = OpGraph(["SM.Load", "SM.Tensor", "SM.SIMT"], rates)
    fpc, lanes = hw.flop_per_cycle, hw["fp32_lanes"]
    rate = hw["l2_read_bpc"]
    tiles = math.ceil(wl.rows / sch.m_tile)
    d = sch.depth
    stages = 2  # shared-memory KV stages (check_capacity assumes 2)
    loads: list[int] = []
    pv: dict[int, int] = {}
    qk: dict[int, int] = {}
    blocks = []
    for m, sizes in split.pieces:
        resc = rescaled_blocks(len(sizes), cost.probability)
        for j, n in enumerate(sizes):
            blocks.append((m, n, j == 0, resc[j]))
    simt_ops: dict[int, int] = {}
    spill = cost.two_pass and spills(hw, wl, sch, split.active_cores)

    def emit_qk(t: int) -> None:
        m, n, first, _ = blocks[t]
        if first:
            qb = m * wl.d_qk * 2
            g.add(
                "SM.Load",
                qb / rate,
                (),
                [("L2 read (per SM)", qb), ("HBM (chip share)", qb)],
                f"Q {t}",
            )
        k_bytes = n * wl.d_qk * wl.kv_bytes
        ws = m * n * (4 * 3 + 2 * 2) if cost.two_pass else 0.0
        dl = [(pv[t - stages], 0.0)] if t - stages in pv else []
        ld = g.add(
            "SM.Load",
            (k_bytes + ws) / rate,
            dl,
            [
                ("L2 read (per SM)", k_bytes + ws),
                ("HBM (chip share)", k_bytes / tiles + (ws if spill else 0.0)),
            ],
            f"KV {t}",
        )
        loads.append(ld)
        cyc = 2.0 * sch.m_tile * _pad16(n) * wl.d_qk / fpc + hw["block_overhead_cycles"]
        qk[t] = g.add("SM.Tensor", cyc, [(ld, 0.0)], (), f"QK {t}")
        passes = SOFTMAX_PASSES + cost.softmax_extra_passes + (1 if cost.two_pass else 0)
        p = 1.0 if blocks[t][3] else 0.0
        simt = (
            sch.m_tile * n * passes / lanes
            + sch.m_tile * n / hw["sfu_per_cycle"]
            + p * sch.m_tile * wl.d_v * cost.o_passes / lanes
            + cost.row_ops * sch.m_tile / lanes
        )
        deps = [(qk[t], 0.0)] + ([(pv[t - 1], 0.0)] if t - 1 in pv else [])
        simt_ops[t] = g.add("SM.SIMT", simt, deps, (), f"S {t}")

    def emit_pv(t: int) -> None:
        n = blocks[t][1]
        cyc = 2.0 * sch.m_tile * _pad16(n) * wl.d_v / fpc
        pv[t] = g.add("SM.Tensor", cyc, [(simt_ops[t], 0.0)], (), f"PV {t}")

    nblk = len(blocks)
    for it in range(nblk + d - 1):
        if it < nblk:
            emit_qk(it)
        c = it - (d - 1)
        if c >= 0:
            emit_pv(c)
    return g


def build_graph(hw: Hardware, wl: Workload, sch: Schedule) -> Built:
    """Build the operation graph of the busiest core for ``wl`` under ``sch`` on ``hw``.

    Raises
    ------
    ValueError
        If the tiling does not fit a buffer (see
        :func:`~amla_numerics.pipeline.workload.check_capacity`).

    Examples
    --------
    >>> from amla_numerics.pipeline.hardware import load_hardware
    >>> from amla_numerics.pipeline.workload import Workload, default_schedule
    >>> hw = load_hardware("h800_sxm5")
    >>> sch = default_schedule(hw, "fa_fp32", split_kv=False)
    >>> b = build_graph(hw, Workload(1, 1, 256, heads=64), sch)
    >>> b.blocks, b.graph.label[:3]
    (4, ['Q 0', 'KV 0', 'QK 0'])
    """
    check_capacity(hw, wl, sch)
    cost = rescale_cost(sch.rescale, sch.rescale_prob)
    split = split_work(hw, wl, sch)
    rates = resource_rates(hw, split.active_cores)
    if hw.kind == "gpu":
        g = _build_gpu(hw, wl, sch, cost, split, rates)
        clock = hw["sustained_clock_ghz"]
    else:
        g = _build_ascend(hw, wl, sch, cost, split, rates)
        clock = hw["clock_ghz"]
    return Built(
        graph=g,
        blocks=split.blocks_per_core,
        active_cores=split.active_cores,
        clock_ghz=clock,
        cost=cost,
    )

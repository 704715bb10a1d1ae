"""The operation graph of the busiest core: each pipe's program order and its waits.

The costs of every stage come from the :class:`~amla_numerics.pipeline.plan.Plan` (the
same records the analytic layer sums); this module only cuts them into operations and
wires the waits.

One core is simulated (every core runs the same kind of work; shared L2 and HBM bandwidth
enter as the core's share of the chip, :func:`~amla_numerics.pipeline.plan.resource_rates`).
Its work is the list of (row tile, KV blocks) pieces from
:func:`~amla_numerics.pipeline.plan.split_work`, flattened into blocks ``0 .. B-1``.

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
>>> from amla_numerics.pipeline import AttentionShape, default_schedule, load_hardware, make_plan
>>> hw = load_hardware("ascend910c")
>>> sch = default_schedule(hw, "amla", split_kv=False)
>>> b = build_graph(make_plan(hw, AttentionShape(1, 2, 1024), sch))
>>> b.blocks, b.graph.pipes[:4]
(2, ['AIC.MTE2', 'AIC.MTE1', 'AIC.Cube', 'AIC.FIX'])
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import NamedTuple

from amla_numerics.pipeline.des import OpGraph
from amla_numerics.pipeline.plan import CubeStage, GpuBlock, Plan, VectorStage
from amla_numerics.pipeline.rescale import RescaleCost

__all__ = ["Block", "Built", "block_sequence", "build_graph", "rescaled_blocks"]


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


class Block(NamedTuple):
    """One KV block of the busiest core's work, in program order.

    ``m`` rows x ``n`` tokens; ``first``/``last``: the block opens/closes a piece (Q load,
    final normalisation); ``rescaled``: the variant rescales O at this block.
    """

    m: int
    n: int
    first: bool
    last: bool
    rescaled: bool


def block_sequence(plan: Plan) -> list[Block]:
    """The busiest core's blocks in program order, from the plan's pieces.

    Examples
    --------
    >>> from amla_numerics.pipeline import (AttentionShape, default_schedule, load_hardware,
    ...     make_plan)
    >>> hw = load_hardware("ascend910c")
    >>> sch = default_schedule(hw, "amla", split_kv=False)
    >>> block_sequence(make_plan(hw, AttentionShape(1, 2, 1024), sch))
    [Block(m=256, n=512, first=True, last=False, rescaled=False), \
Block(m=256, n=512, first=False, last=True, rescaled=True)]
    """
    out = []
    for m, sizes in plan.split.pieces:
        flags = rescaled_blocks(len(sizes), plan.cost.probability)
        for j, n in enumerate(sizes):
            out.append(Block(m, n, j == 0, j == len(sizes) - 1, flags[j]))
    return out


class _Ascend:
    """Emits the ops of one Ascend AI core (1 AIC + nv AIVs) in program order."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.hw, self.sch = plan.hw, plan.schedule
        self.nv = plan.nv
        pipes = ["AIC.MTE2", "AIC.MTE1", "AIC.Cube", "AIC.FIX"]
        for v in range(self.nv):
            pipes += [f"AIV{v}.MTE2", f"AIV{v}.Vector", f"AIV{v}.MTE3"]
        self.g = OpGraph(pipes, plan.rates)
        self.lat = self.hw["flag_latency_cycles"]
        self.depth = self.sch.depth
        self.l1_last_use: list[int] = []  # per L1 chunk loaded: the last MTE1 op reading it
        self.mte2_ops: list[int] = []
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
        self.u_read_last: dict[int, list[int]] = {}

    # -- AIC ---------------------------------------------------------------------------
    def _cube_stage(
        self,
        label: str,
        c: CubeStage,
        load_deps: list[tuple[int, float]],
        fix_deps: list[tuple[int, float]],
        fix_chip: float | None = None,
    ) -> None:
        """All ``c.cols`` output column tiles of one AIC stage, its totals cut evenly into
        ``chunks x tm`` ops; ``load_deps`` and ``fix_deps`` gate the first column only.

        Per column tile: ``kc`` L1 chunks in, then per row sub-tile (each in its own L0C
        tile, ping-pong) one MTE1 move and one MMAD per chunk, then its FIX out."""
        g, sch = self.g, self.sch
        kc, tm = c.kc, c.tm
        chunks = c.cols * kc
        mte2_bytes, hbm = c.mte2 / chunks, c.hbm / chunks
        mte1_bytes, cube = c.mte1 / (chunks * tm), c.cube / (chunks * tm)
        fix_bytes = c.fix / (c.cols * tm)
        chip = fix_bytes if fix_chip is None else fix_chip
        load_dem = [
            ("L2 read port", mte2_bytes),
            ("L2 (chip share)", mte2_bytes),
            ("HBM (chip share)", hbm),
        ]
        fix_dem = [("L2 write port", fix_bytes), ("L2 (chip share)", chip)]
        mte1_cycles, fix_cycles = mte1_bytes / self.hw["mte1_bpc"], fix_bytes / self.hw["fix_bpc"]
        back, l0, l0c = sch.l1_stream_buffers, sch.l0_buffers, sch.l0c_buffers
        for i_col in range(c.cols):
            loads = []
            for i in range(kc):
                d = list(load_deps) if i == 0 and i_col == 0 else []
                if len(self.l1_last_use) >= back:  # an L1 block is free once its last use moved on
                    d.append((self.l1_last_use[-back], 0.0))
                loads.append(g.add("AIC.MTE2", 0.0, d, load_dem, label))
                self.l1_last_use.append(-1)
            self.mte2_ops.append(loads[-1])
            for i_m in range(tm):
                for i in range(kc):
                    d1 = [(loads[i], 0.0)]
                    if len(self.cube_ops) >= l0:  # L0A/L0B ping-pong
                        d1.append((self.cube_ops[-l0], 0.0))
                    m1 = g.add("AIC.MTE1", mte1_cycles, d1, (), label)
                    self.l1_last_use[len(self.l1_last_use) - kc + i] = m1
                    dc = [(m1, 0.0)]
                    if i == 0 and len(self.fix_ops) >= l0c:  # a free L0C tile
                        dc.append((self.fix_ops[-l0c], 0.0))
                    self.cube_ops.append(g.add("AIC.Cube", cube, dc, (), label))
                self.fix_ops.append(
                    g.add(
                        "AIC.FIX",
                        fix_cycles,
                        [(self.cube_ops[-1], 0.0), *(fix_deps if i_m == 0 and i_col == 0 else [])],
                        fix_dem,
                        label,
                    )
                )

    def c1(self, t: int, m: int, n: int, first_of_piece: bool) -> None:
        label = f"C1 {t}"
        if first_of_piece:  # Q of the new row tile stays resident in L1
            qb = self.plan.q_bytes(m)
            self.g.add(
                "AIC.MTE2",
                0.0,
                (),
                [("L2 read port", qb), ("L2 (chip share)", qb), ("HBM (chip share)", qb)],
                f"Q {t}",
            )
        s_free = (
            [(op, self.lat) for op in self.s_read_last[t - self.depth]]
            if t - self.depth in self.s_read_last
            else []
        )  # S workspace slot
        self._cube_stage(label, self.plan.c1(m, n), [], s_free)
        self.c1_fix[t] = self.fix_ops[-1]

    def c2(self, t: int, m: int, n: int, rescaled: bool) -> None:
        label = f"C2 {t}"
        c = self.plan.c2(m, n)
        a_ready = [(op, self.lat) for op in self.a_write_last[t]]
        if self.plan.cost.design == "atomic":  # P V is added into O after O's rescale
            o_ready = [(op, self.lat) for op in self.rescale_last.get(t, [])] if rescaled else []
        else:  # the partial workspace slot is free once U(t - depth) read it
            o_ready = [(op, self.lat) for op in self.u_read_last.get(t - self.depth, [])]
        self._cube_stage(
            label, c, a_ready, o_ready, self.plan.fix_l2_bytes(c.fix / (c.cols * c.tm))
        )
        self.c2_mte2_last[t] = self.mte2_ops[-1]  # the A workspace slot is read
        self.c2_fix_last[t] = self.fix_ops[-1]

    # -- AIV ---------------------------------------------------------------------------
    def _vector_stage(
        self,
        v: int,
        label: str,
        st: VectorStage,
        subs: int,
        deps: list[tuple[int, float]],
        write_deps: list[tuple[int, float]],
        *,
        count_hbm: bool = True,
    ) -> tuple[int, int]:
        """One AIV stage on vector core ``v`` cut into ``subs`` UB sub-tiles, each MTE2 in
        (when it reads), Vector, MTE3 out; ``deps`` and ``write_deps`` gate the first,
        ``count_hbm=False`` charges no HBM bytes. Returns the last sub-tile's first op (its
        read, else its Vector op) and its write."""
        g, hw = self.g, self.hw
        read, vec, write, atomic = st.read / subs, st.vec / subs, st.write / subs, st.atomic / subs
        hbm = st.hbm / subs if count_hbm else 0.0
        ub = self.ub_out[v]
        nub = self.sch.ub_buffers
        mte2, vector, mte3 = f"AIV{v}.MTE2", f"AIV{v}.Vector", f"AIV{v}.MTE3"
        read_cycles = read / hw["aiv_mte2_bpc"]
        read_dem = [("L2 read port", read), ("L2 (chip share)", read), ("HBM (chip share)", hbm)]
        cyc = write / hw["mte3_bpc"] + atomic / hw["atomic_bpc"]
        write_dem = [
            ("L2 write port", write + atomic),
            ("L2 (chip share)", write + atomic * (1.0 + self.plan.rmw)),
        ]
        last = (-1, -1)
        for s in range(subs):
            d = list(deps) if s == 0 else []
            if len(ub) >= nub:
                d.append((ub[-nub], 0.0))
            prev = None
            if read > 0 or hbm > 0:
                prev = g.add(mte2, read_cycles, d, read_dem, label)
                d = []
            vo = g.add(vector, vec, d + ([(prev, 0.0)] if prev is not None else []), (), label)
            wo = g.add(mte3, cyc, [(vo, 0.0), *(write_deps if s == 0 else [])], write_dem, label)
            ub.append(wo)
            last = (vo if prev is None else prev), wo
        return last

    def v1(self, t: int, m: int, n: int, rescaled: bool) -> None:
        r = m / self.nv
        subs = max(1, math.ceil(r / self.sch.vec_rows))
        v1 = self.plan.v1(m, n)
        ro = self.plan.rescale_o(m)
        s_ready = [(self.c1_fix[t], self.lat)]
        a_free = (
            [(self.c2_mte2_last[t - self.depth], self.lat)]
            if t - self.depth in self.c2_mte2_last
            else []
        )
        s_last, a_last, o_last = [], [], []
        for v in range(self.nv):
            rd, wo = self._vector_stage(v, f"V1 {t}", v1, subs, s_ready, a_free)
            s_last.append(rd)
            a_last.append(wo)
            if rescaled:
                o_after = [(self.c2_fix_last[t - 1], self.lat)] if t - 1 in self.c2_fix_last else []
                _, wo = self._vector_stage(v, f"R {t}", ro, subs, o_after, [], count_hbm=False)
                o_last.append(wo)
        self.s_read_last[t] = s_last
        self.a_write_last[t] = a_last
        self.rescale_last[t] = o_last

    def u(self, t: int, m: int, first: bool) -> None:
        """``workspace``/``ub`` designs: each AIV reads the P V partial of block t (and the
        old O), RowMuls + Add, writes O; its own stage after C2(t)."""
        r = m / self.nv
        subs = max(1, math.ceil(r / self.sch.vec_rows))
        uo = self.plan.update_o(m, first)
        ready = [(self.c2_fix_last[t], self.lat)]
        last = []
        for v in range(self.nv):
            rd, _ = self._vector_stage(v, f"U {t}", uo, subs, ready, [])
            last.append(rd)
        self.u_read_last[t] = last

    def v2(self, t: int, m: int) -> None:
        r = m / self.nv
        subs = max(1, math.ceil(r / self.sch.vec_rows))
        v2 = self.plan.v2(m)
        ready = [(self.c2_fix_last[t], self.lat)]
        for v in range(self.nv):
            self._vector_stage(v, f"V2 {t}", v2, subs, ready, [])


def _build_ascend(plan: Plan, blocks: Sequence[Block]) -> OpGraph:
    em = _Ascend(plan)
    cost, sch = plan.cost, plan.schedule
    nblk = len(blocks)
    d = sch.depth
    c1_done = c2_done = v1_done = 0  # blocks emitted per stage
    v2_queue: list[int] = []
    atomic = cost.design == "atomic"

    def drain() -> None:
        nonlocal v1_done
        while True:
            if (
                atomic
                and v2_queue
                and c2_done > v2_queue[0]
                and (v1_done >= min(v2_queue[0] + d, nblk))
            ):
                t = v2_queue.pop(0)
                em.v2(t, blocks[t][0])
                continue
            t = v1_done
            # atomic: the rescale in V1(t) follows C2(t-1); otherwise V1(t) only needs its
            # A slot, freed by C2(t-d)
            ready = (t == 0 or c2_done >= t) if atomic else c2_done >= t - d + 1
            if t < nblk and c1_done > t and ready:
                m, n, _, last, resc = blocks[t]
                em.v1(t, m, n, resc and atomic)
                v1_done += 1
                if last and atomic:
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
            m, n, first, last, resc = blocks[c]
            em.c2(c, m, n, resc)
            c2_done += 1
            if not atomic:
                drain()  # V1(c + d - 1 ...) before U(c): the kernel's preload order
                em.u(c, m, first)
                if last:
                    em.v2(c, m)
            drain()
    drain()
    if v2_queue or v1_done != nblk:  # pragma: no cover - an emission-order bug
        raise RuntimeError("pipeline schedule builder left work unemitted")
    return em.g


def _build_gpu(plan: Plan, blocks: Sequence[Block]) -> OpGraph:
    hw, sch = plan.hw, plan.schedule
    g = OpGraph(["SM.Load", "SM.Tensor", "SM.SIMT"], plan.rates)
    rate = hw["l2_read_bpc"]
    d = sch.depth
    stages = 2  # shared-memory KV stages (check_capacity assumes 2)
    pv: dict[int, int] = {}
    qk: dict[int, int] = {}
    simt_ops: dict[int, int] = {}
    costs: dict[int, GpuBlock] = {}

    def emit_qk(t: int) -> None:
        m, n, first, _, resc = blocks[t]
        if first:
            qb = plan.q_bytes(m)
            g.add(
                "SM.Load",
                qb / rate,
                (),
                [("L2 read (per SM)", qb), ("HBM (chip share)", qb)],
                f"Q {t}",
            )
        c = costs[t] = plan.gpu_block(m, n, 1.0 if resc else 0.0)
        dl = [(pv[t - stages], 0.0)] if t - stages in pv else []
        ld = g.add(
            "SM.Load",
            c.load / rate,
            dl,
            [("L2 read (per SM)", c.load), ("HBM (chip share)", c.hbm)],
            f"KV {t}",
        )
        qk[t] = g.add("SM.Tensor", c.qk, [(ld, 0.0)], (), f"QK {t}")
        deps = [(qk[t], 0.0)] + ([(pv[t - 1], 0.0)] if t - 1 in pv else [])
        simt_ops[t] = g.add("SM.SIMT", c.simt, deps, (), f"S {t}")

    def emit_pv(t: int) -> None:
        pv[t] = g.add("SM.Tensor", costs[t].pv, [(simt_ops[t], 0.0)], (), f"PV {t}")
        if blocks[t].last:  # the tile's output leaves the registers: one store to HBM
            out = plan.out_bytes(blocks[t].m)
            g.add("SM.Load", out / rate, [(pv[t], 0.0)], [("HBM (chip share)", out)], f"O {t}")

    nblk = len(blocks)
    for it in range(nblk + d - 1):
        if it < nblk:
            emit_qk(it)
        c = it - (d - 1)
        if c >= 0:
            emit_pv(c)
    return g


def build_graph(plan: Plan, blocks: Sequence[Block] | None = None) -> Built:
    """Build the operation graph of the busiest core from ``plan``.

    ``blocks`` replaces the plan's block sequence (:func:`block_sequence`), e.g. by a
    shortened one (:mod:`~amla_numerics.pipeline.periodic`); every op's label ends with
    the index of its block in that sequence.

    Examples
    --------
    >>> from amla_numerics.pipeline import (AttentionShape, default_schedule, load_hardware,
    ...     make_plan)
    >>> hw = load_hardware("h800_sxm5")
    >>> sch = default_schedule(hw, "fa_fp32", split_kv=False)
    >>> b = build_graph(make_plan(hw, AttentionShape(1, 1, 256, heads=64), sch))
    >>> b.blocks, b.graph.label[:3]
    (4, ['Q 0', 'KV 0', 'QK 0'])
    """
    seq = block_sequence(plan) if blocks is None else list(blocks)
    g = _build_gpu(plan, seq) if plan.hw.kind == "gpu" else _build_ascend(plan, seq)
    return Built(
        graph=g,
        blocks=len(seq),
        active_cores=plan.split.active_cores,
        clock_ghz=plan.clock_ghz,
        cost=plan.cost,
    )

"""The event simulation of a long block sequence from a short one: steady state, extrapolated.

A preload pipeline over ``r`` identical KV blocks is periodic once its start-up has died
out: every operation of block ``j + 1`` starts and ends exactly ``P`` cycles after the
same operation of block ``j``. So the busiest core's block sequence
(:func:`~amla_numerics.pipeline.graph.block_sequence`) is shortened: every run of more than
:data:`KEEP` identical interior blocks keeps only :data:`KEEP` of them. The short sequence
is simulated by the event loop (:mod:`~amla_numerics.pipeline.eventloop`: compiled, or the
reference :func:`~amla_numerics.pipeline.des.simulate` for a process's first operations);
in each shortened run the blocks ``KEEP - TAIL - PAIRS - 1 .. KEEP - TAIL - 1`` (past the
start-up, before the next run's influence) must be exact shifts of each other (every start
and end, to :data:`SHIFT_RTOL` of the period), which gives ``P``. The ``R`` removed blocks
then add ``R P`` to the makespan, ``R`` times one block's busy cycles to every pipe and
resource, and ``R`` times one period of the critical-path walk to its attribution (the
walk through a periodic stretch repeats with the blocks). When a check fails, the run is
kept longer (:data:`KEEP` doubled, up to the full sequence, where the result is the
reference simulation itself).

Examples
--------
>>> from amla_numerics.pipeline import AttentionShape, default_schedule, load_hardware, make_plan
>>> from amla_numerics.pipeline.des import simulate
>>> from amla_numerics.pipeline.graph import build_graph
>>> hw = load_hardware("ascend910c")
>>> plan = make_plan(hw, AttentionShape(128, 2, 16384), default_schedule(hw, "amla"))
>>> fast = simulate_periodic(plan)
>>> ref = simulate(build_graph(plan).graph)
>>> abs(fast.makespan / ref.makespan - 1) < 1e-9, fast.removed > 0
(True, True)
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence

import numpy as np

from amla_numerics.pipeline.des import OpGraph, SimResult, simulate
from amla_numerics.pipeline.eventloop import (
    Events,
    Frozen,
    compiled_wanted,
    freeze,
    run_events,
    simulate_compiled,
    walk,
)
from amla_numerics.pipeline.graph import Block, block_sequence, build_graph
from amla_numerics.pipeline.plan import Plan

__all__ = [
    "KEEP",
    "PAIRS",
    "SHIFT_RTOL",
    "TAIL",
    "PeriodicSim",
    "Shortened",
    "shorten",
    "simulate_periodic",
    "simulated_blocks",
]

#: Blocks a run of identical interior blocks keeps in the short sequence (first try).
KEEP: int = 6
#: Block pairs that must be exact shifts of each other to call a run periodic.
PAIRS: int = 2
#: Last kept blocks of a run left out of the check (the next block's start-up reaches them).
TAIL: int = 1
#: Relative tolerance of the shift check (of the period).
SHIFT_RTOL: float = 1e-9


@dataclasses.dataclass(frozen=True)
class Shortened:
    """A block sequence with its long runs cut to ``keep`` blocks and its repeated pieces to two.

    ``runs`` lists (first index in the short sequence, kept blocks, removed blocks): the
    removed blocks are copies of the run's blocks (in the full sequence, including those of
    the pieces dropped). ``units`` lists (first block of the first of two kept identical
    pieces, blocks per piece, pieces dropped after them, index of the first piece's run in
    ``runs``).
    """

    blocks: tuple[Block, ...]
    runs: tuple[tuple[int, int, int], ...]
    units: tuple[tuple[int, int, int, int], ...] = ()


def _pieces(blocks: Sequence[Block]) -> list[list[Block]]:
    out: list[list[Block]] = []
    for b in blocks:
        if b.first or not out:
            out.append([])
        out[-1].append(b)
    return out


def _cut(piece: list[Block], keep: int) -> tuple[list[Block], list[tuple[int, int, int]]]:
    """One piece with its runs of more than ``keep`` identical interior blocks cut."""
    out: list[Block] = []
    runs = []
    i, n = 0, len(piece)
    while i < n:
        b = piece[i]
        j = i + 1
        if not (b.first or b.last):
            while j < n and piece[j] == b:
                j += 1
        if j - i > keep:
            runs.append((len(out), keep, j - i - keep))
            out.extend(piece[i : i + keep])
        else:
            out.extend(piece[i:j])
        i = j
    return out, runs


def shorten(blocks: Sequence[Block], keep: int) -> Shortened:
    """Cut every run of more than ``keep`` identical interior blocks to ``keep`` blocks, then
    every run of more than two identical (cut) pieces holding a cut run to two pieces.

    Interior: neither the first nor the last block of a piece.

    Examples
    --------
    >>> f, i, l = (Block(256, 512, j == 0, j == 2, j > 0) for j in range(3))
    >>> s = shorten([f, *[i] * 9, l], keep=4)
    >>> len(s.blocks), s.runs, s.units
    (6, ((1, 4, 5),), ())
    >>> s = shorten([f, *[i] * 9, l] * 3 + [f, *[i] * 20, l], keep=4)
    >>> len(s.blocks), s.runs, s.units
    (12, ((1, 4, 5), (7, 4, 26)), ((0, 6, 2, 0),))
    """
    cut = [_cut(p, keep) for p in _pieces(blocks)]
    out: list[Block] = []
    runs: list[list[int]] = []
    units = []
    i = 0
    while i < len(cut):
        piece, pruns = cut[i]
        j = i + 1
        if len(pruns) == 1:
            while j < len(cut) and cut[j][0] == piece and len(cut[j][1]) == 1:
                j += 1
        same = j - i
        if same > 2:
            units.append((len(out), len(piece), same - 2, len(runs)))
            extra = sum(cut[k][1][0][2] for k in range(i + 2, j))
            for k in range(i, i + 2):
                runs.append([len(out) + pruns[0][0], keep, cut[k][1][0][2]])
                out.extend(piece)
            runs[-1][2] += extra
        else:
            for k in range(i, j):
                runs.extend([len(out) + a, b, c] for a, b, c in cut[k][1])
                out.extend(cut[k][0])
        i = j
    return Shortened(tuple(out), tuple((a, b, c) for a, b, c in runs), tuple(units))


@functools.lru_cache(maxsize=4096)
def _block_of(label: str) -> int:
    return int(label.rsplit(" ", 1)[1])


@dataclasses.dataclass(frozen=True)
class PeriodicSim:
    """What the model reads from a simulation, for the full block sequence.

    ``makespan``, busy cycles and the critical-path attribution equal the reference
    simulation of the full sequence (to rounding); ``removed`` blocks were extrapolated.
    """

    makespan: float
    busy: Mapping[str, float]
    demand: Mapping[str, float]
    attribution: Mapping[str, float]
    removed: int

    def pipe_busy(self) -> dict[str, float]:
        """Pipe name -> busy cycles."""
        return dict(self.busy)

    def resource_busy(self) -> dict[str, float]:
        """Resource name -> cycles of demand (bytes / rate)."""
        return dict(self.demand)

    def critical_path_attribution(self) -> dict[str, float]:
        """Fraction of the makespan the critical path spends on each pipe, latency or resource."""
        return dict(self.attribution)


class _Failed(Exception):
    """A run did not reach a checkable steady state in the kept blocks."""


def _window(first: int, kept: int) -> tuple[int, int]:
    lo = first + kept - TAIL - PAIRS - 1
    if lo <= first:
        raise _Failed
    return lo, first + kept - TAIL - 1


def _shifted(ev: Events, pipe: np.ndarray, a: np.ndarray, c: np.ndarray) -> float:
    """The common shift of ops ``c`` over ops ``a`` (every start and end), else _Failed."""
    if len(a) != len(c):
        raise _Failed
    st, en = ev.start, ev.end
    shift = float(st[c[0]] - st[a[0]])
    tol = SHIFT_RTOL * max(abs(shift), 1.0)
    if (
        (pipe[a] != pipe[c]).any()
        or (np.abs(st[c] - st[a] - shift) > tol).any()
        or (np.abs(en[c] - en[a] - shift) > tol).any()
    ):
        raise _Failed
    return shift


def _segment(
    by_block: list[np.ndarray], position: np.ndarray, pairs: Sequence[tuple[int, int]]
) -> tuple[int, int]:
    """The walk's slice between an op of a later block and the same op of its earlier copy."""
    for early, late in pairs:
        px, py = position[by_block[early]], position[by_block[late]]
        hit = np.flatnonzero((px >= 0) & (py >= 0) & (px > py))
        if hit.size:
            return int(py[hit[0]]), int(px[hit[0]])
    raise _Failed


class _Totals:
    """The busy cycles, demand and makespan of a short simulation, grown by repeated blocks
    (the same float operations, in the same order, as the reference's sums)."""

    def __init__(self, ev: Events, g: OpGraph, f: Frozen) -> None:
        self.ev, self.f = ev, f
        self.inv = np.asarray(g.inv_rates())
        self.busy = np.bincount(f.pipe, ev.end - ev.start, minlength=len(g.pipes))
        cycles = f.dem_bytes * self.inv[f.dem_res]
        self.demand = np.bincount(f.dem_res, cycles, minlength=len(g.resources))
        self.makespan = float(ev.end.max())

    def repeat(self, ops: np.ndarray, times: int) -> None:
        ev, f = self.ev, self.f
        np.add.at(self.busy, f.pipe[ops], times * (ev.end[ops] - ev.start[ops]))
        first, count = f.dem_ptr[ops], f.dem_ptr[ops + 1] - f.dem_ptr[ops]
        ks = np.repeat(first - (np.cumsum(count) - count), count) + np.arange(count.sum())
        if ks.size:  # every op's demands, op after op
            res = f.dem_res[ks]
            np.add.at(self.demand, res, times * f.dem_bytes[ks] * self.inv[res])


def _extrapolate(
    ev: Events, g: OpGraph, f: Frozen, short: Shortened, compiled: bool
) -> PeriodicSim:
    block = np.fromiter(map(_block_of, g.label), np.int64, len(g))
    order = np.argsort(block, kind="stable")
    by_block = np.split(order, np.flatnonzero(np.diff(block[order])) + 1)
    tot = _Totals(ev, g, f)
    path = walk(ev, g, f, compiled=compiled)
    position = np.full(len(g), -1, np.int64)
    position[path.ops] = np.arange(path.ops.size)
    codes = len(g.pipes) + len(g.resources) + 1
    extra = np.zeros(codes)
    removed = 0
    for first, kept, rem in short.runs:
        lo, hi = _window(first, kept)
        period = 0.0
        for b in range(lo, hi):
            period = _shifted(ev, f.pipe, by_block[b], by_block[b + 1])
        a, z = _segment(by_block, position, [(b, b + 1) for b in range(hi - 1, lo - 1, -1)])
        tot.makespan += rem * period
        tot.repeat(by_block[lo], rem)
        path.charge(extra, a, z, rem)
        removed += rem
    for first, size, dropped, run in short.units:
        lo, hi = _window(*short.runs[run][:2])
        shift = 0.0
        for b in range(lo, hi + 1):
            shift = _shifted(ev, f.pipe, by_block[b], by_block[b + size])
        a, z = _segment(by_block, position, [(b, b + size) for b in range(hi, lo - 1, -1)])
        tot.makespan += dropped * shift
        tot.repeat(np.concatenate(by_block[first + size : first + 2 * size]), dropped)
        path.charge(extra, a, z, dropped)
        removed += dropped * size
    cp = np.zeros(codes)
    path.charge(cp)
    cp += extra
    names = [*g.pipes, *g.resources, "latency"]
    share = (cp / tot.makespan).tolist()
    attribution = {names[c]: share[c] for c in path.order().tolist() if cp[c] > 0}
    return PeriodicSim(
        tot.makespan,
        dict(zip(g.pipes, tot.busy.tolist(), strict=True)),
        dict(zip(g.resources, tot.demand.tolist(), strict=True)),
        attribution,
        removed,
    )


class PeriodicSimulator:
    """Simulates one plan at several sets of resource rates (the ops are built once).

    ``compiled``: run the compiled event loop (True), the pure-Python reference (False), or
    let the process decide (None: :func:`~amla_numerics.pipeline.eventloop.compiled_wanted`,
    compiled once it has simulated enough operations); the results are the same bit for bit.
    """

    def __init__(self, plan: Plan, keep: int = KEEP, compiled: bool | None = None) -> None:
        self.full = block_sequence(plan)
        self.plan = plan
        self.keep = keep
        self.compiled = compiled
        self._graphs: dict[int, tuple[Shortened, OpGraph, Frozen]] = {}

    def _graph(self, keep: int) -> tuple[Shortened, OpGraph, Frozen]:
        if keep not in self._graphs:
            short = shorten(self.full, keep)
            graph = build_graph(self.plan, short.blocks).graph
            self._graphs[keep] = short, graph, freeze(graph)
        return self._graphs[keep]

    def __call__(self, rates: Mapping[str, float] | None = None) -> PeriodicSim | SimResult:
        """Simulate at ``rates`` (None: the plan's); the reference result when nothing is cut."""
        keep = self.keep
        while True:
            short, graph, frozen = self._graph(keep)
            if rates is not None:
                graph.set_rates(rates)
            fast = compiled_wanted(len(graph)) if self.compiled is None else self.compiled
            if not short.runs:
                return simulate_compiled(graph, frozen) if fast else simulate(graph)
            try:
                ev = run_events(graph, frozen, compiled=fast)
                return _extrapolate(ev, graph, frozen, short, fast)
            except _Failed:
                keep = 2 * keep if 2 * keep < len(self.full) else len(self.full)


def simulated_blocks(plan: Plan, keep: int = KEEP) -> int:
    """Blocks the short sequence of ``plan`` simulates (its periodic runs cut)."""
    return len(shorten(block_sequence(plan), keep).blocks)


def simulate_periodic(plan: Plan, keep: int = KEEP) -> PeriodicSim | SimResult:
    """The event simulation of ``plan``'s busiest core, with long periodic runs extrapolated.

    Returns a :class:`PeriodicSim` (or the reference
    :class:`~amla_numerics.pipeline.des.SimResult` when no run is long enough to cut).
    """
    return PeriodicSimulator(plan, keep)()

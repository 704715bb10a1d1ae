"""A discrete-event simulator of in-order pipes, dependencies with latency and shared bandwidth.

The model is a graph of operations. Each operation runs on one *pipe* (an in-order
server: it starts only after the previous operation on the same pipe has ended), waits
for its *dependencies* (each with a latency, e.g. a cross-core flag), and may draw bytes
from *shared resources* (bandwidth servers such as an L2 port or a core's share of HBM).
A resource serves the operations in the order they become ready (FIFO), each for
``bytes / rate`` cycles; an operation lasts ``max(own cycles, bytes / rate on each
resource)``. Buffers (ping-pong L0, L1 blocks, UB tiles, GM workspace slots) are tokens,
expressed as dependencies on the operation that frees the token.

Events are processed in time order with a heap: an operation enters the heap when it is
at the head of its pipe and all its dependencies have ended.

Examples
--------
>>> g = OpGraph(pipes=["load", "compute"], rates={"bus": 2.0})
>>> a = g.add("load", 10, demands=[("bus", 40)])    # bus-bound: 40 / 2 = 20 cycles
>>> b = g.add("compute", 5, deps=[(a, 3)])           # flag latency 3
>>> r = simulate(g)
>>> r.start, r.end, r.makespan
([0.0, 23.0], [20.0, 28.0], 28.0)
>>> r.critical_path_attribution()
{'compute': 0.17857142857142858, 'latency': 0.10714285714285714, 'bus': 0.7142857142857143}
"""

from __future__ import annotations

import dataclasses
import heapq
from array import array
from collections.abc import Iterable, Mapping
from itertools import pairwise

__all__ = ["OpGraph", "SimResult", "deadlock_error", "simulate"]


class OpGraph:
    """A mutable graph of operations on named pipes, built in program order per pipe.

    Parameters
    ----------
    pipes : iterable of str
        Pipe (in-order server) names.
    rates : mapping of str to float
        Shared resource name -> bytes per cycle.
    """

    def __init__(self, pipes: Iterable[str], rates: Mapping[str, float]) -> None:
        self.pipes: list[str] = list(pipes)
        self._pipe_index = {p: i for i, p in enumerate(self.pipes)}
        self.resources: list[str] = list(rates)
        self._res_index = {r: i for i, r in enumerate(self.resources)}
        self._inv_rate = [1.0 / float(rates[r]) for r in self.resources]
        # typed arrays (the standard library's): numpy copies each in one block (eventloop.freeze)
        self.pipe = array("q")
        self.cycles = array("d")
        self.label: list[str] = []
        # every op's dependencies (source, latency) and demands (resource, bytes), flat:
        # op i owns the slices dep_end[i - 1]:dep_end[i] and dem_end[i - 1]:dem_end[i]
        self.dep_src = array("q")
        self.dep_lat = array("d")
        self.dep_end = array("q")
        self.dem_res = array("q")
        self.dem_bytes = array("d")
        self.dem_end = array("q")
        self._lists: tuple[list[list[tuple[int, float]]], ...] | None = None

    def __len__(self) -> int:
        return len(self.pipe)

    @property
    def deps(self) -> list[list[tuple[int, float]]]:
        """Per op: its dependencies as (op id, latency) pairs."""
        return self._per_op()[0]

    @property
    def demands(self) -> list[list[tuple[int, float]]]:
        """Per op: its demands as (resource index, bytes) pairs."""
        return self._per_op()[1]

    def _per_op(self) -> tuple[list[list[tuple[int, float]]], ...]:
        if self._lists is None:
            self._lists = tuple(
                [list(zip(a[i:j], b[i:j], strict=True)) for i, j in pairwise([0, *end])]
                for a, b, end in (
                    (self.dep_src, self.dep_lat, self.dep_end),
                    (self.dem_res, self.dem_bytes, self.dem_end),
                )
            )
        return self._lists

    def inv_rates(self) -> list[float]:
        """Cycles per byte of each resource, in :attr:`resources` order."""
        return list(self._inv_rate)

    def set_rates(self, rates: Mapping[str, float]) -> None:
        """Change the bytes per cycle of existing resources (the ops stay as they are)."""
        for r, v in rates.items():
            if r in self._res_index:
                self._inv_rate[self._res_index[r]] = 1.0 / float(v)

    def add(
        self,
        pipe: str,
        cycles: float,
        deps: Iterable[tuple[int, float] | int] = (),
        demands: Iterable[tuple[str, float]] = (),
        label: str = "",
    ) -> int:
        """Append an operation to ``pipe``; return its id.

        ``deps`` are op ids or (op id, latency) pairs; ``demands`` are (resource, bytes).
        """
        n = len(self.pipe)
        src, lat = self.dep_src, self.dep_lat
        for x in deps:
            if isinstance(x, int):
                op, wait = x, 0.0
            else:
                op, wait = x[0], float(x[1])
            if not 0 <= op < n:
                raise ValueError(f"dependency {op} of a new op must be an existing op id (< {n})")
            src.append(op)
            lat.append(wait)
        if demands:
            res, dem_res, dem_bytes = self._res_index, self.dem_res, self.dem_bytes
            for r, b in demands:
                if b > 0:
                    dem_res.append(res[r])
                    dem_bytes.append(float(b))
        self.dep_end.append(len(src))
        self.dem_end.append(len(self.dem_res))
        self.pipe.append(self._pipe_index[pipe])
        self.cycles.append(float(cycles))
        self.label.append(label)
        self._lists = None
        return n


@dataclasses.dataclass(frozen=True)
class SimResult:
    """Start and end cycle of every operation, and how the critical path was spent."""

    graph: OpGraph
    start: list[float]
    end: list[float]
    blame: list[tuple[str, int]]  # per op: (why it started when it did, predecessor op)
    limiter: list[str] | None = None  # per op: the pipe or resource that set its duration

    @property
    def makespan(self) -> float:
        """Cycle at which the last operation ends."""
        return max(self.end, default=0.0)

    def pipe_busy(self) -> dict[str, float]:
        """Pipe name -> busy cycles."""
        busy = dict.fromkeys(self.graph.pipes, 0.0)
        for p, s, e in zip(self.graph.pipe, self.start, self.end, strict=True):
            busy[self.graph.pipes[p]] += e - s
        return busy

    def resource_busy(self) -> dict[str, float]:
        """Resource name -> cycles of demand (bytes / rate)."""
        g = self.graph
        busy = dict.fromkeys(g.resources, 0.0)
        for r, b in zip(g.dem_res, g.dem_bytes, strict=True):
            busy[g.resources[r]] += b * g._inv_rate[r]
        return busy

    def critical_path_attribution(self) -> dict[str, float]:
        """Fraction of the makespan the critical path spends on each pipe, latency or resource.

        Walks back from the last operation to end: each op's duration is charged to its
        pipe, or to the shared resource whose bytes / rate set it; the gap before it to the
        latency of the dependency that released it, or to the resource it waited for (the
        walk then continues at the op that held the resource).
        """
        if not self.end:
            return {}
        g = self.graph
        op = max(range(len(self.end)), key=self.end.__getitem__)
        out: dict[str, float] = {}
        t = self.end[op]
        while op >= 0:
            name = self.limiter[op] if self.limiter else g.pipes[g.pipe[op]]
            out[name] = out.get(name, 0.0) + self.end[op] - self.start[op]
            why, pred = self.blame[op]
            gap = self.start[op] - (self.end[pred] if pred >= 0 else 0.0)
            if gap > 0 and pred >= 0:
                out[why] = out.get(why, 0.0) + gap
            op = pred
        return {k: v / t for k, v in out.items() if v > 0}


def _queues(g: OpGraph) -> list[list[int]]:
    """Each pipe's ops in program order."""
    queues: list[list[int]] = [[] for _ in g.pipes]
    for op, p in enumerate(g.pipe):
        queues[p].append(op)
    return queues


def _dependents(g: OpGraph) -> list[list[tuple[int, float]]]:
    """Per op: the ops that wait for it, with the latency of each wait."""
    dependents: list[list[tuple[int, float]]] = [[] for _ in g.pipe]
    for op, d in enumerate(g.deps):
        for src, lat in d:
            dependents[src].append((op, lat))
    return dependents


def deadlock_error(g: OpGraph, heads: list[int], done: int) -> RuntimeError:
    """The error of a simulation that ran ``done`` ops; ``heads``: the ops waiting at the
    head of their pipes."""
    n = len(g.pipe)
    stuck = [g.label[op] for op in heads]
    return RuntimeError(
        f"schedule deadlock: {n - done} operations never started; pipe heads: {stuck[:4]}"
    )


def simulate(graph: OpGraph) -> SimResult:
    """Run the discrete-event simulation of ``graph``.

    Raises
    ------
    RuntimeError
        If some operations can never start (a dependency cycle in the schedule).
    """
    g = graph
    n = len(g.pipe)
    npipes = len(g.pipes)
    queues = _queues(g)
    head = [0] * npipes
    pipe_free, pipe_last = [0.0] * npipes, [-1] * npipes
    res_free, res_last = [0.0] * len(g.resources), [-1] * len(g.resources)
    limiter: list[str] = [""] * n
    inv_rate = g._inv_rate
    pending = [len(d) for d in g.deps]
    ready = [0.0] * n
    ready_from: list[tuple[str, int]] = [("", -1)] * n
    dependents = _dependents(g)
    start, end = [0.0] * n, [0.0] * n
    blame: list[tuple[str, int]] = [("", -1)] * n
    heap = [(0.0, q[0]) for q in queues if q and pending[q[0]] == 0]  # ready at cycle 0
    heapq.heapify(heap)
    done = 0
    pop, push = heapq.heappop, heapq.heappush
    pipe_of, cycles_of, demands_of = g.pipe, g.cycles, g.demands
    resources, pipes = g.resources, g.pipes
    while heap:
        t, op = pop(heap)
        p = pipe_of[op]
        # Who released this op: the pipe predecessor or a dependency (its latency)?
        if pipe_free[p] >= ready[op]:
            why = ("", pipe_last[p])
        else:
            why = ready_from[op]
        s = t
        dur = cycles_of[op]
        lim = pipes[p]
        dem = demands_of[op]
        if dem:
            for r, _ in dem:
                if res_free[r] > s:
                    s = res_free[r]
                    why = (resources[r], res_last[r])
            for r, b in dem:
                need = b * inv_rate[r]
                res_free[r] = s + need
                res_last[r] = op
                if need > dur:
                    dur, lim = need, resources[r]
        limiter[op] = lim
        e = s + dur
        start[op] = s
        end[op] = e
        blame[op] = why
        pipe_free[p] = e
        pipe_last[p] = op
        h = head[p] + 1
        head[p] = h
        done += 1
        q = queues[p]
        if h < len(q) and pending[q[h]] == 0:
            nxt = q[h]
            push(heap, (ready[nxt] if ready[nxt] > e else e, nxt))
        for nxt, lat in dependents[op]:
            el = e + lat
            if el > ready[nxt]:
                ready[nxt] = el
                ready_from[nxt] = ("latency" if lat > 0 else "", op)
            pending[nxt] -= 1
            if pending[nxt] == 0:
                q2 = pipe_of[nxt]
                qq = queues[q2]
                if head[q2] < len(qq) and qq[head[q2]] == nxt:
                    pf = pipe_free[q2]
                    push(heap, (ready[nxt] if ready[nxt] > pf else pf, nxt))
    if done != n:
        heads = [q[h] for q, h in zip(queues, head, strict=True) if h < len(q)]
        raise deadlock_error(g, heads, done)
    # An op released by its pipe predecessor: the gap is charged to nothing (it is 0).
    blame = [(w or "latency", pr) for w, pr in blame]
    return SimResult(graph=g, start=start, end=end, blame=blame, limiter=limiter)

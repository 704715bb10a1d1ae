"""The event loop of :func:`~amla_numerics.pipeline.des.simulate`, compiled.

:func:`~amla_numerics.pipeline.des.simulate` is the readable reference: a heap of
``(ready cycle, op id)`` pairs, pipes served in program order, shared resources in the
order operations become ready. :func:`simulate_compiled` runs the same events in the same
order with the same float64 operations over flat arrays, compiled by numba (written by hand:
no maintained discrete-event library runs a heap loop at compiled speed), so every start,
end, blame and limiter equals the reference's bit for bit (``tests/test_pipeline_eventloop.py``
compares them on every variant, Ascend and GPU, splits, an L2 spill and random graphs with
tied ready times).

numba is imported, and the loop compiled (or loaded from numba's cache), on first use: about
1.1 s once per process. :func:`compiled_wanted` is the policy of the model's fast path: the
first :data:`COMPILE_AFTER_OPS` simulated operations of a process run in the pure-Python
reference (a single run never pays the start-up), every later one compiled.

Why the order is the reference's: every op enters the heap exactly once (when it is at the
head of its pipe and its last dependency has ended), so the ``(cycle, op id)`` keys are
distinct and any correct binary heap pops them in the same order as :mod:`heapq`.

The arrays: per op its pipe, own cycles, dependencies (source, latency) and demands
(resource, bytes) in compressed-row form; each source's dependents in op order
(:func:`freeze`). Blame is coded ``-1`` for a latency or pipe wait, else the resource index;
the limiter ``-1`` for the op's pipe, else the resource index.

Examples
--------
>>> from amla_numerics.pipeline.des import OpGraph, simulate
>>> g = OpGraph(pipes=["load", "compute"], rates={"bus": 2.0})
>>> a = g.add("load", 10, demands=[("bus", 40)])
>>> b = g.add("compute", 5, deps=[(a, 3)])
>>> r = simulate_compiled(g)
>>> r.start, r.end, r.blame == simulate(g).blame
([0.0, 23.0], [20.0, 28.0], True)
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from typing import Any

import numpy as np

from amla_numerics.pipeline.des import OpGraph, SimResult, deadlock_error, simulate

__all__ = [
    "COMPILE_AFTER_OPS",
    "Events",
    "Frozen",
    "Walk",
    "compiled_wanted",
    "freeze",
    "load_compiled",
    "run_events",
    "simulate_compiled",
    "walk",
]

#: Operations a process simulates with the pure-Python reference before it compiles the
#: event loop. Importing numba and starting its compiler (or loading the cached machine code)
#: costs about 1.1 s once per process (0.45 s import, 0.65 s first call, measured on the
#: 2-core development machine), about as long as the reference takes for this many
#: operations (about 5 us each): a single small run never pays it, a sweep pays it once.
COMPILE_AFTER_OPS: int = 200_000
_simulated_ops = 0

_I = np.int64


@dataclasses.dataclass(frozen=True)
class Frozen:
    """An :class:`~amla_numerics.pipeline.des.OpGraph`'s ops as flat arrays (the rates apart)."""

    pipe: np.ndarray
    cycles: np.ndarray
    queue_ptr: np.ndarray  # per pipe: its ops' slice of ``queue``
    queue: np.ndarray  # each pipe's ops in program order, pipe after pipe
    pending: np.ndarray  # per op: dependencies to wait for
    dem_ptr: np.ndarray
    dem_res: np.ndarray
    dem_bytes: np.ndarray
    dnt_ptr: np.ndarray  # per op: its dependents' slice of ``dnt_op`` / ``dnt_lat``
    dnt_op: np.ndarray
    dnt_lat: np.ndarray


def _ptr(counts: np.ndarray) -> np.ndarray:
    out = np.zeros(len(counts) + 1, _I)
    np.cumsum(counts, out=out[1:])
    return out


def freeze(g: OpGraph) -> Frozen:
    """Flatten ``g``'s ops (program order kept per pipe, dependents in op order)."""
    n = len(g)
    pipe = np.array(g.pipe, _I)
    src = np.array(g.dep_src, _I)
    dep_ptr = np.concatenate(([0], np.array(g.dep_end, _I)))
    dst = np.repeat(np.arange(n, dtype=_I), np.diff(dep_ptr))
    order = np.argsort(src, kind="stable")  # per source: dependents in op order, deps order
    return Frozen(
        pipe=pipe,
        cycles=np.array(g.cycles, np.float64),
        queue_ptr=_ptr(np.bincount(pipe, minlength=len(g.pipes))),
        queue=np.argsort(pipe, kind="stable").astype(_I),
        pending=np.diff(dep_ptr),
        dem_ptr=np.concatenate(([0], np.array(g.dem_end, _I))),
        dem_res=np.array(g.dem_res, _I),
        dem_bytes=np.array(g.dem_bytes, np.float64),
        dnt_ptr=_ptr(np.bincount(src, minlength=n)),
        dnt_op=dst[order],
        dnt_lat=np.array(g.dep_lat, np.float64)[order],
    )


def _heap_push(ht: Any, ho: Any, size: int, t: float, op: int) -> int:
    i = size
    while i > 0:
        parent = (i - 1) >> 1
        pt, po = ht[parent], ho[parent]
        if pt < t or (pt == t and po < op):
            break
        ht[i], ho[i] = pt, po
        i = parent
    ht[i], ho[i] = t, op
    return size + 1


def _heap_pop(ht: Any, ho: Any, size: int) -> int:
    """Move the last item into the root's place and sift it down (the root was read)."""
    size -= 1
    t, op = ht[size], ho[size]
    i = 0
    while True:
        c = 2 * i + 1
        if c >= size:
            break
        if c + 1 < size and (ht[c + 1] < ht[c] or (ht[c + 1] == ht[c] and ho[c + 1] < ho[c])):
            c += 1
        if t < ht[c] or (t == ht[c] and op < ho[c]):
            break
        ht[i], ho[i] = ht[c], ho[c]
        i = c
    ht[i], ho[i] = t, op
    return size


def _events(f: Any, inv_rate: Any, out: Any) -> int:
    """The reference loop over arrays; fills ``out`` (start, end, why, pred, limiter) and
    returns the number of ops that ran."""
    pipe, cycles, qptr, queue = f[0], f[1], f[2], f[3]
    pending = f[4].copy()
    dptr, dres, dbytes, nptr, nop, nlat = f[5], f[6], f[7], f[8], f[9], f[10]
    start, end, why, pred, lim = out
    n, npipes, nres = pipe.shape[0], qptr.shape[0] - 1, inv_rate.shape[0]
    head = np.zeros(npipes, np.int64)
    pipe_free, pipe_last = np.zeros(npipes), np.full(npipes, -1, np.int64)
    res_free, res_last = np.zeros(nres), np.full(nres, -1, np.int64)
    ready, ready_op = np.zeros(n), np.full(n, -1, np.int64)
    ht, ho = np.empty(n + 1), np.empty(n + 1, np.int64)
    size = 0
    for p in range(npipes):
        if qptr[p] < qptr[p + 1] and pending[queue[qptr[p]]] == 0:
            size = _heap_push(ht, ho, size, 0.0, queue[qptr[p]])
    done = 0
    while size > 0:
        t, op = ht[0], ho[0]
        size = _heap_pop(ht, ho, size)
        p = pipe[op]
        w, pr = -1, (pipe_last[p] if pipe_free[p] >= ready[op] else ready_op[op])
        s, dur, li = t, cycles[op], -1
        for k in range(dptr[op], dptr[op + 1]):
            r = dres[k]
            if res_free[r] > s:
                s, w, pr = res_free[r], r, res_last[r]
        for k in range(dptr[op], dptr[op + 1]):
            r = dres[k]
            need = dbytes[k] * inv_rate[r]
            res_free[r] = s + need
            res_last[r] = op
            if need > dur:
                dur, li = need, r
        e = s + dur
        start[op], end[op], why[op], pred[op], lim[op] = s, e, w, pr, li
        pipe_free[p], pipe_last[p] = e, op
        head[p] += 1
        done += 1
        h = qptr[p] + head[p]
        if h < qptr[p + 1] and pending[queue[h]] == 0:
            nxt = queue[h]
            size = _heap_push(ht, ho, size, max(ready[nxt], e), nxt)
        for k in range(nptr[op], nptr[op + 1]):
            nxt = nop[k]
            el = e + nlat[k]
            if el > ready[nxt]:
                ready[nxt], ready_op[nxt] = el, op
            pending[nxt] -= 1
            if pending[nxt] == 0:
                q2 = pipe[nxt]
                h2 = qptr[q2] + head[q2]
                if h2 < qptr[q2 + 1] and queue[h2] == nxt:
                    size = _heap_push(ht, ho, size, max(ready[nxt], pipe_free[q2]), nxt)
    return done


@dataclasses.dataclass(frozen=True)
class Events:
    """Every op's start and end cycle, blame (``why``: -1 latency or pipe, else the
    resource; ``pred``: the op that released it, -1 none) and limiter (-1 its pipe, else
    the resource), as arrays indexed by op id."""

    start: np.ndarray
    end: np.ndarray
    why: np.ndarray
    pred: np.ndarray
    lim: np.ndarray


@functools.cache
def _compiled() -> tuple[Any, Any]:
    """The event loop and the walk compiled by numba (imported here, on first use)."""
    import numba

    jit = numba.njit(cache=True)
    # _events calls the heap functions by their module names: compiled first, put in place
    globals().update(_heap_push=jit(_heap_push), _heap_pop=jit(_heap_pop))
    events, walker = jit(_events), jit(_walk)
    g = OpGraph(["p"], {"r": 1.0})  # one call each on a one-op graph: machine code loaded now
    g.add("p", 1.0, demands=[("r", 1.0)])
    ev = _arrays(freeze(g))
    out = (np.full(1, np.nan), np.empty(1), np.empty(1, _I), np.empty(1, _I), np.empty(1, _I))
    events(ev, np.ones(1), out)
    walker(out, ev[0], 1, 1)
    return events, walker


def _arrays(f: Frozen) -> tuple[np.ndarray, ...]:
    """The frozen graph as the loop reads it."""
    return (
        *(f.pipe, f.cycles, f.queue_ptr, f.queue, f.pending, f.dem_ptr, f.dem_res),
        *(f.dem_bytes, f.dnt_ptr, f.dnt_op, f.dnt_lat),
    )


def load_compiled() -> None:
    """Compile the event loop now (or load it from numba's cache): every later simulation of
    this process runs compiled."""
    _compiled()


def compiled_wanted(ops: int) -> bool:
    """Count ``ops`` more simulated operations; True once the process has simulated more than
    :data:`COMPILE_AFTER_OPS` (or loaded the compiled loop): run them compiled."""
    global _simulated_ops
    _simulated_ops += ops
    return _compiled.cache_info().currsize > 0 or _simulated_ops > COMPILE_AFTER_OPS


def _from_result(sim: SimResult) -> Events:
    """The reference's result as :class:`Events` arrays (the same codes)."""
    g = sim.graph
    code = {r: i for i, r in enumerate(g.resources)}
    why = [code.get(w, -1) for w, _ in sim.blame]  # "latency": -1
    lim = [code.get(x, -1) for x in sim.limiter or ()]  # the op's pipe: -1
    return Events(
        np.array(sim.start),
        np.array(sim.end),
        np.array(why, _I),
        np.array([p for _, p in sim.blame], _I),
        np.array(lim, _I) if lim else np.full(len(g), -1, _I),
    )


def run_events(graph: OpGraph, frozen: Frozen | None = None, *, compiled: bool = True) -> Events:
    """The event simulation of ``graph`` at its current rates, as arrays.

    ``frozen``: ``freeze(graph)``, when the caller simulates the same ops at several rates.
    ``compiled=False`` runs the pure-Python reference instead (the same result, bit for bit).

    Raises
    ------
    RuntimeError
        If some operations can never start (a dependency cycle in the schedule).
    """
    if not compiled:
        return _from_result(simulate(graph))
    f = frozen if frozen is not None else freeze(graph)
    n = f.pipe.size
    out = (np.full(n, np.nan), np.empty(n), np.empty(n, _I), np.empty(n, _I), np.empty(n, _I))
    done = _compiled()[0](_arrays(f), np.asarray(graph.inv_rates(), np.float64), out)
    if done != n:
        waiting = np.isnan(out[0])[f.queue]
        heads = [
            int(f.queue[a + np.argmax(waiting[a:b])])
            for a, b in itertools.pairwise(f.queue_ptr.tolist())
            if waiting[a:b].any()
        ]
        raise deadlock_error(graph, heads, done)
    return Events(*out)


def simulate_compiled(graph: OpGraph, frozen: Frozen | None = None) -> SimResult:
    """:func:`~amla_numerics.pipeline.des.simulate` of ``graph`` at its current rates, compiled.

    Same arguments and errors as :func:`run_events`.
    """
    ev = run_events(graph, frozen)
    res, pipes = graph.resources, graph.pipes
    names = [*res, "latency"]  # index -1: a latency or pipe wait
    limiter = [
        res[x] if x >= 0 else pipes[p] for x, p in zip(ev.lim.tolist(), graph.pipe, strict=True)
    ]
    blame = list(zip(map(names.__getitem__, ev.why.tolist()), ev.pred.tolist(), strict=True))
    return SimResult(
        graph=graph, start=ev.start.tolist(), end=ev.end.tolist(), blame=blame, limiter=limiter
    )


def _walk(ev: Any, pipe: Any, npipes: int, nres: int) -> Any:
    start, end, why, pred, lim = ev
    n = 0
    op = np.argmax(end)
    ops = np.empty(end.shape[0], np.int64)
    while op >= 0:
        ops[n] = op
        n += 1
        op = pred[op]
    ops = ops[:n]
    name, wcode = np.empty(n, np.int64), np.empty(n, np.int64)
    dur, gap = np.empty(n), np.empty(n)
    for i in range(n):
        op = ops[i]
        name[i] = npipes + lim[op] if lim[op] >= 0 else pipe[op]
        wcode[i] = npipes + why[op] if why[op] >= 0 else npipes + nres
        dur[i] = end[op] - start[op]
        pr = pred[op]
        g = start[op] - (end[pr] if pr >= 0 else 0.0)
        gap[i] = g if g > 0 and pr >= 0 else 0.0
    return ops, name, dur, wcode, gap


@dataclasses.dataclass(frozen=True)
class Walk:
    """The critical path of :meth:`SimResult.critical_path_attribution
    <amla_numerics.pipeline.des.SimResult.critical_path_attribution>`, op by op from the
    last op to end: ``ops``; per op the code of what set its duration (``name``: a pipe
    index, else ``pipes + resource``), the duration, the code of what it waited for
    (``why``: ``pipes + resource``, or ``pipes + resources`` for a latency) and the gap
    (0 where none is charged)."""

    ops: np.ndarray
    name: np.ndarray
    dur: np.ndarray
    why: np.ndarray
    gap: np.ndarray

    def charge(self, out: np.ndarray, lo: int = 0, hi: int | None = None, k: float = 1.0) -> None:
        """Add ``k`` times the charges of the walk's ops ``lo:hi`` to ``out`` (per code), in
        the reference's order: duration, then gap, op by op (a duration ``end - start`` is
        added as one term, where the reference adds ``end`` and subtracts ``start``: the
        sums agree to rounding)."""
        codes = np.stack([self.name[lo:hi], self.why[lo:hi]], axis=1).ravel()
        charges = np.stack([k * self.dur[lo:hi], k * self.gap[lo:hi]], axis=1).ravel()
        np.add.at(out, codes, charges)

    def order(self) -> np.ndarray:
        """Codes in the order the reference first charges them (a gap only when > 0)."""
        codes = np.stack([self.name, self.why], axis=1).ravel()
        charged = np.stack([np.ones_like(self.gap, bool), self.gap != 0], axis=1).ravel()
        _, first = np.unique(codes[charged], return_index=True)
        return codes[charged][np.sort(first)]


def walk(ev: Events, graph: OpGraph, frozen: Frozen, *, compiled: bool = True) -> Walk:
    """The critical-path walk of ``ev`` (a simulation of ``graph``); ``compiled=False`` walks
    in pure Python (the same arrays)."""
    arrays = (ev.start, ev.end, ev.why, ev.pred, ev.lim)
    fn = _compiled()[1] if compiled else _walk
    return Walk(*fn(arrays, frozen.pipe, len(graph.pipes), len(graph.resources)))

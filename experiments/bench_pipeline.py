"""Benchmark of the pipeline model: the fast path (compiled event loop, steady state
extrapolated) against the reference event simulation of every block (pure Python), measured
in the same run (CPU time of this process).

1. The report's configuration (ascend910c, batch 128, s_q 2, s_k 16384) per variant:
   reference DES vs the fast path (whole model run, and the simulations alone), and the
   largest relative difference of the time.
2. A 100-configuration sweep (batch x kv-len x s_q x variant): both paths.
3. The report's throughput table (nominal, every variant): its cost.
4. With ``--intervals N``: the bounds over the parameter box (``--sensitivity``) of the
   first N configurations of the sweep, and their mean per configuration (x 100: the sweep
   with intervals).
5. With ``--report``: the default ``make report`` (grid, throughput table, plots) against
   the same report without the throughput table, and the plots' share, in one run (wall
   seconds: the grid runs in worker processes).

Run: ``.venv/bin/python experiments/bench_pipeline.py [--intervals N] [--report]``
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import itertools
import os
import platform
import tempfile
import time

from amla_numerics.cli.pipeline import long_run_note
from amla_numerics.pipeline.des import simulate
from amla_numerics.pipeline.eventloop import COMPILE_AFTER_OPS, load_compiled
from amla_numerics.pipeline.extremes import Calibration
from amla_numerics.pipeline.graph import block_sequence, build_graph
from amla_numerics.pipeline.hardware import load_hardware
from amla_numerics.pipeline.model import run
from amla_numerics.pipeline.periodic import KEEP, PeriodicSimulator, shorten
from amla_numerics.pipeline.plan import make_plan
from amla_numerics.pipeline.schedule import default_schedule
from amla_numerics.pipeline.sensitivity import interval
from amla_numerics.pipeline.shape import AttentionShape
from amla_numerics.variants import VARIANTS

BATCHES = (8, 32, 64, 128, 256)
KV_LENS = (1024, 4096, 8192, 16384, 32768)
Q_LENS = (1, 2)
VARIANTS_SWEEP = ("amla", "fa_fp32")


def _cpu(fn, repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.process_time()
        fn()
        best = min(best, time.process_time() - t)
    return best


def ops_report(hw, wl) -> None:
    """Operations each path simulates, and how often the reference serves a shared
    resource out of program order (why a program-order recurrence is not the simulation)."""
    plan = make_plan(hw, wl, default_schedule(hw, "amla"))
    full = build_graph(plan).graph
    short = build_graph(plan, shorten(block_sequence(plan), KEEP).blocks).graph
    sim = simulate(full)
    out_of_order = 0
    for r in range(len(full.resources)):
        ops = [op for op, dem in enumerate(full.demands) if any(x == r for x, _ in dem)]
        served = sorted(ops, key=lambda op: (sim.start[op], op))
        out_of_order += sum(b < a for a, b in itertools.pairwise(served))
    print(
        f"report configuration, amla: the fast path simulates {len(short):,} operations"
        f" ({len(shorten(block_sequence(plan), KEEP).blocks)} blocks), the reference"
        f" {len(full):,} ({len(block_sequence(plan))} blocks); the reference serves a shared"
        f" resource after an operation later in program order {out_of_order:,} times"
    )


def simulation_only(hw, wl, sch) -> tuple[float, float]:
    """CPU seconds of the simulations alone, graphs built beforehand: the reference event
    simulation of every block against the compiled loop on the short sequence plus its
    extrapolation (``periodic``)."""
    plan = make_plan(hw, wl, sch)
    full = build_graph(plan).graph
    fast = PeriodicSimulator(plan)
    fast()  # builds and freezes the short graph
    return _cpu(lambda: simulate(full), repeat=5), _cpu(fast, repeat=5)


def _wall(fn):
    """(wall seconds, CPU seconds of this process and its reaped workers, result)."""
    t, c = time.perf_counter(), os.times()
    out = fn()
    c2 = os.times()
    cpu = (c2.user + c2.system + c2.children_user + c2.children_system) - (
        c.user + c.system + c.children_user + c.children_system
    )
    return time.perf_counter() - t, cpu, out


def interval_breakdown(hw, wl, sch) -> None:
    """Where one box search's time goes: the model runs of the anchor's re-fits and of the
    configuration, and the operation graphs built inside them (the modules' functions
    wrapped for the count; CPU seconds of this process)."""
    from amla_numerics.pipeline import calibrate, periodic, sensitivity

    count: collections.Counter[str] = collections.Counter()
    built = [0.0]

    def counted(fn, key):
        def wrapper(*args, **kwargs):
            count[key] += 1
            return fn(*args, **kwargs)

        return wrapper

    def timed(*args, **kwargs):
        t = time.process_time()
        out = build_graph(*args, **kwargs)
        built[0] += time.process_time() - t
        return out

    saved = calibrate.run, sensitivity.run, periodic.build_graph
    calibrate.run, sensitivity.run = counted(run, "anchor"), counted(run, "configuration")
    periodic.build_graph = timed
    try:
        total = _cpu(lambda: interval(hw, wl, sch))
    finally:
        calibrate.run, sensitivity.run, periodic.build_graph = saved
    print(
        f"  where the time of one box search goes ({sch.variant} batch {wl.batch} s_q"
        f" {wl.q_len} s_k {wl.kv_len}): {total:.1f} s, {count['anchor']} model runs of the"
        f" anchor's re-fits and {count['configuration']} of the configuration; building"
        f" operation graphs {built[0]:.1f} s"
    )


def bench_intervals(hw, configs, n: int) -> None:
    """Box bounds (``--sensitivity``) of ``n`` sweep configurations spread over the sweep,
    each with its own anchor re-fits, then all with one shared :class:`Calibration` (the
    re-fit at a parameter point depends on the hardware only: ``--sweep --sensitivity``)."""
    picked = configs[:: max(1, len(configs) // n)][:n]
    alone, shared_t = [], []
    shared = Calibration(hw)
    for wl, sch in picked:
        case = f"{sch.variant} batch {wl.batch} s_q {wl.q_len} s_k {wl.kv_len}"
        t_alone = _cpu(lambda wl=wl, sch=sch: interval(hw, wl, sch))
        t_shared = _cpu(lambda wl=wl, sch=sch: interval(hw, wl, sch, calibration=shared))
        alone.append(t_alone)
        shared_t.append(t_shared)
        note = long_run_note(hw, wl, sch, sensitivity=True, samples=0) or "under 5 s"
        print(f"  bounds of {case}: {t_alone:.1f} s alone, {t_shared:.1f} s in the shared sweep")
        print(f"    the command line's estimate: {note.removeprefix('amla-numerics: ')}")
    interval_breakdown(hw, *picked[0])
    mean_alone = sum(alone) / n
    mean_later = sum(shared_t[1:]) / max(1, n - 1)
    print(
        f"sweep with intervals: {mean_alone:.1f} s per configuration alone (mean of {n}), about"
        f" {100 * mean_alone / 60:.0f} min for 100; sharing the calibration:"
        f" {shared_t[0]:.1f} s for the first, {mean_later:.1f} s for each later one, about"
        f" {(shared_t[0] + 99 * mean_later) / 60:.1f} min for 100"
    )


def bench_report() -> None:
    """``make report`` with and without its throughput table, and its plots, in one run."""
    from amla_numerics.analysis.outputs import write_outputs
    from amla_numerics.analysis.report import ReportConfig, build_report

    cfg = ReportConfig()
    bare = dataclasses.replace(cfg, plots=False)
    with tempfile.TemporaryDirectory() as out:
        full = _wall(lambda: build_report(cfg, jobs=2, throughput=True))
        w_full = _wall(lambda: write_outputs(full[2], out, plots=True))
        no_table = _wall(lambda: build_report(cfg, jobs=2, throughput=False))
        w_no_table = _wall(lambda: write_outputs(no_table[2], out, plots=True))
        no_plots = _wall(lambda: build_report(bare, jobs=2, throughput=False))
        w_no_plots = _wall(lambda: write_outputs(no_plots[2], out, plots=False))
    for i, unit in ((0, "wall"), (1, "CPU")):
        a, b = full[i] + w_full[i], no_table[i] + w_no_table[i]
        meas, draw = no_table[i] - no_plots[i], w_no_table[i] - w_no_plots[i]
        print(
            f"make report ({unit} s, jobs 2): {a:.1f} with the throughput table, {b:.1f}"
            f" without, ratio {a / b:.2f}; plots {meas + draw:.1f} (their measurements"
            f" {meas:.1f}, drawing {draw:.1f})"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--intervals", type=int, default=0, help="bound the first N sweep configs")
    ap.add_argument("--report", action="store_true", help="time make report with/without table")
    args = ap.parse_args()
    print(f"python {platform.python_version()} on {platform.machine()}; CPU seconds")
    hw = load_hardware("ascend910c")
    wl = AttentionShape(128, 2, 16384)
    sch = default_schedule(hw, "amla")
    cold = _cpu(lambda: run(hw, wl, sch), repeat=5)
    load = _cpu(load_compiled)
    print(
        f"report configuration, amla, before the process loads numba (pure Python below"
        f" {COMPILE_AFTER_OPS:,} simulated operations): {cold:.4f} s; numba's import and the"
        f" compiled loop's load (its compilation on a fresh checkout): {load:.2f} s, once per"
        " process"
    )
    for v in ("amla", "fa_fp32"):
        sch = default_schedule(hw, v)
        ref = _cpu(lambda sch=sch: run(hw, wl, sch, reference=True), repeat=5)
        fast = _cpu(lambda sch=sch: run(hw, wl, sch), repeat=5)
        a, b = run(hw, wl, sch), run(hw, wl, sch, reference=True)
        diff = abs(a.time_us / b.time_us - 1)  # type: ignore[union-attr]
        print(
            f"report configuration, {v}: reference DES {ref:.3f} s, fast path {fast:.4f} s,"
            f" ratio {ref / fast:.1f}x; |time difference| {diff:.1e} relative"
        )
        sim_ref, sim_fast = simulation_only(hw, wl, sch)
        print(
            f"  the simulation alone (graphs built beforehand): reference {sim_ref:.3f} s,"
            f" fast path {sim_fast:.4f} s, ratio {sim_ref / sim_fast:.0f}x"
        )
    ops_report(hw, wl)
    configs = [
        (AttentionShape(b, q, kv), default_schedule(hw, v))
        for b, kv, q, v in itertools.product(BATCHES, KV_LENS, Q_LENS, VARIANTS_SWEEP)
    ]
    assert len(configs) == 100
    ref = _cpu(lambda: [run(hw, w, s, reference=True) for w, s in configs])
    fast = _cpu(lambda: [run(hw, w, s) for w, s in configs])
    print(
        f"sweep of 100 configurations: reference DES {ref:.1f} s, fast path {fast:.1f} s,"
        f" ratio {ref / fast:.1f}x"
    )
    table = _cpu(lambda: [run(hw, wl, default_schedule(hw, v)) for v in VARIANTS])
    print(f"report throughput table ({len(VARIANTS)} variants, nominal): {table:.2f} s")
    if args.intervals:
        bench_intervals(hw, configs, args.intervals)
    if args.report:
        bench_report()


if __name__ == "__main__":
    main()

"""Benchmark of the default report's plots: their own measurements and their drawing.

The default ``make report`` configuration (``ReportConfig()``, 2 worker processes). The grid
is measured once, without the plots; then, ``--repeat`` times (the best is printed), each
part in fresh processes that start where ``make report`` starts that part:

1. the plots' measurements (the compensation sweep, the traced case, the scatter case): the
   CPU seconds of a report whose grid is two tiny cases (measured by the worker processes,
   as the default grid is), with the plots' measurements, minus the same report without
   them;
2. the drawing: :func:`~amla_numerics.analysis.plots.save_report_plots` on the default
   report, every PNG written (matplotlib imported on the way, as ``make report`` does);
   with ``--no-layout`` also without matplotlib's constrained layout (a diagnostic of the
   layout's share: those PNGs are not the report's).

CPU seconds of each process and its reaped worker processes (``os.times``); the target of
the plots is 10 s in all.

Run: ``OPENBLAS_NUM_THREADS=1 .venv/bin/python experiments/bench_plots.py [--repeat N]``
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pickle
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

TARGET_S = 10.0


def _cpu() -> float:
    """CPU seconds of this process and its reaped children so far."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _tiny(plots: bool, sweep_seeds: int | None):
    from amla_numerics.analysis.report import ReportConfig

    cfg = ReportConfig()
    if sweep_seeds is not None:
        cfg = dataclasses.replace(cfg, c_sweep_seeds=tuple(range(sweep_seeds)))
    return dataclasses.replace(
        cfg,
        head_dims=(64,),
        kv_lens=(256,),
        block_n=128,
        workloads=("random",),
        seeds=(0, 1),
        rows=2,
        plots=plots,
    )


def _child(part: str, jobs: int, work: Path, sweep_seeds: int | None) -> None:
    """One part in this fresh process; prints its CPU seconds."""
    if part == "draw-no-layout":
        from matplotlib.figure import Figure

        save = Figure.savefig

        def savefig(fig: Figure, *args: Any, **kwargs: Any) -> None:
            fig.set_layout_engine(None)
            save(fig, *args, **kwargs)

        Figure.savefig = savefig  # type: ignore[method-assign,assignment]
        part = "draw"
    if part == "draw":
        import scipy.stats  # noqa: F401  (make report has imported it by the time it draws)

        from amla_numerics.analysis.report import Report  # noqa: F401

        base = pickle.loads((work / "grid.pkl").read_bytes())
        plot_data = pickle.loads((work / "plot_data.pkl").read_bytes())
        report = dataclasses.replace(base, **plot_data)
        t = _cpu()
        from amla_numerics.analysis.plots import save_report_plots

        with tempfile.TemporaryDirectory() as out:
            paths = save_report_plots(report, out)
        print(_cpu() - t, len(paths))
        return
    from amla_numerics.analysis.report import build_report

    t = _cpu()
    rep = build_report(_tiny(part == "with", sweep_seeds), jobs=jobs, throughput=False)
    used = _cpu() - t
    if part == "with":
        data = {"c_sweep": rep.c_sweep, "trace": rep.trace, "scatter": rep.scatter}
        (work / "plot_data.pkl").write_bytes(pickle.dumps(data))
    print(used)


def _run(part: str, jobs: int, work: Path, sweep_seeds: int | None) -> list[float]:
    cmd = [sys.executable, __file__, "--child", part, "--jobs", str(jobs), "--work", str(work)]
    if sweep_seeds is not None:
        cmd += ["--sweep-seeds", str(sweep_seeds)]
    out = subprocess.run(
        cmd,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [float(x) for x in out.split()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=1, help="runs of each part (best printed)")
    ap.add_argument("--jobs", type=int, default=2, help="worker processes (make report: 2)")
    ap.add_argument(
        "--sweep-seeds", type=int, help="seeds 0..N-1 in the c sweep (default: the report's)"
    )
    ap.add_argument(
        "--no-layout", action="store_true", help="also draw without the constrained layout"
    )
    ap.add_argument(
        "--child",
        choices=("with", "without", "draw", "draw-no-layout"),
        help=argparse.SUPPRESS,
    )
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.repeat < 1 or args.jobs < 1 or (args.sweep_seeds is not None and args.sweep_seeds < 2):
        raise SystemExit("--repeat and --jobs must be >= 1, --sweep-seeds >= 2")
    if args.child:
        _child(args.child, args.jobs, args.work, args.sweep_seeds)
        return
    from amla_numerics.analysis.report import ReportConfig, build_report

    t = _cpu()
    base = build_report(dataclasses.replace(ReportConfig(), plots=False), jobs=args.jobs)
    grid_s = _cpu() - t
    meas, draw, bare = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "grid.pkl").write_bytes(pickle.dumps(base))
        for _ in range(args.repeat):
            with_plots = _run("with", args.jobs, work, args.sweep_seeds)[0]
            meas.append(with_plots - _run("without", args.jobs, work, args.sweep_seeds)[0])
            d, n_png = _run("draw", args.jobs, work, args.sweep_seeds)
            draw.append(d)
            if args.no_layout:
                bare.append(_run("draw-no-layout", args.jobs, work, args.sweep_seeds)[0])
    m, d = min(meas), min(draw)
    seeds = "the report's" if args.sweep_seeds is None else str(args.sweep_seeds)
    print(
        f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs;"
        f" jobs {args.jobs}; c sweep seeds: {seeds}; CPU seconds, best of {args.repeat}"
    )
    print(f"default report grid without plots: {grid_s:.1f} s")
    print(
        f"plots of the default report: {m + d:.1f} s (their measurements {m:.1f}, drawing"
        f" {d:.1f}, {int(n_png)} PNGs); target {TARGET_S:.0f} s:"
        f" {'met' if m + d <= TARGET_S else 'not met'}"
    )
    if bare:
        print(f"drawing without the constrained layout (diagnostic): {min(bare):.1f} s")


if __name__ == "__main__":
    main()

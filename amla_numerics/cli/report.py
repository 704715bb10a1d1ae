"""``amla-numerics report``: parse the grid options, build the report, render it.

Examples
--------
>>> parse_int_list("64,128", "--head-dims")
(64, 128)
>>> parse_int_list("64,x", "--head-dims")
Traceback (most recent call last):
...
ValueError: --head-dims must be a comma-separated list of integers >= 1, got '64,x'
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from amla_numerics.cli.commands import COMMANDS, CheckFailed
from amla_numerics.variants import VARIANTS, check_variant

__all__ = ["parse_int_list", "register"]


def parse_int_list(text: str, option: str) -> tuple[int, ...]:
    """``"64,128"`` -> ``(64, 128)``; every value must be an integer >= 1."""
    try:
        values = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise ValueError(f"{option} must be a comma-separated list of integers >= 1, got {text!r}")
    return values


def _parse_names(text: str, valid: tuple[str, ...], option: str) -> tuple[str, ...]:
    names = tuple(t.strip() for t in text.split(",") if t.strip())
    bad = [n for n in names if n not in valid]
    if bad or not names:
        raise ValueError(
            f"{option}: unknown name(s) {', '.join(bad) or text!r}; valid: {', '.join(valid)}"
        )
    return names


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``report`` subcommand."""
    from amla_numerics.analysis.report import DEFAULT_HEAD_DIMS, ReportConfig

    d = ReportConfig()
    p = subparsers.add_parser(
        "report",
        help=COMMANDS["report"][1],
        description="Measure every variant against the certified reference on a grid of "
        "head dims x KV lengths x workloads x seeds and print one table per head dim.",
    )
    p.add_argument("--head-dims", default=",".join(map(str, DEFAULT_HEAD_DIMS)))
    p.add_argument("--kv-lens", default=",".join(map(str, d.kv_lens)))
    p.add_argument("--block-n", type=int, default=d.block_n)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument(
        "--workloads",
        default=None,
        help=f"comma-separated workloads (default {','.join(d.workloads)}; none when --inputs "
        "is given without --workloads)",
    )
    p.add_argument("--seeds", default="0", help="comma-separated seeds (intervals over them)")
    p.add_argument("--rows", type=int, default=d.rows, help="query rows per case")
    p.add_argument(
        "--inputs",
        action="append",
        default=[],
        metavar="FILE.npz",
        help="measure your own q, k, v (optional scale, mask) arrays; repeatable; measured "
        "on their own unless --workloads is also given",
    )
    p.add_argument("--c", type=float, default=d.c, help="AMLA compensation coefficient")
    p.add_argument(
        "--policy", default=d.policy, help="precision policy preset of the emulator and bounds"
    )
    p.add_argument(
        "--group-rows",
        type=int,
        default=None,
        help="rows decided together for the lazy rescale probability (default: all rows)",
    )
    p.add_argument(
        "--splits",
        default="1",
        help="comma-separated split-KV split counts measured per case (1: unsplit)",
    )
    p.add_argument(
        "--combine",
        default=d.combine,
        help="split-KV combine modelled: cann (max/sum per split) or flashmla (log2 lse)",
    )
    p.add_argument(
        "--fail-on-hazard",
        action="store_true",
        help="exit 1 when any hazard (other than the informational clamp) left wrong values",
    )
    p.add_argument("--jobs", type=int, default=2, help="worker processes")
    p.add_argument("--scheduler", default=None, help="Dask distributed scheduler address")
    p.add_argument("--format", choices=("table", "json", "csv", "markdown"), default="table")
    p.add_argument("--out", default=None, help="directory for report.json, report.md, plots")
    p.add_argument("--no-throughput", action="store_true", help="skip the pipeline model")
    p.add_argument("--no-plots", action="store_true", help="with --out: skip the PNG plots")
    p.set_defaults(handler=_run_report)


def _config_from_args(args: argparse.Namespace):
    from amla_numerics.analysis.report import ReportConfig
    from amla_numerics.analysis.workloads import WORKLOADS

    if args.block_n < 1:
        raise ValueError(f"--block-n must be >= 1, got {args.block_n}")
    if args.rows < 1:
        raise ValueError(f"--rows must be >= 1, got {args.rows}")
    if args.jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {args.jobs}")
    variants = _parse_names(args.variants, VARIANTS, "--variants")
    for v in variants:
        check_variant(v)
    try:
        seeds = tuple(int(s) for s in args.seeds.split(","))
    except ValueError:
        raise ValueError(
            f"--seeds must be a comma-separated list of integers, got {args.seeds!r}"
        ) from None
    if any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds must be distinct integers >= 0, got {args.seeds!r}")
    from amla_numerics.flash.policy import PRESETS
    from amla_numerics.variants import check_c

    if args.policy not in PRESETS:
        raise ValueError(f"--policy: unknown preset {args.policy!r}; valid: {', '.join(PRESETS)}")
    if args.group_rows is not None and (args.group_rows < 1 or args.rows % args.group_rows):
        raise ValueError(
            f"--group-rows must be a positive divisor of --rows ({args.rows}), "
            f"got {args.group_rows}"
        )
    check_c(args.c, "--c")
    splits = parse_int_list(args.splits, "--splits")
    from amla_numerics.flash.splitkv import COMBINES

    if args.combine not in COMBINES:
        raise ValueError(f"--combine: unknown {args.combine!r}; valid: {', '.join(COMBINES)}")
    if args.workloads is None:
        workloads = () if args.inputs else ReportConfig().workloads
    else:
        workloads = _parse_names(args.workloads, WORKLOADS, "--workloads")
    return ReportConfig(
        head_dims=parse_int_list(args.head_dims, "--head-dims"),
        kv_lens=parse_int_list(args.kv_lens, "--kv-lens"),
        block_n=args.block_n,
        variants=variants,
        workloads=workloads,
        seeds=seeds,
        rows=args.rows,
        c=args.c,
        inputs=tuple(args.inputs),
        policy=args.policy,
        group_rows=args.group_rows,
        splits=splits,
        combine=args.combine,
        plots=bool(args.out) and not args.no_plots,
    )


def _progress_bar(total: int):
    """A tqdm bar on a terminal, nothing otherwise."""
    if not sys.stderr.isatty():
        return None, lambda: None
    from tqdm import tqdm

    bar = tqdm(total=total, unit="case", desc="measuring", file=sys.stderr, leave=False)
    return (lambda done, _total: bar.update(done - bar.n)), bar.close


def _run_report(args: argparse.Namespace) -> int:
    from amla_numerics.analysis.outputs import write_outputs
    from amla_numerics.analysis.render import render
    from amla_numerics.analysis.report import build_report

    config = _config_from_args(args)
    out_dir = Path(args.out) if args.out else None
    if out_dir is not None:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            probe = out_dir / ".write-test"
            probe.write_text("")
            probe.unlink()
        except OSError as exc:
            raise ValueError(f"--out {str(out_dir)!r} is not writable: {exc.strerror}") from None
    n_cases = (
        len(config.head_dims) * len(config.kv_lens) * len(config.workloads) * len(config.seeds)
    )
    n_cases += len(config.inputs)
    from amla_numerics.sizes import check_grid

    est = check_grid(
        config.head_dims, config.kv_lens, config.rows, len(config.variants), n_cases
    )  # refuses (exit 2) what cannot fit before any work
    if est.seconds > 60:
        print(f"estimated time: about {est.seconds / 60:.0f} min", file=sys.stderr)
    progress, close = _progress_bar(n_cases)
    try:
        report = build_report(
            config,
            jobs=args.jobs,
            scheduler=args.scheduler,
            throughput=not args.no_throughput,
            progress=progress,
            argv=args.argv,
        )
    finally:
        close()
    print(render(report, args.format), end="")
    if out_dir is not None:
        written = write_outputs(report, out_dir, plots=not args.no_plots)
        print(f"wrote {', '.join(str(p) for p in written)}", file=sys.stderr)
    if report.violations:
        raise CheckFailed(
            f"{len(report.violations)} record(s) have covered elements above their a priori "
            "bound or not finite"
        )
    if args.fail_on_hazard and report.hazard_failures:
        raise CheckFailed(f"{len(report.hazard_failures)} record(s) hit hazards (--fail-on-hazard)")
    return 0

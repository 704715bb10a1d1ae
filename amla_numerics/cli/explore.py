"""``amla-numerics explore``: the design-space explorer (:mod:`amla_numerics.explore`).

Parses the axes into a :class:`~amla_numerics.explore.space.Grid` and a
:class:`~amla_numerics.explore.space.Measure`, runs
:func:`~amla_numerics.explore.run.explore`, prints the table, and writes the JSON
(``points`` and ``limits``) and the Pareto picture when asked.

Examples
--------
>>> from amla_numerics.cli import main
>>> main(["explore", "--variants", "fa_fp33"])  # stderr: unknown variant ...
2
"""

from __future__ import annotations

import argparse
from pathlib import Path

from amla_numerics.cli.commands import COMMANDS

__all__ = ["register"]


def _names(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def _floats(text: str, option: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in _names(text))
    except ValueError:
        raise ValueError(
            f"{option} must be a comma-separated list of numbers, got {text!r}"
        ) from None


def _blocks(text: str) -> tuple[int | None, ...]:
    out: list[int | None] = []
    for x in _names(text):
        if x == "default":
            out.append(None)
            continue
        try:
            out.append(int(x))
        except ValueError:
            raise ValueError(f"--block-sizes must be integers or 'default', got {text!r}") from None
    return tuple(out)


def _ints(text: str, option: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in _names(text))
    except ValueError:
        raise ValueError(
            f"{option} must be a comma-separated list of integers, got {text!r}"
        ) from None


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``explore`` subcommand."""
    p = subparsers.add_parser(
        "explore",
        help=COMMANDS["explore"][1],
    )
    p.add_argument("--variants", default="fa_fp32,amla,lazy,skip_scale")
    p.add_argument("--tau-log2", default=None, help="thresholds of lazy/fa4 (log2 units)")
    p.add_argument("--tau-ln", default=None, help="thresholds of skip_scale (nats)")
    p.add_argument("--p-casts", default="bf16", help="P cast formats: bf16,e4m3,e5m2")
    p.add_argument("--p-scales", default="1", help="static P scales")
    p.add_argument("--accumulators", default="exact", help="exact or matrix-unit presets")
    p.add_argument(
        "--block-sizes", default="default", help="KV block sizes ('default': the chip's)"
    )
    p.add_argument("--splits", default="1", help="split-KV counts")
    p.add_argument("--hardware", default="ascend910c", help="chips (hardware file names)")
    p.add_argument("--workloads", default="mla,drift,sinks")
    p.add_argument("--seeds", type=int, default=3, help="seeds per workload")
    p.add_argument("--rows", type=int, default=8, help="emulated query rows")
    p.add_argument("--kv-len", type=int, default=2048, help="emulated keys")
    p.add_argument("--head-dim", type=int, default=576)
    p.add_argument("--no-throughput", action="store_true", help="skip the pipeline model")
    p.add_argument("--batch", type=int, default=32, help="modelled decode batch")
    p.add_argument("--q-len", type=int, default=2, help="modelled query length (MTP: 2)")
    p.add_argument("--tp-kv-len", type=int, default=4096, help="modelled keys")
    p.add_argument(
        "--bounds",
        action="store_true",
        help="bound the throughput over each chip's parameter box (about a minute a point)",
    )
    p.add_argument("--json", default=None, metavar="FILE", help="write points and limits")
    p.add_argument("--plot", default=None, metavar="FILE", help="write the Pareto picture (PNG)")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from amla_numerics.explore import Grid, Measure, explore

    grid = Grid(
        variants=_names(args.variants),
        taus_log2=None if args.tau_log2 is None else _floats(args.tau_log2, "--tau-log2"),
        taus_ln=None if args.tau_ln is None else _floats(args.tau_ln, "--tau-ln"),
        p_casts=_names(args.p_casts),
        p_scales=_floats(args.p_scales, "--p-scales"),
        accumulators=_names(args.accumulators),
        block_ns=_blocks(args.block_sizes),
        splits=_ints(args.splits, "--splits"),
        hardware=_names(args.hardware),
    )
    measure = Measure(
        workloads=_names(args.workloads),
        seeds=args.seeds,
        rows=args.rows,
        kv_len=args.kv_len,
        head_dim=args.head_dim,
        throughput=not args.no_throughput,
        batch=args.batch,
        q_len=args.q_len,
        tp_kv_len=args.tp_kv_len,
        bounds=args.bounds,
    )
    result = explore(grid, measure)
    print(result.table())
    if args.json:
        Path(args.json).write_text(result.to_json())
        print(f"wrote {len(result.points)} points and {len(result.limits)} limits to {args.json}")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        from amla_numerics.explore.plot import pareto_figure

        fig = pareto_figure(result)
        fig.savefig(args.plot, dpi=110)
        print(f"wrote {args.plot}")
    return 0

"""``amla-numerics make-cases``: write golden cases for hardware CI.

Examples
--------
>>> from amla_numerics.cli import main
>>> main(["make-cases", "--out", "/tmp/x", "--shapes", "128x2"])  # stderr: a shape is ...
2
"""

from __future__ import annotations

import argparse
import sys

from amla_numerics.cli.commands import COMMANDS

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``make-cases`` subcommand."""
    from amla_numerics.testing.cases import CASE_WORKLOADS

    p = subparsers.add_parser(
        "make-cases",
        help=COMMANDS["make-cases"][1],
        description="Write one dump per case (BF16 inputs, the certified reference in float64 "
        "and correctly rounded FP32/BF16, the lse) and manifest.json (sha256 of every file, "
        "versions, the reference's certified accuracy). Run your kernel on each case, add "
        "'out' (and its 'lse'), then run: amla-numerics compare DIR (judged against the "
        "declared schedule: --variant/--block-n, default fa_fp32).",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument(
        "--shapes",
        default=None,
        help="comma-separated HEADSxS_QxKV_LEN[xDKxDV] (default: MLA decode at N 2001, 513, "
        "129, 8191, s_q 1, 2 and 8, and every hazard case at 128x1x2001: about 80 MB)",
    )
    p.add_argument(
        "--workloads",
        default=None,
        help=f"comma-separated, from {', '.join(CASE_WORKLOADS)} (default: all)",
    )
    p.add_argument(
        "--long",
        action="store_true",
        help="add the long-context split-KV cases (16 heads x N 131071, about 300 MB)",
    )
    p.add_argument("--format", choices=("npz", "safetensors"), default="npz")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from amla_numerics.testing.cases import CASE_WORKLOADS, make_cases, parse_shape

    shapes = None
    if args.shapes is not None:
        shapes = [parse_shape(t.strip()) for t in args.shapes.split(",") if t.strip()]
        if not shapes:
            raise ValueError(f"--shapes must list at least one shape, got {args.shapes!r}")
    workloads = None
    if args.workloads is not None:
        workloads = [t.strip() for t in args.workloads.split(",") if t.strip()]
        bad = [w for w in workloads if w not in CASE_WORKLOADS]
        if bad or not workloads:
            raise ValueError(
                f"--workloads: unknown name(s) {', '.join(bad) or args.workloads!r}; "
                f"valid: {', '.join(CASE_WORKLOADS)}"
            )

    def progress(done: int, total: int, name: str) -> None:
        print(f"[{done}/{total}] {name}", file=sys.stderr)

    try:
        manifest = make_cases(
            args.out,
            shapes=shapes,
            workloads=workloads,
            fmt=args.format,
            seed=args.seed,
            progress=progress,
            long=args.long,
        )
    except PermissionError as exc:
        raise ValueError(f"--out {args.out!r} is not writable: {exc.strerror}") from None
    print(f"wrote {len(manifest['cases'])} cases and manifest.json to {args.out}")
    return 0

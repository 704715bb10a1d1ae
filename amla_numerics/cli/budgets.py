"""``amla-numerics check-budgets``: measure the budgeted cases, print each, fail on any over.

The built-in variants' cases of a budgets file (see :mod:`amla_numerics.analysis.budgets`)
are measured with the emulator and checked with the same code as ``compare --budget``.

Examples
--------
>>> from amla_numerics.cli import main
>>> main(["check-budgets", "--budgets", "no/such/file.toml"])  # stderr: cannot read ...
2
"""

from __future__ import annotations

import argparse
from pathlib import Path

from amla_numerics.cli.commands import COMMANDS, CheckFailed

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``check-budgets`` subcommand."""
    p = subparsers.add_parser(
        "check-budgets",
        help=COMMANDS["check-budgets"][1],
    )
    p.add_argument("--budgets", default=None, help="budgets TOML (default: the shipped file)")
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument(
        "--update",
        metavar="FILE",
        default=None,
        help="write new budgets (measured x margin) to FILE instead of checking",
    )
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from amla_numerics.analysis import budgets

    if args.jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {args.jobs}")
    book = budgets.load_budgets(args.budgets)
    if args.update:
        new = budgets.update_budgets(book, jobs=args.jobs)
        Path(args.update).write_text(budgets.format_budgets(new, budgets.BUDGETS_HEADER))
        n = sum(len(k.cases) for k in new.kernels.values())
        print(f"wrote {n} case budgets of {len(new.kernels)} kernels to {args.update}")
        return 0
    checks = budgets.check_budgets(book, jobs=args.jobs)
    if not checks:
        raise ValueError("the budgets file has no measurable case of a built-in variant")
    print(budgets.render_checks(checks))
    over = [c for c in checks if not c.ok]
    if over:
        raise CheckFailed(
            f"{len(over)} budget(s) exceeded:\n" + "\n".join(c.describe() for c in over)
        )
    print(f"all {len(checks)} budgets hold")
    return 0

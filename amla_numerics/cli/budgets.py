"""``amla-numerics check-budgets``: measure the budgeted cases, print each, fail on any over.

Examples
--------
>>> from amla_numerics.cli import main
>>> main(["check-budgets", "--budgets", "no/such/file.toml"])  # stderr: cannot read ...
2
"""

from __future__ import annotations

import argparse
from pathlib import Path

from amla_numerics.cli import CheckFailed

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``check-budgets`` subcommand."""
    p = subparsers.add_parser(
        "check-budgets",
        help="measure the budgeted cases; exit 1 naming every budget exceeded",
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

    book = budgets.load_budgets(args.budgets)
    if args.update:
        new = budgets.update_budgets(book, jobs=args.jobs)
        Path(args.update).write_text(budgets.format_budgets(new, budgets.BUDGETS_HEADER))
        print(f"wrote {len(new.budgets)} budgets to {args.update}")
        return 0
    results = budgets.check_budgets(book, jobs=args.jobs)
    print(budgets.render_results(results))
    over = [r for r in results if not r.ok]
    if over:
        raise CheckFailed("; ".join(r.describe() for r in over))
    print(f"all {len(results)} budgets hold")
    return 0

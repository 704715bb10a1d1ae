"""The ``amla-numerics`` command line: parse, build a config, call the library, render.

One module per subcommand (:data:`SUBCOMMANDS`: ``formats``, ``report``, ``budgets`` for
``check-budgets``, ``compare``, ``make_cases`` for ``make-cases``, ``pipeline``, ``explore``), each
exposing ``register(subparsers)``: it adds an argparse sub-parser whose ``handler`` takes
the parsed namespace, builds a validated configuration, calls the library and renders; it
returns an exit code. No logic lives here.

Exit codes: 0 success, 1 a check failed (a budget exceeded, a bound violated),
2 a usage error (bad option, bad value, unreadable file). A user's mistake is
reported as one sentence on stderr, never as a traceback.

Examples
--------
>>> main(["formats", "--format", "csv"])  # doctest: +ELLIPSIS
name,p,emin,emax,unit_roundoff,max_finite,min_normal,min_subnormal
fp64,53,-1022,1023,...
e5m2,3,-14,15,0.125,57344.0,6.103515625e-05,1.52587890625e-05
0
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from amla_numerics._version import __version__

__all__ = ["SUBCOMMANDS", "CheckFailed", "build_parser", "console_main", "main"]

PROG = "amla-numerics"


class CheckFailed(Exception):
    """Raised by a handler when a numerical check fails (exit code 1)."""


#: The subcommand modules, in help order; each exposes ``register(subparsers)``.
SUBCOMMANDS: tuple[str, ...] = (
    "formats",
    "report",
    "budgets",
    "compare",
    "make_cases",
    "pipeline",
    "explore",
)


def _registrars():
    # Imported here, not at module level, so that ``--version`` stays fast and the
    # subcommand modules (which import CheckFailed from this package) form no cycle.
    import importlib

    for name in SUBCOMMANDS:
        yield importlib.import_module(f"amla_numerics.cli.{name}").register


def build_parser() -> argparse.ArgumentParser:
    """Return the top-level parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Exact accuracy and modelled throughput of FlashAttention rescaling schemes.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for register in _registrars():
        register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit code (0 ok, 1 check failed, 2 usage error)."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse has already printed its one-line message
        return int(exc.code or 0)
    args.argv = argv  # recorded in report headers
    if args.command is None:
        parser.print_usage(sys.stderr)
        print(f"{PROG}: error: a COMMAND is required", file=sys.stderr)
        return 2
    try:
        return int(args.handler(args))
    except CheckFailed as exc:
        print(f"{PROG}: check failed: {exc}", file=sys.stderr)
        return 1
    except (ValueError, TypeError, OSError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


def console_main() -> None:
    """Entry point of the ``amla-numerics`` console script."""
    sys.exit(main())

"""The ``amla-numerics`` command line: parse, build a config, call the library, render.

One module per subcommand (:data:`SUBCOMMANDS`: ``formats``, ``report``, ``budgets`` for
``check-budgets``, ``compare``, ``make_cases`` for ``make-cases``, ``pipeline``), each
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
import importlib
import sys
from collections.abc import Sequence

from amla_numerics._version import __version__
from amla_numerics.cli.commands import COMMANDS, PROG, CheckFailed

__all__ = ["COMMANDS", "SUBCOMMANDS", "CheckFailed", "build_parser", "console_main", "main"]

#: The subcommand modules, in help order.
SUBCOMMANDS: tuple[str, ...] = tuple(module for module, _ in COMMANDS.values())


def build_parser(full: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """Return the top-level parser.

    Parameters
    ----------
    full : sequence of str, optional
        The commands whose complete sub-parsers are built (default: all). The others get a
        stub carrying their help line only, so that ``--help`` and a run of one command do
        not import the libraries behind every other command.
    """
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Exact accuracy and modelled throughput of FlashAttention rescaling schemes.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command, (module, help_line) in COMMANDS.items():
        if full is None or command in full:
            importlib.import_module(f"amla_numerics.cli.{module}").register(subparsers)
        else:
            subparsers.add_parser(command, help=help_line)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit code (0 ok, 1 check failed, 2 usage error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(full=[a for a in argv[:1] if a in COMMANDS])
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

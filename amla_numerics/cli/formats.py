"""``amla-numerics formats``: print every format's parameters.

Examples
--------
>>> print(render_formats("markdown").splitlines()[2])
| fp64 | 53 | -1022 | 1023 | 1.11e-16 | 1.798e+308 | 2.225e-308 | 4.941e-324 |
"""

from __future__ import annotations

import argparse
import json

from amla_numerics.cli.commands import COMMANDS

__all__ = ["register", "render_formats"]

_COLUMNS = (
    "name",
    "p",
    "emin",
    "emax",
    "unit_roundoff",
    "max_finite",
    "min_normal",
    "min_subnormal",
)


def render_formats(style: str = "table") -> str:
    """The format table as ``table`` (aligned text), ``markdown``, ``csv`` or ``json``."""
    from amla_numerics.formats import FORMATS  # ml_dtypes on use, not at --help

    rows = [f.describe() for f in FORMATS.values()]
    if style == "json":
        return json.dumps(rows, indent=2)
    if style == "csv":
        return "\n".join(
            [",".join(_COLUMNS)]
            + [
                ",".join(repr(r[c]) if isinstance(r[c], float) else str(r[c]) for c in _COLUMNS)
                for r in rows
            ]
        )

    def cell(v: object) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    cells = [[cell(r[c]) for c in _COLUMNS] for r in rows]
    if style == "markdown":
        lines = ["| " + " | ".join(_COLUMNS) + " |", "|" + "---|" * len(_COLUMNS)]
        return "\n".join(lines + ["| " + " | ".join(c) + " |" for c in cells])
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(_COLUMNS)]
    fmt = "  ".join(f"{{:>{w}}}" for w in widths)
    return "\n".join([fmt.format(*_COLUMNS)] + [fmt.format(*c) for c in cells])


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``formats`` subcommand."""
    p = subparsers.add_parser("formats", help=COMMANDS["formats"][1])
    p.add_argument("--format", choices=("table", "markdown", "csv", "json"), default="table")
    p.set_defaults(handler=lambda args: print(render_formats(args.format)) or 0)

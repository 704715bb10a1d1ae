"""The command table and the exception a failed check raises: the leaf that the parser
(:mod:`amla_numerics.cli`) and every subcommand module import, so none imports the other.
"""

from __future__ import annotations

__all__ = ["COMMANDS", "PROG", "CheckFailed"]

PROG = "amla-numerics"


class CheckFailed(Exception):
    """Raised by a handler when a numerical check fails (exit code 1)."""


#: command -> (its module in this package, the one-line help the top-level listing shows).
#: Each module exposes ``register(subparsers)``, which adds the full sub-parser.
COMMANDS: dict[str, tuple[str, str]] = {
    "formats": ("formats", "print each format's p, emin, emax, u, extremes"),
    "report": (
        "report",
        "error-bound report per head dimension (accuracy and modelled throughput)",
    ),
    "check-budgets": ("budgets", "measure the budgeted cases; exit 1 naming every budget exceeded"),
    "compare": (
        "compare",
        "judge a kernel's dumped outputs against what its declared schedule does (emulated)",
    ),
    "make-cases": (
        "make_cases",
        "write golden attention cases (inputs, certified reference, manifest) for CI",
    ),
    "pipeline": (
        "pipeline",
        "modelled throughput of the attention kernel on Ascend and NVIDIA chips",
    ),
    "explore": (
        "explore",
        "rescaling designs: hazard-free limits, bound, measured error, modelled throughput",
    ),
}

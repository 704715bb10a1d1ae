"""Every numerical tolerance of the suite, in one table, in units of a format's unit roundoff.

A test that compares two numbers takes its tolerance from :data:`ULPS` through :func:`tol`,
never from a scattered ``rtol`` literal, so the whole contract of the suite reads here.
Each entry is (multiple, format): the relative tolerance is ``multiple * format.unit_roundoff``.

Examples
--------
>>> tol("exact_policy") == 2.0**13 * 2.0**-53
True
"""

from __future__ import annotations

from amla_numerics.formats import BF16, FP64, Format

__all__ = ["ULPS", "tol"]

#: name -> (multiple of the unit roundoff, format), with why.
ULPS: dict[str, tuple[float, Format]] = {
    # the "exact" policy runs every stage in float64: its recurrences reach the certified
    # reference to a few thousand float64 roundings (N-term sums, exp, divisions)
    "exact_policy": (2.0**13, FP64),
    # an exponent add with a fractional increment versus its first-order model x (1 + eps/x)
    "exp2add_first_order": (2.0**3, FP64),
    # a float64 difference split in two and added back: two roundings, with slack
    "float64_split_sum": (2.0**2, FP64),
    # one run with BF16 P against the same recurrence in float64 (fa4 vs its exact policy):
    # the P cast (2**-8 relative) on numerator only, plus the exp2 polynomial (1e-4), x 4
    "bf16_p_run": (2.0**2, BF16),
}


def tol(name: str) -> float:
    """The relative tolerance named ``name`` (see :data:`ULPS`)."""
    multiple, fmt = ULPS[name]
    return multiple * fmt.unit_roundoff

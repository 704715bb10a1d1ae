"""Check a real kernel against the certified reference: compare, assertions, a pytest plugin.

- :func:`compare` (:mod:`.compare`): every metric, the worst elements, the bound of a named
  variant, hazards, and the bit-match rate against every emulated variant.
- :func:`assert_attention_close` (:mod:`.assertions`): a numpy.testing-style assertion.
- :mod:`.plugin`: the pytest plugin (fixture ``attention_reference``, option ``--amla-budget``).
- :mod:`.cases`: golden cases for hardware CI (``amla-numerics make-cases``).

See the README's "Check your kernel" section and ``docs/testing.md``.
"""

from amla_numerics.testing.assertions import assert_attention_close
from amla_numerics.testing.compare import (
    LIMIT_METRICS,
    Comparison,
    Failure,
    WorstElement,
    compare,
    reference_for,
)

__all__ = [
    "LIMIT_METRICS",
    "Comparison",
    "Failure",
    "WorstElement",
    "assert_attention_close",
    "compare",
    "reference_for",
]

"""Check a real kernel against the certified reference: compare, assertions, a pytest plugin.

- :func:`compare` (:mod:`.compare`): the default verdict with its reasons (:mod:`.rule`: the
  error against the declared schedule's, emulated), named standards (:mod:`.standards`), a
  likely cause on failure (:mod:`.diagnose`), every metric, the worst elements, the bound,
  hazards, and the bit-match rate against every emulated variant.
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
from amla_numerics.testing.rule import DEFAULT_SCHEDULE, RuleResult, schedule_rule

__all__ = [
    "DEFAULT_SCHEDULE",
    "LIMIT_METRICS",
    "Comparison",
    "Failure",
    "RuleResult",
    "WorstElement",
    "assert_attention_close",
    "compare",
    "reference_for",
    "schedule_rule",
]

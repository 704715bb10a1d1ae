"""Suite-wide test configuration: hypothesis profiles.

``quick`` (the default, what ``make test`` and CI run) keeps each property test's own
``max_examples`` budget so the suite runs in a few minutes on 2 cores, and is derandomized
(the examples are a fixed function of each test and the hypothesis version), so a CI verdict
can be reproduced; ``thorough`` multiplies every budget by 20 and draws fresh random examples
on every run, the profile that hunts for new failures (select it with
``AMLA_HYPOTHESIS_PROFILE=thorough make test``; a failure prints the blob that reproduces
it). Tests size their budgets with :func:`tests.strategies.examples`, never with a bare
``max_examples`` literal.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile("quick", deadline=None, print_blob=True, derandomize=True)
settings.register_profile(
    "thorough",
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("AMLA_HYPOTHESIS_PROFILE", "quick"))

"""Suite-wide test configuration: hypothesis profiles.

``quick`` (the default) keeps each property test's own ``max_examples`` budget so the suite
runs in a few minutes on 2 cores; ``thorough`` multiplies every budget by 20 (select it with
``AMLA_HYPOTHESIS_PROFILE=thorough make test``). Tests size their budgets with
:func:`tests.strategies.examples`, never with a bare ``max_examples`` literal.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile("quick", deadline=None, print_blob=True)
settings.register_profile(
    "thorough",
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("AMLA_HYPOTHESIS_PROFILE", "quick"))

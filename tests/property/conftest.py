"""Hypothesis profiles for the property tests.

``ci`` (the default) is derandomized: every run draws the same examples, so
a failure in CI fails again on a laptop, and nothing is stored between runs.
``long`` (``PROXYLESS_FUZZ=long``) draws fresh random examples, a hundred
times as many per test (see :func:`tests.property.support.examples`), and
keeps Hypothesis' example database so a failure found once is tried first
next time. Deadlines are off in both: the machines running CI are shared.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]

settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=50,
    print_blob=True,
    suppress_health_check=_SLOW_OK,
)
settings.register_profile(
    "long",
    deadline=None,
    max_examples=5_000,
    print_blob=True,
    suppress_health_check=_SLOW_OK,
)
settings.load_profile("long" if os.environ.get("PROXYLESS_FUZZ") == "long" else "ci")

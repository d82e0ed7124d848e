"""Shared test settings: Hypothesis is derandomised in CI so a run is reproducible."""

import os

from hypothesis import HealthCheck, settings

# No per-example deadline: the first examples of a run pay import and cache warm-up costs on a
# busy 2-core machine, which is noise, not a finding.
settings.register_profile("dev", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile(
    "ci", deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

"""Short property-based fuzzing of the four parsers of untrusted input (the benchmark runs >= 10,000 each):
only radioactive.errors types may escape."""

from __future__ import annotations

import warnings

import pytest
from helpers.fuzz_targets import TARGETS
from hypothesis import HealthCheck, given, settings

from radioactive.errors import RadioactiveError

EXAMPLES = 150


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_fuzz(name):
    target, strategy = TARGETS[name]

    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def run(case):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                target(case)
            except RadioactiveError:
                pass

    run()

"""The black-box tests' shared set-up: a 4-class marker for 12 x 12 grey images and 24 probes. A module that
needs another marker (the white-box tests) defines its own ``marker`` fixture, which takes precedence."""

from __future__ import annotations

import pytest
from helpers.tiny import BLACKBOX_SPEC, tiny_marker, tiny_probes

from radioactive.detect import Probes
from radioactive.marker import Marker


@pytest.fixture(scope="module")
def marker() -> Marker:
    return tiny_marker(BLACKBOX_SPEC)


@pytest.fixture(scope="module")
def probes() -> Probes:
    return tiny_probes()

"""The demo's table says the evidence level, and DETECTED only at the decision level."""

import math

from radioactive.demo import _decision


def test_demo_decision_states_the_level():
    assert _decision(-1.0, 1e-3) == "no evidence"
    assert _decision(math.log10(0.03), 1e-3) == "weak evidence"  # "DETECTED" at 0.05 before
    assert _decision(-3.0, 1e-3) == "strong evidence: DETECTED"
    assert _decision(-7.0, 1e-3) == "very strong evidence: DETECTED"
    assert _decision(-2.0, 0.05) == "weak evidence: DETECTED"  # a configured alpha still decides

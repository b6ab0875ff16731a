"""Evidence levels of a p-value, at their boundaries, and the default decision level (p <= 1e-3)."""

import inspect
import math

import pytest

from radioactive.detect import BlackboxSettings, Verdict, WhiteboxSettings
from radioactive.detect.gradient import gradient_whitebox
from radioactive.detect.verdict import (
    DEFAULT_ALPHA,
    EVIDENCE_LEVELS,
    evidence_level,
    evidence_scale,
    evidence_words,
)

BELOW = 1e-9  # log10 units: just stronger than a threshold
ABOVE = 1e-9  # just weaker


def test_thresholds_are_the_documented_ones():
    assert EVIDENCE_LEVELS == (("very strong", 1e-6), ("strong", 1e-3), ("weak", 0.05))
    assert DEFAULT_ALPHA == 1e-3
    assert evidence_scale() == "weak p <= 0.05, strong p <= 1e-3, very strong p <= 1e-6"


@pytest.mark.parametrize("log10_p, level", [
    (0.0, "none"),
    (math.log10(0.05) + ABOVE, "none"),
    (math.log10(0.05), "weak"),
    (-2.0, "weak"),
    (-3.0 + ABOVE, "weak"),
    (-3.0, "strong"),
    (-6.0 + ABOVE, "strong"),
    (-6.0, "very strong"),
    (-1087.3, "very strong"),
    (-math.inf, "very strong"),
    (math.nan, "none"),
])
def test_levels_at_their_boundaries(log10_p, level):
    assert evidence_level(log10_p) == level


def test_levels_in_words():
    assert evidence_words(-0.5) == "none (p > 0.05)"
    assert evidence_words(-1.5) == "weak (p <= 0.05)"
    assert evidence_words(-3.2) == "strong (p <= 1e-3)"
    assert evidence_words(-6.0 - BELOW) == "very strong (p <= 1e-6)"


def test_verdict_states_its_evidence():
    verdict = Verdict(test="whitebox", log10_p=-3.5, alpha=DEFAULT_ALPHA, classes=(), z=3.4, key_fingerprint="k")
    assert verdict.evidence == "strong" and verdict.detected
    data = verdict.to_dict()
    assert data["evidence"] == "strong" and data["detected"] is True and data["alpha"] == 1e-3
    text = verdict.summary()
    assert "evidence    strong (p <= 1e-3)" in text and "DETECTED at alpha = 0.001" in text
    weak = Verdict(test="whitebox", log10_p=-1.5, alpha=DEFAULT_ALPHA, classes=(), z=2.0, key_fingerprint="k")
    # p = 0.03: weak evidence, not detected at the default level (it was at 0.05).
    assert weak.evidence == "weak" and not weak.detected
    assert "evidence    weak (p <= 0.05)" in weak.summary() and "not detected at alpha = 0.001" in weak.summary()


def test_default_decision_level_is_strong_evidence():
    assert WhiteboxSettings().alpha == BlackboxSettings().alpha == 1e-3
    assert inspect.signature(gradient_whitebox).parameters["alpha"].default == 1e-3

"""Gradient (perturbation-aware) white-box test: positive control and exact calibration over random keys."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from helpers.calibration import assert_rate_within
from helpers.tiny import plant_carriers, tiny_marker, tiny_spec

from radioactive import Key
from radioactive.detect.gradient import gradient_whitebox
from radioactive.errors import DatasetError
from radioactive.nets import NetSpec, build_from_spec

SPEC = tiny_spec(4, 12, feature_dim=16)
OTHER = NetSpec("resnet_narrow", 4, input_size=(12, 12), kwargs={"width": 4})


@pytest.fixture(scope="module")
def setup():
    marker = tiny_marker(SPEC)  # seeds torch's global generator: the images below are drawn after it
    key = Key.generate(marker.info, seed=3)
    images = torch.rand(64, 1, 12, 12)
    labels = torch.arange(64) % 4
    return marker, key, images, labels


def test_positive_control_marker_with_carrier_rows(setup):
    """A copy of the marker whose classifier rows get beta * u_k: the gradient test detects it strongly."""
    marker, key, images, labels = setup
    suspect = copy.deepcopy(marker.model)
    head = marker.split.head_name.split(".")
    layer = suspect
    for part in head:
        layer = getattr(layer, part)
    plant_carriers(layer, key, 20.0)
    verdict = gradient_whitebox(suspect, key, (images, labels), marker=marker)
    assert verdict.test == "whitebox-gradient"
    assert verdict.log10_p < -5
    clean = gradient_whitebox(marker.model, key, (images, labels), marker=marker)
    assert clean.log10_p > verdict.log10_p


def test_clean_suspects_are_calibrated(setup):
    """H0 through the whole test: 30 independently initialised suspects that never saw marks, each with its own
    key (rows and keys both vary). The 120 per-class p-values and the combined ones stay within their binomial
    intervals, which a doubled false-positive rate would leave."""
    marker, _, images, labels = setup
    suspect_spec = NetSpec("mlp", 4, input_size=(12, 12), kwargs={"hidden": 16, "input_size": 12})
    class_p, combined_p = [], []
    for trial in range(30):
        torch.manual_seed(100 + trial)
        suspect = build_from_spec(suspect_spec).eval()
        verdict = gradient_whitebox(suspect, Key.generate(marker.info, seed=trial), (images, labels), marker=marker)
        class_p += [10 ** c.log10_p for c in verdict.classes]
        combined_p.append(10 ** verdict.log10_p)
    for alpha in (0.1, 0.3):
        assert_rate_within(class_p, alpha, exact=True)
    assert_rate_within(combined_p, 0.3)
    assert abs(np.mean(class_p) - 0.5) < 4 * (1 / 12) ** 0.5 / len(class_p) ** 0.5  # uniform mean, 4 sigma


def test_neutral_key_and_marked_reference_refused(setup):
    marker, _, images, labels = setup
    key = Key.generate(marker.info, seed=4, space="neutral", head_weight=marker.split.weight().detach())
    suspect = build_from_spec(OTHER).eval()
    verdict = gradient_whitebox(suspect, key, (images, labels), marker=marker, images_for="all")
    assert verdict.details["null_dim"] == 16 - 4
    with pytest.raises(DatasetError):
        gradient_whitebox(suspect, key, (images, labels), marker=marker, marked=[True] + [False] * 63)

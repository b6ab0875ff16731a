"""Gradient (perturbation-aware) white-box test: positive control and exact calibration over random keys."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from radioactive import Key, Marker, NetSpec
from radioactive.detect.gradient import gradient_rows, gradient_whitebox, null_log10_ps
from radioactive.errors import DatasetError
from radioactive.nets import build_from_spec
from radioactive.stats import binomial_interval

SPEC = NetSpec("cnn", 4, input_size=(12, 12), kwargs={"width": 4, "feature_dim": 16})
OTHER = NetSpec("resnet_narrow", 4, input_size=(12, 12), kwargs={"width": 4})


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    marker = Marker.from_model(build_from_spec(SPEC), SPEC)
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
    with torch.no_grad():
        layer.weight += 20.0 * key.carriers.to(layer.weight.dtype)
    verdict = gradient_whitebox(suspect, key, (images, labels), marker=marker)
    assert verdict.test == "whitebox-gradient"
    assert verdict.log10_p < -5
    clean = gradient_whitebox(marker.model, key, (images, labels), marker=marker)
    assert clean.log10_p > verdict.log10_p


def test_calibration_over_random_keys(setup):
    """Rows are key-independent: over many random keys the p-values are uniform (false-positive rate <= alpha)."""
    marker, key, images, labels = setup
    torch.manual_seed(1)
    suspect = build_from_spec(OTHER).eval()
    pairs = tuple((k, k) for k in range(4))
    rows, _ = gradient_rows(suspect, marker, images, labels, pairs)
    log_ps = null_log10_ps(rows, key, pairs, keys=600, seed=5)
    ps = 10.0 ** log_ps
    for alpha in (0.01, 0.05, 0.1):
        low, high = binomial_interval(len(ps), alpha, 0.99)
        assert (ps <= alpha).sum() <= high
    assert abs(np.mean(ps) - 0.5) < 0.05


def test_neutral_key_and_marked_reference_refused(setup):
    marker, _, images, labels = setup
    key = Key.generate(marker.info, seed=4, space="neutral", head_weight=marker.split.weight().detach())
    suspect = build_from_spec(OTHER).eval()
    verdict = gradient_whitebox(suspect, key, (images, labels), marker=marker, images_for="all")
    assert verdict.details["null_dim"] == 16 - 4
    with pytest.raises(DatasetError):
        gradient_whitebox(suspect, key, (images, labels), marker=marker, marked=[True] + [False] * 63)

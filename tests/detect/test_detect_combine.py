"""Combinations of black-box statistics; the exact stratified permutation test: brute force, calibration, best case."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from radioactive.detect.combine import (
    COMBINATIONS,
    exact_verdict,
    permutation_sum_log_p,
    verdict_from_observations,
)
from radioactive.detect.observations import Observations


def test_matches_brute_force():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(3, 5))
    log_p, z = permutation_sum_log_p(values, grid=1e-3)
    observed = z[:, 0].sum()
    hits = sum(z[[0, 1, 2], list(idx)].sum() >= observed - 1e-12 for idx in itertools.product(range(5), repeat=3))
    assert math.exp(log_p) >= hits / 125 - 1e-12  # rounding up can only be conservative
    assert math.exp(log_p) <= hits / 125 + 0.02


def test_calibrated_with_heavy_tails():
    """Under exchangeability P(p <= a) <= a whatever the distribution (Student t with 2 dof here)."""
    rng = np.random.default_rng(1)
    ps = np.array([math.exp(permutation_sum_log_p(rng.standard_t(2, size=(10, 10)), grid=0.05)[0])
                   for _ in range(600)])
    for alpha, high in ((0.01, 14), (0.05, 45), (0.1, 80)):  # 99 % binomial upper bounds for n = 600
        assert (ps <= alpha).sum() <= high


def test_best_case_and_verdict():
    values = np.zeros((10, 21))
    values[:, 0] = 1.0
    log_p, _ = permutation_sum_log_p(values)
    assert abs(log_p / math.log(10) + 10 * math.log10(21)) < 1e-6
    suspect = {"margin": values.T.copy()}
    obs = Observations(pairs=tuple((k, k) for k in range(10)), counts=np.full(10, 5), suspect=suspect,
                       references=({"margin": np.zeros((21, 10))},), output_kind="logits", source="fresh",
                       num_probes=50, key_fingerprint="x")
    verdict = exact_verdict(obs)
    assert verdict.test == "blackbox-perm-did"
    assert verdict.log10_p < -13


def test_black_box_dispatches_perm():
    assert "perm" in COMBINATIONS
    values = np.random.default_rng(2).normal(size=(21, 10))
    obs = Observations(pairs=tuple((k, k) for k in range(10)), counts=np.full(10, 5), suspect={"margin": values},
                       references=(), output_kind="logits", source="fresh", num_probes=50, key_fingerprint="x")
    verdict = verdict_from_observations(obs, combine="perm")
    assert verdict.test == "blackbox-perm"
    # The exact permutation test itself on the (classes, K + 1) values, not another combination.
    assert verdict.log10_p == pytest.approx(permutation_sum_log_p(values.T)[0] / math.log(10), abs=1e-12)
    assert verdict.log10_p != verdict_from_observations(obs, combine="rank").log10_p

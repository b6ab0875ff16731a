"""Matched references (radioactive.detect.matched): exact under H0 whatever the bank, stronger than the mean
of mismatched references, equivariant under permutations of the carrier sets, and checked inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from radioactive.detect.combine import exact_verdict, permutation_sum_log_p
from radioactive.detect.matched import matched_residuals
from radioactive.detect.observations import Observations
from radioactive.errors import ConfigError

SETS, CLASSES, REFS = 21, 10, 4


def draw(rng: np.random.Generator, signal: float = 0.0, scales=(5.0, 3.0, 0.5, 2.0)):
    """One audit's per-class values: every model carries the carrier sets' intrinsic effect (each at its own
    scale: references of other architectures respond more or less strongly), plus model noise; the suspect
    adds ``signal`` on set 0 (the key)."""
    intrinsic = rng.normal(size=(SETS, CLASSES))
    suspect = intrinsic + 0.3 * rng.normal(size=(SETS, CLASSES)) + rng.normal(size=CLASSES)
    suspect[0] += signal
    bank = np.stack([s * intrinsic + 0.3 * s * rng.normal(size=(SETS, CLASSES)) for s in scales[:REFS]])
    return suspect, bank


@pytest.mark.parametrize("fit", ["matched", "matched-class"])
def test_the_permutation_test_on_matched_residuals_is_calibrated_under_h0(fit):
    rng = np.random.default_rng(0)
    trials = 1500
    log_ps = np.array([permutation_sum_log_p(matched_residuals(*draw(rng), fit=fit).T)[0] for _ in range(trials)])
    ps = np.exp(log_ps)
    for alpha in (0.01, 0.05, 0.2):
        # 99.9 % binomial upper bound for the false-positive rate of a valid test (conservative is allowed)
        bound = sps.binom.ppf(0.999, trials, alpha) / trials
        assert np.mean(ps <= alpha) <= bound, (alpha, np.mean(ps <= alpha))
    # not conservative to the point of uselessness: close to uniform (the grid rounding is tiny)
    assert sps.kstest(ps, "uniform").pvalue > 1e-3


def test_the_fit_ignores_which_set_is_the_key_permuting_sets_permutes_the_residuals():
    rng = np.random.default_rng(1)
    suspect, bank = draw(rng, signal=1.0)
    for fit in ("matched", "matched-class"):
        base = matched_residuals(suspect, bank, fit=fit)
        permuted_suspect, permuted_bank = suspect.copy(), bank.copy()
        order = {k: rng.permutation(SETS) for k in (0, 3, 7)}  # each class its own permutation
        for k, perm in order.items():
            permuted_suspect[:, k] = suspect[perm, k]
            permuted_bank[:, :, k] = bank[:, perm, k]
        moved = matched_residuals(permuted_suspect, permuted_bank, fit=fit)
        expected = base.copy()
        for k, perm in order.items():
            expected[:, k] = base[perm, k]
        np.testing.assert_allclose(moved, expected, atol=1e-10)


def test_matched_references_beat_the_mean_of_mismatched_references():
    rng = np.random.default_rng(2)
    matched, mean = [], []
    for _ in range(20):
        suspect, bank = draw(rng, signal=0.6)
        matched.append(permutation_sum_log_p(matched_residuals(suspect, bank).T)[0])
        mean.append(permutation_sum_log_p((suspect - bank.mean(axis=0)).T)[0])
    # The references respond 2.6 times as strongly as the suspect on average: their mean leaves 1.6 times the
    # intrinsic effect behind, the fit removes it.
    assert np.median(matched) / math.log(10) < -6 and np.median(mean) / math.log(10) > -2


def test_exact_verdict_takes_the_fit_and_names_it():
    rng = np.random.default_rng(3)
    suspect, bank = draw(rng, signal=0.6)
    obs = Observations(pairs=tuple((k, k) for k in range(CLASSES)), counts=np.full(CLASSES, 50),
                       suspect={"margin": suspect}, references=tuple({"margin": b} for b in bank),
                       output_kind="logits", source="fresh", num_probes=500, key_fingerprint="f" * 16)
    verdict = exact_verdict(obs, reference_fit="matched")
    assert verdict.test == "blackbox-perm-matched" and verdict.details["reference_fit"] == "matched"
    assert verdict.log10_p < -6
    assert exact_verdict(obs).test == "blackbox-perm-did"
    with pytest.raises(ConfigError, match="unknown reference fit"):
        exact_verdict(obs, reference_fit="synthetic")


def test_bad_input_is_refused():
    suspect, bank = draw(np.random.default_rng(4))
    with pytest.raises(ConfigError, match="reference values"):
        matched_residuals(suspect, bank[:, :5])
    with pytest.raises(ConfigError, match="K >= 2"):
        matched_residuals(suspect[:2], bank[:, :2])
    with pytest.raises(ConfigError, match="finite"):
        matched_residuals(np.full_like(suspect, np.nan), bank)
    with pytest.raises(ConfigError, match="ridge"):
        matched_residuals(suspect, bank, ridge=-1)
    with pytest.raises(ConfigError, match="unknown reference fit"):
        matched_residuals(suspect, bank, fit="mean")

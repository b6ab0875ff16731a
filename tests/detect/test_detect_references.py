"""Several reference models for difference in differences, and the references-alone diagnostic."""

import math

import numpy as np
import pytest
from helpers.calibration import assert_rate_within
from helpers.tiny import (
    BLACKBOX_SPEC,
    QUICK_MARK,
    carrier_reader,
    tiny_predictor,
)

from radioactive.detect import BlackboxSettings, blackbox
from radioactive.detect.combine import REFERENCE_EXTREME, permutation_sum_log_p, verdict_from_observations
from radioactive.detect.observations import Observations, collect, statistic_values
from radioactive.errors import ConfigError
from radioactive.key import Key
from radioactive.mark import MarkConfig

SPEC = BLACKBOX_SPEC
CONFIG = QUICK_MARK


def _predict(seed: int):
    return tiny_predictor(SPEC, seed=seed)


def _carrier_reader(marker, key, probes, scale):
    """Scores each image's own class by its feature shift along the true carrier (times ``scale``): with
    ``scale`` > 0 it ranks the true set first in every class, with ``scale`` < 0 last."""
    return carrier_reader(marker, key, probes, scale=scale, num_classes=4)


def test_did_with_two_references_subtracts_their_mean(marker, probes):
    key = Key.generate(marker.info, seed=3)
    suspect, first, second = _predict(2), _predict(5), _predict(6)
    both = collect(suspect, key, probes, marker=marker, num_controls=5, reference=[first, second], config=CONFIG)
    alone = [collect(suspect, key, probes, marker=marker, num_controls=5, reference=r, config=CONFIG)
             for r in (first, second)]
    assert len(both.references) == 2
    for recorded, single in zip(both.references, alone):  # each reference's own statistics are kept
        assert len(single.references) == 1 and single.reference is single.references[0]
        np.testing.assert_allclose(recorded["margin"], single.reference["margin"], rtol=0, atol=1e-12)
    mean = (alone[0].reference["margin"] + alone[1].reference["margin"]) / 2
    np.testing.assert_allclose(both.reference["margin"], mean, rtol=0, atol=1e-12)
    expected = both.suspect["margin"] - mean  # (K + 1, C')
    for combine in ("rank", "t", "perm"):
        verdict = verdict_from_observations(both, combine=combine)
        assert verdict.test == f"blackbox-{combine}-did" and verdict.details["reference_models"] == 2
        np.testing.assert_allclose([c.statistic for c in verdict.classes], expected[0], atol=1e-12)
        np.testing.assert_allclose([c.controls for c in verdict.classes], expected[1:].T, atol=1e-12)
    # Neither reference alone gives the same statistic as their mean.
    for single in alone:
        assert not np.allclose(statistic_values(single, "margin", True)[1], expected)
    # The public front takes the same sequence.
    settings = BlackboxSettings(mark=CONFIG, num_controls=5, reference_fit="mean")
    verdict = blackbox(suspect, key, probes, marker=marker, settings=settings, reference=(first, second))
    np.testing.assert_allclose([c.statistic for c in verdict.classes], expected[0], atol=1e-12)


def test_one_reference_in_a_list_is_the_single_reference(marker, probes):
    key = Key.generate(marker.info, seed=4)
    suspect, ref = _predict(2), _predict(5)
    single = collect(suspect, key, probes, marker=marker, num_controls=3, reference=ref, config=CONFIG)
    listed = collect(suspect, key, probes, marker=marker, num_controls=3, reference=[ref], config=CONFIG)
    for combine in ("rank", "perm"):
        a = verdict_from_observations(single, combine=combine).to_dict()
        b = verdict_from_observations(listed, combine=combine).to_dict()
        assert a == b
    none = collect(suspect, key, probes, marker=marker, num_controls=3, reference=[], config=CONFIG)
    assert none.references == () and none.reference is None
    assert "reference_alone" not in verdict_from_observations(none).details
    with pytest.raises(ConfigError, match="items \\[1\\] of reference are not"):
        collect(suspect, key, probes, marker=marker, num_controls=3, reference=[ref, "model.pt"], config=CONFIG)
    with pytest.raises(ConfigError, match="reference must be None, a predict callable or a sequence"):
        collect(suspect, key, probes, marker=marker, num_controls=3, reference=3, config=CONFIG)


@pytest.mark.parametrize("scale, tail", [(1e4, "upper"), (-1e4, "lower")])
def test_reference_alone_flags_a_planted_reference(marker, probes, scale, tail):
    """A reference that reads the true carriers is in the upper tail of the controls (it likes the true set);
    one that reads them with the opposite sign, in the lower tail. Both are flagged as extreme, and the verdict
    says that every audit sharing the key and the reference is shifted by that draw."""
    key = Key.generate(marker.info, seed=5)
    planted = _carrier_reader(marker, key, probes, scale)
    config = MarkConfig(steps=5, eval_draws=0, augment=())
    settings = BlackboxSettings(mark=config, num_controls=9, combine="perm")
    verdict = blackbox(_predict(2), key, probes, marker=marker, settings=settings, reference=[planted, _predict(7)])
    alone = verdict.details["reference_alone"]
    assert alone["references"] == 2 and alone["statistic"] == "margin" and alone["extreme"] is True
    floor = -4 * math.log10(10)  # all 4 classes at the end of 10 versions: the permutation test's floor
    extreme, other = ("log10_p_upper", "log10_p_lower") if tail == "upper" else ("log10_p_lower", "log10_p_upper")
    assert alone[extreme] == pytest.approx(floor, abs=1e-6) and alone[other] > -0.5
    assert f"{tail} tail" in alone["note"] and "every difference-in-differences audit" in alone["note"]
    assert ("away from" if tail == "upper" else "towards") in alone["note"]
    # Each reference's own tails, and the pair's value is the permutation test of their mean itself.
    own = alone["per_reference"][0]
    assert own[extreme] == pytest.approx(floor, abs=1e-6)
    assert verdict.to_dict()["details"]["reference_alone"] == alone
    assert "EXTREME" in verdict.summary() and "reference   2 model(s) alone" in verdict.summary()


def test_reference_alone_is_the_permutation_test_of_the_mean_in_both_tails():
    rng = np.random.default_rng(0)
    suspect = {"margin": rng.normal(size=(8, 5))}
    refs = tuple({"margin": rng.normal(size=(8, 5))} for _ in range(3))
    obs = Observations(pairs=tuple((k, k) for k in range(5)), counts=np.full(5, 4), suspect=suspect, references=refs,
                       output_kind="logits", source="fresh", num_probes=20, key_fingerprint="x")
    alone = verdict_from_observations(obs, combine="rank").details["reference_alone"]
    mean = np.mean([r["margin"] for r in refs], axis=0).T  # (C', K + 1)
    assert alone["log10_p_upper"] == pytest.approx(permutation_sum_log_p(mean)[0] / math.log(10))
    assert alone["log10_p_lower"] == pytest.approx(permutation_sum_log_p(-mean)[0] / math.log(10))
    assert alone["extreme"] == (min(alone["log10_p_upper"], alone["log10_p_lower"]) <= math.log10(REFERENCE_EXTREME))
    # A constant reference is at the centre of both tails: p = 1 each way, not extreme.
    flat = Observations(pairs=obs.pairs, counts=obs.counts, suspect=suspect, references=({"margin": np.ones((8, 5))},),
                        output_kind="logits", source="fresh", num_probes=20, key_fingerprint="x")
    flat_alone = verdict_from_observations(flat).details["reference_alone"]
    assert flat_alone["log10_p_upper"] == flat_alone["log10_p_lower"] == 0.0 and flat_alone["extreme"] is False
    assert "within the controls' range" in flat_alone["note"] and "per_reference" not in flat_alone


def test_the_mean_of_references_is_symmetric_in_the_versions():
    """Exactness: permuting the K + 1 versions (the same permutation for the suspect and every reference)
    permutes the differences the same way, so exchangeable versions stay exchangeable."""
    rng = np.random.default_rng(1)
    suspect = {"margin": rng.normal(size=(6, 3))}
    refs = tuple({"margin": rng.normal(size=(6, 3))} for _ in range(3))
    order = rng.permutation(6)
    obs = Observations(pairs=((0, 0), (1, 1), (2, 2)), counts=np.full(3, 2), suspect=suspect, references=refs,
                       output_kind="logits", source="fresh", num_probes=6, key_fingerprint="x")
    moved = Observations(pairs=obs.pairs, counts=obs.counts, suspect={"margin": suspect["margin"][order]},
                         references=tuple({"margin": r["margin"][order]} for r in refs), output_kind="logits",
                         source="fresh", num_probes=6, key_fingerprint="x")
    np.testing.assert_allclose(statistic_values(moved, "margin", True)[1], statistic_values(obs, "margin", True)[1][order],
                               atol=1e-15)


def test_did_with_three_references_is_calibrated(marker, probes):
    """H0 (a clean suspect, three clean references), 60 fresh keys: each class's rank p-value of the difference
    from the references' mean is uniform on {1/5, ..., 1} (240 independent values), and the combined
    rank and perm p-values stay within sampling error."""
    suspect, references = _predict(2), [_predict(11), _predict(12), _predict(13)]
    class_p, rank_p, perm_p = [], [], []
    for seed in range(60):
        obs = collect(suspect, Key.generate(marker.info, seed=500 + seed), probes, marker=marker, num_controls=4,
                      reference=references, config=MarkConfig(steps=1, eval_draws=0), seed=seed)
        rank = verdict_from_observations(obs, combine="rank")
        assert rank.test == "blackbox-rank-did" and rank.details["reference_models"] == 3
        class_p += [10 ** c.log10_p for c in rank.classes]
        rank_p.append(10 ** rank.log10_p)
        perm_p.append(10 ** verdict_from_observations(obs, combine="perm").log10_p)
    for alpha in (0.2, 0.4):
        assert_rate_within(np.array(class_p), alpha, exact=True)
    for values in (rank_p, perm_p):
        assert_rate_within(np.array(values), 0.3)

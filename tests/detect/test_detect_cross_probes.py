"""Cross-class probes (issue 10): fresh probes marked along another class's carrier and read in that class's
score, and probes marked with other settings than the data (``data_mark``). Both keep the test exact."""

import math

import numpy as np
import pytest
import torch
from helpers.calibration import assert_rate_within
from helpers.tiny import (
    BLACKBOX_SPEC,
    QUICK_MARK,
    memorised_shift,
    tiny_predictor,
)

from radioactive.detect import BlackboxSettings, Probes, blackbox
from radioactive.detect.combine import verdict_from_observations
from radioactive.detect.observations import collect
from radioactive.detect.probes import cross_targets, marked_versions
from radioactive.errors import ConfigError, DatasetError
from radioactive.key import Key
from radioactive.mark import MarkConfig, mark

SPEC = BLACKBOX_SPEC
CONFIG = QUICK_MARK


def _predict(seed: int):
    return tiny_predictor(SPEC, seed=seed)


def test_cross_targets_are_balanced_and_never_the_own_class():
    labels = torch.arange(200) % 5
    targets = cross_targets(labels, 5)
    assert not bool((targets == labels).any())
    for c in range(5):  # 40 probes per class, evenly from the 4 other classes
        sources = labels[targets == c]
        assert len(sources) == 40 and sorted(torch.bincount(sources, minlength=5).tolist()) == [0, 10, 10, 10, 10]
    assert torch.equal(cross_targets(labels, 5), targets)  # a fixed function of the labels
    assert cross_targets(torch.tensor([0, 0, 0, 1, 2]), 3).tolist() == [1, 2, 1, 2, 0]
    assert cross_targets(torch.tensor([2, 7, 2, 7, 9]), 10).tolist() == [7, 9, 9, 2, 2]  # among the classes held
    with pytest.raises(DatasetError, match="at least 2 classes"):
        cross_targets(torch.zeros(3, dtype=torch.long), 4)
    with pytest.raises(DatasetError, match=r"must lie in \[0, 3\)"):
        cross_targets(torch.tensor([0, 3]), 3)


def test_mark_moves_each_image_along_its_target_carrier(marker, probes):
    """``targets`` picks the carrier; ``labels`` keep naming the image's class (only ``lambda_class`` reads it)."""
    carriers = Key.generate(marker.info, seed=5).carriers
    targets = cross_targets(probes.labels, 4)
    measured = MarkConfig(steps=5, eval_draws=1, augment=())
    via_targets = mark(marker, probes.images, probes.labels, carriers, measured, seed=3, targets=targets)
    via_labels = mark(marker, probes.images, targets, carriers, measured, seed=3)
    assert torch.equal(via_targets.images, via_labels.images)
    assert torch.equal(via_targets.shift, via_labels.shift) and float(via_targets.shift.min()) > 0  # along u_target
    hard = MarkConfig(steps=2, eval_draws=0, lambda_class=1.0)
    assert not torch.equal(mark(marker, probes.images, probes.labels, carriers, hard, seed=3, targets=targets).images,
                           mark(marker, probes.images, targets, carriers, hard, seed=3).images)
    with pytest.raises(ConfigError, match="targets must lie in"):
        mark(marker, probes.images, probes.labels, carriers, CONFIG, targets=torch.full((24,), 4))
    with pytest.raises(ConfigError, match="24 images but 24 labels and 3 targets"):
        mark(marker, probes.images, probes.labels, carriers, CONFIG, targets=[0, 1, 2])


def test_cross_mode_reads_each_class_on_the_probes_marked_towards_it(marker):
    """Probes of classes 0, 1 and 3 (6, 2 and 4 of them): both modes test those 3 classes; cross mode on the
    probes aimed at each (class 0 <- 1 of class 1 and 2 of class 3, class 1 <- 3 + 2, class 3 <- 3 + 1), and
    records the mode."""
    gen = torch.Generator().manual_seed(4)
    probes = Probes(torch.randint(0, 256, (12, 1, 12, 12), generator=gen, dtype=torch.uint8),
                    torch.tensor([0] * 6 + [1] * 2 + [3] * 4))
    key = Key.generate(marker.info, seed=6)
    with pytest.warns(UserWarning, match="no probe images of classes"):
        same = collect(_predict(2), key, probes, marker=marker, num_controls=2, config=CONFIG)
    cross = collect(_predict(2), key, probes, marker=marker, num_controls=2, config=CONFIG, probe_mode="cross")
    assert [k for k, _ in same.pairs] == [0, 1, 3] and same.counts.tolist() == [6, 2, 4] and same.extra == {}
    assert [k for k, _ in cross.pairs] == [0, 1, 3] and cross.counts.tolist() == [3, 5, 4]
    assert cross.extra == {"probe_mode": "cross"}
    verdict = verdict_from_observations(cross, combine="perm")
    assert verdict.details["probe_mode"] == "cross" and "probe_mode" not in verdict_from_observations(same).details


def _cross_reader(marker, key, probes, scale=1e4):
    """A suspect whose class-c logit is the image's feature shift along the key's u_c (it memorised the clean
    probes): in cross mode the probes aimed at c carry the true u_c only in the key's version."""
    shift_of = memorised_shift(marker, probes)

    def predict(x):
        return shift_of(x)[0] @ key.carriers.T * scale  # (B, C)

    return predict


def test_cross_mode_detects_a_model_that_learned_the_carriers(marker, probes):
    key = Key.generate(marker.info, seed=4)
    config = MarkConfig(steps=5, eval_draws=0, augment=())
    settings = BlackboxSettings(mark=config, combine="perm", num_controls=4, probe_mode="cross")
    verdict = blackbox(_cross_reader(marker, key, probes), key, probes, marker=marker, settings=settings)
    assert all(c.log10_p == pytest.approx(-math.log10(5)) for c in verdict.classes)  # first among 5 in every class
    assert verdict.log10_p == pytest.approx(-4 * math.log10(5), abs=1e-9)  # the perm floor (K + 1)^-C
    clean = blackbox(_predict(2), key, probes, marker=marker, settings=settings)
    assert clean.log10_p > -1.3  # a model that never saw marks (measured: -0.61)
    assert verdict.details["probe_mode"] == "cross" and verdict.details["marking"]["probe_mode"] == "cross"
    assert "cross-class probes" in verdict.details["marking"]["summary"]


def test_cross_mode_is_exact_under_h0(marker, probes):
    """H0 (a clean suspect and a clean reference), 40 fresh keys: each class's rank p-value is uniform on
    {1/5, ..., 1} (160 independent values), with and without difference in differences; the perm p-values
    stay within sampling error. A doubled rate fails every check."""
    class_p = {False: [], True: []}
    perm_p = {False: [], True: []}
    config = MarkConfig(steps=1, eval_draws=0, min_psnr=30.0)
    for seed in range(40):
        obs = collect(_predict(2), Key.generate(marker.info, seed=700 + seed), probes, marker=marker,
                      num_controls=4, reference=_predict(11), config=config, seed=seed, probe_mode="cross")
        for did in (False, True):
            rank = verdict_from_observations(obs, combine="rank", difference=did)
            class_p[did] += [10 ** c.log10_p for c in rank.classes]
            perm_p[did].append(10 ** verdict_from_observations(obs, combine="perm", difference=did,
                                                               statistic="loss").log10_p)
    for did in (False, True):
        for alpha in (0.2, 0.4):
            assert_rate_within(np.array(class_p[did]), alpha, exact=True)
        assert_rate_within(np.array(perm_p[did]), 0.3)


def test_cross_versions_are_cached_apart_and_default_is_unchanged(marker, probes, tmp_path):
    key = Key.generate(marker.info, seed=7)
    same = dict(marked_versions(marker, key, probes, num_controls=2, config=CONFIG, cache_dir=tmp_path))
    plain = dict(marked_versions(marker, key, probes, num_controls=2, config=CONFIG))
    assert all(torch.equal(same[j], plain[j]) for j in range(3))
    targets = cross_targets(probes.labels, 4)
    cross = dict(marked_versions(marker, key, probes, num_controls=2, config=CONFIG, cache_dir=tmp_path,
                                 targets=targets))
    assert len(list(tmp_path.glob("*.safetensors"))) == 6 and not torch.equal(cross[0], same[0])
    again = dict(marked_versions(marker, key, probes, num_controls=2, config=CONFIG, cache_dir=tmp_path,
                                 targets=targets))
    assert all(torch.equal(again[j], cross[j]) for j in range(3))


def test_refusals_and_records(marker, probes):
    key = Key.generate(marker.info, seed=8)
    published = Probes(probes.images, probes.labels, published=probes.images)
    with pytest.raises(ConfigError, match="cross-class probes must be fresh"):
        collect(_predict(2), key, published, marker=marker, num_controls=2, config=CONFIG, probe_mode="cross")
    with pytest.raises(ConfigError, match=r"unknown probe mode 'diagonal'; choose from \['same', 'cross'\]"):
        BlackboxSettings(probe_mode="diagonal")
    assert "probe_mode" not in BlackboxSettings().to_dict() and "data_mark" not in BlackboxSettings().to_dict()
    data = MarkConfig(steps=2, eval_draws=0)
    stronger = MarkConfig(steps=3, eval_draws=0, min_psnr=30.0)
    settings = BlackboxSettings(mark=stronger, data_mark=data, mark_origin="test", num_controls=2)
    assert settings.to_dict()["data_mark"] == data.to_dict()
    with pytest.raises(ConfigError, match="need fresh probes"):
        blackbox(_predict(2), key, published, marker=marker, settings=settings)
    marking = blackbox(_predict(2), key, probes, marker=marker, settings=settings).details["marking"]
    assert marking["probes_differ_from_data"] == {"min_psnr": {"data": 40.0, "probes": 30.0},
                                                  "steps": {"data": 2, "probes": 3}}
    assert marking["config"]["min_psnr"] == 30.0 and marking["data_config"]["min_psnr"] == 40.0
    assert "probes deliberately marked otherwise than the data: min_psnr 30.0 (data 40.0)" in marking["summary"]
    with pytest.raises(ConfigError, match="data_mark must be a MarkConfig"):
        BlackboxSettings(data_mark=3)
    assert math.isfinite(verdict_from_observations(
        collect(_predict(2), key, probes, marker=marker, num_controls=2, config=CONFIG)).log10_p)

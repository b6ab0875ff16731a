import dataclasses
import importlib
import json
import math
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.calibration import assert_rate_within
from helpers.tiny import (
    BLACKBOX_SPEC,
    QUICK_MARK,
    carrier_reader,
    no_grad_predictor,
    tiny_model,
)

from radioactive import stats
from radioactive.detect import BlackboxSettings, Probes, blackbox
from radioactive.detect.combine import verdict_from_observations
from radioactive.detect.observations import collect
from radioactive.detect.probes import marked_versions
from radioactive.errors import ConfigError, DatasetError, EndpointError, KeyMismatchError
from radioactive.key import Key, random_key
from radioactive.mark import MarkConfig
from radioactive.nets import build_from_spec

SPEC = BLACKBOX_SPEC
CONFIG = QUICK_MARK


def _settings(**options) -> BlackboxSettings:
    return BlackboxSettings(**{"mark": CONFIG, **options})


@pytest.fixture(scope="module")
def clean_model() -> torch.nn.Module:
    return tiny_model(SPEC, seed=2).eval()


_predict = no_grad_predictor


def test_all_variants_run_and_are_valid(marker, probes, clean_model):
    key = Key.generate(marker.info, seed=3)
    reference = build_from_spec(SPEC).eval()
    obs = collect(_predict(clean_model), key, probes, marker=marker, num_controls=5, reference=_predict(reference),
                  config=CONFIG)
    assert obs.suspect["margin"].shape == (6, 4) and obs.reference["margin"].shape == (6, 4)
    names, log10_p = set(), {}
    for statistic in ("margin", "prob", "loss", "label"):
        for combine in ("rank", "t", "perm"):
            for difference in (False, True):
                verdict = verdict_from_observations(obs, statistic=statistic, combine=combine, difference=difference)
                names.add(verdict.test)
                log10_p[statistic, combine, difference] = verdict.log10_p
                assert verdict.log10_p > math.log10(0.05)  # a model that never saw marks (measured: -0.31 at most)
                assert len(verdict.classes) == 4 and len(verdict.classes[0].controls) == 5
                if combine in ("rank", "perm"):
                    for score in verdict.classes:  # p_k = rank / (K + 1), exact
                        assert round(10 ** score.log10_p * 6, 9) in {1.0, 2.0, 3.0, 4.0, 5.0, 6.0}
    assert names == {f"blackbox-{c}{d}" for c in ("rank", "t", "perm") for d in ("", "-did")}
    for statistic in ("margin", "prob", "loss"):  # continuous: subtracting the reference model changes them
        for combine in ("rank", "t", "perm"):
            assert log10_p[statistic, combine, True] != log10_p[statistic, combine, False], (statistic, combine)


def test_rank_test_is_calibrated_fast(marker, probes, clean_model):
    """H0 (a model that never saw marks), 60 keys: each class's rank p-value is uniform on {1/5, ..., 1}
    (240 independent values), and the combined rank and t p-values stay within sampling error; a rate twice
    the nominal one fails every check."""
    class_p, rank_p, t_p, perm_p = [], [], [], []
    for seed in range(60):
        obs = collect(_predict(clean_model), Key.generate(marker.info, seed=100 + seed), probes, marker=marker,
                      num_controls=4, config=MarkConfig(steps=1, eval_draws=0), seed=seed)
        rank = verdict_from_observations(obs, combine="rank")
        class_p += [10 ** c.log10_p for c in rank.classes]
        rank_p.append(10 ** rank.log10_p)
        t_p.append(10 ** verdict_from_observations(obs, combine="t").log10_p)
        perm_p.append(10 ** verdict_from_observations(obs, combine="perm").log10_p)
    for alpha in (0.2, 0.4):
        assert_rate_within(np.array(class_p), alpha, exact=True)
    for values in (rank_p, t_p, perm_p):
        assert_rate_within(np.array(values), 0.3)


def _carrier_reader(marker, key, probes, scale=1e4):
    """A suspect that memorised the clean probes: it ranks the true set first in every class."""
    return carrier_reader(marker, key, probes, scale=scale, num_classes=4)


def test_signal_is_detected_when_model_prefers_true_version(marker, probes):
    """The carrier reader gets the best p-value the rank test can give, and the perm and t combinations,
    which use magnitudes, go further."""
    key = Key.generate(marker.info, seed=4)
    predict = _carrier_reader(marker, key, probes)
    config = MarkConfig(steps=5, eval_draws=0, augment=())
    verdict = blackbox(predict, key, probes, marker=marker, settings=BlackboxSettings(mark=config, combine="rank"))
    assert all(c.log10_p == pytest.approx(-1.0) for c in verdict.classes)  # ranked first among 10
    best = stats.fisher_log_sf(np.full(4, math.log(0.1))) / math.log(10)
    assert verdict.log10_p == pytest.approx(best)
    assert verdict.details["best_possible_log10_p"] == pytest.approx(best)
    t_verdict = blackbox(predict, key, probes, marker=marker, settings=BlackboxSettings(mark=config, combine="t"))
    assert t_verdict.log10_p < verdict.log10_p
    perm = blackbox(predict, key, probes, marker=marker, settings=BlackboxSettings(mark=config))
    assert perm.test == "blackbox-perm" and perm.log10_p < verdict.log10_p  # perm is the default combination


def test_cache_is_owner_only_and_reused(marker, probes, clean_model, tmp_path, monkeypatch):
    key = Key.generate(marker.info, seed=5)
    cache = tmp_path / "controls"
    first = [img for _, img in marked_versions(marker, key, probes, num_controls=3, config=CONFIG, cache_dir=cache)]
    files = sorted(cache.iterdir())
    assert len(files) == 4
    assert stat.S_IMODE(os.stat(cache).st_mode) == 0o700
    assert all(stat.S_IMODE(os.stat(f).st_mode) == 0o600 for f in files)
    assert all(key.fingerprint in f.name for f in files)

    mark_module = importlib.import_module("radioactive.mark")  # the package attribute is the function

    def boom(*args, **kwargs):
        raise AssertionError("cached versions must not be marked again")

    monkeypatch.setattr(mark_module, "mark", boom)
    second = [img for _, img in marked_versions(marker, key, probes, num_controls=3, config=CONFIG, cache_dir=cache)]
    for a, b in zip(first, second):
        assert torch.equal(a, b)
    # Versions differ only by their carriers: the same marking with a control set equals a single call.
    monkeypatch.undo()
    single = mark_module.mark(marker, probes.images, probes.labels, key.control_carriers(1), CONFIG, seed=0)
    assert torch.equal((single.images * 255).round().to(torch.uint8), first[2])


def test_published_probes_use_published_images(marker, probes, clean_model):
    key = Key.generate(marker.info, seed=6)
    from radioactive.mark import mark

    published = mark(marker, probes.images, probes.labels, key, CONFIG, seed=0).images
    both = Probes(probes.images, probes.labels, published=published)
    assert both.source == "published"
    versions = list(marked_versions(marker, key, both, num_controls=2, config=CONFIG))
    assert torch.equal(versions[0][1], (published * 255).round().to(torch.uint8))
    verdict = blackbox(_predict(clean_model), key, both, marker=marker, settings=_settings(num_controls=2))
    assert verdict.details["probe_source"] == "published"
    with pytest.raises(ConfigError, match="null trials need fresh probes"):
        blackbox(_predict(clean_model), key, both, marker=marker, settings=_settings(num_controls=2, null_trials=2))
    with pytest.raises(DatasetError, match="do not match"):
        Probes(probes.images, probes.labels, published=published[:3])


def test_label_only_outputs(marker, probes, clean_model):
    key = Key.generate(marker.info, seed=7)

    def labels_only(x):
        with torch.no_grad():
            return clean_model(x).argmax(1)

    verdict = blackbox(labels_only, key, probes, marker=marker, settings=_settings(num_controls=4, statistic="label"))
    assert verdict.details["output_kind"] == "labels"
    t_verdict = blackbox(labels_only, key, probes, marker=marker,
                         settings=_settings(num_controls=4, statistic="label", combine="t"))
    assert t_verdict.test == "blackbox-t" and t_verdict.details["output_kind"] == "labels"
    assert min(verdict.log10_p, t_verdict.log10_p) > math.log10(0.05)  # a model that never saw marks
    with pytest.raises(ConfigError, match="labels only"):
        blackbox(labels_only, key, probes, marker=marker, settings=_settings(num_controls=4, statistic="margin"))


def test_bad_outputs_raise_clear_errors(marker, probes):
    key = Key.generate(marker.info, seed=8)
    two = _settings(num_controls=2)
    with pytest.raises(EndpointError, match="NaN"):
        blackbox(lambda x: torch.full((len(x), 4), float("nan")), key, probes, marker=marker, settings=two)
    with pytest.raises(EndpointError, match="for 24 images"):
        blackbox(lambda x: torch.zeros(3, 4), key, probes, marker=marker, settings=two)
    with pytest.raises(KeyMismatchError, match="4 classes but the suspect's head has 7 outputs"):
        blackbox(lambda x: torch.zeros(len(x), 7), key, probes, marker=marker, settings=two)
    verdict = blackbox(lambda x: torch.randn(len(x), 7), key, probes, marker=marker,
                       settings=_settings(num_controls=2, class_map={0: 6, 1: 5}))
    assert [c.index for c in verdict.classes] == [0, 1] and verdict.counts["probes"] == 12


def test_settings_are_validated_and_recorded():
    with pytest.raises(ConfigError, match="unknown statistic 'wilcoxon'; choose from"):
        BlackboxSettings(statistic="wilcoxon")
    with pytest.raises(ConfigError, match="unknown combination 'fisher'; choose from \\['rank', 't', 'perm'\\]"):
        BlackboxSettings(combine="fisher")
    with pytest.raises(ConfigError, match="at least 3 control sets"):
        BlackboxSettings(num_controls=2, combine="t")
    with pytest.raises(ConfigError, match="num_controls must be an integer >= 1"):
        BlackboxSettings(num_controls=0)
    with pytest.raises(ConfigError, match="alpha"):
        BlackboxSettings(alpha=1.5)
    with pytest.raises(ConfigError, match="unknown output kind"):
        BlackboxSettings(output="scores")
    with pytest.raises(ConfigError, match="labels only"):
        BlackboxSettings(output="labels")
    with pytest.raises(ConfigError, match="class_map is empty"):
        BlackboxSettings(class_map={})
    with pytest.raises(ConfigError, match="MarkConfig"):
        BlackboxSettings(mark=3)
    settings = BlackboxSettings(mark={"steps": 3}, class_map={2: 1}, cache_dir=Path("/tmp/x"), null_seed=np.int64(4))
    assert settings.mark == MarkConfig(steps=3) and settings.class_map == ((2, 1),)
    data = settings.to_dict()
    assert data["mark"] == MarkConfig(steps=3).to_dict() and data["class_map"] == [[2, 1]]
    assert data["cache_dir"] == "/tmp/x" and data["null_seed"] == 4 and type(data["null_seed"]) is int
    assert json.loads(json.dumps(data)) == data
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.alpha = 0.1  # type: ignore[misc]
    with pytest.raises(TypeError):
        BlackboxSettings(9)  # keyword-only


def test_probabilities_and_logits_give_the_same_margin(marker, probes, clean_model):
    key = Key.generate(marker.info, seed=9)
    logits = blackbox(_predict(clean_model), key, probes, marker=marker, settings=_settings(num_controls=3,
                                                                                           output="logits"))
    probs = blackbox(lambda x: torch.softmax(_predict(clean_model)(x).double(), 1), key, probes, marker=marker,
                     settings=_settings(num_controls=3))
    assert probs.details["output_kind"] == "probs"
    np.testing.assert_allclose([c.statistic for c in logits.classes], [c.statistic for c in probs.classes], atol=1e-5)


def test_null_trials_rank_a_planted_signal_first(marker, probes):
    """Null trials rerun the test with random keys: against the carrier reader the real key beats every one
    of them, and each recorded null p-value is the test's p-value for that random key."""
    key = Key.generate(marker.info, seed=10)
    predict = _carrier_reader(marker, key, probes)
    settings = BlackboxSettings(num_controls=9, mark=MarkConfig(steps=2, eval_draws=0, augment=()), null_trials=4,
                                null_seed=0)
    verdict = blackbox(predict, key, probes, marker=marker, settings=settings)
    nt = verdict.null_trials
    assert nt["trials"] == 4 and nt["rank"] == 1 and nt["empirical_p"] == pytest.approx(1 / 5)
    assert min(nt["null_log10_p"]) > verdict.log10_p
    plain = dataclasses.replace(settings, null_trials=0)
    for seed, null_log10_p in zip(nt["seeds"], nt["null_log10_p"]):
        other = blackbox(predict, random_key(key, seed), probes, marker=marker, settings=plain)
        assert other.log10_p == pytest.approx(null_log10_p, abs=1e-12)

"""The paired-twin secret-coin test: its count is exactly Binomial(N, 1/2) under H0 (scores computed once,
coins redrawn), a model that prefers the published twins is detected, the p-value and Fisher's combination
are right, and the pairs are checked against the published folder."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers.detect_files import write_detect_files
from scipy import stats as sps

from radioactive import Key, MarkConfig
from radioactive.detect import Probes, Verdict, fisher_combine, published_pairs, twin_pairs, twins_test
from radioactive.detect.observations import model_predictor
from radioactive.detect.published import published_probes
from radioactive.detect.twins import TwinPairs, count_wins, pair_scores, verdict_from_scores, view
from radioactive.errors import ConfigError, DatasetError, KeyMismatchError
from radioactive.marker import Marker
from radioactive.nets import load_checkpoint
from radioactive.publish import mark_dataset
from radioactive.sources import load_labelled, open_source
from radioactive.stats import binomial_interval
from radioactive.twins import TwinSecret, twin_secret_for

CONFIG = MarkConfig(steps=4, lr=0.03, eval_draws=0)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny 10-class marker and key, 3 classes x 8 images marked at 50 % with twins into ``pub``."""
    tmp = write_detect_files(tmp_path_factory.mktemp("twins"), classes=3, per_class=8, planted=0.0, images="src")
    marker = Marker.from_checkpoint(tmp / "marker.safetensors")
    key = Key.load(tmp / "key.safetensors")
    source = open_source(tmp / "src")
    secret = twin_secret_for(source, key, fraction=0.5, seed=3, secret_seed=42)
    mark_dataset(source, tmp / "pub", marker=marker, key=key, fraction=0.5, config=CONFIG, seed=3, progress=False,
                 twins=secret)
    pairs = published_pairs(tmp / "pub", secret, key=key, marker=marker, originals=load_labelled(tmp / "src"))
    return tmp, marker, key, secret, pairs


def _randomised_p(wins: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """P(X > w) + U P(X = w): exactly uniform when w ~ Binomial(count, 1/2)."""
    return sps.binom.sf(wins, count, 0.5) + rng.random(len(wins)) * sps.binom.pmf(wins, count, 0.5)


def test_views_are_fixed_flips_and_zero_filled_shifts():
    images = torch.arange(2 * 28 * 28, dtype=torch.int64).view(2, 1, 28, 28).to(torch.uint8)
    assert torch.equal(view(images, 0), images)
    assert torch.equal(view(images, 1), images.flip(-1))
    shifted = view(images, 2)  # rows down by 2 (28 / 14)
    assert shifted.dtype == torch.uint8 and shifted.shape == images.shape
    assert torch.equal(shifted[..., 2:, :], images[..., :-2, :]) and not shifted[..., :2, :].any()
    with pytest.raises(ConfigError, match="view index"):
        view(images, 16)


@pytest.mark.parametrize("tie_fraction", [0.0, 0.3, 1.0])
def test_the_count_is_exactly_binomial_whatever_the_scores_and_ties(tie_fraction):
    """Scores fixed (ties included), coins redrawn 20,000 times: the wins follow Binomial(N, 1/2)."""
    rng = np.random.default_rng(0)
    count, draws = 60, 20_000
    scores = rng.normal(size=(2, count)) + np.array([[0.7], [0.0]])  # twin 0 systematically liked more
    ties = rng.random(count) < tie_fraction
    scores[1, ties] = scores[0, ties]
    coins = rng.integers(0, 2, (draws, count))
    wins, tie_count = count_wins(scores, coins, tie_seed=5)
    assert tie_count == ties.sum()
    observed = np.bincount(wins, minlength=count + 1)
    expected = sps.binom.pmf(np.arange(count + 1), count, 0.5) * draws
    keep = expected >= 5  # chi-square on the bins with enough mass, the rest pooled
    chi = np.append(observed[keep], observed[~keep].sum())
    want = np.append(expected[keep], expected[~keep].sum())
    assert sps.chisquare(chi, want * chi.sum() / want.sum()).pvalue > 1e-3
    assert sps.kstest(_randomised_p(wins, count, rng), "uniform").pvalue > 1e-3
    log10_ps = np.array([verdict_from_scores(scores, c, statistic="margin", views=1, tie_seed=5, key_fingerprint="k",
                                             secret_fingerprint="s").log10_p for c in coins[:2000]])
    for alpha in (0.01, 0.05):
        assert (log10_ps <= math.log10(alpha)).sum() <= binomial_interval(2000, alpha, 0.999)[1]


def test_exact_on_a_real_model_independent_of_the_coins(world):
    tmp, _, _, secret, pairs = world
    model, _, _ = load_checkpoint(tmp / "suspect.safetensors")
    scores, kind = pair_scores(model_predictor(model.eval()), pairs, statistic="loss")
    assert kind == "logits" and scores.shape == (2, len(pairs)) and (scores[0] != scores[1]).all()
    rng = np.random.default_rng(1)
    coins = rng.integers(0, 2, (4000, len(pairs)))
    wins, _ = count_wins(scores, coins)
    assert abs(wins.mean() - len(pairs) / 2) < 5 * math.sqrt(len(pairs) / 4 / 4000)
    assert sps.kstest(_randomised_p(wins, len(pairs), rng), "uniform").pvalue > 1e-3


def _memoriser(pairs: TwinPairs, *, labels_only: bool = False):
    """A model that learned the published images by heart: a random linear model, plus a large bonus on the
    true class for an image it saw (labels only: the true label exactly for the images it saw)."""
    seen = pairs.published.float() / 255
    weight = torch.randn(seen[0].numel(), 10, generator=torch.Generator().manual_seed(0))

    def predict(images: torch.Tensor) -> torch.Tensor:
        logits = images.flatten(1) @ weight
        distance = (images.unsqueeze(1) - seen.unsqueeze(0)).pow(2).flatten(2).sum(2)  # (B, N)
        known = distance.min(1).values == 0
        true = pairs.labels[distance.argmin(1)]  # an unpublished twin is nearest to its sibling
        logits[known, true[known]] += 1000.0
        if labels_only:
            return torch.where(known, true, (true + 1) % 10)
        return logits

    return predict


@pytest.mark.parametrize(("statistic", "labels_only"), [("margin", False), ("loss", False), ("label", True)])
def test_a_model_that_prefers_the_published_twins_is_detected(world, statistic, labels_only):
    _, _, key, secret, pairs = world
    count = len(pairs)
    verdict = twins_test(_memoriser(pairs, labels_only=labels_only), pairs, statistic=statistic,
                         views=1 if labels_only else None, model_id="memoriser")
    assert verdict.test == f"twins-{statistic}" and verdict.counts == {"pairs": count, "wins": count, "ties": 0}
    assert verdict.log10_p == pytest.approx(count * math.log10(0.5), rel=1e-9)
    assert verdict.detected and verdict.key_fingerprint == key.fingerprint
    assert verdict.details["secret_fingerprint"] == secret.fingerprint and verdict.model_sha256 == "memoriser"
    # The same model read against the other twins (had the coins fallen the other way) loses every pair.
    flipped = TwinPairs(pairs.twins, pairs.labels, 1 - pairs.coins, pairs.ids, pairs.key_fingerprint,
                        pairs.secret_fingerprint)
    assert twins_test(_memoriser(pairs, labels_only=labels_only), flipped, statistic=statistic,
                      views=1 if labels_only else None).counts["wins"] == 0


def test_the_p_value_is_the_binomial_tail(world):
    *_, pairs = world
    scores = np.stack([np.arange(len(pairs), dtype=float), np.arange(len(pairs), dtype=float)[::-1]])
    coins = pairs.coins.numpy()
    verdict = verdict_from_scores(scores, coins, statistic="loss", views=1, key_fingerprint="k", secret_fingerprint="s")
    wins = verdict.counts["wins"]
    assert verdict.log10_p == pytest.approx(math.log10(sps.binom.sf(wins - 1, len(pairs), 0.5)), abs=1e-12)
    assert verdict.details["win_rate"] == wins / len(pairs)


def test_label_outputs_need_the_label_statistic(world):
    *_, pairs = world
    labels_only = _memoriser(pairs, labels_only=True)
    with pytest.raises(ConfigError, match="labels only"):
        twins_test(labels_only, pairs, statistic="margin")
    with pytest.raises(ConfigError, match="views"):
        twins_test(labels_only, pairs, statistic="label", views=0)
    with pytest.raises(ConfigError, match="unknown statistic"):
        twins_test(labels_only, pairs, statistic="accuracy")


def test_fisher_combines_independent_secrets_only(world):
    *_, pairs = world
    twins = verdict_from_scores(np.stack([np.ones(4), np.zeros(4)]), np.zeros(4), statistic="loss", views=1,
                                key_fingerprint="k1", secret_fingerprint="s1")
    carrier = Verdict(test="blackbox-perm", log10_p=-2.0, alpha=1e-3, classes=(), z=2.3, key_fingerprint="k1")
    combined = fisher_combine([carrier, twins])
    statistic = -2 * (carrier.log10_p + twins.log10_p) * math.log(10)
    assert combined.log10_p == pytest.approx(math.log10(sps.chi2.sf(statistic, 4)), rel=1e-9)
    assert combined.test == "fisher(blackbox-perm+twins-loss)" and combined.key_fingerprint == "k1"
    white = Verdict(test="whitebox", log10_p=-1.0, alpha=1e-3, classes=(), z=1.3, key_fingerprint="k1")
    with pytest.raises(ConfigError, match="same secret"):
        fisher_combine([carrier, white])
    with pytest.raises(ConfigError, match="same secret"):
        fisher_combine([twins, verdict_from_scores(np.zeros((2, 4)), np.zeros(4), statistic="margin", views=1,
                                                   key_fingerprint="k1", secret_fingerprint="s1")])
    with pytest.raises(ConfigError, match="at least two"):
        fisher_combine([twins])


def test_pairs_are_checked_against_the_published_folder(world):
    tmp, marker, key, secret, pairs = world
    assert pairs.details["published_exact"] == 1.0 and len(pairs) == 12
    assert set(pairs.ids) == set(secret.coins)
    assert torch.equal(pairs.coins, torch.tensor([secret.coin(i) for i in pairs.ids]))
    published = load_labelled(tmp / "pub")
    where = {ident: i for i, ident in enumerate(published.ids)}
    assert torch.equal(pairs.published, published.images[torch.tensor([where[i] for i in pairs.ids])])
    originals = load_labelled(tmp / "src")
    # A secret with the same coins but another seed makes other twins: the published files are not among them.
    impostor = TwinSecret(secret.key_fingerprint, secret.seed + 1, secret.coins, secret.spread)
    at = torch.tensor([{i: n for n, i in enumerate(originals.ids)}[i] for i in pairs.ids])
    with pytest.raises(DatasetError, match="not those of the run"):
        twin_pairs(marker, key, impostor, originals.images[at], pairs.labels, pairs.ids, config=CONFIG,
                   published=pairs.published)
    with pytest.raises(KeyMismatchError, match="twin secret"):
        published_pairs(tmp / "pub", impostor, key=key, marker=marker, originals=originals)
    with pytest.raises(KeyMismatchError, match="made with key"):
        published_pairs(tmp / "pub", secret, key=Key.generate(key.marker, seed=5), marker=marker, originals=originals)
    assert len(published_pairs(tmp / "pub", secret, key=key, marker=marker, originals=originals, limit=5)) == 5


def test_folders_without_twins_and_carrier_tests_on_twin_folders_are_refused(world, tmp_path):
    tmp, marker, key, secret, _ = world
    mark_dataset(open_source(tmp / "src"), tmp_path / "plain", marker=marker, key=key, fraction=0.5, config=CONFIG,
                 seed=3, progress=False)
    with pytest.raises(ConfigError, match="records no twins"):
        published_pairs(tmp_path / "plain", secret, key=key, marker=marker, originals=load_labelled(tmp / "src"))
    with pytest.raises(ConfigError, match="marked with twins"):
        published_probes(tmp / "pub", load_labelled(tmp / "pub"), load_labelled(tmp / "src"), num_classes=10)
    assert isinstance(published_probes(tmp_path / "plain", load_labelled(tmp_path / "plain"),
                                       load_labelled(tmp / "src"), num_classes=10), Probes)


@pytest.mark.parametrize(("wins", "count"), [(1650, 3000), (2900, 3000), (40_000, 55_000), (55_000, 55_000), (0, 9),
                                             (10, 9), (5, 9)])
def test_binomial_tail_is_exact_far_below_the_double_range(wins, count):
    from scipy.special import logsumexp

    from radioactive.stats import binomial_log_sf

    exact = logsumexp(sps.binom.logpmf(np.arange(wins, count + 1), count, 0.5)) if wins <= count else -np.inf
    assert binomial_log_sf(wins, count) == pytest.approx(min(exact, 0.0), rel=1e-10, abs=1e-12)


def test_twin_marking_and_queries_are_announced(world, caplog):
    """Both long parts of the twins test say how much they do (issue 26, item 6)."""
    import logging

    tmp, marker, key, secret, _ = world
    caplog.set_level(logging.INFO, logger="radioactive.detect.twins")
    pairs = published_pairs(tmp / "pub", secret, key=key, marker=marker, originals=load_labelled(tmp / "src"))
    model, _, _ = load_checkpoint(tmp / "suspect.safetensors")
    pair_scores(model_predictor(model.eval()), pairs, statistic="margin", views=2)
    lines = [r.getMessage() for r in caplog.records if r.name == "radioactive.detect.twins"]
    n = len(pairs)
    assert lines == [f"marking both twins of {n} published images ({2 * n} images, 4 steps each)",
                     f"querying the suspect on {4 * n} images (2 twins x 2 views x {n} pairs)"]

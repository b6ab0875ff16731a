"""The data-taggant test (radioactive.detect.taggants): exact nulls, ties, keys, bad input, power."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from scipy.stats import binom

from radioactive.detect.taggants import (
    TaggantKeys,
    rank_sum_log10_p,
    secret_label_ranks,
    taggant_keys,
    taggant_test,
    top_k_log10_p,
)
from radioactive.errors import ConfigError


def _log_space_rank_sum_cdf(count: int, num_classes: int) -> np.ndarray:
    """log P(S <= s) for s = count..count*C by repeated convolution of uniforms in log space (independent of
    the library's inclusion-exclusion)."""
    log_pmf = np.zeros(1)
    uniform = -math.log(num_classes)
    for _ in range(count):
        shifted = np.full((num_classes, log_pmf.size + num_classes - 1), -np.inf)
        for offset in range(num_classes):
            shifted[offset, offset:offset + log_pmf.size] = log_pmf + uniform
        log_pmf = logsumexp(shifted, axis=0)
    return np.logaddexp.accumulate(log_pmf)


def _exact_level(p_values: np.ndarray, probabilities: np.ndarray, alpha: float) -> float:
    """P(p <= alpha) under the exact null, from the support's p-values and probabilities."""
    return float(probabilities[p_values <= alpha * (1 + 1e-12)].sum())


def test_single_key_closed_form():
    for num_classes in (2, 10, 100):
        for rank in range(1, num_classes + 1):
            assert rank_sum_log10_p([rank], num_classes) == pytest.approx(math.log10(rank / num_classes), abs=1e-12)
        assert top_k_log10_p([1], num_classes) == pytest.approx(math.log10(1 / num_classes), abs=1e-12)


def test_rank_sum_matches_enumeration():
    num_classes, count = 4, 3
    sums = np.array([sum(r) for r in itertools.product(range(1, num_classes + 1), repeat=count)])
    for ranks in itertools.product(range(1, num_classes + 1), repeat=count):
        expected = (sums <= sum(ranks)).mean()
        assert rank_sum_log10_p(list(ranks), num_classes) == pytest.approx(math.log10(expected), abs=1e-12)


def test_rank_sum_matches_log_space_convolution_far_in_the_tail():
    count, num_classes = 150, 10
    reference = _log_space_rank_sum_cdf(count, num_classes) / math.log(10)
    for total in (count, count + 1, count + 7, 400, 825, 826, 1300, count * num_classes):
        ranks = np.full(count, 1)
        extra = total - count
        ranks[: extra // (num_classes - 1)] = num_classes
        if extra % (num_classes - 1):
            ranks[extra // (num_classes - 1)] += extra % (num_classes - 1)
        assert ranks.sum() == total
        assert rank_sum_log10_p(ranks, num_classes) == pytest.approx(reference[total - count], rel=1e-9, abs=1e-12)
    assert rank_sum_log10_p(np.ones(count, dtype=int), num_classes) == pytest.approx(-count, abs=1e-9)


def test_false_positive_rates_match_the_exact_levels():
    """2,000 clean suspects (random scores) x random secret labels: the rate of p <= alpha sits within the 99.9 %
    binomial interval of its exact level, for both combinations."""
    trials, count, num_classes = 2000, 30, 10
    rng = np.random.default_rng(0)
    rank_sum, top_one = np.empty(trials), np.empty(trials)
    for t in range(trials):
        scores = rng.normal(size=(count, num_classes)) + np.linspace(0, 3, num_classes)  # a suspect with a bias
        labels = rng.integers(num_classes, size=count)
        verdict = taggant_test(scores, labels)
        rank_sum[t], top_one[t] = verdict.log10_p_rank_sum, verdict.log10_p_top_k
    sums = np.arange(count, count * num_classes + 1)
    log_cdf = _log_space_rank_sum_cdf(count, num_classes)
    sum_p = np.exp(log_cdf)
    sum_prob = np.diff(np.concatenate([[0.0], sum_p]))
    hits = np.arange(count + 1)
    hit_p, hit_prob = binom.sf(hits - 1, count, 0.1), binom.pmf(hits, count, 0.1)
    assert sums.size == sum_p.size
    for alpha in (0.01, 0.05):
        for observed, (p_values, probabilities) in ((rank_sum, (sum_p, sum_prob)), (top_one, (hit_p, hit_prob))):
            level = _exact_level(p_values, probabilities, alpha)
            assert level <= alpha
            low, high = binom.ppf(0.0005, trials, level), binom.isf(0.0005, trials, level)
            assert low <= (observed <= math.log10(alpha) + 1e-12).sum() <= high


def test_ties_random_is_exact_and_conservative_is_valid():
    """Label-only outputs (one-hot scores): random tie-breaking keeps the ranks uniform; the conservative rule
    gives ranks at least as large, so its p-values are never smaller."""
    count, num_classes = 4000, 5
    rng = np.random.default_rng(1)
    scores = np.eye(num_classes)[rng.integers(num_classes, size=count)]
    labels = rng.integers(num_classes, size=count)
    random_ranks = secret_label_ranks(scores, labels, ties="random", seed=11)
    conservative = secret_label_ranks(scores, labels)
    assert np.all(conservative >= random_ranks)
    frequencies = np.bincount(random_ranks, minlength=num_classes + 1)[1:] / count
    assert np.all(np.abs(frequencies - 1 / num_classes) < 5 * math.sqrt(0.2 * 0.8 / count))
    assert np.array_equal(secret_label_ranks(scores, labels, ties="random", seed=11), random_ranks)


def test_scores_as_logits_or_probabilities_give_the_same_ranks():
    logits = torch.randn(50, 10, generator=torch.Generator().manual_seed(2))
    labels = torch.randint(10, (50,), generator=torch.Generator().manual_seed(3))
    assert np.array_equal(secret_label_ranks(logits, labels), secret_label_ranks(logits.softmax(1), labels))
    assert np.array_equal(secret_label_ranks(logits, labels), 1 + (logits > logits[torch.arange(50), labels][:, None])
                          .sum(1).numpy())


def test_a_suspect_that_always_puts_the_secret_label_on_top():
    keys = taggant_keys(100, 10, seed=4)
    scores = torch.randn(100, 10, generator=torch.Generator().manual_seed(5))
    scores[torch.arange(100), keys.labels] = 10.0
    verdict = taggant_test(scores, keys.labels, k=1)
    assert verdict.num_queries == 100 and verdict.top_k_hits == 100 and verdict.mean_rank == 1.0
    assert verdict.log10_p_rank_sum == pytest.approx(-100.0, abs=1e-9)
    assert verdict.log10_p_top_k == pytest.approx(-100.0, abs=1e-9)
    assert set(verdict.to_dict()) >= {"log10_p_rank_sum", "log10_p_top_k", "num_queries"}
    top3 = taggant_test(scores, keys.labels, k=3)
    assert top3.log10_p_top_k == pytest.approx(100 * math.log10(0.3), abs=1e-9)


def test_keys_are_seeded_smooth_images_on_the_8_bit_grid():
    keys = taggant_keys(64, 10, seed=7)
    assert isinstance(keys, TaggantKeys)
    assert keys.images.shape == (64, 1, 28, 28) and keys.images.dtype == torch.float32
    assert keys.labels.shape == (64,) and keys.labels.dtype == torch.int64
    assert float(keys.images.min()) == 0.0 and float(keys.images.max()) == 1.0
    assert torch.equal((keys.images * 255).round() / 255, keys.images)
    assert 0 <= int(keys.labels.min()) and int(keys.labels.max()) <= 9
    again = taggant_keys(64, 10, seed=7)
    assert torch.equal(again.images, keys.images) and torch.equal(again.labels, keys.labels)
    other = taggant_keys(64, 10, seed=8)
    assert not torch.equal(other.images, keys.images)
    # smooth: neighbouring pixels correlate strongly, unlike white noise
    x = keys.images[:, 0]
    assert float(torch.corrcoef(torch.stack([x[:, :, :-1].flatten(), x[:, :, 1:].flatten()]))[0, 1]) > 0.8
    assert keys.to_dict() == {"num_keys": 64, "shape": [1, 28, 28], "num_classes": 10, "seed": 7, "sigma": 2.0}


def test_key_labels_are_uniform():
    labels = taggant_keys(5000, 10, seed=9, shape=(1, 4, 4)).labels
    counts = np.bincount(labels.numpy(), minlength=10)
    assert np.all(np.abs(counts - 500) < 5 * math.sqrt(5000 * 0.1 * 0.9))


@pytest.mark.parametrize(("scores", "labels", "kwargs", "match"), [
    (np.zeros(10), [0], {}, "scores must be"),
    (np.zeros((3, 1)), [0, 0, 0], {}, "scores must be"),
    (np.zeros((3, 10)), [0, 1], {}, "labels must be"),
    (np.zeros((3, 10)), [0, 1, 10], {}, r"labels must lie in 0\.\.9"),
    (np.zeros((3, 10)), [0, -1, 2], {}, r"labels must lie in 0\.\.9"),
    (np.zeros((3, 10)), [0.5, 1.0, 2.0], {}, "labels must be integers"),
    (np.full((3, 10), np.nan), [0, 1, 2], {}, "scores must be finite"),
    (np.zeros((3, 10)), [0, 1, 2], {"ties": "first"}, "unknown ties rule 'first'"),
    (np.zeros((3, 10)), [0, 1, 2], {"ties": "random"}, "needs a seed"),
    (np.zeros((3, 10)), [0, 1, 2], {"k": 10}, r"k must lie in 1\.\.9"),
])
def test_bad_input_names_the_argument(scores, labels, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        taggant_test(scores, labels, **kwargs)


def test_bad_ranks_and_keys():
    with pytest.raises(ValueError, match=r"ranks must be integers in 1\.\.10"):
        rank_sum_log10_p([0, 3], 10)
    with pytest.raises(ConfigError, match="ranks must be a non-empty"):
        rank_sum_log10_p([], 10)
    with pytest.raises(ConfigError, match="num_classes must be >= 2"):
        top_k_log10_p([1], 1)
    with pytest.raises(ConfigError, match="sigma must be > 0"):
        taggant_keys(3, 10, seed=0, sigma=0.0)
    with pytest.raises(ConfigError, match="need num_keys >= 1"):
        taggant_keys(0, 10, seed=0)

"""Simulated p-values of each test: the test's own exact code applied to observations drawn from a response.

Every draw makes what the test would observe, and the p-value comes from the same functions the tests use
(:func:`radioactive.stats.cosine_log_sf` and :func:`~radioactive.stats.fisher_log_sf`,
:func:`~radioactive.stats.rank_log_p`, :func:`radioactive.detect.combine.permutation_sum_log_p`,
:func:`~radioactive.stats.binomial_log_sf`). With zero response the draws follow H0 exactly, so the simulated
p-values follow the exact null law (floors and discreteness included):

- cosine tests: per class ``c = e + sqrt(1 - e^2) c0`` with ``c0`` one coordinate of a uniform unit vector in the
  null dimension (drawn exactly, as ``2 Beta((D-1)/2, (D-1)/2) - 1``) and ``e`` the class's learned cosine;
- black-box tests: per class K control values ``N(0, 1)`` and the true set's ``N(e, 1)``: ``e`` is the shift of the
  true carrier set in units of the controls' spread. More than :data:`EXACT_MAX_CLASSES` classes make the exact
  permutation convolution too slow; there the permutation null is evaluated by the Lugannani-Rice saddlepoint
  approximation of the same stratified relabelling law (its exact cumulant generating function), floored at
  ``(K + 1)^-C``;
- twins: wins ``~ Binomial(N, 1/2 + e)``.

Draws use common random numbers: the same ``seed`` gives the same noise whatever the effects, so simulated
quantiles move monotonically with the effect.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import special
from scipy.stats import binom

from .. import stats
from ..detect.combine import permutation_sum_log_p
from .catalogue import Budget, TestSpec

__all__ = ["EXACT_MAX_CLASSES", "perm_saddlepoint_log_p", "simulate_log10_p"]

EXACT_MAX_CLASSES = 16


def _cosine_log_p(effects: np.ndarray, budget: Budget, rng: np.random.Generator) -> np.ndarray:
    dim = budget.null_dim
    null = 2.0 * rng.beta((dim - 1) / 2.0, (dim - 1) / 2.0, size=effects.shape) - 1.0  # exact H0 coordinate
    e = np.clip(effects, -1.0, 1.0)
    cosines = np.clip(e + np.sqrt(1.0 - e * e) * null, -1.0, 1.0)
    per_class = np.asarray(stats.cosine_log_sf(cosines, dim), dtype=np.float64).reshape(cosines.shape)
    return np.array([stats.fisher_log_sf(row) for row in per_class])


def _standardise(values: np.ndarray) -> np.ndarray:
    """As the permutation test standardises each class: mean and spread (ddof 1) over its K + 1 values."""
    spread = values.std(axis=-1, ddof=1, keepdims=True)
    return (values - values.mean(axis=-1, keepdims=True)) / np.where(spread > 0, spread, 1.0)


def perm_saddlepoint_log_p(values: np.ndarray) -> np.ndarray:
    """Natural-log p-value of the stratified permutation test of :mod:`radioactive.detect.combine`, by the
    Lugannani-Rice saddlepoint approximation of its exact null (independent uniform relabelling per class).

    Args:
        values: ``(draws, C, K + 1)``, column 0 the true carrier set.

    Returns:
        ``(draws,)`` log p, between the floor ``-C log(K + 1)`` and 0.
    """
    z = _standardise(np.asarray(values, dtype=np.float64))  # (draws, C, n)
    draws, classes, sets = z.shape
    observed = z[:, :, 0].sum(axis=1)
    variance0 = (z * z).mean(axis=2).sum(axis=1)  # K''(0); every class's z has mean 0
    floor = -classes * math.log(sets)
    t = observed / variance0
    for _ in range(60):
        scaled = t[:, None, None] * z
        weights = np.exp(scaled - scaled.max(axis=2, keepdims=True))
        weights /= weights.sum(axis=2, keepdims=True)
        first = (weights * z).sum(axis=2)
        slope = first.sum(axis=1)
        curvature = np.maximum(((weights * z * z).sum(axis=2) - first * first).sum(axis=1), 1e-300)
        step = np.clip((slope - observed) / curvature, -2.0, 2.0)
        t = t - step
        if np.all(np.abs(step) < 1e-10 * (1.0 + np.abs(t))):
            break
    cgf = (special.logsumexp(t[:, None, None] * z, axis=2) - math.log(sets)).sum(axis=1)
    w = np.sign(t) * np.sqrt(np.maximum(2.0 * (t * observed - cgf), 0.0))
    u = t * np.sqrt(curvature)
    log_q = special.log_ndtr(-w)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.exp(-0.5 * w * w - 0.5 * math.log(2 * math.pi) - log_q) * (1.0 / u - 1.0 / w)
        log_p = log_q + np.log1p(np.maximum(ratio, -1.0 + 1e-12))
    near = np.abs(observed) < 0.5 * np.sqrt(variance0)  # the formula's removable singularity: bulk, normal is fine
    log_p = np.where(near | ~np.isfinite(log_p), special.log_ndtr(-observed / np.sqrt(variance0)), log_p)
    at_max = observed >= z.max(axis=2).sum(axis=1) - 1e-9
    log_p = np.where(at_max, floor, log_p)
    return np.clip(log_p, floor, 0.0)


def _blackbox_log_p(spec: TestSpec, effects: np.ndarray, budget: Budget, rng: np.random.Generator,
                    exact: bool) -> np.ndarray:
    draws, classes = effects.shape
    controls = rng.standard_normal((draws, classes, budget.controls))
    true = effects + rng.standard_normal((draws, classes))
    if spec.combine == "rank":
        per_class = stats.rank_log_p(true.reshape(-1), controls.reshape(-1, budget.controls)).reshape(draws, classes)
        return np.array([stats.fisher_log_sf(row) for row in per_class])
    values = np.concatenate([true[:, :, None], controls], axis=2)
    if exact and classes <= EXACT_MAX_CLASSES:
        return np.array([permutation_sum_log_p(row)[0] for row in values])
    return perm_saddlepoint_log_p(values)


def _twins_log_p(effects: np.ndarray, budget: Budget, rng: np.random.Generator) -> np.ndarray:
    uniforms = rng.random(effects.shape[0])
    rates = np.clip(0.5 + effects[:, 0], 0.0, 1.0)
    wins = binom.ppf(uniforms, budget.pairs, rates).astype(np.int64)  # quantile: monotone in the rate
    return np.array([stats.binomial_log_sf(int(w), budget.pairs) for w in wins])


def simulate_log10_p(spec: TestSpec, budget: Budget, effects: np.ndarray, *, seed: int = 0,
                     exact: bool = True) -> np.ndarray:
    """log10 p of ``spec`` for each row of per-class effects.

    Args:
        spec: the test.
        budget: classes, dimension and the test's budget (``controls`` for black-box tests, ``pairs`` for twins:
            resolved, not None).
        effects: ``(draws, C)`` per-class effects in the test's unit (:attr:`TestSpec.unit`); for twins
            ``(draws, 1)`` win-rate excesses.
        seed: seed of the observation noise (common random numbers across calls).
        exact: run the permutation test's exact convolution (up to :data:`EXACT_MAX_CLASSES` classes); False
            uses the saddlepoint approximation everywhere (fast, for searches).

    Returns:
        ``(draws,)`` log10 p-values.
    """
    effects = np.atleast_2d(np.asarray(effects, dtype=np.float64))
    rng = np.random.default_rng(seed)
    if spec.kind == "cosine":
        log_p = _cosine_log_p(effects, budget, rng)
    elif spec.kind == "twins":
        log_p = _twins_log_p(effects, budget, rng)
    else:
        log_p = _blackbox_log_p(spec, effects, budget, rng, exact)
    return np.asarray(log_p, dtype=np.float64) / stats.LOG10

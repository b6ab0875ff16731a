"""Exact combination of the black-box carrier-level statistics: a stratified permutation test.

Per class ``k`` the K + 1 values ``x_{k,0..K}`` (true carrier set first, then the controls; optionally after
subtracting a reference model: difference in differences) are exchangeable under H0, and classes are
independent. So the index of the true set is, under H0, an independent uniform draw in ``{0..K}`` per class.

The statistic is the sum over classes of each class's standardised true value,

    S = sum_k z_{k,0},   z_{k,i} = (x_{k,i} - mean_i x_{k,.}) / sd_i x_{k,.}

(mean and spread over all K + 1 values: a per-class monotone map that does not depend on which set is true),
and the p-value is its exact tail under independent uniform re-labelling in every class,
``P(sum_k z_{k,I_k} >= S)``, computed by convolving the C discrete distributions. Values are rounded *up*
onto a fine grid before the convolution, which can only make the p-value larger: the test stays valid
(P(p <= a) <= a for every a) without any normality assumption, unlike the control-t combination, and it
uses the magnitudes, unlike Fisher on ranks. Its smallest attainable p-value is (K + 1)^-C (10 classes,
K = 20: about 1e-13, against 5e-6 for Fisher on ranks).
"""

from __future__ import annotations

import math

import numpy as np

from .. import stats
from ..errors import ConfigError
from ._common import log10, z_of
from .black_box import STATISTICS, Observations, statistic_values
from .verdict import ClassScore, Verdict

__all__ = ["permutation_sum_log_p", "exact_verdict"]


def _standardise(values: np.ndarray) -> np.ndarray:
    mean = values.mean(axis=1, keepdims=True)
    spread = values.std(axis=1, ddof=1, keepdims=True)
    spread = np.where(spread > 0, spread, 1.0)
    return (values - mean) / spread


def permutation_sum_log_p(values: np.ndarray, *, grid: float = 0.01) -> tuple[float, np.ndarray]:
    """Exact (conservative) natural-log p-value of the stratified permutation test.

    Args:
        values: ``(C, K + 1)``, column 0 the true carrier set (larger = more evidence).
        grid: rounding step of the standardised values (rounded up: conservative).

    Returns:
        ``(log p, z (C, K + 1))``.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] < 2:
        raise ConfigError(f"need (classes, K + 1) values with K >= 1, got shape {values.shape}")
    if not np.all(np.isfinite(values)):
        raise ConfigError("statistics must be finite")
    z = _standardise(values)
    ticks = np.ceil(z / grid - 1e-9).astype(np.int64)  # upward rounding (tiny tolerance for exact multiples)
    observed = float(z[:, 0].sum())
    num_sets = values.shape[1]
    pmf = np.ones(1)
    offset = 0
    for row in ticks:
        low = int(row.min())
        counts = np.bincount(row - low).astype(np.float64) / num_sets
        pmf = np.convolve(pmf, counts)
        offset += low
    # P(sum of rounded >= observed): rounded sums are offset + index, in grid units.
    threshold = math.ceil(observed / grid - 1e-9) - offset
    if threshold <= 0:
        return 0.0, z
    if threshold >= pmf.size:
        return -math.inf, z  # cannot happen: the observed configuration itself is an atom
    tail = pmf[threshold:].sum()
    return float(math.log(min(1.0, tail))), z


def exact_verdict(
    obs: Observations,
    *,
    statistic: str = "margin",
    difference: bool | None = None,
    alpha: float = 0.05,
    model_id: str | None = None,
    grid: float = 0.01,
) -> Verdict:
    """The black-box test on recorded observations with the exact stratified permutation combination.

    ``obs`` comes from :func:`radioactive.detect.black_box.collect`; ``difference`` subtracts the reference
    model's statistic (default: when one was recorded). Test name ``blackbox-perm`` (``-did``).
    """
    if statistic not in STATISTICS:
        raise ConfigError(f"unknown statistic {statistic!r}; choose from {list(STATISTICS)}")
    difference, values = statistic_values(obs, statistic, difference)
    per_class = values.T  # (C', K + 1)
    log_p, z = permutation_sum_log_p(per_class, grid=grid)
    rank_ps = stats.rank_log_p(per_class[:, 0], per_class[:, 1:])
    scores = tuple(
        ClassScore(index=k, log10_p=log10(lp), z=float(zk), statistic=float(row[0]),
                   controls=tuple(float(c) for c in row[1:]), count=int(n), output=o)
        for (k, o), lp, zk, row, n in zip(obs.pairs, rank_ps, z[:, 0], per_class, obs.counts)
    )
    return Verdict(
        test="blackbox-perm" + ("-did" if difference else ""),
        log10_p=log10(log_p),
        alpha=alpha,
        classes=scores,
        z=z_of(log_p),
        key_fingerprint=obs.key_fingerprint,
        model_sha256=model_id,
        counts={"classes": len(obs.pairs), "probes": obs.num_probes, "controls": obs.num_controls},
        details={
            "statistic": statistic,
            "combination": "exact stratified permutation of the sum of per-class standardised values",
            "difference_in_differences": bool(difference),
            "probe_source": obs.source,
            "output_kind": obs.output_kind,
            "sum_z": float(z[:, 0].sum()),
            "best_possible_log10_p": -len(obs.pairs) * math.log10(obs.num_controls + 1),
            "per_class_note": "per-class log10_p are the exact rank p-values",
        },
    )

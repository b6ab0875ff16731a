"""Combinations of the black-box observations into one p-value: ``rank``, ``t`` and ``perm``.

Per class ``k`` the K + 1 values ``x_{k,0..K}`` (true carrier set first, then the controls; optionally minus
the mean of one or several reference models': difference in differences) are exchangeable under H0, and
classes are independent.

- ``rank``: the rank of the true set is uniform, ``p_k = rank / (K + 1)`` exactly; Fisher across classes
  (conservative for discrete ranks).
- ``t``: the true value against the controls' mean and spread, Student's t with K - 1 degrees of freedom;
  Stouffer across classes. Reaches smaller p-values; its calibration is measured, not exact.
- ``perm``: an exact stratified permutation test of the sum over classes of each class's standardised true
  value ``S = sum_k z_{k,0}``, ``z_{k,i} = (x_{k,i} - mean_i x_{k,.}) / sd_i x_{k,.}`` (mean and spread over
  all K + 1 values: a per-class monotone map that does not depend on which set is true). Its p-value is the
  exact tail ``P(sum_k z_{k,I_k} >= S)`` under independent uniform re-labelling in every class, computed by
  convolving the C discrete distributions. Values are rounded *up* onto a fine grid first, which can only make
  the p-value larger: the test stays valid (P(p <= a) <= a for every a) without any normality assumption,
  unlike ``t``, and it uses the magnitudes, unlike ``rank``. Its smallest p-value is (K + 1)^-C (10 classes,
  K = 20: about 1e-13, against 5e-6 for Fisher on ranks).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import stats
from ..errors import ConfigError
from .common import log10, z_of
from .matched import DEFAULT_RIDGE, REFERENCE_FITS
from .observations import Observations, statistic_values
from .settings import COMBINATIONS, STATISTICS, check_choice
from .verdict import DEFAULT_ALPHA, ClassScore, Verdict, format_p

__all__ = ["COMBINATIONS", "REFERENCE_EXTREME", "exact_verdict", "permutation_sum_log_p", "reference_alone",
           "verdict_from_observations"]

# The references' response alone is called extreme when either tail of its exact permutation p-value against
# the controls is at most this.
REFERENCE_EXTREME = 0.05


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


def _two_tails(values: np.ndarray, grid: float) -> tuple[float, float]:
    """log10 p of the permutation test of ``values`` ``(C', K + 1)`` in the upper and in the lower tail."""
    return (log10(permutation_sum_log_p(values, grid=grid)[0]), log10(permutation_sum_log_p(-values, grid=grid)[0]))


def reference_alone(obs: Observations, statistic: str, *, grid: float = 0.01) -> dict[str, Any] | None:
    """The reference models' combined (mean) response alone, against the controls: the exact permutation test
    of :func:`permutation_sum_log_p` in both tails (None without references, or without this statistic).

    The upper tail asks whether the references favour the true carrier set, the lower whether they disfavour
    it. Difference in differences subtracts this one draw, so a reference that is extreme here shifts every
    audit that uses this key and these references the same way: away from detection (upper tail) or towards
    it (lower tail). Each audit stays exact; only independent keys make independent audits.
    """
    if not obs.references or statistic not in obs.reference:
        return None
    upper, lower = _two_tails(obs.reference[statistic].T, grid)
    bound = math.log10(REFERENCE_EXTREME)
    extreme = min(upper, lower) <= bound
    if not extreme:
        note = (f"the references alone are within the controls' range (both tails p > {REFERENCE_EXTREME:g})")
    else:
        tail, direction = ("upper", "away from detection") if upper <= lower else ("lower", "towards detection")
        note = (f"the references alone sit in the {tail} tail of the controls (p = {format_p(min(upper, lower))}): "
                f"every difference-in-differences audit that uses this key and these references is shifted "
                f"{direction} by this same draw; each audit stays exact, but such audits are not independent")
    out: dict[str, Any] = {"statistic": statistic, "references": len(obs.references), "log10_p_upper": upper,
                           "log10_p_lower": lower, "extreme": bool(extreme), "threshold": REFERENCE_EXTREME,
                           "note": note}
    if len(obs.references) > 1:
        out["per_reference"] = [dict(zip(("log10_p_upper", "log10_p_lower"), _two_tails(r[statistic].T, grid)))
                                for r in obs.references if statistic in r]
    return out


def _suffix(difference: bool, reference_fit: str) -> str:
    """``-did`` for the references' mean, ``-matched`` / ``-matched-class`` for a fit, nothing without."""
    return ("-did" if reference_fit == "mean" else f"-{reference_fit}") if difference else ""


def _verdict(obs: Observations, *, test: str, log_p: float, scores: tuple[ClassScore, ...], alpha: float,
             model_id: str | None, details: dict[str, Any]) -> Verdict:
    return Verdict(
        test=test,
        log10_p=log10(log_p),
        alpha=alpha,
        classes=scores,
        z=z_of(log_p),
        key_fingerprint=obs.key_fingerprint,
        model_sha256=model_id,
        counts={"classes": len(obs.pairs), "probes": obs.num_probes, "controls": obs.num_controls},
        details=details,
    )


def _class_scores(obs: Observations, log_ps: np.ndarray, zs: Any, values: np.ndarray) -> tuple[ClassScore, ...]:
    """One :class:`ClassScore` per tested class; ``values`` ``(C', K + 1)``, column 0 the true set."""
    return tuple(
        ClassScore(index=k, log10_p=log10(lp), z=float(z), statistic=float(row[0]),
                   controls=tuple(float(c) for c in row[1:]), count=int(n), output=o)
        for (k, o), lp, z, row, n in zip(obs.pairs, log_ps, zs, values, obs.counts)
    )


def _describe(obs: Observations, statistic: str, combination: str, difference: bool,
              reference_fit: str = "mean") -> dict[str, Any]:
    out = {
        "statistic": statistic,
        "combination": combination,
        "difference_in_differences": bool(difference),
        **({"reference_fit": reference_fit} if difference and reference_fit != "mean" else {}),
        "probe_source": obs.source,
        "output_kind": obs.output_kind,
    }
    if obs.extra.get("probe_mode", "same") != "same":  # cross-class probes: each class read on others' images
        out["probe_mode"] = obs.extra["probe_mode"]
    alone = reference_alone(obs, statistic)
    if alone is not None:
        out["reference_models"] = len(obs.references)
        out["reference_alone"] = alone
    return out


def exact_verdict(
    obs: Observations,
    *,
    statistic: str = "margin",
    difference: bool | None = None,
    alpha: float = DEFAULT_ALPHA,
    model_id: str | None = None,
    grid: float = 0.01,
    reference_fit: str = "mean",
    ridge: float = DEFAULT_RIDGE,
) -> Verdict:
    """The black-box test on recorded observations with the exact stratified permutation combination.

    ``difference`` subtracts the reference models' response (default: when one was recorded): their mean, or
    with ``reference_fit="matched"`` the suspect's leave-one-out prediction from them (:mod:`.matched`). Test
    name ``blackbox-perm`` (``-did``, ``-matched``). Per-class ``log10_p`` are the exact rank p-values; per-class ``z`` the
    standardised true values.
    """
    check_choice("statistic", statistic, STATISTICS)
    check_choice("reference fit", reference_fit, REFERENCE_FITS)
    difference, values = statistic_values(obs, statistic, difference, reference_fit=reference_fit, ridge=ridge)
    per_class = values.T  # (C', K + 1)
    log_p, z = permutation_sum_log_p(per_class, grid=grid)
    rank_ps = stats.rank_log_p(per_class[:, 0], per_class[:, 1:])
    details = _describe(obs, statistic, "exact stratified permutation of the sum of per-class standardised values",
                        difference, reference_fit)
    details.update(
        sum_z=float(z[:, 0].sum()),
        # The empirical null at no cost: each control set scored as if it were the true one (same z's).
        control_sums=[float(v) for v in z[:, 1:].sum(axis=0)],
        best_possible_log10_p=-len(obs.pairs) * math.log10(obs.num_controls + 1),
        per_class_note="per-class log10_p are the exact rank p-values",
    )
    return _verdict(obs, test="blackbox-perm" + _suffix(difference, reference_fit), log_p=log_p,
                    scores=_class_scores(obs, rank_ps, z[:, 0], per_class), alpha=alpha, model_id=model_id,
                    details=details)


def verdict_from_observations(
    obs: Observations,
    *,
    statistic: str = "margin",
    combine: str = "rank",
    difference: bool | None = None,
    alpha: float = DEFAULT_ALPHA,
    model_id: str | None = None,
    reference_fit: str = "mean",
    ridge: float = DEFAULT_RIDGE,
) -> Verdict:
    """One test on recorded observations.

    Args:
        obs: from :func:`radioactive.detect.observations.collect`.
        statistic: ``margin`` (true-class log-probability minus the best other), ``prob`` (true-class
            probability), ``loss`` (minus the cross-entropy) or ``label`` (accuracy of predicted labels).
        combine: ``rank``, ``t`` or ``perm`` (see the module docstring).
        difference: subtract the reference models' response (difference in differences); default: when a
            reference model was recorded.
        reference_fit: ``mean`` (subtract the references' mean) or ``matched`` / ``matched-class`` (subtract
            the suspect's leave-one-out prediction from every reference: :mod:`radioactive.detect.matched`).
        ridge: the matched fit's ridge penalty.
        alpha: significance level of the decision.
        model_id: identifier of the suspect recorded in the verdict.

    Returns:
        a :class:`Verdict`, test ``blackbox-<combine>`` (``-did`` with differencing).
    """
    check_choice("statistic", statistic, STATISTICS)
    check_choice("combination", combine, COMBINATIONS)
    check_choice("reference fit", reference_fit, REFERENCE_FITS)
    if combine == "perm":
        return exact_verdict(obs, statistic=statistic, difference=difference, alpha=alpha, model_id=model_id,
                             reference_fit=reference_fit, ridge=ridge)
    difference, values = statistic_values(obs, statistic, difference, reference_fit=reference_fit, ridge=ridge)
    true_value, controls = values[0], values[1:].T  # (C',), (C', K)
    combination = "fisher on exact ranks" if combine == "rank" else "stouffer on control t statistics"
    details = _describe(obs, statistic, combination, difference, reference_fit)
    if combine == "rank":
        log_ps = stats.rank_log_p(true_value, controls)
        combined = stats.fisher_log_sf(log_ps)
        details["best_possible_log10_p"] = stats.fisher_log_sf(
            np.full(len(log_ps), -math.log(obs.num_controls + 1))) / stats.LOG10
    else:
        if obs.num_controls < 3:
            raise ConfigError(f"the t combination needs at least 3 control sets, got {obs.num_controls}")
        spread_floor = None
        if statistic == "label":
            # Accuracies move in steps of 1/n; a zero spread among few controls must not give t = infinity.
            spread_floor = 0.5 / obs.counts
        t, dof = stats.control_t_statistic(true_value, controls, floor=spread_floor)
        log_ps = np.asarray(stats.t_log_sf(t, dof), dtype=np.float64)
        combined = stats.stouffer_log_sf(stats.z_from_log_p(log_ps))
        details["t"] = t.tolist()
        details["dof"] = dof
    scores = _class_scores(obs, log_ps, [z_of(lp) for lp in log_ps], values.T)
    return _verdict(obs, test=f"blackbox-{combine}" + _suffix(difference, reference_fit), log_p=combined, scores=scores,
                    alpha=alpha, model_id=model_id, details=details)

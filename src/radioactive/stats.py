"""Log-space statistics for detection: the null law of a cosine, Fisher and Stouffer combinations, exact rank
p-values and power estimates.

Every p-value here is a natural log (``log_p``); a p-value of 1e-2000 is ``-4605.17`` and never underflows.
Inputs are converted to float64 numpy arrays; nothing here knows about models or images.

Examples:
    >>> import numpy as np
    >>> round(float(cosine_log_sf(0.1635, 512) / np.log(10)), 2)
    -4.0
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import special

__all__ = [
    "LOG10",
    "cosine_log_sf",
    "cosine_log_pdf",
    "cosine_pdf",
    "log_betainc",
    "fisher_log_sf",
    "stouffer_log_sf",
    "normal_log_sf",
    "z_from_log_p",
    "t_log_sf",
    "rank_log_p",
    "control_t_statistic",
    "expected_log10_p",
    "cosine_for_log10_p",
    "binomial_interval",
    "binomial_log_sf",
    "to_log10",
]

LOG10 = math.log(10.0)
_CF_EPS = 1e-16
_CF_TINY = 1e-300


def to_log10(log_p: np.ndarray | float) -> np.ndarray | float:
    """Natural-log p-values to log10."""
    return np.asarray(log_p, dtype=np.float64) / LOG10 if np.ndim(log_p) else float(log_p) / LOG10


def _log_beta_cf(x: np.ndarray, y: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """log I_x(a, b) via the prefactor x^a y^b / (a B(a, b)) in logs and Lentz's continued fraction.

    Valid (fast convergence) where x < (a + 1) / (a + b + 2); ``y = 1 - x`` is passed separately so that
    it keeps full precision when x is close to 1.
    """
    with np.errstate(divide="ignore"):
        log_front = a * np.log(x) + b * np.log(y) - np.log(a) - special.betaln(a, b)
    # Modified Lentz on the continued fraction 1 / (1 + d1 / (1 + d2 / (1 + ...))).
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = np.ones_like(x)
    d = 1.0 - qab * x / qap
    d = np.where(np.abs(d) < _CF_TINY, _CF_TINY, d)
    d = 1.0 / d
    h = d.copy()
    active = np.ones(x.shape, dtype=bool)
    max_iter = int(200 + 20 * math.sqrt(float(np.max(np.maximum(a, b), initial=1.0))))
    for m in range(1, max_iter + 1):
        m2 = 2 * m
        for numerator in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + numerator * d
            d = np.where(np.abs(d) < _CF_TINY, _CF_TINY, d)
            c = 1.0 + numerator / c
            c = np.where(np.abs(c) < _CF_TINY, _CF_TINY, c)
            d = 1.0 / d
            delta = c * d
            h = np.where(active, h * delta, h)
        active &= np.abs(delta - 1.0) > _CF_EPS
        if not active.any():
            break
    return log_front + np.log(h)


def log_betainc(a: float | np.ndarray, b: float | np.ndarray, x: np.ndarray, y: np.ndarray | None = None) -> np.ndarray:
    """log of the regularised incomplete beta I_x(a, b), accurate when I underflows double precision.

    Args:
        a, b: positive shape parameters (broadcast with ``x``).
        x: points in [0, 1].
        y: ``1 - x`` computed without cancellation, if the caller has it.
    """
    x = np.asarray(x, dtype=np.float64)
    y = 1.0 - x if y is None else np.asarray(y, dtype=np.float64)
    a, b, x, y = np.broadcast_arrays(np.asarray(a, np.float64), np.asarray(b, np.float64), x, y)
    out = np.empty(x.shape, dtype=np.float64)
    zero, one = x <= 0.0, y <= 0.0
    out[zero] = -np.inf
    out[one] = 0.0
    inner = ~(zero | one)
    direct = inner & (x < (a + 1.0) / (a + b + 2.0))
    if direct.any():
        out[direct] = _log_beta_cf(x[direct], y[direct], a[direct], b[direct])
    mirror = inner & ~direct
    if mirror.any():
        # I_x(a, b) = 1 - I_y(b, a); the complement is at most about 1/2 here, so log1p is accurate.
        log_comp = _log_beta_cf(y[mirror], x[mirror], b[mirror], a[mirror])
        out[mirror] = np.log1p(-np.exp(log_comp))
    return out


def _check_dim(dim: int | float) -> float:
    if not np.all(np.asarray(dim) >= 2):
        raise ValueError(f"a cosine null needs dimension >= 2, got {dim}")
    return dim


def cosine_log_sf(cosine: float | np.ndarray, dim: int | np.ndarray) -> np.ndarray | float:
    """log P(C >= c) for C the first coordinate of a uniform unit vector in R^dim.

    For c >= 0, P(C >= c) = 1/2 I_{1-c^2}((dim - 1)/2, 1/2); for c < 0 it is the complement of
    P(C >= -c). Accurate far below 1e-300 (e.g. c = 0.9 in dimension 2048 gives log10 p = -740.2).

    Args:
        cosine: observed cosine(s) in [-1, 1] (values within 1e-9 outside are clipped).
        dim: dimension of the space the direction is uniform in (d, or d - C for class-neutral carriers).

    Returns:
        natural-log survival values, same shape as ``cosine`` (a float for scalar input).
    """
    _check_dim(dim)
    scalar = np.ndim(cosine) == 0 and np.ndim(dim) == 0
    c = np.asarray(cosine, dtype=np.float64)
    if np.any(np.isnan(c)) or np.any(np.abs(c) > 1 + 1e-9):
        raise ValueError("cosines must lie in [-1, 1]")
    c = np.clip(c, -1.0, 1.0)
    c, dim_arr = np.broadcast_arrays(c, np.asarray(dim, dtype=np.float64))
    t = np.abs(c)
    # 1 - t^2 computed as (1 - t)(1 + t) keeps precision near t = 1; t^2 is exact enough near 0.
    upper = LOG_HALF + log_betainc((dim_arr - 1.0) / 2.0, 0.5, (1.0 - t) * (1.0 + t), t * t)
    out = np.where(c >= 0, upper, np.log1p(-np.exp(np.minimum(upper, 0.0))))
    out = np.minimum(out, 0.0)
    return float(out) if scalar else out


LOG_HALF = math.log(0.5)


def cosine_log_pdf(cosine: float | np.ndarray, dim: int) -> np.ndarray:
    """log density of C (first coordinate of a uniform unit vector in R^dim): (1 - c^2)^((d-3)/2) / B((d-1)/2, 1/2)."""
    _check_dim(dim)
    c = np.asarray(cosine, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return (dim - 3.0) / 2.0 * np.log1p(-c * c) - special.betaln((dim - 1.0) / 2.0, 0.5)


def cosine_pdf(cosine: float | np.ndarray, dim: int) -> np.ndarray:
    """Null density of a cosine in dimension ``dim`` (for plots)."""
    return np.exp(cosine_log_pdf(cosine, dim))


def fisher_log_sf(log_ps: Sequence[float] | np.ndarray) -> float:
    """Fisher's combination of independent p-values, in logs.

    S = -2 sum log p_k follows chi^2 with 2C degrees of freedom under H0; for even degrees of freedom
    P(chi^2_{2C} >= S) = P(Poisson(S/2) <= C - 1), summed exactly in log space.

    Args:
        log_ps: ``(C,)`` natural-log p-values (<= 0).

    Returns:
        natural log of the combined p-value.
    """
    log_ps = np.asarray(log_ps, dtype=np.float64).reshape(-1)
    if log_ps.size == 0:
        raise ValueError("Fisher's combination needs at least one p-value")
    if np.any(np.isnan(log_ps)) or np.any(log_ps > 1e-12):
        raise ValueError("log p-values must be <= 0 and not NaN")
    half = float(-np.sum(np.minimum(log_ps, 0.0)))  # S / 2
    count = log_ps.size
    if math.isinf(half):
        return -math.inf
    if half == 0.0:
        return 0.0
    # Near p = 1 the regularised gamma functions are accurate; far in the tail use the exact Poisson sum.
    upper = float(special.gammaincc(count, half))
    if upper > 0.5:
        return float(np.log1p(-special.gammainc(count, half)))
    if upper > 1e-280:
        return math.log(upper)
    i = np.arange(count, dtype=np.float64)
    terms = i * math.log(half) - special.gammaln(i + 1.0)
    return float(-half + special.logsumexp(terms))


def normal_log_sf(z: float | np.ndarray) -> np.ndarray | float:
    """log P(Z >= z) for a standard normal, accurate in the far tail."""
    out = special.log_ndtr(-np.asarray(z, dtype=np.float64))
    return float(out) if np.ndim(z) == 0 else out


def z_from_log_p(log_p: float | np.ndarray) -> np.ndarray | float:
    """The one-sided z-score with the same p-value: z such that P(Z >= z) = exp(log_p)."""
    out = -special.ndtri_exp(np.minimum(np.asarray(log_p, dtype=np.float64), 0.0))
    return float(out) if np.ndim(log_p) == 0 else out


def stouffer_log_sf(z_scores: Sequence[float] | np.ndarray) -> float:
    """Stouffer's combination: log P(Z >= sum z_k / sqrt(C)) for independent standard-normal z_k."""
    z = np.asarray(z_scores, dtype=np.float64).reshape(-1)
    if z.size == 0 or np.any(np.isnan(z)):
        raise ValueError("Stouffer's combination needs at least one finite z-score")
    return float(normal_log_sf(z.sum() / math.sqrt(z.size)))


def t_log_sf(t: float | np.ndarray, dof: float) -> np.ndarray | float:
    """log P(T >= t) for Student's t with ``dof`` degrees of freedom, accurate in the upper tail."""
    t_arr = np.asarray(t, dtype=np.float64)
    x = dof / (dof + t_arr * t_arr)
    y = t_arr * t_arr / (dof + t_arr * t_arr)
    tail = LOG_HALF + log_betainc(dof / 2.0, 0.5, x, y)  # log P(T >= |t|)
    out = np.where(t_arr >= 0, tail, np.log1p(-np.exp(tail)))
    return float(out) if np.ndim(t) == 0 else out


def control_t_statistic(
    true_value: np.ndarray, controls: np.ndarray, *, floor: np.ndarray | float | None = None
) -> tuple[np.ndarray, int]:
    """Prediction-interval t statistic of the true value against K controls, per row.

    If the K + 1 values are i.i.d. normal, (x_0 - mean(x_1..K)) / (s sqrt(1 + 1/K)) follows Student's t
    with K - 1 degrees of freedom exactly (s: the controls' sample standard deviation).

    Args:
        true_value: ``(C,)`` statistic of the true carrier set per class.
        controls: ``(C, K)`` the same statistic for each control set.
        floor: smallest spread used (per row), e.g. the resolution of a discrete statistic.

    Returns:
        ``(C,)`` t statistics and the degrees of freedom K - 1.
    """
    controls = np.asarray(controls, dtype=np.float64)
    true_value = np.asarray(true_value, dtype=np.float64)
    num_controls = controls.shape[1]
    if num_controls < 3:
        raise ValueError(f"a t statistic against controls needs at least 3 control sets, got {num_controls}")
    spread = controls.std(axis=1, ddof=1)
    if floor is not None:
        spread = np.maximum(spread, floor)
    spread = np.where(spread > 0, spread, np.finfo(np.float64).tiny)
    t = (true_value - controls.mean(axis=1)) / (spread * math.sqrt(1.0 + 1.0 / num_controls))
    return t, num_controls - 1


def rank_log_p(true_value: np.ndarray, controls: np.ndarray) -> np.ndarray:
    """Exact rank p-value per row: (1 + #{controls >= true}) / (K + 1), in logs (larger = more evidence).

    Under H0 the K + 1 values are exchangeable, so P(p <= a) <= a exactly; ties count against the true set,
    which keeps the test valid (conservative) for discrete statistics such as accuracies.
    """
    controls = np.asarray(controls, dtype=np.float64)
    true_value = np.asarray(true_value, dtype=np.float64)
    at_least = (controls >= true_value[:, None]).sum(axis=1)
    return np.log((1.0 + at_least) / (controls.shape[1] + 1.0))


def expected_log10_p(num_classes: int, mean_cosine: float, dim: int) -> float:
    """Power planning: typical log10 of Fisher's combined p-value over C classes with mean cosine m.

    "With C classes and mean alignment m in dimension d, expect log10 p of about ...". Each class's cosine
    is modelled as m plus its sampling noise N(0, (1 - m^2) / d); Fisher's statistic is then evaluated at
    its expectation (Gauss-Hermite quadrature), which is close to its median when C is not tiny.
    """
    nodes, weights = np.polynomial.hermite_e.hermegauss(64)
    spread = math.sqrt(max(1.0 - mean_cosine * mean_cosine, 0.0) / dim)
    cosines = np.clip(mean_cosine + spread * nodes, -1.0, 1.0 - 1e-15)
    mean_log_p = float(np.dot(weights, cosine_log_sf(cosines, dim)) / weights.sum())
    return fisher_log_sf(np.full(int(num_classes), mean_log_p)) / LOG10


def cosine_for_log10_p(num_classes: int, target_log10_p: float, dim: int) -> float:
    """The per-class cosine needed for Fisher's combination over C classes to reach ``target_log10_p``."""
    from scipy.optimize import brentq

    if expected_log10_p(num_classes, -1.0, dim) <= target_log10_p:
        return -1.0
    return float(brentq(lambda m: expected_log10_p(num_classes, m, dim) - target_log10_p, -1.0, 1.0 - 1e-12, xtol=1e-10))


def binomial_log_sf(successes: int, trials: int, prob: float = 0.5) -> float:
    """log P(X >= successes) for X ~ Binomial(trials, prob), accurate far below 1e-300.

    Uses P(X >= k) = I_prob(k, trials - k + 1) (the regularised incomplete beta) in logs where scipy's
    ``binom.sf`` would underflow.

    Examples:
        >>> round(float(binomial_log_sf(1650, 3000) / np.log(10)), 2)
        -7.63
    """
    from scipy.stats import binom

    successes, trials = int(successes), int(trials)
    if trials < 0 or not 0 < prob < 1:
        raise ValueError(f"need trials >= 0 and 0 < prob < 1, got {trials} and {prob}")
    if successes <= 0:
        return 0.0
    if successes > trials:
        return -math.inf
    tail = float(binom.sf(successes - 1, trials, prob))
    if tail > 1e-280:
        return math.log(tail)
    return float(log_betainc(successes, trials - successes + 1, np.array(prob), np.array(1.0 - prob)))


def binomial_interval(trials: int, prob: float, level: float = 0.99) -> tuple[int, int]:
    """Central ``level`` interval of the number of successes of Binomial(trials, prob)."""
    from scipy.stats import binom

    tail = (1.0 - level) / 2.0
    return int(binom.ppf(tail, trials, prob)), int(binom.isf(tail, trials, prob))

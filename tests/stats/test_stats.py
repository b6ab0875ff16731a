import math

import mpmath as mp
import numpy as np
import pytest
from scipy import stats as sps

from radioactive import stats

mp.mp.dps = 60


def _ref_log10_sf(cosine: float, dim: int) -> float:
    a = mp.mpf(dim - 1) / 2
    c = mp.mpf(cosine)
    tail = mp.betainc(a, mp.mpf(1) / 2, 0, 1 - c * c, regularized=True) / 2
    return float(mp.log10(tail if c >= 0 else 1 - tail))


def _ref_fisher_log10(log_ps: np.ndarray) -> float:
    half = -mp.fsum([mp.mpf(float(v)) for v in log_ps])
    return float(mp.log10(mp.gammainc(len(log_ps), half, mp.inf, regularized=True)))


@pytest.mark.parametrize(
    "cosine,dim",
    [(0.1, 512), (0.1635, 512), (0.2, 512), (0.3, 512), (0.9, 2048), (0.999, 2048), (0.5, 2), (0.99, 3),
     (-0.3, 512), (-0.9, 8), (0.0, 64), (1e-7, 8), (0.02, 100_000), (0.6, 128)],
)
def test_cosine_log_sf_matches_mpmath(cosine, dim):
    got = stats.cosine_log_sf(cosine, dim) / math.log(10)
    ref = _ref_log10_sf(cosine, dim)
    assert abs(got - ref) <= 1e-6 * abs(ref) + 1e-15


def test_cosine_far_below_double_range():
    value = stats.cosine_log_sf(0.9, 2048) / math.log(10)
    assert value < -700  # 1e-740: far below the smallest double
    assert np.isfinite(value)
    assert stats.cosine_log_sf(1.0, 64) == -math.inf
    assert stats.cosine_log_sf(-1.0, 64) == 0.0


def test_reference_values_from_method():
    for cosine, log10_p in [(0.10, math.log10(1.2e-2)), (0.1635, -4.0), (0.20, math.log10(2.5e-6)), (0.30, math.log10(2e-12))]:
        assert abs(stats.cosine_log_sf(cosine, 512) / math.log(10) - log10_p) < 0.05


def test_cosine_vectorised_and_monotone():
    grid = np.linspace(-1, 1, 201)
    values = stats.cosine_log_sf(grid, 64)
    assert values.shape == grid.shape
    assert np.all(np.diff(values) <= 1e-15)
    np.testing.assert_allclose(np.exp(stats.cosine_log_sf(grid, 64)) + np.exp(stats.cosine_log_sf(-grid, 64)) - 1,
                               np.zeros_like(grid), atol=1e-12)  # continuous law: P(C>=c) + P(C>=-c) = 1


def test_cosine_bad_input():
    with pytest.raises(ValueError, match="dimension >= 2"):
        stats.cosine_log_sf(0.1, 1)
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        stats.cosine_log_sf(1.5, 8)


@pytest.mark.parametrize("dim", [8, 64, 512])
def test_null_matches_monte_carlo(dim):
    rng = np.random.default_rng(dim)
    trials = 200_000
    # First coordinate of a uniform unit vector: g_1 / |g| with g Gaussian.
    gauss = rng.standard_normal((trials, dim)).astype(np.float64)
    first = gauss[:, 0] / np.linalg.norm(gauss, axis=1)
    for tau in np.array([-0.5, -0.1, 0.0, 0.5, 1.0, 2.0, 2.8]) / math.sqrt(dim):
        prob = math.exp(stats.cosine_log_sf(tau, dim))
        hits = int((first >= tau).sum())
        sigma = math.sqrt(trials * prob * (1 - prob))
        assert abs(hits - trials * prob) <= 5 * max(sigma, 1.0), (dim, tau, hits, trials * prob)


def test_null_density_integrates_to_one():
    from scipy.integrate import quad

    for dim in (3, 8, 64, 512):
        total, _ = quad(lambda c, dim=dim: stats.cosine_pdf(c, dim), -1, 1, points=[0.0])
        assert abs(total - 1) < 1e-8
    # Density of Beta((d-1)/2, (d-1)/2) on (c + 1) / 2.
    grid = np.linspace(-0.9, 0.9, 7)
    np.testing.assert_allclose(stats.cosine_pdf(grid, 20), sps.beta.pdf((grid + 1) / 2, 9.5, 9.5) / 2, rtol=1e-10)


@pytest.mark.parametrize("count", [1, 2, 10, 1000])
def test_fisher_matches_mpmath(count):
    rng = np.random.default_rng(count)
    for log_ps in (np.log(rng.uniform(size=count)), np.full(count, -50.0), np.full(count, -0.01),
                   np.log(rng.uniform(size=count)) * 30):
        got = stats.fisher_log_sf(log_ps) / math.log(10)
        ref = _ref_fisher_log10(log_ps)
        assert abs(got - ref) <= 1e-6 * abs(ref) + 1e-14, (count, got, ref)


def test_fisher_matches_scipy_and_extremes():
    log_ps = np.log([0.01, 0.2, 0.5])
    expected = sps.chi2.sf(-2 * log_ps.sum(), 6)
    assert math.isclose(math.exp(stats.fisher_log_sf(log_ps)), expected, rel_tol=1e-12)
    assert stats.fisher_log_sf([0.0, 0.0]) == 0.0
    assert stats.fisher_log_sf([-math.inf, -1.0]) == -math.inf
    assert stats.fisher_log_sf([-1e6] * 10) / math.log(10) < -400_000
    with pytest.raises(ValueError, match="<= 0"):
        stats.fisher_log_sf([0.5])
    with pytest.raises(ValueError, match="at least one"):
        stats.fisher_log_sf([])


def test_fisher_is_calibrated_on_uniform_p_values():
    rng = np.random.default_rng(0)
    combined = np.array([stats.fisher_log_sf(np.log(rng.uniform(size=10))) for _ in range(4000)])
    assert sps.kstest(np.exp(combined), "uniform").pvalue > 0.01


def test_z_scores_and_stouffer():
    assert math.isclose(stats.z_from_log_p(math.log(0.5)), 0.0, abs_tol=1e-12)
    assert math.isclose(stats.z_from_log_p(math.log(sps.norm.sf(3.0))), 3.0, rel_tol=1e-10)
    deep = stats.z_from_log_p(-5000.0)  # p = e^-5000, way below double range
    assert math.isclose(stats.normal_log_sf(deep), -5000.0, rel_tol=1e-9)
    assert math.isclose(stats.stouffer_log_sf([1.0, 1.0, 1.0, 1.0]), sps.norm.logsf(2.0), rel_tol=1e-12)


def test_t_log_sf_matches_scipy_and_mpmath():
    for t, dof in [(0.0, 8), (1.5, 8), (-2.0, 3), (10.0, 19)]:
        assert math.isclose(stats.t_log_sf(t, dof), sps.t.logsf(t, dof), rel_tol=1e-9, abs_tol=1e-14)
    # far tail: P(T >= t) = 1/2 I_{dof/(dof+t^2)}(dof/2, 1/2)
    ref = float(mp.log(mp.betainc(mp.mpf(4), mp.mpf(1) / 2, 0, mp.mpf(8) / (8 + mp.mpf(1e40)), regularized=True) / 2))
    assert math.isclose(stats.t_log_sf(1e20, 8), ref, rel_tol=1e-9)


def test_control_t_statistic_is_exact_under_normality():
    rng = np.random.default_rng(1)
    values = rng.standard_normal((20_000, 10))
    t, dof = stats.control_t_statistic(values[:, 0], values[:, 1:])
    assert dof == 8
    assert sps.kstest(t, sps.t(dof).cdf).pvalue > 0.01
    with pytest.raises(ValueError, match="at least 3"):
        stats.control_t_statistic(values[:, 0], values[:, 1:3])


def test_rank_log_p_exact_and_ties_conservative():
    true_value = np.array([5.0, 0.0, 1.0])
    controls = np.array([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [1.0, 1.0, 0.0]])
    np.testing.assert_allclose(np.exp(stats.rank_log_p(true_value, controls)), [0.25, 1.0, 0.75])
    rng = np.random.default_rng(2)
    values = rng.standard_normal((50_000, 10))
    p = np.exp(stats.rank_log_p(values[:, 0], values[:, 1:]))
    for alpha in (0.1, 0.5):
        assert abs((p <= alpha + 1e-12).mean() - alpha) < 5 * math.sqrt(alpha * (1 - alpha) / len(p))


def test_power_planning_matches_method():
    # docs/method.md: median log10 p < -4 needs mean cosine ~0.06 with 10 classes, ~0.0075 with 1000 (d = 512).
    assert 0.04 < stats.cosine_for_log10_p(10, -4, 512) < 0.08
    assert 0.005 < stats.cosine_for_log10_p(1000, -4, 512) < 0.01
    assert stats.expected_log10_p(10, 0.1, 512) < stats.expected_log10_p(10, 0.05, 512) < 0
    assert abs(stats.expected_log10_p(10, 0.0, 512)) < 0.5  # no signal: p of order 1


def test_binomial_interval():
    low, high = stats.binomial_interval(1000, 0.05)
    assert low < 50 < high
    assert 30 < low and high < 70

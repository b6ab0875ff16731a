"""radioactive.plan: the null laws it simulates against known values, the response fit, predictions (monotone in
q, extrapolation labels), the CLI's JSON, and leave-one-out on a tiny synthetic grid written as run records."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.stats import binom

from radioactive import stats
from radioactive.cli import main
from radioactive.detect.combine import permutation_sum_log_p
from radioactive.errors import ConfigError
from radioactive.plan import (
    DEFAULT_TESTS,
    Budget,
    Response,
    fit_response,
    floor_log10_p,
    leave_one_out,
    load_observations,
    parse_test,
    plan,
    predict_log10_p,
    summarise,
)
from radioactive.plan.laws import perm_saddlepoint_log_p

LOG10_HALF = math.log10(0.5)


def _response(kind: str, scale: float, exponent: float = 1.0) -> Response:
    return Response(family="f", kind=kind, models=("m",), scale=scale, exponent=exponent, exponent_fitted=True,
                    run_spread=0.0, class_spread=0.0, runs=6, fractions=(0.0, 0.05, 0.1, 0.2),
                    conditions={"classes": (10,), "dim": (128,), "null_dim": (128,), "controls": (20,),
                                "per_class": (50,), "reference": (2000,)})


# --- null laws -------------------------------------------------------------------------------------------------

def test_zero_response_gives_the_continuous_null_median():
    """White-box (Fisher of exact Beta nulls) and the permutation test: the combined p is uniform under H0 (the
    permutation test's upward rounding makes it a little larger), so the median log10 p is log10 0.5."""
    budget = Budget(classes=10, dim=128, controls=20)
    white = predict_log10_p(parse_test("whitebox"), budget, None, 0.0, draws=3000, seed=1)
    assert np.median(white) == pytest.approx(LOG10_HALF, abs=0.03)
    assert np.mean(white <= -1.0) == pytest.approx(0.1, abs=0.02)  # uniform: P(p <= 0.1) = 0.1
    perm = predict_log10_p(parse_test("blackbox-margin-perm-did"), budget, None, 0.0, draws=500, seed=1)
    assert np.median(perm) == pytest.approx(LOG10_HALF, abs=0.05)


def test_zero_response_twins_median_is_the_binomial_nulls():
    """N = 100 pairs: the median number of wins is 50, so the median p is P(Bin(100, 1/2) >= 50) exactly."""
    budget = Budget(classes=10, dim=128, pairs=100)
    sim = predict_log10_p(parse_test("twins-loss"), budget, None, 0.0, draws=2001, seed=0)
    assert np.median(sim) == pytest.approx(math.log10(binom.sf(49, 100, 0.5)), abs=1e-9)  # -0.2678


def test_zero_response_rank_matches_uniform_ranks():
    """Fisher on exact ranks: simulated from normal values, its null equals Fisher on uniform integer ranks."""
    budget = Budget(classes=10, dim=128, controls=20)
    sim = predict_log10_p(parse_test("blackbox-margin-rank-did"), budget, None, 0.0, draws=2000, seed=2)
    ranks = np.random.default_rng(5).integers(1, 22, size=(4000, 10))
    direct = [stats.fisher_log_sf(np.log(r / 21.0)) / stats.LOG10 for r in ranks]
    assert np.median(sim) == pytest.approx(np.median(direct), abs=0.04)
    assert np.median(sim) > LOG10_HALF + 0.05  # discrete and conservative: above the continuous median


def test_floors_are_the_tests_own():
    budget = Budget(classes=10, dim=128, controls=20, pairs=50)
    assert floor_log10_p(parse_test("blackbox-margin-perm-did"), budget) == pytest.approx(-10 * math.log10(21))
    # the best possible rank p recorded by the committed grid's verdicts (details.best_possible_log10_p)
    assert floor_log10_p(parse_test("blackbox-margin-rank-did"), budget) == pytest.approx(-5.285605973271576)
    assert floor_log10_p(parse_test("twins-margin"), budget) == pytest.approx(-50 * math.log10(2))
    assert math.isinf(floor_log10_p(parse_test("whitebox"), budget))


def test_saddlepoint_matches_the_exact_permutation_test():
    rng = np.random.default_rng(0)
    values = rng.standard_normal((40, 10, 21))
    values[:, :, 0] += 1.0
    exact = np.array([permutation_sum_log_p(v)[0] for v in values]) / stats.LOG10
    approx = perm_saddlepoint_log_p(values) / stats.LOG10
    assert np.max(np.abs(exact - approx)) < 0.1
    assert np.median(exact) < -2.0  # a real tail, not the bulk


# --- predictions -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("test", "kind", "scale"), [("whitebox", "cosine", 0.5),
                                                      ("blackbox-margin-perm-did", "blackbox", 8.0)])
def test_prediction_is_monotone_in_the_fraction(test, kind, scale):
    spec, budget = parse_test(test), Budget(classes=10, dim=128, controls=20, probes_per_class=50,
                                            reference_images=2000)
    medians = [np.median(predict_log10_p(spec, budget, _response(kind, scale), q, draws=100, seed=3))
               for q in (0.0, 0.03, 0.1, 0.2)]
    assert all(b < a for a, b in zip(medians, medians[1:])), medians
    assert medians[-1] < -3.0


def _write_run(folder, run_id, model, fraction, seed, rng):
    """One run record as `radioactive experiment` writes it: white-box and black-box (perm, DiD) verdicts whose
    p-values the library's own tests computed on synthetic observations with effect proportional to q."""
    strength = {"strong": 1.0, "weak": 0.4}[model]
    cos_effect, shift = 0.15 * strength * fraction, 12.0 * strength * fraction
    null = 2 * rng.beta(63.5, 63.5, size=10) - 1
    cosines = np.clip(cos_effect + np.sqrt(1 - cos_effect ** 2) * null, -1, 1)
    white = stats.fisher_log_sf(stats.cosine_log_sf(cosines, 128)) / stats.LOG10
    values = rng.standard_normal((10, 21))
    values[:, 0] += shift
    perm = permutation_sum_log_p(values)[0] / stats.LOG10
    record = {"run_id": run_id, "model": model, "fraction": fraction, "seed": seed, "verdicts": {
        "whitebox": {"test": "whitebox", "log10_p": white, "counts": {"classes": 10, "reference": 2000},
                     "alignment": {"marker_dim": 128}, "details": {"null_dim": 128, "carrier_space": "full"},
                     "classes": [{"cosine": float(c)} for c in cosines]},
        "blackbox-margin-perm": {"test": "blackbox-perm-did", "log10_p": perm,
                                 "counts": {"classes": 10, "probes": 500, "controls": 20},
                                 "details": {"statistic": "margin", "probe_source": "fresh",
                                             "difference_in_differences": True},
                                 "classes": [{"statistic": float(v[0]), "controls": v[1:].tolist(), "count": 50}
                                             for v in values]}}}
    (folder / "runs" / f"{run_id}.json").write_text(json.dumps(record))


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    folder = tmp_path_factory.mktemp("grid")
    (folder / "runs").mkdir()
    rng = np.random.default_rng(11)
    for model in ("strong", "weak"):
        for fraction in (0.0, 0.05, 0.1, 0.2):
            for seed in range(3):
                _write_run(folder, f"{model}-{fraction}-{seed}", model, fraction, seed, rng)
    return folder


def test_fit_recovers_the_synthetic_response(grid):
    observations = load_observations(grid)
    black = fit_response(observations, "blackbox-margin-did", models=["strong"])
    # shift 12 q in raw units; the recorded standardised shift is in units of the controls' spread (1 here)
    assert black.mean(0.1) == pytest.approx(1.2, rel=0.2)
    assert black.runs == 12 and black.conditions["classes"] == (10,) and black.conditions["per_class"] == (50,)
    assert fit_response(observations, "twins-loss") is None


def test_extrapolation_is_labelled(grid):
    observations = load_observations(grid)
    inside = plan(Budget(classes=10, dim=128), 0.1, observations, tests=["whitebox"], model="strong", draws=40)
    assert inside["tests"]["whitebox"]["extrapolation"] is False and inside["extrapolation"] is False
    outside = plan(Budget(classes=1000, dim=512), 0.1, observations, tests=["whitebox"], model="strong", draws=40)
    entry = outside["tests"]["whitebox"]
    assert entry["extrapolation"] is True and outside["extrapolation"] is True
    assert any(r.startswith("C = 1000: measured only at C = 10") for r in entry["extrapolation_reasons"])
    assert any(r.startswith("d = 512: measured only at d = 128") for r in entry["extrapolation_reasons"])
    beyond = plan(Budget(classes=10, dim=128), 0.5, observations, tests=["whitebox"], model="strong", draws=40)
    assert any(r.startswith("q = 0.5") for r in beyond["tests"]["whitebox"]["extrapolation_reasons"])


def test_min_fraction_reaches_the_target(grid):
    observations = load_observations(grid)
    result = plan(Budget(classes=10, dim=128), 0.1, observations, tests=["blackbox-margin-perm-did"],
                  model="strong", target=1e-4, draws=100)
    q = result["tests"]["blackbox-margin-perm-did"]["min_fraction"]
    assert 0.01 < q < 1.0
    response = fit_response(observations, "blackbox-margin-did", models=["strong"])
    budget = Budget(classes=10, dim=128, controls=20, probes_per_class=50)
    at_q = np.median(predict_log10_p(parse_test("blackbox-margin-perm-did"), budget, response, q, draws=100))
    assert at_q == pytest.approx(-4.0, abs=0.3)


def test_cli_json_has_every_test(grid, capsys):
    code = main(["plan", "--classes", "10", "--dim", "128", "--fraction", "0.05", "--json", "--from", str(grid),
                 "--draws", "30"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert set(DEFAULT_TESTS) <= set(result["tests"])
    for entry in result["tests"].values():
        assert entry["null_median_log10_p"] < 0 and "extrapolation" in entry
        if entry["measured"]:
            assert entry["expected_log10_p"]["p10"] <= entry["expected_log10_p"]["median"] \
                <= entry["expected_log10_p"]["p90"]
    assert result["tests"]["whitebox"]["measured"] and not result["tests"]["twins-loss"]["measured"]
    assert result["tests"]["twins-loss"]["required_effect"] > 0


def test_cli_refuses_bad_input(grid, tmp_path, capsys):
    assert main(["plan", "--classes", "10", "--dim", "128", "--fraction", "1.5", "--from", str(grid)]) == 2
    assert "--fraction must be in [0, 1]" in capsys.readouterr().err
    assert main(["plan", "--classes", "10", "--dim", "128", "--fraction", "0.1", "--from", str(tmp_path)]) == 2
    assert "holds no run records" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="unknown test 'fishr'"):
        parse_test("fishr")


def test_leave_one_out_on_a_tiny_grid(grid):
    observations = load_observations(grid)
    rows = leave_one_out(observations, draws=80, seed=0)
    assert len(rows) == 2 * 4 * 2  # models x fractions x tests
    summary = summarise(rows)
    assert summary["all"]["fraction_within_one"] >= 0.8
    middle = next(r for r in rows if r["model"] == "strong" and r["fraction"] == 0.1 and r["test"] != "whitebox")
    assert not middle["extrapolated"] and middle["fit"]["runs"] == 9  # its own 3 runs left out
    top = next(r for r in rows if r["model"] == "strong" and r["fraction"] == 0.2 and r["test"] != "whitebox")
    assert top["extrapolated"]


def test_leave_one_out_does_not_see_the_left_out_cell(grid, tmp_path):
    """Corrupt one cell's records: its own prediction (fitted without it) does not move; the others' do."""
    folder = tmp_path / "corrupt"
    (folder / "runs").mkdir(parents=True)
    for path in (grid / "runs").glob("*.json"):
        record = json.loads(path.read_text())
        if record["model"] == "strong" and record["fraction"] == 0.1:
            for cls in record["verdicts"]["blackbox-margin-perm"]["classes"]:
                cls["statistic"] += 50.0
        (folder / "runs" / path.name).write_text(json.dumps(record))
    key = ("strong", 0.1, "blackbox-margin-perm")
    def predictions(source):
        black = [o for o in load_observations(source) if o.spec.kind == "blackbox"]
        return {(r["model"], r["fraction"], r["test"]): r for r in leave_one_out(black, draws=30)}

    clean, dirty = predictions(grid), predictions(folder)
    assert dirty[key]["predicted"] == pytest.approx(clean[key]["predicted"], abs=1e-9)
    assert dirty[("strong", 0.05, "blackbox-margin-perm")]["predicted"] < \
        clean[("strong", 0.05, "blackbox-margin-perm")]["predicted"] - 1.0


def test_cli_json_records_no_absolute_paths(grid, tmp_path, capsys, monkeypatch):
    """The plan names its measured folders relative to the working directory (or by their name when outside it),
    so the JSON does not show the machine's layout."""
    import shutil

    monkeypatch.chdir(tmp_path)
    shutil.copytree(grid, tmp_path / "results" / "mine")
    argv = ["plan", "--classes", "10", "--dim", "128", "--fraction", "0.05", "--json", "--draws", "30"]
    assert main([*argv, "--from", str(tmp_path / "results" / "mine"), "--from", str(grid)]) == 0
    text = capsys.readouterr().out
    result = json.loads(text)
    assert result["sources"] == sorted(["results/mine", grid.name])
    assert str(tmp_path) not in text and str(grid.parent) not in text


def test_matched_and_mean_references_are_two_families():
    from radioactive.plan.catalogue import spec_of_verdict

    assert parse_test("blackbox-margin-perm-matched").family == "blackbox-margin-matched"
    assert parse_test("blackbox-margin-perm-did").family == "blackbox-margin-did"
    base = {"log10_p": -1.0}
    matched = spec_of_verdict({**base, "test": "blackbox-perm-matched", "details": {
        "statistic": "loss", "difference_in_differences": True, "reference_fit": "matched"}})
    mean = spec_of_verdict({**base, "test": "blackbox-perm-did", "details": {
        "statistic": "loss", "difference_in_differences": True}})
    assert (matched.name, matched.family) == ("blackbox-loss-perm-matched", "blackbox-loss-matched")
    assert (mean.name, mean.family) == ("blackbox-loss-perm-did", "blackbox-loss-did")
    assert spec_of_verdict({**base, "test": "blackbox-perm-matched-class", "details": {
        "statistic": "margin", "difference_in_differences": True, "reference_fit": "matched-class"}}) is None
    assert spec_of_verdict({**base, "test": "blackbox-rank", "details": {"statistic": "margin"}}).family == \
        "blackbox-margin"

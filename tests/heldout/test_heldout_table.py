"""The held-out suite's tables from per-run records, and the README section that shows them."""

from __future__ import annotations

import importlib.util
import json

import pytest
from helpers.heldout import ROOT, load


def _record(pair: str, family: str, fraction: float, seed: int, accuracy: float, log10_p: dict[str, float]) -> dict:
    return {"pair": pair, "arch": pair.split("-")[0], "family": family, "recipe": pair.split("-")[1],
            "fraction": fraction, "seed": seed, "test_accuracy": accuracy, "psnr_min": 40.03 if fraction else None,
            "log10_p": log10_p}


@pytest.fixture()
def two_runs(tmp_path):
    runs = tmp_path / "suite" / "runs"
    runs.mkdir(parents=True)
    for name, record in (
        ("a.json", _record("preact_resnet-adamw", "residual", 0.1, 0, 0.90, {"whitebox": -0.5, "blackbox-margin-perm": -2.0})),
        ("b.json", _record("convmixer-mixup_ema", "mixer", 0.1, 0, 0.88, {"whitebox": -0.3, "blackbox-margin-perm": -4.0})),
    ):
        (runs / name).write_text(json.dumps(record))
    grid = tmp_path / "grid"
    grid.mkdir()
    (grid / "results.json").write_text(json.dumps({"rows": [
        {"model": "scratch-cnn", "fraction": 0.1, "blackbox-margin-perm_log10_p_median": -3.21,
         "whitebox_log10_p_median": -0.86},
        {"model": "scratch-cnn", "fraction": 0.2, "blackbox-margin-perm_log10_p_median": -6.29}]}))
    return tmp_path / "suite", grid


def test_the_table_gives_medians_worst_family_and_the_grid(two_runs):
    out, grid = two_runs
    load("table").main(["--out", str(out), "--grid", str(grid)])
    summary = json.loads((out / "results.json").read_text())
    assert summary["runs"] == 2 and summary["tests"] == ["whitebox", "blackbox-margin-perm"]
    rows = {row["pair"]: row for row in summary["rows"]}
    assert rows["preact_resnet-adamw"]["log10_p"]["blackbox-margin-perm"] == {
        "median": -2.0, "min": -2.0, "max": -2.0, "detected": 1}
    assert rows["convmixer-mixup_ema"]["accuracy"]["median"] == 0.88
    claim = next(c for c in summary["claims"] if c["test"] == "blackbox-margin-perm")
    assert claim == {"fraction": 0.1, "test": "blackbox-margin-perm", "pairs": 2, "suite_median": -3.0,
                     "worst_family": "residual", "worst_family_median": -2.0, "grid": {"scratch-cnn": -3.21}}
    white = next(c for c in summary["claims"] if c["test"] == "whitebox")
    assert (white["suite_median"], white["worst_family"]) == (pytest.approx(-0.4), "mixer")
    text = (out / "results.md").read_text()
    assert "# Held-out suite (2 runs)" in text
    assert "| 10 % | black-box margin, perm, DiD | -3.00 (2 pairs) | residual -2.00 | -3.21 |" in text
    assert "| preact_resnet · adamw | residual | 10 % | 1 | 90.00 % | 40.03 | -0.50 [-0.50, -0.50] 0/1 |" in text
    assert "the suite's median log10 p is -3.00 and its worst family (residual) -2.00, against the grid's cnn -3.21" in text


def test_for_clean_suspects_the_worst_family_is_the_closest_to_a_false_alarm():
    table = load("table")
    runs = [_record("vgg-sgd", "plain convolutional", 0.0, 0, 0.9, {"whitebox": -1.2}),
            _record("mobilenet-sgd", "depthwise/mobile", 0.0, 0, 0.9, {"whitebox": -0.2})]
    claim = table.summarise(runs)["claims"][0]
    assert (claim["worst_family"], claim["worst_family_median"], claim["grid"]) == ("plain convolutional", -1.2, {})


def _update_readme():
    spec = importlib.util.spec_from_file_location("update_readme_for_tests", ROOT / "scripts" / "update_readme.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_readme_section_says_not_yet_run_without_records(tmp_path, capsys):
    lines = _update_readme().heldout(tmp_path / "missing")
    assert "Not yet run" in "\n".join(lines) and "held-out suite: not yet run" in capsys.readouterr().out
    assert not (tmp_path / "missing").exists()


def test_the_readme_section_shows_the_claims_next_to_the_grid(two_runs):
    out, _ = two_runs
    readme = _update_readme()
    grid = {(r["model"], r["fraction"]): r for r in json.loads((readme.GRID / "results.json").read_text())["rows"]}
    expected = grid[("scratch-cnn", 0.1)]["blackbox-margin-perm_log10_p_median"]
    text = "\n".join(readme.heldout(out))
    assert "2 runs" in text and "| preact_resnet · adamw | residual | 10 % |" in text
    assert f"| 10 % | black-box margin, perm, DiD | -3.00 (2 pairs) | residual -2.00 | {expected:.2f} |" in text
    assert (out / "results.md").is_file()


def _sealed(tmp_path, runs: list[dict]) -> tuple:
    sealed = tmp_path / "sealed"
    (sealed / "runs").mkdir(parents=True)
    for i, record in enumerate(runs):
        (sealed / "runs" / f"{i}.json").write_text(json.dumps(record))
    variants = [["blackbox-margin-perm-matched", "margin", "perm", True, "matched"],
                ["blackbox-margin-perm-nodid", "margin", "perm", False]]
    config = {"name": "sealed", "pairs": [{"name": "densenet-sgd_step"}, {"name": "vit-adamw_randaug"}],
              "detect": {"alpha": 0.001, "probes": 500, "num_controls": 20, "variants": variants},
              "planned_runs": [{}] * len(runs)}
    (sealed / "config.json").write_text(json.dumps(config))
    power = tmp_path / "power.json"
    power.write_text(json.dumps({"pairs": ["preact_resnet-adamw"], "seeds": [0, 1, 2], "num_controls": 20, "table": {
        "500": {"matched/margin": {"0": {"median": -0.4, "n": 6}, "0.1": {"median": -1.7, "n": 6}}}}}))
    return sealed, power, config


def test_the_sealed_summary_is_the_median_over_every_run_of_the_first_variant(tmp_path):
    test = "blackbox-margin-perm-matched"
    runs = []
    for pair, family in (("densenet-sgd_step", "dense"), ("vit-adamw_randaug", "transformer")):
        for seed, (clean, marked, acc_drop) in enumerate(((-0.2, -3.5, 0.002), (-1.0, -2.5, 0.004), (-0.5, -4.5, 0.0))):
            runs.append(_record(pair, family, 0.0, seed, 0.90, {test: clean, "blackbox-margin-perm-nodid": 0.0}))
            runs.append(_record(pair, family, 0.1, seed, 0.90 - acc_drop, {test: marked}))
    sealed, power, _ = _sealed(tmp_path, runs)
    summary = load("summary").build(sealed, power)
    assert summary["test"] == test
    # six runs per fraction: medians of (-0.2, -1.0, -0.5) x 2 and (-3.5, -2.5, -4.5) x 2
    assert summary["sealed"] == {"0.0": pytest.approx(-0.5), "0.1": pytest.approx(-3.5)}
    assert summary["open"] == {"0.0": -0.4, "0.1": -1.7}
    assert summary["details"]["sealed"]["detected"] == {"0.0": 0, "0.1": 4}  # alpha 0.001: -3.5 and -4.5, not -2.5
    assert summary["details"]["sealed"]["accuracy_cost"]["0.1"] == pytest.approx(0.002)
    assert summary["details"]["open"]["queries"] == 500 * 21
    assert summary["calibration"].endswith("calibration.json")


def test_the_sealed_table_labels_its_variants_and_closes_on_its_first(tmp_path):
    test = "blackbox-margin-perm-matched"
    runs = [_record("densenet-sgd_step", "dense", 0.1, 0, 0.9, {test: -3.2}),
            _record("vit-adamw_randaug", "transformer", 0.1, 0, 0.9, {test: -1.2})]
    sealed, _, config = _sealed(tmp_path, runs)
    table = load("table")
    summary = table.summarise(runs, config=config)
    assert summary["default_test"] == test
    text = "\n".join(table.readme_lines(summary))
    assert "black-box margin, perm, bank matched" in text
    assert "the suite's median log10 p is -2.20 and its worst family (transformer) -1.20" in text


def test_the_open_half_names_the_suspects_behind_its_probe_count(tmp_path):
    # 500 probes were measured on seeds 0-2, 3,000 on seed 0 only: the record's last command listed seed 0
    records = [{"pair": pair, "seed": seed, "fraction": 0.1,
                "log10_p": {"500": {"matched/margin": -1.0}, **({"3000": {"matched/margin": -1.1}} if not seed else {})}}
               for pair in ("convmixer-mixup_ema", "preact_resnet-adamw") for seed in (0, 1, 2)]
    power = {"pairs": ["preact_resnet-adamw"], "seeds": [0], "num_controls": 20, "records": records, "table": {
        "500": {"matched/margin": {"0.1": {"median": -1.0, "n": 6}}},
        "3000": {"matched/margin": {"0.1": {"median": -1.1, "n": 2}}}}}
    summary = load("summary")
    half = summary.open_half(power, "matched/margin")
    assert (half["seeds"], half["pairs"]) == ([0, 1, 2], ["convmixer-mixup_ema", "preact_resnet-adamw"])
    assert (half["runs"], half["queries"]) == ({"0.1": 6}, 500 * 21)
    assert summary.open_half(power, "matched/margin", probes="3000")["seeds"] == [0]

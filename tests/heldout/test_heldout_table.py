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

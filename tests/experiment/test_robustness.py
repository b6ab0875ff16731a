"""The robustness table end to end on the toy data: every treatment runs through the grid's run, model
treatments share their suspect's training, records resume, and the README renders the summary."""

import importlib.util
import json
from pathlib import Path

import pytest
from helpers.tiny import TINY_CNN

import radioactive.experiment.run as run_module
from radioactive.errors import ConfigError
from radioactive.experiment import derive_seed, expand_grid
from radioactive.experiment.robustness import (
    dry_run_robustness,
    expand_robustness,
    load_robustness,
    robustness_from_dict,
    run_robustness,
)
from radioactive.train import fit

ROOT = Path(__file__).resolve().parents[2]


def tiny_robustness(**changes):
    base = {
        "name": "tiny-robustness", "fractions": [0.0, 0.25], "seeds": [0],
        "models": [{"mode": "scratch", "arch": "cnn", "kwargs": TINY_CNN}],
        "mark": {"steps": 2, "min_psnr": 30.0}, "train": {"epochs": 1, "batch_size": 32, "flip": False},
        "detect": {"tests": ["whitebox", "blackbox"], "reference_images": 16, "probes": 16, "num_controls": 3,
                   "statistic": "margin", "combine": "perm", "blackbox_variants": ["loss:perm"],
                   "reference_model": True, "reference_arch": "cnn"},
        "markings": {"jpeg-aug": {"augment": ["crop", "flip", "jpeg"]}},
        "treatments": [
            {"kind": "none", "markings": ["plain", "jpeg-aug"]},
            {"kind": "jpeg", "quality": 75},
            {"kind": "downscale", "factor": 0.5},
            {"kind": "finetune", "recipe": {"epochs": 1}},
            {"kind": "prune", "amount": 0.5},
            {"kind": "quantize"},
            {"kind": "distill", "arch": "mlp", "kwargs": {"hidden": 16, "input_size": 16}, "recipe": {"epochs": 1}},
        ],
    }
    base.update(changes)
    return robustness_from_dict(base)


@pytest.mark.slow
def test_robustness_table_runs_resumes_and_renders(tmp_path, toy_data, toy_marker, monkeypatch):
    config = tiny_robustness()
    runs = expand_robustness(config)
    assert len(runs) == 2 * (2 + 1 + 5) and len({r.run_id for r in runs}) == len(runs)
    trainings = []
    monkeypatch.setattr(run_module, "fit", lambda *a, **k: trainings.append(k["seed"]) or fit(*a, **k))
    lines = []
    records = run_robustness(config, tmp_path, marker=toy_marker, data=toy_data, progress=lines.append)
    # One training per distinct training set: none (plain 0 % and 25 %, jpeg-aug 25 %; the jpeg-aug 0 % control
    # publishes the plain 0 % images), jpeg-q75 and downscale (0 % and 25 % each); the model treatments share
    # the untreated suspect's.
    assert len(trainings) == 7
    assert len(records) == len(runs) == len(list((tmp_path / "runs").glob("*.json")))
    by = {(r["treatment"]["name"], r["marking"], r["fraction"]): r for r in records}
    for record in records:
        assert set(record["log10_p"]) == {"whitebox", "blackbox", "blackbox-loss-perm"}
        assert record["verdicts"]["blackbox"]["test"].startswith("blackbox-perm")
        assert record["seeds"]["treatment"] == derive_seed("treatment", 0) and record["versions"]["torch"]
        assert record["key_fingerprint"] and 0 <= record["test_accuracy"] <= 1
    # The untreated run is the grid's own run (same id); a treated one is named by both.
    plain = expand_grid(config.experiment)
    assert {by[("none", "plain", f)]["run_id"] for f in (0.0, 0.25)} == {s.run_id for s in plain}
    assert by[("prune-0.5", "plain", 0.25)]["run_id"] not in {s.run_id for s in plain}
    # The model treatments start from the untreated suspect: one training (its metrics, wall time included).
    for name in ("finetune", "prune-0.5", "quantize-int8", "distill-mlp"):
        assert by[(name, "plain", 0.25)]["train_metrics"] == by[("none", "plain", 0.25)]["train_metrics"]
    # A re-encoded suspect's accuracy is measured on test images re-encoded the same way (the trainer's own), the
    # original test images' beside it; other runs have only the one test set.
    for name in ("jpeg-q75", "downscale-0.5"):
        assert 0 <= by[(name, "plain", 0.25)]["clean_test_accuracy"] <= 1
    assert all("clean_test_accuracy" not in by[(name, "plain", 0.25)] for name in ("none", "prune-0.5", "finetune"))
    # Re-encoded images train another suspect.
    assert by[("jpeg-q75", "plain", 0.25)]["train_metrics"] != by[("none", "plain", 0.25)]["train_metrics"]
    # The jpeg-aug marking is another marking (another key-independent optimisation, same key).
    assert by[("none", "jpeg-aug", 0.25)]["config"]["shared"]["mark"]["augment"] == ["crop", "flip", "jpeg"]
    assert by[("none", "jpeg-aug", 0.25)]["key_fingerprint"] == by[("none", "plain", 0.25)]["key_fingerprint"]
    # The quantized suspect went through both tests. Only its classifier is int8, so the white-box test (reading
    # the dequantized weights) sees the untreated features and nearly the same rows; pruning changes both.
    quantized, untreated = by[("quantize-int8", "plain", 0.25)], by[("none", "plain", 0.25)]
    alignment = untreated["verdicts"]["whitebox"]["alignment"]["r2"]
    assert quantized["verdicts"]["whitebox"]["alignment"]["r2"] == pytest.approx(alignment, abs=1e-9)
    assert quantized["log10_p"]["whitebox"] == pytest.approx(untreated["log10_p"]["whitebox"], abs=0.05)
    assert by[("prune-0.5", "plain", 0.25)]["verdicts"]["whitebox"]["alignment"]["r2"] != pytest.approx(alignment)

    summary = json.loads((tmp_path / "results.json").read_text())
    assert summary["runs"] == summary["planned"] == len(runs) and len(summary["rows"]) == 8 * 2
    first = summary["rows"][0]
    assert (first["treatment"], first["marking"], first["fraction"]) == ("none", "plain", 0.0)
    assert [r["treatment"] for r in summary["rows"][:4]] == ["none"] * 4  # file order, 0 % control first
    assert "none · jpeg-aug · scratch-cnn" in (tmp_path / "results.md").read_text()

    # Rerun: nothing is recomputed.
    lines.clear()
    again = run_robustness(config, tmp_path, marker=toy_marker, data=toy_data, progress=lines.append)
    assert sum("cached" in line for line in lines) == len(runs)
    assert [r["run_id"] for r in again] == [r["run_id"] for r in records]
    # Interrupted after a training and before its treated runs: they read the stored suspect, train nothing, and
    # give the same tests as the first time (same weights).
    for name, marking, fraction in (("finetune", "plain", 0.25), ("none", "jpeg-aug", 0.0)):
        (tmp_path / "runs" / f"{by[(name, marking, fraction)]['run_id']}.json").unlink()
    trainings.clear()
    redone = {r["run_id"]: r for r in run_robustness(config, tmp_path, marker=toy_marker, data=toy_data)}
    assert not trainings
    for name, marking, fraction in (("finetune", "plain", 0.25), ("none", "jpeg-aug", 0.0)):
        first = by[(name, marking, fraction)]
        assert redone[first["run_id"]]["log10_p"] == pytest.approx(first["log10_p"], abs=1e-9)
        assert redone[first["run_id"]]["train_metrics"] == first["train_metrics"]

    # The README's table, one row per treatment and marking, 0 % / 25 % in each cell.
    spec = importlib.util.spec_from_file_location("update_readme_for_robustness", ROOT / "scripts" / "update_readme.py")
    readme = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(readme)
    table = readme.treatments(tmp_path)
    rows = [line for line in table if line.startswith("| ") and "treatment" not in line]
    assert len(rows) == 8 and rows[0].startswith("| none | plain | scratch-cnn |")
    cell = f"{by[('prune-0.5', 'plain', 0.0)]['log10_p']['blackbox']:.2f} / " \
           f"{by[('prune-0.5', 'plain', 0.25)]['log10_p']['blackbox']:.2f}"
    assert any(line.startswith("| prune-0.5 | plain |") and cell in line for line in rows)
    assert "Not yet run" in readme.treatments(tmp_path / "missing")[0]


def test_shipped_robustness_file_validates():
    config = load_robustness(ROOT / "configs" / "robustness.toml")
    lines = dry_run_robustness(config)
    assert lines[0].startswith("robustness: 108 runs")
    assert config.experiment.fractions == (0.0, 0.05, 0.10)
    assert config.experiment.detect.combine == "perm" and config.experiment.detect.blackbox_variants == ("loss:perm",)
    assert config.experiment_for("jpeg-aug").mark_config().augment == ("crop", "flip", "jpeg")
    kinds = {s.treatment.kind for s in config.treatments}
    assert kinds == {"none", "jpeg", "downscale", "finetune", "prune", "quantize", "distill"}


def test_bad_robustness_files_are_refused():
    with pytest.raises(ConfigError, match="names markings \\['jpeg'\\]"):
        tiny_robustness(treatments=[{"kind": "none", "markings": ["jpeg"]}])
    with pytest.raises(ConfigError, match="needs a 'kind'"):
        tiny_robustness(treatments=[{"quality": 90}])
    with pytest.raises(ConfigError, match="at least one \\[\\[treatments\\]\\]"):
        tiny_robustness(treatments=[])
    with pytest.raises(ConfigError, match="distinct names"):
        tiny_robustness(treatments=[{"kind": "prune"}, {"kind": "prune"}])
    with pytest.raises(ConfigError, match="unknown marking settings"):
        tiny_robustness(markings={"jpeg-aug": {"augment": ["jpeg"]}, "odd": {"stepz": 3}})
    with pytest.raises(ConfigError, match="'plain' is the file's own"):
        tiny_robustness(markings={"jpeg-aug": {"augment": ["jpeg"]}, "plain": {"steps": 3}})

"""benchmarks/bench_plan_classes.py (the planner at C = 100, issue 27) and its results section, on folders built
from real 10-class run records (results/fashion-mnist): a "100-class" target is the same records with every class
entry repeated ten times and every log10 p moved by a known shift, so the measured C-slope is known exactly."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

from radioactive.plan import Response, fit_response, leave_one_out, load_observations
from radioactive.plan.validate import _predict, cells

ROOT = Path(__file__).resolve().parents[2]
GRID = ROOT / "results" / "fashion-mnist"
TESTS = ("whitebox", "blackbox", "blackbox-margin-perm")
SHIFT = -1.5  # the fake 100-class grid's log10 p minus the 10-class one's: a slope of -1.5 per decade of C
DRAWS = 40


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    return _load("bench_plan_classes", ROOT / "benchmarks" / "bench_plan_classes.py")


@pytest.fixture(scope="module")
def renderer():
    if str(ROOT / "scripts") not in sys.path:
        sys.path.insert(0, str(ROOT / "scripts"))
    return importlib.import_module("results_tables.plan_classes")


def _copy(folder: Path, models: tuple[str, ...], *, classes_factor: int = 1, shift: float = 0.0,
          fractions: tuple[float, ...] | None = None) -> Path:
    """The grid's records of ``models`` (only :data:`TESTS`) under ``folder/runs``, with each verdict's class
    entries repeated ``classes_factor`` times and its log10 p moved by ``shift``."""
    (folder / "runs").mkdir(parents=True)
    for path in sorted((GRID / "runs").glob("*.json")):
        record = json.loads(path.read_text())
        if record["model"] not in models or (fractions is not None and record["fraction"] not in fractions):
            continue
        record["verdicts"] = {name: record["verdicts"][name] for name in TESTS}
        for verdict in record["verdicts"].values():
            verdict["classes"] = [dict(c, index=i) for i, c in enumerate(verdict["classes"] * classes_factor)]
            verdict["counts"]["classes"] = len(verdict["classes"])
            verdict["log10_p"] += shift
        (folder / "runs" / path.name).write_text(json.dumps(record))
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    base = tmp_path_factory.mktemp("plan_classes")
    return {"train": _copy(base / "fashion-mnist", ("scratch-cnn", "scratch-resnet_narrow")),
            "control": _copy(base / "composite-10", ("scratch-cnn", "linear_probe-marker")),
            "target": _copy(base / "composite-100", ("scratch-cnn", "linear_probe-marker"), classes_factor=10,
                            shift=SHIFT),
            "base": base}


@pytest.fixture(scope="module")
def record(bench, folders):
    out = folders["base"] / "out" / "plan_classes.json"
    argv = ["--train-source", str(folders["train"]), "--target", str(folders["target"]), "--control",
            str(folders["control"]), "--draws", str(DRAWS), "--out", str(out)]
    assert bench.main(argv) == 0
    return json.loads(out.read_text()) | {"_path": str(out)}


def _grid_medians() -> dict[tuple[str, float, str], float]:
    rows = json.loads((GRID / "results.json").read_text())["rows"]
    return {(r["model"], float(r["fraction"]), t): r[f"{t}_log10_p_median"] for r in rows for t in TESTS}


def test_every_target_cell_is_predicted_with_its_own_budget(record, folders):
    before, after = record["cells_predicted_from_10_class"], record["cells_refit"]
    assert len(before) == len(after) == 2 * 6 * 3  # models x fractions x tests
    assert all(r["budget"]["classes"] == 100 and r["budget"]["dim"] == 128 for r in before + after)
    assert [s["records"] for s in record["sources"]] == [36, 36, 36]
    assert [s["classes"] for s in record["sources"]] == [[10], [100], [10]]
    assert record["versions"]["numpy"] and record["command"].startswith("nice -n 19 .venv/bin/python benchmarks/")
    assert Path(record["_path"]).with_suffix(".png").stat().st_size > 10_000
    # The measured medians are the grid's own (results.json), moved by the shift.
    medians = _grid_medians()
    for row in before:
        assert row["measured"] == pytest.approx(medians[(row["model"], row["fraction"], row["test"])] + SHIFT,
                                                abs=1e-9)
        assert row["error"] == pytest.approx(row["predicted"] - row["measured"])
        assert row["within_one"] == (abs(row["error"]) <= 1.0)
    # A model the 10-class records have uses its own response; another the pooled one.
    train = load_observations(folders["train"])
    cnn = next(r for r in before if r["model"] == "scratch-cnn" and r["test"] == "whitebox" and r["fraction"] == 0.1)
    assert cnn["fit"]["models"] == ["scratch-cnn"]
    assert cnn["fit"]["scale"] == pytest.approx(fit_response(train, "whitebox", models=["scratch-cnn"]).scale)
    assert any("C = 100: measured only at C = 10" in reason for reason in cnn["extrapolation_reasons"])
    probe = next(r for r in before if r["model"] == "linear_probe-marker" and r["test"] == "whitebox")
    assert probe["fit"]["models"] == ["scratch-cnn", "scratch-resnet_narrow"]
    assert probe["fitted_on"].startswith("pooled")
    summary = record["summary"]["predicted from 10-class records"]
    assert summary["all"]["cells"] == 36 and summary["unmarked"]["cells"] == 6 and summary["marked_only"]["cells"] == 30
    assert summary["all"]["within_one"] == sum(r["within_one"] for r in before)
    assert set(summary["per_test"]) == set(TESTS)


def test_measured_slopes_are_the_known_shift_and_law_slopes_hold_only_c_changed(record):
    dependence = record["class_dependence"]
    assert dependence["measured"] and dependence["classes"] == [10, 100]
    assert len(dependence["cells"]) == 2 * 5 * 3  # models x marked fractions x tests
    for row in dependence["cells"]:
        assert row["measured_slope"] == pytest.approx(SHIFT, abs=1e-9)
        assert list(row["seed_slopes"].values()) == pytest.approx([SHIFT] * 3, abs=1e-9)
        law = row["law"]
        assert law["slope"] == pytest.approx(law["high"] - law["low"])  # one decade of C
        if row["test"] == "whitebox":  # probes per class do not enter a cosine test: the two budgets agree
            assert law["own_budget_slope"] == pytest.approx(law["slope"], abs=1e-12)
    assert dependence["per_test"]["whitebox"]["scratch-cnn"]["measured_slope_median"] == pytest.approx(SHIFT)


def test_in_sample_prediction_and_refit_match_the_planners_own(bench, folders):
    """The 10-class records as their own target: part 1 is the in-sample fit's prediction (validate's), part 2
    is exactly validate.leave_one_out (what bench_plan.py runs), and the medians are results.json's."""
    observations = load_observations(folders["control"])
    rows = bench.predict_from(observations, observations, draws=DRAWS)
    groups = cells(observations)
    for row in rows:
        group = groups[(row["model"], row["fraction"], row["test"])]
        fit = fit_response(observations, group[0].spec.family, models=[row["model"]])
        assert row["predicted"] == _predict(group, fit, DRAWS, 0)["predicted"]
    plan_bench = _load("bench_plan", ROOT / "benchmarks" / "bench_plan.py")
    assert plan_bench.check_against_summary(rows, GRID) == len(rows) == 2 * 6 * 3
    refitted = {(r["model"], r["fraction"], r["test"]): r for r in bench.refit(observations, draws=DRAWS)}
    for row in leave_one_out(observations, draws=DRAWS):
        mine = refitted[(row["model"], row["fraction"], row["test"])]
        assert (mine["predicted"], mine["measured"], mine["within_one"]) == \
            (row["predicted"], row["measured"], row["within_one"])


def _zero(kind: str, family: str) -> Response:
    return Response(family=family, kind=kind, models=("m",), scale=0.0, exponent=1.0, exponent_fitted=False,
                    run_spread=0.0, class_spread=0.0, runs=6, fractions=(0.0, 0.05),
                    conditions={"classes": (10,), "per_class": (50,), "controls": (20,), "reference": (2000,)})


@pytest.mark.parametrize("test", ["whitebox", "blackbox-margin-perm"])
def test_law_slope_of_a_zero_response_is_zero(bench, folders, test):
    """No response: the null law's median (log10 1/2) at both C, exact permutation at C = 10 and its saddlepoint at
    C = 100; a positive per-class cosine held fixed: ten times the classes give far more evidence."""
    group = cells(load_observations(folders["control"]))[("scratch-cnn", 0.05, test)]
    law = bench.law_slope(group, _zero(group[0].spec.kind, group[0].spec.family), (10, 100), draws=400, seed=0)
    assert law["low"] == pytest.approx(math.log10(0.5), abs=0.08)
    assert law["high"] == pytest.approx(math.log10(0.5), abs=0.08)
    assert abs(law["slope"]) < 0.1
    if test == "whitebox":  # mean cosine 0.05 in d = 128: z about 0.57 per class
        positive = dataclasses.replace(_zero("cosine", "whitebox"), scale=1.0)
        assert bench.law_slope(group, positive, (10, 100), draws=400, seed=0)["slope"] < -2.0


def test_missing_or_empty_folders_name_the_folder_and_the_command(bench, folders, tmp_path):
    missing = tmp_path / "composite-100"
    with pytest.raises(SystemExit, match=r"target folder .*composite-100' does not exist; make it with `radioactive "
                                         r"experiment configs/composite-100.toml --out .*composite-100`"):
        bench.main(["--target", str(missing), "--out", str(tmp_path / "out.json")])
    (missing / "runs").mkdir(parents=True)
    with pytest.raises(SystemExit, match=r"composite-100' holds no run records \(runs/\*\.json\); make it with"):
        bench.main(["--target", str(missing), "--out", str(tmp_path / "out.json")])
    with pytest.raises(SystemExit, match=r"train folder .*nowhere' does not exist; make it with `radioactive "
                                         r"experiment CONFIG --out"):
        bench.main(["--train-source", str(tmp_path / "nowhere"), "--target", str(folders["target"])])
    assert not (tmp_path / "out.json").exists()


def test_without_the_control_parts_one_and_two_are_written(bench, folders, tmp_path):
    target = _copy(tmp_path / "composite-100", ("scratch-cnn",), classes_factor=10, fractions=(0.0, 0.05))
    out = tmp_path / "plan_classes.json"
    assert bench.main(["--train-source", str(folders["train"]), "--target", str(target), "--control",
                       str(tmp_path / "composite-10"), "--draws", str(DRAWS), "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert len(record["cells_predicted_from_10_class"]) == len(record["cells_refit"]) == 2 * 3
    dependence = record["class_dependence"]
    assert not dependence["measured"] and "configs/composite-10.toml --out" in dependence["command"]
    assert [s["role"] for s in record["sources"]] == ["train", "target"]
    measured = [r["measured"] for r in record["cells_refit"] if r["fraction"] == 0.05 and r["test"] == "whitebox"]
    assert measured == [_grid_medians()[("scratch-cnn", 0.05, "whitebox")]]


def test_section_renders_the_record_or_says_how_to_make_it(renderer, record, tmp_path, capsys):
    lines = renderer.plan_classes(tmp_path / "plan_classes.json")
    assert "not measured yet" in lines[0]
    assert "`radioactive experiment configs/composite-100.toml --out results/composite-100`" in lines[0]
    assert "not measured yet: radioactive experiment configs/composite-100.toml" in capsys.readouterr().out
    text = "\n".join(renderer.plan_classes(Path(record["_path"])))
    before, after = (record["summary"][k]["all"] for k in (renderer.BEFORE, renderer.AFTER))
    assert f"| all | {before['within_one']} / 36 " in text and f"| {after['within_one']} / 36 " in text
    cnn = record["class_dependence"]["per_test"]["whitebox"]["scratch-cnn"]
    assert f"| whitebox | scratch-cnn | -1.50 | {cnn['law_slope_median']:.2f} |" in text
    assert "C = 100" in text and "(36 records)" in text
    # docs/results.md holds the generated section (not measured yet, until the grid is run).
    assert "**Power planning at 100 classes**" in (ROOT / "docs" / "results.md").read_text()

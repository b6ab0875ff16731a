"""Does `radioactive plan` hold at C = 100? Issue 27, acceptance item 3, from the run records alone.

1. Predicted from 10-class records only: the planner's responses are fitted on the 10-class grid
   (``--train-source``, default results/fashion-mnist) and every cell of the 100-class grid (``--target``, default
   results/composite-100; model x fraction x recorded test, median log10 p over seeds) is predicted with the cell's
   own budget (100 classes, its dimension, probes per class, K, reference images). A target model the 10-class
   grid also has uses that model's response; any other the pooled response, as `plan` does without --model.
2. Refitted with the 100-class records: leave one cell out on the target grid (as ``validate.leave_one_out``;
   ``--pool`` adds the 10-class records to every fit), so the reader sees the same summary before and after.
3. C-dependence: at each marked fraction, model and test, the measured slope of the median log10 p against
   log10 C between the 10-class control of the same images (``--control``, default results/composite-10) and the
   target, and the slope the planner's law gives when the per-class response fitted on the control is held fixed
   and only C changes in the budget (the sqrt(d C) scaling of the white-box evidence, sqrt(C) of the black-box
   permutation sum). Without the control, parts 1 and 2 are still written and part 3 is recorded as not measured.

It reads JSON only (the folders' runs/*.json), a minute or two.

Run:
    nice -n 19 .venv/bin/python benchmarks/bench_plan_classes.py
Writes benchmarks/results/plan_classes.json and benchmarks/results/plan_classes.png.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from radioactive._io import atomic_write_json, save_png, versions
from radioactive.errors import ConfigError
from radioactive.plan import (
    Observation,
    Response,
    fit_response,
    load_observations,
    predict_log10_p,
    summarise,
)
from radioactive.plan.predict import extrapolation_reasons, resolve_budget
from radioactive.plan.validate import cell_budget, cells

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DEFAULT_TRAIN = ROOT / "results" / "fashion-mnist"
DEFAULT_TARGET = ROOT / "results" / "composite-100"
DEFAULT_CONTROL = ROOT / "results" / "composite-10"
COMMAND = "nice -n 19 .venv/bin/python benchmarks/bench_plan_classes.py"
BUDGET_ITEMS = ("classes", "dim", "null_dim", "reference_images", "probes_per_class", "controls")


def rel(path: Path) -> str:
    """``path`` relative to the repository root (as the records name it), or as given outside it."""
    path = Path(path)
    found = path.resolve()
    return found.relative_to(ROOT).as_posix() if found.is_relative_to(ROOT) else path.as_posix()


def make_command(folder: Path) -> str:
    """The command that writes an experiment output folder (its configuration is ``configs/<folder name>.toml``)."""
    config = ROOT / "configs" / f"{Path(folder).name}.toml"
    return f"radioactive experiment {rel(config) if config.is_file() else 'CONFIG'} --out {rel(folder)}"


def read_source(folder: Path, role: str) -> tuple[list[Observation], dict[str, Any]]:
    """The observations of one experiment output folder and what was read from it.

    Raises:
        SystemExit: the folder is missing or holds no run record, naming the command that makes it.
    """
    folder = Path(folder)
    records = sorted((folder / "runs").glob("*.json")) if folder.is_dir() else []
    if not records:
        problem = "does not exist" if not folder.is_dir() else "holds no run records (runs/*.json)"
        raise SystemExit(f"{role} folder {rel(folder)!r} {problem}; make it with `{make_command(folder)}`")
    try:
        observations = load_observations(folder, name=rel(folder))
    except ConfigError as exc:
        raise SystemExit(f"{role} folder {rel(folder)!r}: {exc}") from exc
    classes = sorted({o.conditions["classes"] for o in observations if o.conditions.get("classes")})
    return observations, {"role": role, "path": rel(folder), "records": len(records),
                          "runs": len({o.run_id for o in observations}), "observations": len(observations),
                          "classes": classes, "models": sorted({o.model for o in observations}),
                          "tests": sorted({o.record_test for o in observations})}


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def _fit_summary(response: Response | None) -> dict[str, Any] | None:
    if response is None:
        return None
    return {"models": list(response.models), "scale": response.scale, "exponent": response.exponent,
            "run_spread": response.run_spread, "class_spread": response.class_spread, "runs": response.runs,
            "classes": list(response.conditions.get("classes", ())), "sources": list(response.sources)}


def predict_cell(group: Sequence[Observation], response: Response | None, *, draws: int, seed: int,
                 fitted_on: str) -> dict[str, Any]:
    """One cell's row: the measured median (and each seed's value) against the planner's prediction with the
    cell's own budget and ``response`` (None: the null law, the family was never measured)."""
    spec, first = group[0].spec, group[0]
    budget = resolve_budget(spec, cell_budget(group), response)
    log10_p = predict_log10_p(spec, budget, response, first.fraction, draws=draws, seed=seed)
    ordered = sorted(group, key=lambda o: o.seed)
    measured = [o.log10_p for o in ordered]
    span = response.marked_range if response is not None else None
    row = {"model": first.model, "fraction": first.fraction, "test": first.record_test, "planner_test": spec.name,
           "family": spec.family, "seeds": [o.seed for o in ordered], "measured_seeds": measured,
           "measured": _median(measured), "measured_range": [min(measured), max(measured)],
           "predicted": float(np.median(log10_p)), "predicted_p10": float(np.quantile(log10_p, 0.1)),
           "predicted_p90": float(np.quantile(log10_p, 0.9)),
           "budget": {k: v for k, v in budget.to_dict().items() if k in BUDGET_ITEMS and v is not None},
           "fitted_on": fitted_on, "fit": _fit_summary(response),
           "extrapolated": bool(first.fraction > 0 and (span is None or not span[0] <= first.fraction <= span[1])),
           "extrapolation_reasons": extrapolation_reasons(spec, budget, response, first.fraction) if response else
           ["no measured run of this test family in the fit's sources: predicted by the null law"]}
    row["error"] = row["predicted"] - row["measured"]
    row["within_one"] = abs(row["error"]) <= 1.0
    return row


def predict_from(train: Sequence[Observation], target: Sequence[Observation], *, draws: int = 400,
                 seed: int = 0) -> list[dict[str, Any]]:
    """Part 1: every target cell predicted from responses fitted on ``train`` only (the same model's when
    ``train`` has it and that test family, else pooled over every model of ``train``)."""
    rows = []
    for (model, _, _), group in cells(target).items():
        family = group[0].spec.family
        response = fit_response(train, family, models=[model])
        fitted_on = f"{model} (10-class runs)"
        if response is None:
            response = fit_response(train, family)
            fitted_on = "pooled: " + ", ".join(response.models) if response else "nothing: null law"
        if response is None and family.endswith("-matched"):
            # No matched-reference run at 10 classes: the nearest measured family, the references' mean.
            proxy = family[: -len("-matched")] + "-did"
            response = fit_response(train, proxy, models=[model])
            fitted_on = f"{model} (10-class runs), family {proxy}: no matched-reference run to fit"
            if response is None:
                response = fit_response(train, proxy)
                fitted_on = (f"pooled: {', '.join(response.models)}, family {proxy}: no matched-reference run "
                             "to fit") if response else "nothing: null law"
        rows.append(predict_cell(group, response, draws=draws, seed=seed, fitted_on=fitted_on))
    return rows


def refit(target: Sequence[Observation], pool: Sequence[Observation] = (), *, draws: int = 400,
          seed: int = 0) -> list[dict[str, Any]]:
    """Part 2: leave one cell out on the target (fit on the same model's target runs at the other fractions, as
    :func:`radioactive.plan.leave_one_out` with ``by="cell"``), plus every run of ``pool`` when given."""
    observations = list(target) + list(pool)
    sources = {o.source for o in target}
    rows = []
    for (model, fraction, _), group in cells(target).items():
        response = fit_response(observations, group[0].spec.family, models=[model],
                                exclude=lambda o, m=model, f=fraction: (o.source in sources and o.model == m
                                                                        and o.fraction == f))
        fitted_on = f"{model}, other fractions" + (" + pooled 10-class runs" if pool else "")
        rows.append(predict_cell(group, response, draws=draws, seed=seed, fitted_on=fitted_on))
    return rows


def summary_of(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """:func:`radioactive.plan.summarise` (overall, marked only, per test, per model, ...) plus the q = 0 cells."""
    out = summarise(rows)
    out["unmarked"] = summarise([r for r in rows if r["fraction"] == 0])["all"]
    return out


def _classes(observations: Sequence[Observation]) -> int:
    values = [o.conditions["classes"] for o in observations if o.conditions.get("classes")]
    return int(statistics.median_low(values))


def law_slope(group: Sequence[Observation], response: Response | None, classes: tuple[int, int], *,
              draws: int, seed: int, other: Sequence[Observation] | None = None) -> dict[str, float]:
    """The planner's median log10 p at ``classes[0]`` (the control cell's own budget) and at ``classes[1]`` with
    only C changed (``other``: the target cell, whose own budget gives ``own_budget_high`` too), and the slope
    against log10 C. The per-class response is held fixed."""
    spec, fraction = group[0].spec, group[0].fraction
    low_budget = resolve_budget(spec, cell_budget(group), response)
    high_budget = dataclasses.replace(low_budget, classes=classes[1])
    span = math.log10(classes[1]) - math.log10(classes[0])
    low = float(np.median(predict_log10_p(spec, low_budget, response, fraction, draws=draws, seed=seed)))
    high = float(np.median(predict_log10_p(spec, high_budget, response, fraction, draws=draws, seed=seed)))
    out = {"low": low, "high": high, "slope": (high - low) / span}
    if other is not None:
        own = resolve_budget(spec, cell_budget(other), response)
        out["own_budget_high"] = float(np.median(predict_log10_p(spec, own, response, fraction, draws=draws,
                                                                 seed=seed)))
        out["own_budget_slope"] = (out["own_budget_high"] - low) / span
    return out


def class_dependence(control: Sequence[Observation], target: Sequence[Observation], *, draws: int = 400,
                     seed: int = 0) -> dict[str, Any]:
    """Part 3: measured against law slopes of the median log10 p in log10 C, per marked cell both grids have."""
    classes = (_classes(control), _classes(target))
    if classes[0] == classes[1]:
        raise SystemExit(f"the control and the target both have {classes[0]} classes: no C-dependence to measure")
    span = math.log10(classes[1]) - math.log10(classes[0])
    low_cells, high_cells = cells(control), cells(target)
    rows = []
    for key in sorted(set(low_cells) & set(high_cells)):
        model, fraction, test = key
        if fraction <= 0:
            continue
        low, high = low_cells[key], high_cells[key]
        low_seeds, high_seeds = {o.seed: o.log10_p for o in low}, {o.seed: o.log10_p for o in high}
        both = sorted(set(low_seeds) & set(high_seeds))
        seed_slopes = [(high_seeds[s] - low_seeds[s]) / span for s in both]
        response = fit_response(control, low[0].spec.family, models=[model])
        measured_low, measured_high = _median(list(low_seeds.values())), _median(list(high_seeds.values()))
        rows.append({
            "model": model, "fraction": fraction, "test": test, "planner_test": low[0].spec.name,
            "classes": list(classes),
            "measured": {"low": measured_low, "high": measured_high, "low_seeds": low_seeds,
                         "high_seeds": high_seeds},
            "measured_slope": (measured_high - measured_low) / span,
            "seed_slopes": dict(zip(both, seed_slopes)),
            "seed_slope_range": [min(seed_slopes), max(seed_slopes)] if seed_slopes else None,
            "law": law_slope(low, response, classes, draws=draws, seed=seed, other=high),
            "fit": _fit_summary(response)})
    per_test: dict[str, dict[str, Any]] = {}
    for row in rows:
        entry = per_test.setdefault(row["test"], {}).setdefault(row["model"], {
            "fractions": [], "measured_slopes": [], "law_slopes": [], "own_budget_law_slopes": []})
        entry["fractions"].append(row["fraction"])
        entry["measured_slopes"].append(row["measured_slope"])
        entry["law_slopes"].append(row["law"]["slope"])
        entry["own_budget_law_slopes"].append(row["law"]["own_budget_slope"])
    for models in per_test.values():
        for entry in models.values():
            entry["measured_slope_median"] = _median(entry["measured_slopes"])
            entry["law_slope_median"] = _median(entry["law_slopes"])
    return {"measured": True, "classes": list(classes), "cells": rows, "per_test": per_test}


def plot(before: list[dict], after: list[dict], summaries: dict[str, dict], dependence: dict[str, Any],
         path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tests = sorted({r["test"] for r in before})
    colours = {t: plt.get_cmap("tab10")(i % 10) for i, t in enumerate(tests)}
    markers = dict(zip(tests, "osD^vP*Xhp<>"))
    fig, (left, right) = plt.subplots(1, 2, figsize=(13.0, 6.0))
    values = [v for r in before for v in (r["measured"], r["predicted"])]
    low, high = math.floor(min(values)) - 0.5, max(0.3, max(values) + 0.3)
    left.fill_between([low, high], [low - 1, high - 1], [low + 1, high + 1], color="0.9", label="±1 unit")
    left.plot([low, high], [low, high], color="0.3", lw=1, label="y = x")
    for r in before:
        left.plot([r["measured"]] * 2, [r["predicted_p10"], r["predicted_p90"]], color=colours[r["test"]], lw=0.6,
                  alpha=0.35)
        left.scatter(r["measured"], r["predicted"], s=28, marker=markers[r["test"]], color=colours[r["test"]])
    one, two = summaries["predicted from 10-class records"]["all"], summaries["refit, leave one cell out"]["all"]
    left.set_title(f"C = {before[0]['budget']['classes']} predicted from 10-class records: {one['within_one']}/"
                   f"{one['cells']} within 1 unit (refit: {two['within_one']}/{two['cells']})", fontsize=10)
    left.set_xlim(low, high)
    left.set_ylim(low, high)
    left.set_xlabel("measured median log10 p (over seeds)")
    left.set_ylabel("predicted median log10 p (bars: 10-90 %)")
    left.legend(handles=[plt.Line2D([], [], color=colours[t], marker=markers[t], ls="", label=t) for t in tests],
                fontsize=7, loc="upper left")
    if dependence.get("measured"):
        rows = dependence["cells"]
        slopes = [v for r in rows for v in (r["measured_slope"], r["law"]["slope"])] or [0.0]
        low, high = min(slopes + [0.0]) - 0.5, max(slopes + [0.0]) + 0.5
        right.plot([low, high], [low, high], color="0.3", lw=1)
        models = sorted({r["model"] for r in rows})
        for r in rows:
            colour = colours.get(r["test"], "0.3")
            if r["seed_slope_range"]:
                right.plot([r["law"]["slope"]] * 2, r["seed_slope_range"], color=colour, lw=0.6, alpha=0.35)
            right.scatter(r["law"]["slope"], r["measured_slope"], s=28, marker=markers.get(r["test"], "o"),
                          edgecolors=colour, facecolors=colour if r["model"] == models[0] else "none")
        right.legend(handles=[plt.Line2D([], [], color="0.3", marker="o", ls="", label=m,
                                         mfc="0.3" if m == models[0] else "none") for m in models],
                     fontsize=7, loc="upper left")
        right.set_xlim(low, high)
        right.set_ylim(low, high)
        c_low, c_high = dependence["classes"]
        right.set_title(f"slope of median log10 p in log10 C (C = {c_low} → {c_high}), per model, q > 0", fontsize=10)
        right.set_xlabel("law: response fitted at C = 10 held fixed, only C changes")
        right.set_ylabel("measured (bars: per-seed slopes)")
    else:
        right.axis("off")
        right.text(0.5, 0.5, "C-dependence not measured yet:\n" + dependence["command"], ha="center", va="center",
                   fontsize=9, wrap=True)
    fig.suptitle("radioactive plan at many classes (benchmarks/bench_plan_classes.py)")
    fig.tight_layout()
    save_png(fig, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-source", action="append", default=None,
                        help="10-class experiment output folder to fit on (repeatable; default results/fashion-mnist)")
    parser.add_argument("--target", default=str(DEFAULT_TARGET),
                        help="the many-class grid to predict (default results/composite-100)")
    parser.add_argument("--control", default=str(DEFAULT_CONTROL),
                        help="the same images with 10 classes, for the C-dependence (default results/composite-10)")
    parser.add_argument("--pool", action="store_true",
                        help="refit (part 2) on the target's runs pooled with the 10-class ones")
    parser.add_argument("--draws", type=int, default=400, help="simulated audits per prediction (400)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(RESULTS / "plan_classes.json"))
    args = parser.parse_args(argv)
    start = time.perf_counter()
    train_folders = [Path(p) for p in (args.train_source or [DEFAULT_TRAIN])]
    target_folder, control_folder = Path(args.target), Path(args.control)
    if args.pool and any(f.resolve() == target_folder.resolve() for f in train_folders):
        raise SystemExit("--pool needs a target that is not also a --train-source (its runs would count twice)")
    target, target_info = read_source(target_folder, "target")
    train, sources = [], []
    for folder in train_folders:
        observations, info = read_source(folder, "train")
        train += observations
        sources.append(info)
    sources.append(target_info)
    before = predict_from(train, target, draws=args.draws, seed=args.seed)
    after = refit(target, train if args.pool else (), draws=args.draws, seed=args.seed)
    summaries = {"predicted from 10-class records": summary_of(before), "refit, leave one cell out": summary_of(after)}
    try:
        control, control_info = read_source(control_folder, "control")
    except SystemExit as exc:
        dependence = {"measured": False, "reason": str(exc), "command": make_command(control_folder)}
    else:
        sources.append(control_info)
        dependence = class_dependence(control, target, draws=args.draws, seed=args.seed)
    out = Path(args.out)
    record = {
        "benchmark": "plan_classes",
        "command": f"{COMMAND} {' '.join(argv if argv is not None else sys.argv[1:])}".strip(),
        "config": {"train_sources": [rel(f) for f in train_folders], "target": rel(target_folder),
                   "control": rel(control_folder), "pool": args.pool, "draws": args.draws, "seed": args.seed,
                   "cells": "model x fraction x recorded test, median log10 p over seeds",
                   "predicted": "responses fitted on the train sources only; the target model's own when they have "
                                "it, else pooled over their models; the cell's own budget (validate.cell_budget)",
                   "refit": "leave one cell out on the target (validate.leave_one_out, by='cell')"
                            + (", every fit pooled with the train sources' runs" if args.pool else ""),
                   "law_slope": "the planner's median log10 p with the per-class response fitted on the control "
                                "held fixed, at the control cell's budget and with only C changed; "
                                "own_budget_slope: at the target cell's own budget instead (probes per class too)",
                   "reference_fit": "matched and mean-reference black-box verdicts are two response families "
                                    "(radioactive.plan.catalogue); a matched cell the train sources never measured "
                                    "is predicted from the mean-reference family of its statistic (fitted_on says "
                                    "so)"},
        "versions": versions(),
        "sources": sources,
        "summary": summaries,
        "class_dependence": dependence,
        "cells_predicted_from_10_class": before,
        "cells_refit": after,
        "seconds": None,
    }
    record["seconds"] = round(time.perf_counter() - start, 1)
    atomic_write_json(out, record)
    plot(before, after, summaries, dependence, out.with_suffix(".png"))
    for name, s in summaries.items():
        print(f"{name}: {s['all']['within_one']}/{s['all']['cells']} cells within 1 unit of log10 p "
              f"(marked {s['marked_only']['within_one']}/{s['marked_only']['cells']}, q = 0 "
              f"{s['unmarked']['within_one']}/{s['unmarked']['cells']}); median |error| "
              f"{s['all']['median_abs_error']:.2f}")
        for test, share in s["per_test"].items():
            print(f"    {test}: {share['within_one']}/{share['cells']}")
    if dependence["measured"]:
        for test, models in dependence["per_test"].items():
            for model, entry in models.items():
                print(f"slope in log10 C, {test} {model}: measured {entry['measured_slope_median']:+.2f}, law "
                      f"{entry['law_slope_median']:+.2f} (median over {len(entry['fractions'])} fractions)")
    else:
        print(f"C-dependence not measured: {dependence['reason']}")
    print(f"wrote {out} and {out.with_suffix('.png')} ({record['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

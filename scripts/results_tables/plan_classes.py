"""The power planner at many classes (issue 27): C = 100 predicted from 10-class records, the same cells after a
refit on the 100-class records, and the measured against the law's C-dependence
(``benchmarks/results/plan_classes.json``, written by ``benchmarks/bench_plan_classes.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .common import RESULTS, f, link, load_json

PATH = RESULTS / "plan_classes.json"
BEFORE, AFTER = "predicted from 10-class records", "refit, leave one cell out"
COMMANDS = ("radioactive experiment configs/composite-100.toml --out results/composite-100",
            "radioactive experiment configs/composite-10.toml --out results/composite-10",
            "nice -n 19 .venv/bin/python benchmarks/bench_plan_classes.py")
TITLE = "**Power planning at 100 classes** (issue 27; `benchmarks/bench_plan_classes.py`)"


def _share(share: dict[str, Any]) -> str:
    if not share["cells"]:
        return "–"
    return f"{share['within_one']} / {share['cells']} (median \\|error\\| {f(share['median_abs_error'])})"


def _slopes(dependence: dict[str, Any]) -> list[str]:
    if not dependence.get("measured"):
        return ["", f"C-dependence not measured yet: `{dependence.get('command', COMMANDS[1])}`, then "
                    f"`{COMMANDS[2]}`."]
    low, high = dependence["classes"]
    out = ["", f"Slope of the median log10 p against log10 C between C = {low} and C = {high} (the same images, "
               "only the labels differ), median over the marked fractions; the law's slope holds the per-class "
               f"response fitted at C = {low} fixed and changes only C in the budget; per seed: the range of the "
               "slopes of runs with the same seed.",
           "", "| test | model | measured | law | law, C = 100 grid's own budget | per seed |",
           "|---|---|---|---|---|---|"]
    cells = dependence["cells"]
    for test, models in dependence["per_test"].items():
        for model, entry in models.items():
            ranges = [c["seed_slope_range"] for c in cells
                      if c["test"] == test and c["model"] == model and c["seed_slope_range"]]
            spread = (f"[{f(min(r[0] for r in ranges))}, {f(max(r[1] for r in ranges))}]" if ranges else "–")
            own = sorted(entry["own_budget_law_slopes"])
            out.append(f"| {test} | {model} | {f(entry['measured_slope_median'])} | {f(entry['law_slope_median'])} | "
                       f"{f(own[len(own) // 2]) if own else '–'} | {spread} |")
    return out


def plan_classes(path: Path = PATH) -> list[str]:
    """The section's lines; a "not measured yet" line (also printed) with the commands when the record is missing."""
    record = load_json(path)
    if record is None:
        print(f"plan at 100 classes: not measured yet: {'; '.join(COMMANDS)}")
        return [f"{TITLE}: not measured yet: " + ", then ".join(f"`{c}`" for c in COMMANDS) + ".", ""]
    before, after = record["summary"][BEFORE], record["summary"][AFTER]
    target = next((s for s in record["sources"] if s["role"] == "target"), {})
    train = [s for s in record["sources"] if s["role"] == "train"]
    classes = ", ".join(str(c) for c in target.get("classes", []))
    out = [
        f"{TITLE}: every cell of `{target.get('path')}` (C = {classes}; {target.get('records')} run records; model × "
        "fraction × test, median log10 p over seeds) predicted with its own budget by the planner fitted on "
        + " and ".join(f"`{s['path']}` ({s['records']} records)" for s in train)
        + " only, then refitted on the many-class records themselves (leave one cell out). Cells within one unit "
        "of log10 p of the measured median:",
        "",
        "| cells | predicted from 10-class records | refit on the many-class records |",
        "|---|---|---|",
        f"| all | {_share(before['all'])} | {_share(after['all'])} |",
        f"| marked (q > 0) | {_share(before['marked_only'])} | {_share(after['marked_only'])} |",
        f"| unmarked (q = 0) | {_share(before['unmarked'])} | {_share(after['unmarked'])} |",
    ]
    for test in sorted(set(before["per_test"]) | set(after["per_test"])):
        none = {"cells": 0}
        out.append(f"| test `{test}` | {_share(before['per_test'].get(test, none))} | "
                   f"{_share(after['per_test'].get(test, none))} |")
    out += _slopes(record["class_dependence"])
    out += ["", f"`{record['command']}`; plot: " + link("benchmarks/results/plan_classes.png") + ".", ""]
    return out

"""Tables of the held-out suite from its per-run records: ``OUT/results.json`` and ``OUT/results.md``.

Per (pair, fraction): test accuracy and each test's log10 p (median [min, max] over seeds). Per fraction and
test, the claims summary: the suite's median (each pair counts once: the median of the pairs' medians), its
worst family, and the grid's medians (``results/fashion-mnist/results.json``: suspects trained by
``radioactive.train.fit``) next to them. For marked suspects the worst family is the one with the weakest
evidence (largest log10 p); for clean ones, the one closest to a false alarm (smallest log10 p).

Only the standard library: ``scripts/update_readme.py`` renders the README section with :func:`readme_lines`.

Usage:
    .venv/bin/python heldout/table.py [--out results/heldout] [--grid results/fashion-mnist]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TESTS = {  # record name -> label (the grid's record names where the test is the same)
    "whitebox": "white-box (lstsq)",
    "blackbox": "black-box margin, rank, DiD",
    "blackbox-margin-perm": "black-box margin, perm, DiD",
    "blackbox-loss-perm": "black-box loss, perm, DiD",
    "blackbox-margin-perm-nodid": "black-box margin, perm, no DiD",
    # the sealed suite's variants (heldout/sealed/suite.toml): the shipped reference bank instead of one cnn
    "blackbox-margin-perm-matched": "black-box margin, perm, bank matched",
    "blackbox-loss-perm-matched": "black-box loss, perm, bank matched",
    "blackbox-margin-perm-bank": "black-box margin, perm, bank mean",
}
GRID_MODELS = {  # the grid's row labels -> architecture and trainer
    "scratch-cnn": "cnn (the marker's architecture) · radioactive.train.fit",
    "scratch-resnet_narrow": "resnet_narrow · radioactive.train.fit",
    "linear_probe-marker": "linear probe on the marker's features · radioactive.train.fit",
}


def load_runs(folder: str | os.PathLike) -> list[dict[str, Any]]:
    """Every ``*.json`` record in ``folder`` (none when it does not exist)."""
    folder = Path(folder)
    return [json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))] if folder.is_dir() else []


def load_grid(folder: str | os.PathLike) -> list[dict[str, Any]]:
    """The grid's aggregated rows (``results.json``), or [] when it is missing."""
    path = Path(folder) / "results.json"
    return json.loads(path.read_text())["rows"] if path.is_file() else []


def _spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarise(runs: list[dict[str, Any]], *, config: dict[str, Any] | None = None,
              grid: list[dict[str, Any]] | None = None, alpha: float = 0.05) -> dict[str, Any]:
    """The tables as one JSON-able dict: ``rows`` per (pair, fraction) and ``claims`` per (fraction, test)."""
    if config is not None:
        alpha = config["detect"]["alpha"]
    threshold = math.log10(alpha)
    tests = [t for t in TESTS if any(t in r["log10_p"] for r in runs)]
    tests += sorted({t for r in runs for t in r["log10_p"]} - set(tests))
    order = {p["name"]: n for n, p in enumerate(config["pairs"])} if config else {}
    cells: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for run in runs:
        cells.setdefault((run["pair"], run["fraction"]), []).append(run)
    rows = []
    for (pair, fraction), mine in sorted(cells.items(), key=lambda kv: (order.get(kv[0][0], len(order)), kv[0])):
        first = mine[0]
        psnr = [r["psnr_min"] for r in mine if r["psnr_min"] is not None]
        row = {"pair": pair, "arch": first["arch"], "family": first["family"], "recipe": first["recipe"],
               "fraction": fraction, "seeds": sorted(r["seed"] for r in mine),
               "accuracy": _spread([r["test_accuracy"] for r in mine]),
               "psnr_min": min(psnr) if psnr else None, "log10_p": {}}
        for test in tests:
            values = [r["log10_p"][test] for r in mine if test in r["log10_p"]]
            if values:
                row["log10_p"][test] = {**_spread(values), "detected": sum(v <= threshold for v in values)}
        rows.append(row)
    claims = []
    grid_rows = {(g["model"], g["fraction"]): g for g in grid or []}
    for fraction in sorted({r["fraction"] for r in rows}):
        at = [r for r in rows if r["fraction"] == fraction]
        for test in tests:
            per_pair = {r["pair"]: r["log10_p"][test]["median"] for r in at if test in r["log10_p"]}
            if not per_pair:
                continue
            families: dict[str, list[float]] = {}
            for r in at:
                if r["pair"] in per_pair:
                    families.setdefault(r["family"], []).append(per_pair[r["pair"]])
            family_medians = {name: statistics.median(v) for name, v in families.items()}
            pick = min if fraction == 0 else max
            worst = pick(family_medians, key=family_medians.get)
            claims.append({
                "fraction": fraction, "test": test, "pairs": len(per_pair),
                "suite_median": statistics.median(per_pair.values()),
                "worst_family": worst, "worst_family_median": family_medians[worst],
                "grid": {model: grid_rows[(model, fraction)].get(f"{test}_log10_p_median")
                         for model in GRID_MODELS if (model, fraction) in grid_rows},
            })
    planned = config.get("planned_runs") if config else None
    rows_config = (config or {}).get("detect", {}).get("variants")
    return {"suite": config["name"] if config else "heldout", "alpha": alpha, "tests": tests,
            "default_test": rows_config[0][0] if rows_config else "blackbox-margin-perm",
            "runs": len(runs), "planned_runs": len(planned) if planned else None, "rows": rows, "claims": claims}


def _cell(spread: dict[str, float] | None, count: int | None = None) -> str:
    if spread is None:
        return "–"
    hits = f" {spread['detected']}/{count}" if count is not None and "detected" in spread else ""
    return f"{spread['median']:.2f} [{spread['min']:.2f}, {spread['max']:.2f}]{hits}"


def _number(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def readme_lines(summary: dict[str, Any]) -> list[str]:
    """The per-pair table, the claims table and the closing note, as Markdown lines."""
    tests, rows = summary["tests"], summary["rows"]
    out = ["| pair (architecture · recipe) | family | marked | seeds | test acc. | PSNR min | "
           + " | ".join(TESTS.get(t, t) for t in tests) + " |",
           "|---|---|---|---|---|---|" + "---|" * len(tests)]
    for row in rows:
        count = len(row["seeds"])
        out.append(f"| {row['arch']} · {row['recipe']} | {row['family']} | {100 * row['fraction']:g} % | {count} | "
                   f"{100 * row['accuracy']['median']:.2f} % | {_number(row['psnr_min'])} | "
                   + " | ".join(_cell(row["log10_p"].get(t), count) for t in tests) + " |")
    grid_models = [m for m in GRID_MODELS if any(m in c["grid"] for c in summary["claims"])]
    out += ["", "Claims, per fraction: the suite's median over pairs and its worst family (for clean suspects the one "
            "closest to a false alarm), next to the grid's medians (same tests; suspects trained by "
            "radioactive.train.fit).", "",
            "| marked | test | suite median | worst family | " + " | ".join(f"grid: {GRID_MODELS[m]}" for m in grid_models)
            + " |", "|---|---|---|---|" + "---|" * len(grid_models)]
    for claim in summary["claims"]:
        grid = [_number(claim["grid"].get(m)) for m in grid_models]
        out.append(f"| {100 * claim['fraction']:g} % | {TESTS.get(claim['test'], claim['test'])} | "
                   f"{claim['suite_median']:.2f} ({claim['pairs']} pairs) | {claim['worst_family']} "
                   f"{claim['worst_family_median']:.2f} | " + " | ".join(grid) + " |")
    note = closing_note(summary, default_test(summary))
    return out + ([""] + [note] if note else [])


def default_test(summary: dict[str, Any]) -> str:
    """The suite's headline test: its configuration's first ``[detect] variants`` row, else margin / perm / DiD."""
    return summary.get("default_test") or "blackbox-margin-perm"


def closing_note(summary: dict[str, Any], test: str = "blackbox-margin-perm", fraction: float = 0.10) -> str:
    """One sentence: the README's strongest test at 10 % on the suite (median, worst family) against the grid."""
    found = [c for c in summary["claims"] if c["test"] == test and abs(c["fraction"] - fraction) < 1e-9]
    if not found:
        return ""
    claim = found[0]
    grid = ", ".join(f"{GRID_MODELS[m].split(' ')[0]} {v:.2f}" for m, v in claim["grid"].items() if v is not None)
    return (f"At {100 * fraction:g} % marked, {TESTS.get(test, test)}: the suite's median log10 p is "
            f"{claim['suite_median']:.2f} and its worst family ({claim['worst_family']}) "
            f"{claim['worst_family_median']:.2f}" + (f", against the grid's {grid}." if grid else "."))


def write(out: str | os.PathLike, summary: dict[str, Any]) -> None:
    """``out/results.json`` and ``out/results.md`` (atomically: a temporary file renamed over each)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    planned = f" of {summary['planned_runs']}" if summary["planned_runs"] else ""
    text = "\n".join([f"# Held-out suite ({summary['runs']}{planned} runs)", "",
                      f"log10 p: median [min, max] over seeds, then seeds at or below log10 {summary['alpha']:g}.", ""]
                     + readme_lines(summary)) + "\n"
    for name, content in (("results.json", json.dumps(summary, indent=2) + "\n"), ("results.md", text)):
        tmp = out / f".{name}.tmp"
        tmp.write_text(content)
        os.replace(tmp, out / name)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / "results" / "heldout"))
    parser.add_argument("--grid", default=str(ROOT / "results" / "fashion-mnist"))
    args = parser.parse_args(argv)
    out = Path(args.out)
    config = json.loads((out / "config.json").read_text()) if (out / "config.json").is_file() else None
    write(out, summarise(load_runs(out / "runs"), config=config, grid=load_grid(args.grid)))


if __name__ == "__main__":
    main()

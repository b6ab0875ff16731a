"""Leave-one-out validation of `radioactive plan` on the committed Fashion-MNIST grid.

Every cell of the grid (model x fraction x test, median log10 p over its seeds) is predicted by the planner
fitted without it: the response of the cell's test family is fitted on the same model's runs at the other
fractions (its rank and perm verdicts share observations, so both leave together), and the prediction uses the
cell's own budget (classes, dimension, reference images, probes per class, K). A second pass leaves a whole
architecture/trainer out and predicts its cells from the other ones, pooled (what `plan` does for an
architecture it has not measured). It reads JSON only (results/fashion-mnist/runs/*.json), a minute or two.

Run:
    nice -n 19 .venv/bin/python benchmarks/bench_plan.py
Writes benchmarks/results/plan_validation.json and benchmarks/results/plan_validation.png.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

from radioactive._io import atomic_write_json, save_png, versions
from radioactive.plan import leave_one_out, load_observations, summarise

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def check_against_summary(rows: list[dict], source: Path) -> int:
    """How many cells' measured medians match the experiment's own results.json (they must all)."""
    path = source / "results.json"
    if not path.is_file():
        return 0
    summary = {(r["model"], float(r["fraction"])): r for r in json.loads(path.read_text())["rows"]}
    matched = 0
    for row in rows:
        committed = summary.get((row["model"], row["fraction"]), {}).get(f"{row['test']}_log10_p_median")
        if committed is not None:
            if abs(committed - row["measured"]) > 1e-9:
                raise SystemExit(f"measured median of {row['model']} {row['fraction']} {row['test']} is "
                                 f"{row['measured']}, results.json says {committed}")
            matched += 1
    return matched


def plot(passes: dict[str, list[dict]], summary: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tests = sorted({r["test"] for rows in passes.values() for r in rows})
    models = sorted({r["model"] for rows in passes.values() for r in rows})
    colours = {t: plt.get_cmap("tab10")(i) for i, t in enumerate(tests)}
    markers = dict(zip(models, "osD^v"))
    fig, axes = plt.subplots(1, len(passes), figsize=(6.2 * len(passes), 6.0), squeeze=False)
    for ax, (name, rows) in zip(axes[0], passes.items()):
        values = [v for r in rows for v in (r["measured"], r["predicted"])]
        low, high = math.floor(min(values)) - 0.5, 0.3
        ax.fill_between([low, high], [low - 1, high - 1], [low + 1, high + 1], color="0.9", label="±1 unit")
        ax.plot([low, high], [low, high], color="0.3", lw=1, label="y = x")
        for r in rows:
            ax.plot([r["measured"]] * 2, [r["predicted_p10"], r["predicted_p90"]], color=colours[r["test"]],
                    lw=0.6, alpha=0.35)
            ax.scatter(r["measured"], r["predicted"], s=26, marker=markers[r["model"]], linewidths=1.0,
                       facecolors="none" if r["extrapolated"] else colours[r["test"]], edgecolors=colours[r["test"]])
        share = summary[name]["all"]
        ax.set_title(f"{name}: {share['within_one']}/{share['cells']} cells within 1 unit "
                     f"({100 * share['fraction_within_one']:.0f} %)", fontsize=10)
        ax.set_xlim(low, high)
        ax.set_ylim(low, high)
        ax.set_xlabel("measured median log10 p (over seeds)")
        ax.set_ylabel("predicted median log10 p (bars: 10-90 %)")
    handles = [plt.Line2D([], [], color=colours[t], marker="o", ls="", label=t) for t in tests]
    handles += [plt.Line2D([], [], color="0.3", marker=markers[m], ls="", mfc="0.3", label=m) for m in models]
    handles += [plt.Line2D([], [], color="0.3", marker="o", ls="", mfc="none",
                           label="hollow: fraction outside the fitted range")]
    axes[0][-1].legend(handles=handles, fontsize=7, loc="upper left")
    fig.suptitle("radioactive plan: leave-one-out on the Fashion-MNIST grid (benchmarks/bench_plan.py)")
    fig.tight_layout()
    save_png(fig, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default=str(ROOT / "results" / "fashion-mnist"),
                        help="experiment output folder (default results/fashion-mnist)")
    parser.add_argument("--draws", type=int, default=400, help="simulated audits per prediction (400)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(RESULTS / "plan_validation.json"))
    args = parser.parse_args(argv)
    start = time.perf_counter()
    source = Path(args.source)
    observations = load_observations(source)
    passes = {"leave one cell out": leave_one_out(observations, draws=args.draws, seed=args.seed, by="cell"),
              "leave one architecture out": leave_one_out(observations, draws=args.draws, seed=args.seed,
                                                          by="model")}
    matched = check_against_summary(passes["leave one cell out"], source)
    summary = {name: summarise(rows) for name, rows in passes.items()}
    cell = summary["leave one cell out"]
    out = Path(args.out)
    record = {
        "benchmark": "plan_validation",
        "command": "nice -n 19 .venv/bin/python benchmarks/bench_plan.py " + " ".join(argv or sys.argv[1:]),
        "config": {"source": str(source.relative_to(ROOT)) if source.is_relative_to(ROOT) else str(source),
                   "draws": args.draws, "seed": args.seed, "cells": "model x fraction x recorded test",
                   "leave_one_cell_out": "fit on the same model's runs at the other fractions (rank and perm of one "
                                         "statistic share observations and leave together)",
                   "leave_one_architecture_out": "fit pooled on the other models' runs",
                   "response_model": "mean per-class effect a q^b per test family and model; run-to-run and "
                                     "class-to-class spreads proportional to it; noise from the test's exact null"},
        "versions": versions(),
        "runs": len({o.run_id for o in observations}),
        "measured_medians_checked_against_results_json": matched,
        "fraction_within_one": cell["all"]["fraction_within_one"],
        "cells_within_one": cell["all"]["within_one"],
        "cells": cell["all"]["cells"],
        "summary": summary,
        "cells_leave_one_cell_out": passes["leave one cell out"],
        "cells_leave_one_architecture_out": passes["leave one architecture out"],
        "seconds": round(time.perf_counter() - start, 1),
    }
    atomic_write_json(out, record)
    plot(passes, summary, out.with_suffix(".png"))
    for name, s in summary.items():
        print(f"{name}: {s['all']['within_one']}/{s['all']['cells']} cells within 1 unit of log10 p "
              f"({100 * s['all']['fraction_within_one']:.1f} %); marked only {100 * s['marked_only']['fraction_within_one']:.1f} %; "
              f"median |error| {s['all']['median_abs_error']:.2f}; measured inside the 10-90 % band: "
              f"{s['all']['inside_band']}/{s['all']['cells']}")
    print(f"wrote {out} and {out.with_suffix('.png')} ({record['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

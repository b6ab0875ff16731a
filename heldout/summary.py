"""The held-out suite's one-line answer (issue 25, acceptance 3): ``benchmarks/results/heldout_summary.json``.

For the default test (the sealed suite's first ``[detect] variants`` row, i.e. what ``radioactive detect``
does with the shipped reference bank), the median log10 p over every sealed run (pairs x seeds) at each marked
fraction, the same on the open suite's suspects (``benchmarks/results/transfer_levers/power.json``: its deep
pairs, seeds 0-2, the lever of the same name), the accuracy cost (median over pairs of the clean-minus-marked
test accuracy, seed by seed), the rate at which clean suspects are flagged, and the calibration record.

Only the standard library: it reads the records the suites wrote.

    .venv/bin/python heldout/summary.py [--sealed results/heldout-sealed] [--open-power PATH] [--out PATH]
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
OPEN_LEVERS = {  # sealed record name -> the transfer-lever name of the same test (bench_transfer_levers.py)
    "blackbox-margin-perm-matched": "matched/margin",
    "blackbox-loss-perm-matched": "matched/loss",
    "blackbox-margin-perm-bank": "mean-bank/margin",
    "blackbox-margin-perm-nodid": "none/margin",
}
CALIBRATION = "benchmarks/results/transfer_levers/calibration.json"


def _key(fraction: float) -> str:
    return f"{fraction:g}" if fraction else "0.0"


def sealed_half(runs: list[dict[str, Any]], test: str, alpha: float) -> dict[str, Any]:
    """Median log10 p of ``test`` per fraction over every run, detections, and the accuracy cost per fraction."""
    by_fraction: dict[float, list[float]] = {}
    accuracy: dict[tuple[str, int, float], float] = {}
    for run in runs:
        if test in run["log10_p"]:
            by_fraction.setdefault(run["fraction"], []).append(run["log10_p"][test])
        accuracy[(run["pair"], run["seed"], run["fraction"])] = run["test_accuracy"]
    limit = math.log10(alpha)
    cost: dict[str, float] = {}
    for fraction in sorted(f for f in by_fraction if f):
        drops = [accuracy[(p, s, 0.0)] - acc for (p, s, f), acc in accuracy.items()
                 if f == fraction and (p, s, 0.0) in accuracy]
        if drops:
            cost[_key(fraction)] = statistics.median(drops)
    return {"median": {_key(f): statistics.median(v) for f, v in sorted(by_fraction.items())},
            "runs": {_key(f): len(v) for f, v in sorted(by_fraction.items())},
            "detected": {_key(f): sum(x <= limit for x in v) for f, v in sorted(by_fraction.items())},
            "accuracy_cost": cost}


def open_half(power: dict[str, Any], lever: str, probes: str = "500") -> dict[str, Any]:
    """Median log10 p of ``lever`` per fraction over the open suite's measured suspects."""
    cells = power["table"][probes][lever]
    measured = [r for r in power.get("records", []) if probes in r["log10_p"]]  # the suspects behind this count
    pairs = sorted({r["pair"] for r in measured}) if measured else power["pairs"]
    seeds = sorted({r["seed"] for r in measured}) if measured else power["seeds"]
    return {"median": {_key(float(f)): c["median"] for f, c in cells.items()},
            "runs": {_key(float(f)): c["n"] for f, c in cells.items()}, "pairs": pairs,
            "seeds": seeds, "probes": int(probes),
            "queries": int(probes) * (power["num_controls"] + 1)}


def build(sealed_dir: Path, open_power: Path) -> dict[str, Any]:
    config = json.loads((sealed_dir / "config.json").read_text())
    test = config["detect"]["variants"][0][0]
    runs = [json.loads(p.read_text()) for p in sorted((sealed_dir / "runs").glob("*.json"))]
    sealed = sealed_half(runs, test, config["detect"]["alpha"])
    power = json.loads(open_power.read_text()) if open_power.is_file() else None
    opened = open_half(power, OPEN_LEVERS[test]) if power and test in OPEN_LEVERS else None
    planned = len(config.get("planned_runs") or [])
    return {
        "test": test, "sealed": sealed["median"],
        "open": opened["median"] if opened else {},
        "calibration": CALIBRATION,
        "details": {
            "sealed": {**sealed, "suite": "heldout/sealed/suite.toml", "planned_runs": planned,
                       "pairs": [p["name"] for p in config["pairs"]], "alpha": config["detect"]["alpha"],
                       "probes": config["detect"]["probes"],
                       "queries": config["detect"]["probes"] * (config["detect"]["num_controls"] + 1)},
            "open": opened and {**opened, "record": str(open_power.relative_to(ROOT))
                                if open_power.is_relative_to(ROOT) else str(open_power)},
        },
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sealed", default=str(ROOT / "results" / "heldout-sealed"))
    parser.add_argument("--open-power", default=str(ROOT / "benchmarks" / "results" / "transfer_levers" / "power.json"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "heldout_summary.json"))
    args = parser.parse_args(argv)
    summary = build(Path(args.sealed), Path(args.open_power))
    out = Path(args.out)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(summary, indent=2) + "\n")
    os.replace(tmp, out)
    print(json.dumps({k: summary[k] for k in ("test", "sealed", "open")}))


if __name__ == "__main__":
    main()

"""Fuzz the four parsers of untrusted input with hypothesis, >= 10,000 cases each, and write JSON.

A crash is any exception other than a ``radioactive.errors`` type (or a failed output invariant). Targets and
strategies live in tests/helpers/fuzz_targets.py (the test suite runs a short version of the same).

    flock /tmp/radioactive-heavy.lock .venv/bin/python benchmarks/bench_fuzz.py --cases 10000
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from helpers.fuzz_targets import TARGETS  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402

from radioactive._io import atomic_write_json, versions  # noqa: E402
from radioactive.errors import RadioactiveError  # noqa: E402


def fuzz(name: str, cases: int, seed: int) -> dict:
    target, strategy = TARGETS[name]
    counts = {"cases": 0, "accepted": 0, "typed_errors": 0, "crashes": 0}
    error_types: dict[str, int] = {}
    crashes: list[dict] = []

    @settings(max_examples=cases, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(strategy)
    def run(case):
        counts["cases"] += 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                target(case)
                counts["accepted"] += 1
            except RadioactiveError as exc:
                counts["typed_errors"] += 1
                error_types[type(exc).__name__] = error_types.get(type(exc).__name__, 0) + 1
            except Exception as exc:  # noqa: BLE001 - a crash is what we count
                counts["crashes"] += 1
                if len(crashes) < 20:
                    crashes.append({"type": type(exc).__name__, "message": str(exc)[:300],
                                    "input": repr(case)[:300], "where": traceback.format_exc().splitlines()[-3:]})

    started = time.monotonic()
    import random

    random.seed(seed)
    run()
    return {**counts, "error_types": error_types, "crash_examples": crashes,
            "seconds": round(time.monotonic() - started, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=10_000, help="examples per target")
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(HERE / "results" / "fuzz.json"))
    args = parser.parse_args()
    results = {}
    for name in args.targets.split(","):
        results[name] = fuzz(name, args.cases, args.seed)
        print(f"{name}: {results[name]['cases']} cases, {results[name]['typed_errors']} typed errors, "
              f"{results[name]['accepted']} accepted, {results[name]['crashes']} crashes, "
              f"{results[name]['seconds']} s", flush=True)
    report = {"benchmark": "fuzz", "cases_per_target": args.cases, "targets": results,
              "total_crashes": sum(r["crashes"] for r in results.values()), "versions": versions(),
              "command": " ".join(sys.argv)}
    atomic_write_json(args.out, report)
    return 1 if report["total_crashes"] else 0


if __name__ == "__main__":
    sys.exit(main())

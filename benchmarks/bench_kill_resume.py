"""SIGKILL ``radioactive mark`` at random moments, 20 trials: each rerun must complete with outputs
byte-identical to an uninterrupted run, nothing lost or duplicated. Writes JSON.

    flock /tmp/radioactive-heavy.lock .venv/bin/python benchmarks/bench_kill_resume.py --trials 20
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from helpers.kill_resume import command, make_setup, trial  # noqa: E402

from radioactive._io import atomic_write_json, versions  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--per-class", type=int, default=10, help="PNG images per class (plus one JPEG)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(HERE / "results" / "kill_resume.json"))
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="radioactive-kill-") as folder:
        root = Path(folder)
        key, src = make_setup(root, per_class=args.per_class)
        reference = root / "reference"
        started = time.monotonic()
        subprocess.run(command(key, src, reference), check=True, capture_output=True)
        duration = time.monotonic() - started
        records = []
        for index in range(args.trials):
            delay = rng.uniform(0.05, 1.0) * duration  # from start-up to the last writes
            record = trial(key, src, reference, root / f"trial{index:02d}", delay, rng)
            records.append(record)
            print(f"trial {index + 1}: kill after {record['delay_s']} s ({record['kills']} kill(s), "
                  f"{record['rows_at_first_kill']} rows done), rerun {'ok' if record['ok'] else record['problems']}",
                  flush=True)
    report = {
        "benchmark": "kill_resume", "trials": args.trials, "ok": sum(r["ok"] for r in records),
        "failed": sum(not r["ok"] for r in records), "killed_mid_run": sum(r["kills"] > 0 for r in records),
        "uninterrupted_run_s": round(duration, 2), "images": records[0]["rows_total"] if records else 0,
        "records": records, "versions": versions(), "command": " ".join(sys.argv),
    }
    atomic_write_json(args.out, report)
    print(f"{report['ok']}/{args.trials} trials identical to the uninterrupted run; {report['killed_mid_run']} killed mid-run")
    return 0 if report["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

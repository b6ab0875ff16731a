"""Time `radioactive demo` with its defaults and record it in benchmarks/results/demo.json.

Run on a quiet machine (heavy jobs one at a time):
    flock /tmp/radioactive-heavy.lock .venv/bin/python benchmarks/bench_demo.py [--threads 2] [--fresh]

``--fresh`` removes the demo's caches (marked images, control markings) first, so the time is that of a
first run after set-up. ``--seeds 0 1 2`` runs the demo once per seed (fresh) and writes
``benchmarks/results/demo_seeds.json`` instead (the check that the suspect is detected and the control is not
on every seed). The time from a fresh clone, set-up included, is ``benchmarks/bench_demo_fresh.sh``'s; the marking network itself is the one shipped with the package (radioactive.zoo.default_marker).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench-demo"))
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--fresh", action="store_true", help="start without cached marked images")
    parser.add_argument("--result", default=None,
                        help="JSON written (default benchmarks/results/demo.json, or demo_seeds.json with --seeds)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="run once per seed (fresh each time)")
    args = parser.parse_args()

    import torch

    from radioactive._io import atomic_write_json, versions
    from radioactive.demo import demo_config, format_side_by_side, run_demo

    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    if args.fresh and out.exists():
        shutil.rmtree(out)
    stages: list[tuple[float, str]] = []
    start = time.perf_counter()

    def progress(line: str) -> None:
        stages.append((time.perf_counter() - start, line))
        print(f"[{stages[-1][0]:6.0f} s] {line}", file=sys.stderr, flush=True)

    if args.seeds:
        return run_seeds(args, out)
    args.result = args.result or str(ROOT / "benchmarks" / "results" / "demo.json")
    config = demo_config()
    result = run_demo(out, config=config, progress=progress)
    wall = time.perf_counter() - start
    print(format_side_by_side(result))
    record = {
        "benchmark": "demo",
        "command": "radioactive demo (defaults)",
        "wall_time_s": wall,
        "fresh": args.fresh,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "stages": [{"at_s": at, "stage": line} for at, line in stages],
        "runs": {name: {"seconds": rec["seconds"], "test_accuracy": rec["test_accuracy"],
                        "log10_p": rec["log10_p"], "marked_images": rec["marked_images"],
                        "psnr_min": rec["psnr_min"]} for name, rec in result.records.items()},
        "config": config.to_dict(),
        "versions": versions(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    atomic_write_json(args.result, record)
    print(f"demo wall time {wall:.0f} s; recorded in {args.result}")
    return 0


def run_seeds(args: argparse.Namespace, out: Path) -> int:
    """The demo with its defaults on each seed, fresh; every test's log10 p, the decision and the time."""
    import torch

    from radioactive._io import atomic_write_json, versions
    from radioactive.demo import demo_config, format_side_by_side, run_demo

    runs = []
    for seed in args.seeds:
        folder = out / f"seed-{seed}"
        if folder.exists():
            shutil.rmtree(folder)
        start = time.perf_counter()
        config = demo_config(seed=seed)
        result = run_demo(folder, config=config, progress=lambda line: print(line, file=sys.stderr, flush=True))
        wall = time.perf_counter() - start
        print(format_side_by_side(result), flush=True)
        alpha = config.detect.alpha
        runs.append({
            "seed": seed,
            "wall_time_s": wall,
            "key_fingerprint": result.records["suspect"]["key_fingerprint"],
            "models": {name: {"test_accuracy": rec["test_accuracy"], "log10_p": rec["log10_p"],
                              "marked_images": rec["marked_images"], "psnr_min": rec["psnr_min"],
                              "detected": rec["log10_p"]["blackbox"] <= math.log10(alpha)}
                       for name, rec in result.records.items()},
        })
    headline = [(r["models"]["suspect"]["log10_p"]["blackbox"], r["models"]["control"]["log10_p"]["blackbox"])
                for r in runs]
    record = {
        "benchmark": "demo-seeds",
        "command": "benchmarks/bench_demo.py --seeds " + " ".join(map(str, args.seeds)),
        "config": demo_config().to_dict(),
        "criterion": "suspect log10 p <= -3 and control log10 p > log10(0.05) on the headline test, every seed",
        "all_seeds_pass": all(s <= -3 and c > math.log10(0.05) for s, c in headline),
        "runs": runs,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "versions": versions(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    result_path = args.result or str(ROOT / "benchmarks" / "results" / "demo_seeds.json")
    atomic_write_json(result_path, record)
    print(f"recorded in {result_path}; all seeds pass: {record['all_seeds_pass']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

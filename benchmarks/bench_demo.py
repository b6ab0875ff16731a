"""Time `radioactive demo` with its defaults and record it in benchmarks/results/demo.json.

Run on a quiet machine (heavy jobs one at a time):
    flock /tmp/radioactive-heavy.lock .venv/bin/python benchmarks/bench_demo.py [--threads 2] [--fresh]

``--fresh`` removes the demo's caches (marked images, control markings) first, so the time is that of a
first run after set-up; the marking network itself is the one shipped with the package (radioactive.zoo.default_marker).
"""

from __future__ import annotations

import argparse
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
    parser.add_argument("--result", default=str(ROOT / "benchmarks" / "results" / "demo.json"))
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


if __name__ == "__main__":
    sys.exit(main())

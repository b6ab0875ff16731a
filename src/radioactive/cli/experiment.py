"""``radioactive experiment CONFIG``: run (or resume) a grid of mark -> train -> detect runs.

The library is imported inside :func:`run`, as in every subcommand: ``radioactive --help`` builds every
parser and should not pay for torch.
"""

from __future__ import annotations

import argparse
import fcntl
import sys
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "experiment",
        help="run a grid (fraction marked x training mode x architecture x seed) and tabulate the tests",
        description="Run every run of an experiment file (TOML or YAML) that is not done yet: mark, train a "
        "suspect, run the white-box and black-box tests. Each run is cached under OUT/runs by the hash of its "
        "configuration, so an interrupted grid resumes. Writes OUT/results.md, OUT/results.json and "
        "OUT/plot.png.",
    )
    parser.add_argument("config", help="experiment file (.toml, .yaml)")
    parser.add_argument("--out", default=None, help="output folder (default runs/<name>)")
    parser.add_argument("--dry-run", action="store_true", help="validate the file and list the runs; run nothing")
    parser.add_argument("--limit", type=int, default=None, help="stop after this many new runs")
    parser.add_argument("--aggregate-only", action="store_true", help="only rebuild the table from finished runs")
    parser.add_argument("--device", default=None, help="override the file's device (auto, cpu, cuda, ...)")
    parser.add_argument("--lock", default=None,
                        help="hold an exclusive lock on this file during each run and release it between runs "
                        "(shared machines: lets other heavy jobs interleave)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..experiment import aggregate, dry_run, load_config, load_records, run_experiment
    from ..zoo import resolve_device

    overrides = {"device": str(resolve_device(args.device))} if args.device else None
    config = load_config(args.config, overrides)
    if args.dry_run:
        print("\n".join(dry_run(config)))
        return 0
    out = Path(args.out or Path("runs") / config.name)
    if args.aggregate_only:
        records = load_records(out)
        aggregate(records, out, alpha=config.detect.alpha)
        print(f"{len(records)} runs aggregated into {out / 'results.md'}")
        return 0

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    if args.lock:
        records = _run_with_lock(config, out, args.lock, progress, args.limit)
    else:
        records = run_experiment(config, out, progress=progress, limit=args.limit)
    print((out / "results.md").read_text())
    print(f"{len(records)} runs in {out}; table {out / 'results.md'}, plot {out / 'plot.png'}")
    return 0


def _run_with_lock(config, out, lock_path, progress, limit):
    from ..experiment import expand_grid, run_experiment

    runs = expand_grid(config)
    done_new = 0
    while True:
        remaining = [r for r in runs if not (out / "runs" / f"{r.run_id}.json").is_file()]
        if not remaining or (limit is not None and done_new >= limit):
            return run_experiment(config, out, limit=0)
        with open(lock_path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                run_experiment(config, out, progress=progress, limit=1)
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        done_new += 1

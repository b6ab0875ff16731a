"""Run (or resume) the robustness table: the Fashion-MNIST experiment under re-encodings of the published
images and changes of the trained suspect (:mod:`radioactive.experiment.robustness`, ``configs/robustness.toml``).

Usage:
    .venv/bin/python benchmarks/run_robustness.py configs/robustness.toml --out results/robustness
        [--lock FILE] [--limit N] [--device cpu] [--dry-run] [--table-only]

The full run (heavy: hold the shared lock; it is taken around each run only, so other jobs interleave):
    nice -n 10 .venv/bin/python benchmarks/run_robustness.py configs/robustness.toml --out results/robustness \\
        --lock /tmp/radioactive-heavy.lock
then ``.venv/bin/python scripts/update_readme.py`` renders the README table from results/robustness/results.json.

Measured time on this project's 2 CPU cores (session 7, the job at nice 10 with light work beside it): about
4.5-5 h for 108 runs (8 treatments, the four of (a) under two markings, x 3 fractions x 3 seeds):
  - 60 suspect trainings (none and the 3 re-encodings x 2 markings x 3 fractions x 3 seeds, less the 12 0 %
    jpeg-aug controls, which publish the plain 0 % images and read that suspect) at ~170-200 s    ~ 3.2 h
  - model treatments on the shared suspect, 9 x (fine-tune 2 epochs ~130 s, distill a resnet_narrow student
    3 epochs ~160 s, prune and quantize ~20 s each: the tests)                                   ~ 0.8 h
  - marking the 5,500 training images and the 500 probes x 21 carrier sets, per seed and marking; the
    auditor's clean reference cnn (once); the tests (~20 s a run)                               ~ 0.7 h
An interrupted run resumes (records under OUT/runs are skipped; marked images, probes and the reference
model are cached under OUT/cache, and so is every trained suspect, so a resumed run does not train again).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import sys
from collections.abc import Iterator
from pathlib import Path

from radioactive.experiment.aggregate import load_records
from radioactive.experiment.robustness import dry_run_robustness, load_robustness, run_robustness, summarise


@contextlib.contextmanager
def exclusive(path: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing) while the block runs."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", help="robustness file (.toml, .yaml), e.g. configs/robustness.toml")
    parser.add_argument("--out", default="results/robustness", help="output folder (default results/robustness)")
    parser.add_argument("--lock", default=None, help="hold an exclusive lock on this file during each run")
    parser.add_argument("--limit", type=int, default=None, help="stop after this many new runs")
    parser.add_argument("--device", default=None, help="override the file's device (cpu, cuda, auto)")
    parser.add_argument("--dry-run", action="store_true", help="validate the file and list the runs; run nothing")
    parser.add_argument("--table-only", action="store_true", help="only rebuild OUT/results.{json,md} from the records")
    args = parser.parse_args(argv)

    config = load_robustness(args.config, {"device": args.device} if args.device else None)
    if args.dry_run:
        print("\n".join(dry_run_robustness(config)))
        return 0
    out = Path(args.out)
    if args.table_only:
        summary = summarise(config, load_records(out), out)
        print(f"{summary['runs']} of {summary['planned']} runs summarised into {out / 'results.md'}")
        return 0
    guard = (lambda: exclusive(args.lock)) if args.lock else None
    records = run_robustness(config, out, progress=lambda line: print(line, file=sys.stderr, flush=True),
                             limit=args.limit, guard=guard)
    print((out / "results.md").read_text())
    print(f"{len(records)} runs in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

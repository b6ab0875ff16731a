"""Regenerate the README's headline table and docs/results.md from the committed records.

Usage:
    .venv/bin/python scripts/update_readme.py           # rewrite README.md's results block and docs/results.md
    .venv/bin/python scripts/update_readme.py --check   # exit 1 when either differs from what the records give

Every number in both comes from benchmarks/results/*.json, the committed experiment outputs
results/fashion-mnist/{results,runs,config}.json and results/fashion-mnist-converged/{...}.json, the held-out
suite's records results/heldout/runs/*.json (summarised by heldout/table.py, which this script runs:
results/heldout/results.{json,md} are rewritten too, except under --check), or the robustness table's
results/robustness/results.json. The sections live in scripts/results_tables/, one module each.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from results_tables import grids, suites  # noqa: E402
from results_tables.common import CONVERGED, GRID, HELDOUT, ROOT, rel  # noqa: E402
from results_tables.documents import BEGIN, END, render, stale  # noqa: E402
from results_tables.grids import grid  # noqa: E402
from results_tables.headline import headline  # noqa: E402
from results_tables.robustness import treatments  # noqa: E402

__all__ = ["BEGIN", "CONVERGED", "END", "GRID", "HELDOUT", "ROOT", "converged", "grid", "headline", "heldout",
           "main", "render", "stale", "treatments"]


def converged() -> list[str]:
    """The converged grid from this module's ``CONVERGED`` (tests point it elsewhere)."""
    return grids.converged(CONVERGED)


def heldout(folder: Path = HELDOUT, *, write: bool = True) -> list[str]:
    """The held-out suite's section (rewrites ``folder/results.{json,md}`` unless ``write`` is False)."""
    return suites.heldout(folder, write=write)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 when README.md or docs/results.md differs from the records")
    args = parser.parse_args(argv)
    texts = render(write=not args.check)
    changed = stale(texts)
    if args.check:
        for path in changed:
            print(f"{rel(path)} differs from what the records give: run scripts/update_readme.py")
        return 1 if changed else 0
    for path in changed:
        path.write_text(texts[path])
        print(f"wrote {rel(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

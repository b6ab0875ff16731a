"""The resumable loop shared by the grid (:func:`radioactive.experiment.run_experiment`) and the robustness table
(:func:`radioactive.experiment.robustness.run_robustness`): one JSON record per run, written atomically as soon
as the run ends, read back instead of rerun when it exists."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._io import atomic_write_json

__all__ = ["Job", "run_pending"]

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Job:
    """One run: where its record lives, how it is named in progress lines, and how to make its record."""

    path: Path
    label: str
    run: Callable[[], dict[str, Any]]


def run_pending(
    jobs: Sequence[Job],
    *,
    progress: Progress | None = None,
    limit: int | None = None,
    guard: Callable[[], AbstractContextManager] | None = None,
) -> list[dict[str, Any]]:
    """The records of ``jobs`` in order: each read from its file when it exists, else made and written.

    ``limit`` stops after that many new runs (the records so far are returned); ``guard()`` is entered around
    each new run (a lock on a shared machine). Progress lines are ``"[n/N] label: cached"`` or the new run's
    accuracy, log10 p per test and seconds.
    """
    records: list[dict[str, Any]] = []
    done_new = 0
    for number, job in enumerate(jobs, 1):
        label = f"[{number}/{len(jobs)}] {job.label}"
        if job.path.is_file():
            records.append(json.loads(job.path.read_text()))
            if progress:
                progress(f"{label}: cached")
            continue
        if limit is not None and done_new >= limit:
            break
        with (guard or nullcontext)():
            record = job.run()
        atomic_write_json(job.path, record)
        records.append(record)
        done_new += 1
        if progress:
            shown = ", ".join(f"{k} log10 p {v:.2f}" for k, v in record["log10_p"].items())
            progress(f"{label}: accuracy {record['test_accuracy']:.4f}, {shown} ({record['seconds']['total']:.0f} s)")
    return records

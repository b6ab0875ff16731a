"""The one resumable run loop the grid and the robustness table share (issue 26 item 7f): a record per run,
written as soon as it ends, read back instead of rerun; ``limit`` and ``guard`` as both runners use them."""

import contextlib
import json

import radioactive.experiment.robustness as robustness
import radioactive.experiment.run as run
from radioactive.experiment.resume import Job, run_pending


def _record(value):
    return {"log10_p": {"whitebox": -value - 1.0}, "test_accuracy": 0.5, "seconds": {"total": 1.0}, "value": value}


def test_runs_once_resumes_from_records_and_stops_at_the_limit(tmp_path):
    made, guarded, lines = [], [], []

    @contextlib.contextmanager
    def guard():
        guarded.append("in")
        yield

    def job(i):
        def make():
            made.append(i)
            return _record(i)
        return Job(tmp_path / "runs" / f"{i}.json", f"run {i}", make)

    jobs = [job(i) for i in range(4)]
    assert [r["value"] for r in run_pending(jobs, limit=2, guard=guard, progress=lines.append)] == [0, 1]
    assert made == [0, 1] and guarded == ["in", "in"] and json.loads((tmp_path / "runs" / "1.json").read_text())["value"] == 1
    assert lines[0] == "[1/4] run 0: accuracy 0.5000, whitebox log10 p -1.00 (1 s)"
    records = run_pending(jobs, progress=lines.append)
    assert [r["value"] for r in records] == [0, 1, 2, 3] and made == [0, 1, 2, 3]  # the first two read back
    assert lines[2:4] == ["[1/4] run 0: cached", "[2/4] run 1: cached"]


def test_the_grid_and_the_robustness_table_share_the_loop():
    assert run.run_pending is run_pending and robustness.run_pending is run_pending

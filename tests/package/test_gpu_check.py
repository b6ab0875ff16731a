"""``benchmarks/gpu_check.sh --dry``: the prepared GPU check runs end to end on CPU at toy sizes and writes
its JSON (one file per step, a summary, a log), so a session that is lent a GPU can run it as it is."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
STEPS = ("pytest", "throughput", "torchrun", "whitebox")


@pytest.mark.slow
def test_dry_run_writes_every_step_and_passes(tmp_path):
    out = tmp_path / "gpu"
    env = dict(os.environ, PYTHON=sys.executable)
    done = subprocess.run(["bash", str(SCRIPT), str(out), "--dry"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    log = (out / "log.txt").read_text() if (out / "log.txt").is_file() else ""
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:] + log[-4000:]
    assert sorted(p.name for p in out.iterdir()) == sorted([*(f"{s}.json" for s in STEPS), "summary.json", "log.txt"])

    summary = json.loads((out / "summary.json").read_text())
    assert summary["dry"] is True and summary["passed"] is True
    assert set(summary["steps"]) == set(STEPS)
    for name, step in summary["steps"].items():
        assert step["passed"] and step["file"] == f"{name}.json" and step["seconds"] > 0, (name, step)
    assert {"torch", "radioactive", "python"} <= set(summary["versions"])

    records = {name: json.loads((out / f"{name}.json").read_text()) for name in STEPS}
    assert all(record["dry"] is True and record["step"] == name for name, record in records.items())
    throughput = records["throughput"]
    assert set(throughput["precisions"]) == {"fp32", "tf32", "bf16"}
    for row in throughput["precisions"].values():
        for field in ("images_per_second", "image_steps_per_second", "limit_image_steps_per_second",
                      "fraction_of_limit", "psnr_min", "mark_reported_cosine_mean"):
            assert row[field] > 0, field
        assert row["psnr_min"] >= 40
    torchrun = records["torchrun"]
    assert torchrun["runs"]["two_processes"]["exit_status"] == 0
    same = torchrun["two_vs_one_process"]
    assert same["identical_files"] == same["files"] > 0 and same["manifest_rows_identical"]
    whitebox = records["whitebox"]
    assert whitebox["reference_images"] == 200 and whitebox["cpu_agreement"]["max_abs_row_difference"] == 0
    assert records["pytest"]["exit_status"] == 0


def test_usage_errors():
    done = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "usage" in done.stderr
    done = subprocess.run(["bash", str(SCRIPT), "/tmp/unused", "--wet"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "usage" in done.stderr

"""SIGKILL ``radioactive mark`` at random moments, rerun it, and compare with an uninterrupted run.

Shared by tests/marking/test_robustness_mark.py (a couple of trials) and benchmarks/bench_kill_resume.py (20).
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from helpers.tiny import save_tiny_marker, tiny_spec, write_class_tree
from radioactive._io import sha256_file
from radioactive.cli import main
from radioactive.manifest import VOLATILE_FILES

VOLATILE = set(VOLATILE_FILES)  # run record (times), the lock file, the stat cache (inodes, times)


def make_setup(root: Path, per_class: int = 10, *, tree_seed: int = 1) -> tuple[Path, Path]:
    """A marker (3 classes, 16 x 16, seed 0), a key (``keygen --seed 3``) and a small mixed PNG/JPEG class tree
    under ``root/src`` (see :func:`helpers.tiny.write_class_tree`); returns (key, src)."""
    root.mkdir(parents=True, exist_ok=True)
    save_tiny_marker(root / "marker.safetensors", tiny_spec(3, 16))
    key = root / "key.safetensors"
    if not key.exists():
        assert main(["keygen", "--marker", str(root / "marker.safetensors"), "--out", str(key), "--seed", "3"]) == 0
    return key, write_class_tree(root / "src", per_class=per_class, seed=tree_seed)


def command(key: Path, src: Path, out: Path, steps: int = 6) -> list[str]:
    return [sys.executable, "-m", "radioactive", "mark", "--key", str(key), "--data", str(src), "--fraction", "0.7",
            "--out", str(out), "--steps", str(steps), "--batch-size", "3", "--no-progress"]


def snapshot(out: Path) -> dict[str, bytes]:
    """Every file's bytes except the volatile ones; the manifest as its sorted rows."""
    files = {}
    for path in sorted(out.rglob("*")):
        rel = path.relative_to(out).as_posix()
        if path.is_file() and rel not in VOLATILE:
            files[rel] = path.read_bytes()
    return files


def manifest_rows(out: Path) -> list[str]:
    path = out / "manifest.jsonl"
    return path.read_text().splitlines() if path.is_file() else []


def trial(key: Path, src: Path, reference: Path, out: Path, delay: float, rng: random.Random) -> dict:
    """Kill after ``delay`` seconds (then maybe once more), rerun, compare. Returns the trial's record."""
    started = time.monotonic()
    process = subprocess.Popen(command(key, src, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kills = 0
    for attempt, wait in enumerate((delay, rng.uniform(0, delay))):
        try:
            process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            process.wait()
            kills += 1
        rows_at_kill = manifest_rows(out)
        if attempt == 0 and kills == 1 and rng.random() < 0.5:  # sometimes kill the first resume too
            process = subprocess.Popen(command(key, src, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            continue
        break
    before = manifest_rows(out)
    rerun = subprocess.run(command(key, src, out), capture_output=True, text=True, timeout=600)
    after = manifest_rows(out)
    expected, got = snapshot(reference), snapshot(out)
    sources = [json.loads(line)["source"] for line in after]
    problems = []
    if rerun.returncode != 0:
        problems.append(f"rerun exited {rerun.returncode}: {rerun.stderr[-300:]}")
    if after[: len(before)] != before:
        problems.append("rows written before the kill changed")
    if len(sources) != len(set(sources)):
        problems.append("duplicate manifest rows")
    if sorted(after) != sorted(manifest_rows(reference)):
        problems.append("manifest rows differ from the uninterrupted run")
    missing, extra = sorted(expected.keys() - got.keys()), sorted(got.keys() - expected.keys())
    if missing or extra:
        problems.append(f"files missing {missing[:5]} extra {extra[:5]}")
    differ = sorted(name for name in expected.keys() & got.keys() if name != "manifest.jsonl" and expected[name] != got[name])
    if differ:
        problems.append(f"files differ from the uninterrupted run: {differ[:5]}")
    for line in after:
        row = json.loads(line)
        if row.get("output") and sha256_file(out / row["output"]) != row["output_sha256"]:
            problems.append(f"{row['output']} does not match its manifest hash")
    return {"delay_s": round(delay, 3), "kills": kills, "rows_at_first_kill": len(rows_at_kill),
            "rows_before_rerun": len(before), "rows_total": len(after), "ok": not problems, "problems": problems,
            "seconds": round(time.monotonic() - started, 2)}

"""``radioactive mark`` under SIGKILL and concurrent runs (benchmarks/bench_kill_resume.py runs 20 trials)."""

from __future__ import annotations

import random
import subprocess
import time

import pytest
from helpers.kill_resume import command, make_setup, snapshot, trial


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("mark")
    key, src = make_setup(root, per_class=4)
    reference = root / "reference"
    started = time.monotonic()
    subprocess.run(command(key, src, reference), check=True, capture_output=True, timeout=300)
    return root, key, src, reference, time.monotonic() - started


def test_rerun_of_a_finished_run_changes_nothing(prepared):
    root, key, src, reference, _ = prepared
    before = snapshot(reference)
    assert subprocess.run(command(key, src, reference), capture_output=True, timeout=300).returncode == 0
    assert snapshot(reference) == before


@pytest.mark.parametrize("fraction", [0.25, 0.55])
def test_sigkill_then_resume_is_byte_identical(prepared, fraction):
    root, key, src, reference, duration = prepared
    rng = random.Random(int(fraction * 100))
    record = trial(key, src, reference, root / f"killed{fraction}", duration * fraction, rng)
    assert record["ok"], record
    assert record["kills"] >= 1


def test_second_concurrent_run_is_refused_naming_the_holder(prepared):
    root, key, src, _, _ = prepared
    out = root / "concurrent"
    first = subprocess.Popen(command(key, src, out, steps=200), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not (out / ".radioactive-mark.lock").is_file() or not (out / ".radioactive-mark.lock").read_text():
            assert time.monotonic() < deadline and first.poll() is None
            time.sleep(0.05)
        second = subprocess.run(command(key, src, out), capture_output=True, text=True, timeout=120)
        assert second.returncode == 2
        assert f"pid {first.pid}" in second.stderr and "Traceback" not in second.stderr
    finally:
        first.kill()
        first.wait()

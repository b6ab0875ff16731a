"""Several run_suite workers on one cache (split with --only): a published set another worker is training on is
never deleted under it (heldout/run_suite.py, published_lock)."""

from __future__ import annotations

import subprocess
import sys

from helpers.heldout import load


def test_a_set_in_use_by_another_holder_is_not_reported_free(tmp_path):
    lock = load("run_suite").published_lock
    data = tmp_path / "published" / "abc.safetensors"
    with lock(data) as outer_free:
        with lock(data) as inner_free:  # a second open file: as another process would hold it
            assert not inner_free()
        assert outer_free()  # the other holder is gone


def test_another_process_holding_the_lock_keeps_the_set(tmp_path):
    lock = load("run_suite").published_lock
    data = tmp_path / "abc.safetensors"
    lock_file = data.with_name(f".{data.name}.lock")
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, sys, time\n"
        f"h = open({str(lock_file)!r}, 'a'); fcntl.flock(h, fcntl.LOCK_SH); print('held', flush=True); "
        "sys.stdin.readline()")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with lock(data) as free:
            assert not free()
    finally:
        holder.communicate("\n", timeout=10)
    with lock(data) as free:
        assert free()

"""``radioactive mark`` under torchrun (gloo, CPU): the same bytes as one process, and resuming after a rank
is killed, with the same or another number of ranks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.tiny import save_tiny_marker, tiny_spec
from PIL import Image

from radioactive.cli import main
from radioactive.manifest import PARTS_NAME, VOLATILE_FILES

if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
    pytest.skip("gloo backend not available", allow_module_level=True)

STEPS = 40  # slow enough (about 0.2 s a batch) to kill a rank mid-run


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """A marker and key for 28 x 28 grey images, and 40 grey PNGs in 4 classes plus one RGB JPEG of another
    size per class (two batch groups)."""
    root = tmp_path_factory.mktemp("dist")
    save_tiny_marker(root / "marker.safetensors", tiny_spec(4, 28))
    assert main(["keygen", "--marker", str(root / "marker.safetensors"), "--out", str(root / "key.safetensors"),
                 "--seed", "3"]) == 0
    rng = np.random.default_rng(0)
    for label in range(4):
        folder = root / "src" / f"class{label}"
        folder.mkdir(parents=True)
        for i in range(10):
            Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(folder / f"{i:03d}.png")
        Image.fromarray(rng.integers(0, 256, (30, 26, 3), dtype=np.uint8)).save(folder / "photo.jpg", quality=95)
    return root


def _args(root: Path, out: Path) -> list[str]:
    return ["-m", "radioactive", "mark", "--key", str(root / "key.safetensors"), "--data", str(root / "src"),
            "--fraction", "0.5", "--out", str(out), "--steps", str(STEPS), "--batch-size", "3", "--device", "cpu",
            "--no-progress"]


def _command(root: Path, out: Path, ranks: int) -> list[str]:
    if ranks == 1:
        return [sys.executable, *_args(root, out)]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks),
            *_args(root, out)]


def _env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1")


def _run(root: Path, out: Path, ranks: int) -> None:
    proc = subprocess.run(_command(root, out, ranks), cwd=root, env=_env(), capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.fixture(scope="module")
def reference(tree) -> Path:
    """The single-process run every other run must reproduce."""
    out = tree / "reference"
    _run(tree, out, 1)
    return out


def _files(out: Path) -> dict[str, bytes]:
    """Every file of an output folder but the volatile bookkeeping (mark.json, lock, stamp cache)."""
    return {path.relative_to(out).as_posix(): path.read_bytes() for path in sorted(out.rglob("*"))
            if path.is_file() and path.relative_to(out).as_posix() not in VOLATILE_FILES}


def _record(out: Path) -> dict:
    record = json.loads((out / "mark.json").read_text())
    record["summary"].pop("seconds_this_run")
    return record


def _assert_same(out: Path, reference: Path) -> None:
    got, want = _files(out), _files(reference)
    assert sorted(got) == sorted(want)  # no missing, extra or stray files (parts, temporaries)
    assert [name for name in want if got[name] != want[name]] == []
    # every manifest row byte for byte, in the same order (so no duplicates and none missing)
    assert got["manifest.jsonl"] == want["manifest.jsonl"]
    assert _record(out) == _record(reference)
    assert _record(out)["status"] == "complete"


@pytest.mark.slow
def test_two_ranks_write_what_one_process_writes(tree, reference):
    rows = [json.loads(line) for line in (reference / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 44 and sum(row["marked"] for row in rows) == 24  # both batch groups are marked
    out = tree / "two"
    _run(tree, out, 2)
    _assert_same(out, reference)
    assert not (out / PARTS_NAME).exists()


def _workers(parent: int) -> dict[int, int]:
    """``{rank: pid}`` of torchrun's worker processes."""
    found = {}
    for task in Path(f"/proc/{parent}/task").iterdir():
        for pid in (task / "children").read_text().split():
            with open(f"/proc/{pid}/environ", "rb") as handle:
                env = dict(item.split(b"=", 1) for item in handle.read().split(b"\0") if b"=" in item)
            if b"RANK" in env:
                found[int(env[b"RANK"])] = int(pid)
    return found


@pytest.mark.slow
@pytest.mark.parametrize(("victim", "rerun_ranks", "rows"), [(1, 2, 13), (0, 1, 16)])
def test_killing_a_rank_then_rerunning_resumes(tree, reference, victim, rerun_ranks, rows):
    """SIGKILL one rank once its part holds ``rows`` rows (mid-marking), rerun, get the reference bytes."""
    out = tree / f"killed-{victim}-{rerun_ranks}"
    process = subprocess.Popen(_command(tree, out, 2), cwd=tree, env=_env(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    part = out / PARTS_NAME / f"manifest.rank-{victim}.jsonl"
    try:
        deadline = time.monotonic() + 120
        while not (part.is_file() and part.read_bytes().count(b"\n") >= rows):
            assert process.poll() is None and time.monotonic() < deadline, "the run ended before the kill"
            time.sleep(0.01)
        os.kill(_workers(process.pid)[victim], signal.SIGKILL)
        assert process.wait(timeout=120) != 0  # torchrun stops the other rank and fails
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert json.loads((out / "mark.json").read_text())["status"] == "running"
    parts = [out / PARTS_NAME / f"manifest.rank-{rank}.jsonl" for rank in (0, 1)]
    lines = [line for path in parts if path.is_file() for line in path.read_text().splitlines()]
    assert len(lines) < 44  # killed mid-run
    finished = {}
    for line in lines:
        try:
            output = out / json.loads(line)["output"]
        except ValueError:  # the line the kill tore
            continue
        finished[output] = (output.stat().st_ino, output.stat().st_mtime_ns)
    assert finished
    _run(tree, out, rerun_ranks)
    _assert_same(out, reference)
    # what was finished before the kill was kept, not redone
    assert {path: (path.stat().st_ino, path.stat().st_mtime_ns) for path in finished} == finished


def test_parts_left_by_ranks_are_merged_in_the_order_of_one_process(tmp_path):
    """Rows scattered over rank parts in any order, a torn line and bad images: a rerun (one process) folds
    them in, retries the bad images and writes the manifest one uninterrupted process writes."""
    import random
    import shutil

    from helpers.tiny import tiny_marker

    from radioactive.key import Key
    from radioactive.mark import MarkConfig
    from radioactive.publish import mark_dataset
    from radioactive.sources import open_source

    rng = np.random.default_rng(0)
    src = tmp_path / "src"
    for label in range(2):
        (src / f"c{label}").mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(src / f"c{label}" / f"{i}.png")
        Image.fromarray(rng.integers(0, 256, (12, 14, 3), dtype=np.uint8)).save(src / f"c{label}" / "x.jpg")
    (src / "c0" / "2.png").write_bytes(b"")  # unreadable, selected or not
    (src / "c1" / "3.png").write_bytes(b"\x89PNG broken")
    marker = tiny_marker(tiny_spec(2, 16))
    key = Key.generate(marker.info, seed=1)

    def run(out: Path) -> None:
        mark_dataset(open_source(src), out, marker=marker, key=key, fraction=0.7, config=MarkConfig(steps=2),
                     batch_size=2, skip_bad=True, progress=False)

    run(tmp_path / "reference")
    out = tmp_path / "out"
    shutil.copytree(tmp_path / "reference", out)
    lines = (out / "manifest.jsonl").read_text().splitlines()
    random.Random(0).shuffle(lines)
    (out / PARTS_NAME).mkdir()
    (out / PARTS_NAME / "manifest.rank-0.jsonl").write_text("\n".join(lines[::2]) + "\n")
    (out / PARTS_NAME / "manifest.rank-3.jsonl").write_text("\n".join(lines[1::2]) + '\n{"source": "c0/1.p')
    (out / "manifest.jsonl").unlink()
    run(out)
    assert (out / "manifest.jsonl").read_bytes() == (tmp_path / "reference" / "manifest.jsonl").read_bytes()
    assert _files(out) == _files(tmp_path / "reference") and not (out / PARTS_NAME).exists()

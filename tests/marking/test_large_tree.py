"""Resuming a large published folder is cheap and still safe: the rerun of a finished output decodes no
image and reads no unchanged file (the stamp cache), yet a changed output is found and redone."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from helpers.tiny import tiny_marker, tiny_spec
from PIL import Image

import radioactive._io
import radioactive._shard
import radioactive._stamps
import radioactive.sources
from radioactive.key import Key
from radioactive.manifest import LOCK_NAME, STAMPS_NAME, read_manifest_rows
from radioactive.mark import MarkConfig
from radioactive.publish import mark_dataset
from radioactive.sources import open_source

IMAGES, CLASSES = 2000, 10


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """2,000 grey 16 x 16 PNGs in 10 classes, 1 % marked (one step), published once."""
    root = tmp_path_factory.mktemp("large")
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (IMAGES, 16, 16), dtype=np.uint8)
    for index in range(IMAGES):
        folder = root / "src" / f"class{index % CLASSES}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels[index]).save(folder / f"{index:05d}.png", compress_level=1)
    marker = tiny_marker(tiny_spec(CLASSES, 16))
    key = Key.generate(marker.info, seed=1)
    out = root / "out"
    run = _runner(root / "src", out, marker, key)
    run()
    return root, out, run


def _runner(src: Path, out: Path, marker, key):
    def run(**options):
        return mark_dataset(open_source(src), out, marker=marker, key=key, fraction=0.01,
                            config=MarkConfig(steps=1), batch_size=64, progress=False, **options)
    return run


@pytest.fixture()
def counted(monkeypatch):
    """Counts of image opens (decoding or header reads) and of file hashes."""
    counts = {"opened": 0, "hashed": 0}
    real_open = Image.open

    def opening(*args, **kwargs):
        counts["opened"] += 1
        return real_open(*args, **kwargs)

    def hashing(real):
        def wrapper(*args, **kwargs):
            counts["hashed"] += 1
            return real(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(Image, "open", opening)
    for module in (radioactive._io, radioactive._stamps, radioactive._shard, radioactive.sources):
        monkeypatch.setattr(module, "sha256_file", hashing(module.sha256_file))
    return counts


def _snapshot(out: Path) -> dict[str, tuple[int, int]]:
    return {str(path.relative_to(out)): (path.stat().st_ino, path.stat().st_mtime_ns)
            for path in out.rglob("*") if path.is_file() and path.name not in ("mark.json", LOCK_NAME)}


def test_rerun_of_a_finished_output_reads_no_image(published, counted):
    root, out, run = published
    rows = read_manifest_rows(out)
    assert len(rows) == IMAGES and sum(row["marked"] for row in rows) == 20
    before = _snapshot(out)
    summary = run()
    assert summary["written"] == IMAGES and summary["marked"] == 20
    assert counted == {"opened": 0, "hashed": 0}
    assert _snapshot(out) == before  # nothing rewritten, the stamp cache included


def test_full_verification_reads_every_file(published, counted):
    root, out, run = published
    manifest = (out / "manifest.jsonl").read_bytes()
    run(verify="full")
    assert counted["hashed"] == 2 * IMAGES and counted["opened"] == 0  # every output and source, no decoding
    assert (out / "manifest.jsonl").read_bytes() == manifest


@pytest.mark.parametrize("kind", ["copied", "marked"])
def test_a_changed_output_is_found_and_redone(published, counted, kind):
    """Same size and the old mtime restored: only the ctime tells, and it is enough."""
    root, out, run = published
    manifest = (out / "manifest.jsonl").read_bytes()
    row = next(row for row in read_manifest_rows(out) if row["marked"] == (kind == "marked"))
    victim = out / row["output"]
    stat = victim.stat()
    data = bytearray(victim.read_bytes())
    data[-20] ^= 0xFF  # inside the last chunk: same size, other bytes
    victim.write_bytes(bytes(data))
    os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert victim.stat().st_size == stat.st_size and victim.stat().st_mtime_ns == stat.st_mtime_ns
    run()
    assert radioactive._io.sha256_bytes(victim.read_bytes()) == row["output_sha256"]  # redone
    assert (out / "manifest.jsonl").read_bytes() == manifest  # same rows, same order
    # only the changed file (and, for a copy, its source again) was read; a marked image is decoded again
    # with its whole batch
    assert counted["hashed"] <= 3
    assert counted["opened"] == (0 if kind == "copied" else 20 + 20)  # 20 headers (the plan), 20 decodes
    assert (out / STAMPS_NAME).is_file()

"""``radioactive mark`` end to end on a tiny class tree: outputs, selection, resume, refusals, locks, lists."""

import fcntl
import json
import os
import random
import signal
import subprocess
import time

import numpy as np
import pytest
from helpers.kill_resume import command as mark_command
from helpers.tiny import save_tiny_marker, tiny_spec, write_class_tree
from PIL import Image

from radioactive._io import sha256_file
from radioactive.cli import main
from radioactive.errors import LockError
from radioactive.key import Key
from radioactive.manifest import LOCK_NAME, VOLATILE_FILES, output_lock


def _tree_digest(root):
    return {str(p.relative_to(root)): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()}


def _mark(tmp, src, out, *extra):
    return main(["mark", "--key", str(tmp / "key.safetensors"), "--data", str(src), "--fraction", "0.5",
                 "--out", str(out), "--steps", "4", "--no-progress", *extra])


def _rows(out):
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def test_publishes_a_complete_marked_dataset(mark_setup, capsys):
    tmp, src = mark_setup
    before = _tree_digest(src)
    assert _mark(tmp, src, tmp / "dst") == 0
    printed = capsys.readouterr().out
    assert "15 images written" in printed and "PSNR min" in printed and "mean cosine" in printed
    assert _tree_digest(src) == before  # the source is never touched
    rows = _rows(tmp / "dst")
    assert len(rows) == 15 and len({r["source"] for r in rows}) == 15
    marked = [r for r in rows if r["marked"]]
    assert len(marked) == 9  # round(0.5 * 5) = 3 per class (halves round up)
    for row in rows:
        out = tmp / "dst" / row["output"]
        assert sha256_file(out) == row["output_sha256"]
        assert sha256_file(src / row["source"]) == row["source_sha256"]
        if row["marked"]:
            assert row["output"].endswith(".png") and row["psnr"] >= 40 and row["output_sha256"] != row["source_sha256"]
        else:
            assert row["output"] == row["source"] and row["output_sha256"] == row["source_sha256"]
    record = json.loads((tmp / "dst" / "mark.json").read_text())
    key = Key.load(tmp / "key.safetensors")
    assert record["status"] == "complete" and record["settings"]["key_fingerprint"] == key.fingerprint
    assert "torch" in record["versions"] and record["summary"]["marked"] == 9
    published = (tmp / "dst" / "manifest.jsonl").read_text() + (tmp / "dst" / "mark.json").read_text()
    for value in key.carriers.flatten()[:5].tolist():
        assert repr(value)[:10] not in published  # the carriers never leave the key
    assert '"seed": 3' not in published
    # a rerun is a verified no-op
    manifest = (tmp / "dst" / "manifest.jsonl").read_bytes()
    assert _mark(tmp, src, tmp / "dst") == 0
    assert (tmp / "dst" / "manifest.jsonl").read_bytes() == manifest


def test_selection_is_per_class_and_seeded(mark_setup):
    tmp, src = mark_setup
    assert _mark(tmp, src, tmp / "a", "--classes", "bee", "--seed", "1") == 0
    marked = [r for r in _rows(tmp / "a") if r["marked"]]
    assert {r["label"] for r in marked} == {1} and len(marked) == 3
    assert _mark(tmp, src, tmp / "b", "--classes", "1", "--seed", "1") == 0
    assert [r["source"] for r in _rows(tmp / "b") if r["marked"]] == [r["source"] for r in marked]


def test_corrupted_output_is_redone_and_settings_are_checked(mark_setup):
    tmp, src = mark_setup
    assert _mark(tmp, src, tmp / "dst") == 0
    victim = next(r for r in _rows(tmp / "dst") if r["marked"])
    (tmp / "dst" / victim["output"]).write_bytes(b"garbage")
    assert _mark(tmp, src, tmp / "dst") == 0
    assert sha256_file(tmp / "dst" / victim["output"]) == victim["output_sha256"]
    assert len(_rows(tmp / "dst")) == 15
    assert _mark(tmp, src, tmp / "dst", "--seed", "9") == 2  # different settings: refused


def test_key_marker_mismatch_is_refused(mark_setup, capsys):
    tmp, src = mark_setup
    other = save_tiny_marker(tmp / "other.safetensors", tiny_spec(3, 16), seed=1)
    assert _mark(tmp, src, tmp / "dst", "--marker", str(other)) == 2
    assert "was made for marking network" in capsys.readouterr().err
    assert not (tmp / "dst" / "manifest.jsonl").exists()


def test_bad_image_stops_or_is_skipped(mark_setup, capsys):
    tmp, src = mark_setup
    (src / "bee" / "001.png").write_bytes(b"\x89PNG broken")
    (src / "ant" / "002.png").write_bytes(b"")
    assert _mark(tmp, src, tmp / "stop", "--fraction", "1") == 2
    assert "ant/002.png: empty file" in capsys.readouterr().err
    assert _mark(tmp, src, tmp / "skip", "--fraction", "1", "--skip-bad") == 0
    printed = capsys.readouterr().out
    assert "2 bad" in printed and "bee/001.png" in printed and "ant/002.png: empty file" in printed
    bad = [r for r in _rows(tmp / "skip") if r.get("bad")]
    assert sorted(r["source"] for r in bad) == ["ant/002.png", "bee/001.png"]


def test_bad_image_error_names_the_file(mark_setup, capsys):
    tmp, src = mark_setup
    (src / "cow" / "000.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    assert _mark(tmp, src, tmp / "dst", "--fraction", "1") == 2
    assert "cow/000.png: cannot decode image" in capsys.readouterr().err


def test_refuses_unsafe_outputs_and_concurrent_runs(mark_setup, capsys):
    tmp, src = mark_setup
    assert _mark(tmp, src, src / "inside") == 2
    assert "overlap" in capsys.readouterr().err and not (src / "inside").exists()
    (tmp / "busy").mkdir()
    (tmp / "busy" / "x.txt").write_text("unrelated")
    assert _mark(tmp, src, tmp / "busy") == 2
    assert "not empty" in capsys.readouterr().err
    (tmp / "locked").mkdir()
    with open(tmp / "locked" / LOCK_NAME, "w") as handle:
        handle.write(json.dumps({"pid": 4242, "host": "elsewhere", "started": "now"}))
        handle.flush()
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        assert _mark(tmp, src, tmp / "locked") == 2
        assert "pid 4242 on host elsewhere" in capsys.readouterr().err
    with output_lock(tmp / "locked"), pytest.raises(LockError, match=f"pid {os.getpid()}"):
        with output_lock(tmp / "locked"):
            pass


def test_lists_and_hardlinks(mark_setup):
    tmp, src = mark_setup
    lines = [f"{p.relative_to(src)},{p.parent.name}" for p in sorted(src.rglob("*.png"))]
    (src / "list.csv").write_text("path,label\n" + "\n".join(lines) + "\n")
    assert _mark(tmp, src / "list.csv", tmp / "dst", "--link", "hardlink") == 0
    rows = _rows(tmp / "dst")
    assert len(rows) == 12
    copied = next(r for r in rows if not r["marked"])
    assert os.stat(tmp / "dst" / copied["output"]).st_ino == os.stat(src / copied["source"]).st_ino
    assert oct(os.stat(src / copied["source"]).st_mode)  # source mode untouched by the link


def _kill_and_resume(tmp, src, reference, rng):
    out = tmp / f"killed{rng.random():.6f}"
    command = mark_command(tmp / "key.safetensors", src, out)
    total = len(_rows(reference))
    threshold = rng.randint(1, total - 1)
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    manifest = out / "manifest.jsonl"
    while time.monotonic() < deadline and process.poll() is None:
        if manifest.is_file() and manifest.read_bytes().count(b"\n") >= threshold:
            break
        time.sleep(0.01)
    time.sleep(rng.random() * 0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    before = manifest.read_bytes().split(b"\n")[:-1] if manifest.is_file() else []
    assert subprocess.run(command, capture_output=True).returncode == 0
    after = manifest.read_bytes().split(b"\n")
    assert after[-1] == b""
    assert after[: len(before)] == before  # rows finished before the kill are unchanged
    rows = [json.loads(line) for line in after[:-1]]
    assert len(rows) == total and len({r["source"] for r in rows}) == total  # none missing, none twice
    for row in rows:
        assert sha256_file(out / row["output"]) == row["output_sha256"]
    assert _tree_digest(out).keys() == _tree_digest(reference).keys()  # no stray temporaries
    # a resumed run writes exactly what an uninterrupted one writes
    digest = _tree_digest(out)
    for name, value in _tree_digest(reference).items():
        if name != "manifest.jsonl" and name not in VOLATILE_FILES:
            assert digest[name] == value, name
    return len(before)


@pytest.mark.slow
def test_sigkill_at_a_random_point_then_resume(mark_setup):
    tmp, _ = mark_setup
    src = write_class_tree(tmp / "big", per_class=12, seed=1)
    reference = tmp / "reference"
    subprocess.run(mark_command(tmp / "key.safetensors", src, reference), check=True, capture_output=True)
    rng = random.Random(int(time.time()))
    done_before_kill = [_kill_and_resume(tmp, src, reference, rng) for _ in range(2)]
    assert any(0 < count < 39 for count in done_before_kill)


def test_list_label_outside_the_key_is_refused_naming_the_row(mark_setup, capsys):
    tmp, src = mark_setup
    listing = src / "list.csv"
    listing.write_text("path,label\nant/000.png,0\nbee/000.png,7\n")
    assert _mark(tmp, listing, tmp / "dst") == 2
    err = capsys.readouterr().err
    assert "bee/000.png: label 7 is outside the key's classes 0..2" in err and "Traceback" not in err
    assert not (tmp / "dst" / "manifest.jsonl").exists()


def test_symlinked_folders_are_refused_not_skipped(mark_setup, capsys):
    tmp, src = mark_setup
    (tmp / "elsewhere").mkdir()
    Image.fromarray(np.zeros((16, 16), dtype=np.uint8)).save(tmp / "elsewhere" / "x.png")
    os.symlink(tmp / "elsewhere", src / "ant" / "more")
    assert _mark(tmp, src, tmp / "dst") == 2
    assert "ant/more: folder is a symbolic link, which is not followed" in capsys.readouterr().err
    os.unlink(src / "ant" / "more")
    os.symlink(tmp / "elsewhere", src / "zebra")
    assert _mark(tmp, src, tmp / "dst2") == 2
    assert "['zebra'] are symbolic links" in capsys.readouterr().err

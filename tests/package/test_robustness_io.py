"""Atomic writes under a full disk: no partial file is ever left, and the error names the file."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from radioactive._io import atomic_write, atomic_write_bytes, atomic_write_json
from radioactive.errors import OutputWriteError, RadioactiveError
from radioactive.key import Key, MarkerInfo
from radioactive.nets import NetSpec, build_from_spec, save_checkpoint


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _enospc(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_failing_fsync_leaves_nothing_and_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "fsync", _enospc)
    with pytest.raises(OutputWriteError, match=r"out\.bin.*No space left.*no partial file") as info:
        atomic_write_bytes(tmp_path / "out.bin", b"x" * 1000)
    assert info.value.errno == errno.ENOSPC and isinstance(info.value, OSError)
    assert _leftovers(tmp_path) == []


def test_failing_write_keeps_the_previous_version(tmp_path, monkeypatch):
    target = tmp_path / "results.json"
    atomic_write_json(target, {"old": 1})
    before = target.read_bytes()
    monkeypatch.setattr(os, "replace", _enospc)
    with pytest.raises(OutputWriteError, match="results.json"):
        atomic_write_json(target, {"new": 2})
    assert target.read_bytes() == before and _leftovers(tmp_path) == ["results.json"]


def test_exception_inside_the_block_leaves_nothing(tmp_path):
    with pytest.raises(KeyError), atomic_write(tmp_path / "a.png") as tmp:
        tmp.write_bytes(b"partial")
        raise KeyError("boom")
    assert _leftovers(tmp_path) == []


_CHILD = textwrap.dedent(
    """
    import resource, signal, sys
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))
    from radioactive._io import atomic_write_bytes
    from radioactive.errors import OutputWriteError
    try:
        atomic_write_bytes(sys.argv[1], b"x" * (1 << 20))
    except OutputWriteError as exc:
        print("ERROR", exc)
        sys.exit(3)
    """
)


def test_file_size_limit_in_a_real_process(tmp_path):
    """A real failing writer: the kernel refuses bytes beyond RLIMIT_FSIZE (EFBIG)."""
    target = tmp_path / "big.bin"
    run = subprocess.run([sys.executable, "-c", _CHILD, str(target)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 3, run.stderr
    assert "big.bin" in run.stdout and "no partial file" in run.stdout
    assert _leftovers(tmp_path) == []


@pytest.fixture
def tiny_disk():
    """A 64 KiB tmpfs (needs root and mount; skipped elsewhere)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount_point = Path("/tmp") / f"radioactive-full-{uuid.uuid4().hex[:8]}"
    mount_point.mkdir()
    run = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount_point)],
                         capture_output=True, timeout=20)
    if run.returncode != 0:
        mount_point.rmdir()
        pytest.skip(f"cannot mount a tmpfs: {run.stderr.decode(errors='replace').strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], capture_output=True, timeout=20)
        mount_point.rmdir()


def test_full_tmpfs_every_writer(tiny_disk):
    (tiny_disk / "filler").write_bytes(b"f" * 40_000)
    with pytest.raises(OutputWriteError, match="blob.bin"):
        atomic_write_bytes(tiny_disk / "blob.bin", os.urandom(200_000))
    with pytest.raises(OutputWriteError, match="results.json"):
        atomic_write_json(tiny_disk / "results.json", {"values": list(range(40_000))})
    info = MarkerInfo(NetSpec("cnn", 10), weights_sha256="0" * 64, feature_dim=2048)
    with pytest.raises(RadioactiveError, match="key.safetensors"):
        Key.generate(info, seed=0).save(tiny_disk / "key.safetensors")
    model = build_from_spec(NetSpec("mlp", 10, in_channels=1, input_size=(28, 28)))
    with pytest.raises(RadioactiveError, match="model.safetensors"):
        save_checkpoint(model, tiny_disk / "model.safetensors", NetSpec("mlp", 10))
    assert _leftovers(tiny_disk) == ["filler"]

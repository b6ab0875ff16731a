"""The key's carriers (and seed) never leave the key file: search every output of a small keygen + mark +
detect run (files, manifests, JSON, HTML report, logs, error messages) for the carrier values written in
several formats, as text and as raw float64/float32 bytes."""

from __future__ import annotations

import json
import os
import shutil
import stat
import struct
import subprocess
import sys

import numpy as np
import pytest
from helpers.kill_resume import command, make_setup

from radioactive.errors import KeyMismatchError
from radioactive.key import Key


def _needles(key: Key) -> tuple[list[str], list[bytes]]:
    values = key.carriers.flatten().tolist()
    text = []
    for value in values:
        text += [repr(value), f"{value:.10f}", f"{value:.8e}", repr(float(np.float32(value))), f"{value:.12g}"]
    text += [f"{key.seed}", hex(key.seed)] if key.seed > 10**6 else []
    binary = [struct.pack("<d", v) for v in values] + [struct.pack("<f", v) for v in values]
    binary += [key.carriers.numpy().tobytes()[:64]]
    return text, binary


def _search(blob: bytes, text: list[str], binary: list[bytes]) -> list[str]:
    decoded = blob.decode("utf-8", "replace")
    found = [needle for needle in text if needle in decoded]
    found += [needle.hex() for needle in binary if needle in blob]
    return found


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("secrets")
    key_path, src = make_setup(root, per_class=3)
    marked = root / "marked"
    outputs = []
    env = {**os.environ, "PYTHONWARNINGS": "default"}
    argv = command(key_path, src, marked)
    argv.insert(3, "-v")  # debug logging: logs are outputs too
    mark = subprocess.run(argv, capture_output=True, timeout=300, env=env)
    assert mark.returncode == 0, mark.stderr[-500:]
    outputs += [mark.stdout, mark.stderr]
    reference = root / "reference"  # clean, one size (the tree's JPEGs have another)
    shutil.copytree(src, reference, ignore=shutil.ignore_patterns("*.jpg"))
    detect = subprocess.run(
        [sys.executable, "-m", "radioactive", "-v", "detect", "--key", str(key_path), "--marker",
         str(root / "marker.safetensors"), "--model",
         str(root / "marker.safetensors"), "--reference", str(reference), "--json", str(root / "verdict.json"),
         "--report", str(root / "report")], capture_output=True, timeout=300, env=env)
    outputs += [detect.stdout, detect.stderr]
    return root, key_path, outputs, detect


def test_key_file_is_private(run):
    _, key_path, _, _ = run
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600


def test_carriers_appear_in_no_output(run):
    root, key_path, outputs, detect = run
    key = Key.load(key_path)
    text, binary = _needles(key)
    files = [p for p in root.rglob("*") if p.is_file() and p != key_path and p.suffix != ".safetensors"]
    assert detect.returncode == 0, detect.stderr[-500:]
    assert {"manifest.jsonl", "mark.json", "verdict.json"} <= {p.name for p in files}
    assert any(p.suffix == ".html" for p in files)
    leaks = {str(p.relative_to(root)): hits for p in files if (hits := _search(p.read_bytes(), text, binary))}
    leaks.update({f"process output {i}": hits for i, out in enumerate(outputs) if (hits := _search(out, text, binary))})
    assert not leaks, leaks
    assert key.fingerprint.encode() in b"".join(outputs) + b"".join(p.read_bytes() for p in files)


def test_key_objects_and_errors_do_not_reveal_carriers(run):
    _, key_path, _, _ = run
    key = Key.load(key_path)
    text, binary = _needles(key)
    other = Key.generate(key.marker.__class__(key.marker.spec, "ef" * 32, key.marker.feature_dim), seed=9)
    with pytest.raises(KeyMismatchError) as info:
        key.check_marker(other.marker)
    # The search finds the carriers wherever they are written, as text or as bytes (so a leak is caught).
    assert _search(str(key.carriers.tolist()).encode(), text, binary)
    assert _search(key.carriers.numpy().tobytes(), text, binary)
    views = {
        "repr": repr(key),
        "str": str(key),
        "describe": json.dumps(key.describe()),
        "marker": json.dumps(key.marker.to_dict()),
        "error": str(info.value),
    }
    for name, blob in views.items():
        assert not _search(blob.encode(), text, binary), (name, blob)

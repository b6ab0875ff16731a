"""``radioactive mark --twins`` and ``radioactive detect --twins`` end to end on a tiny folder: the sidecar is
owner-only, never overwritten, never in the published folder or any output (only its fingerprint), a rerun
resumes with it, and every misuse exits 2 with one line naming the problem."""

from __future__ import annotations

import json
import shutil
import stat

import pytest
from helpers.detect_files import write_detect_files

from radioactive.cli import main
from radioactive.key import Key
from radioactive.twins import TwinSecret


def _mark(tmp, out="pub", *more):
    return ["mark", "--key", str(tmp / "key.safetensors"), "--marker", str(tmp / "marker.safetensors"), "--data",
            str(tmp / "src"), "--fraction", "0.5", "--out", str(tmp / out), "--steps", "4", "--lr", "0.03",
            "--no-progress", "--twins", *more]


def _detect(tmp, *more):
    return ["detect", "--key", str(tmp / "key.safetensors"), "--marker", str(tmp / "marker.safetensors"),
            "--model", str(tmp / "suspect.safetensors"), *more]


def _one_line_error(err: str, names: str) -> None:
    lines = err.strip().splitlines()
    assert "Traceback" not in err and lines and lines[-1].startswith("radioactive ") and ": error: " in lines[-1], err
    assert names in lines[-1], lines[-1]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = write_detect_files(tmp_path_factory.mktemp("cli-twins"), classes=3, per_class=8, planted=0.0, images="src")
    return tmp


@pytest.fixture(scope="module")
def marked(world):
    code = main(_mark(world))
    assert code == 0
    return world


def _outputs(folder) -> bytes:
    return b"".join(path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file())


def test_mark_twins_writes_an_owner_only_sidecar_next_to_the_key_and_only_its_fingerprint(marked, capsys):
    tmp = marked
    path = tmp / "pub.twins.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    secret = TwinSecret.load(path)
    assert len(secret.coins) == 12 and secret.key_fingerprint == Key.load(tmp / "key.safetensors").fingerprint
    record = json.loads((tmp / "pub" / "mark.json").read_text())
    assert record["settings"]["twins"]["fingerprint"] == secret.fingerprint
    published = _outputs(tmp / "pub")
    for needle in (str(secret.seed), hex(secret.seed)[2:], '"coins"', path.name):
        assert needle.encode() not in published, needle
    assert not list((tmp / "pub").rglob("*twins*"))
    # A rerun resumes with the same sidecar (never rewritten).
    before = path.stat().st_mtime_ns
    assert main(_mark(tmp)) == 0
    out = capsys.readouterr().out
    assert secret.fingerprint in out and str(secret.seed) not in out
    assert path.stat().st_mtime_ns == before and TwinSecret.load(path).fingerprint == secret.fingerprint


def test_detect_twins_runs_the_test_and_leaks_nothing(marked, capsys):
    tmp = marked
    secret = TwinSecret.load(tmp / "pub.twins.json")
    code = main(_detect(tmp, "--twins", str(tmp / "pub.twins.json"), "--published", str(tmp / "pub"),
                        "--statistic", "loss", "--json", str(tmp / "twins.json")))
    out = capsys.readouterr().out
    assert code == 0
    assert "twins-loss" in out and "pairs 12" in out
    verdict = json.loads((tmp / "twins.json").read_text())["verdict"]
    assert verdict["test"] == "twins-loss" and verdict["counts"]["pairs"] == 12
    assert verdict["details"]["secret_fingerprint"] == secret.fingerprint
    assert verdict["details"]["published_exact"] == 1.0
    text = (tmp / "twins.json").read_text() + out
    assert str(secret.seed) not in text and '"coins"' not in text
    assert main(_detect(tmp, "--twins", str(tmp / "pub.twins.json"), "--published", str(tmp / "pub"),
                        "--statistic", "label", "--twin-views", "2", "--twin-limit", "6")) == 0
    assert "pairs 6" in capsys.readouterr().out


def test_mark_twins_refusals(marked, tmp_path, capsys):
    tmp = marked
    cases = [
        # another run may not reuse (overwrite) an existing sidecar
        (_mark(tmp, "other", "--twins-secret", str(tmp / "pub.twins.json")), "already exists"),
        (_mark(tmp, "other2", "--twins-secret", str(tmp / "other2" / "s.json")), "inside the published folder"),
        ([arg for arg in _mark(tmp, "other3", "--twins-secret", str(tmp_path / "s.json")) if arg != "--twins"],
         "--twins-secret needs --twins"),
        (_mark(tmp, "other4", "--twin-spread", "0"), "spread"),
        ([arg for arg in _mark(tmp) if arg != "--twins"], "marked with twins"),  # resuming without them
    ]
    for argv, names in cases:
        assert main(argv) == 2, argv
        _one_line_error(capsys.readouterr().err, names)
    # Resuming without the sidecar the folder names is refused.
    shutil.move(tmp / "pub.twins.json", tmp_path / "moved.json")
    try:
        assert main(_mark(tmp)) == 2
        _one_line_error(capsys.readouterr().err, "does not exist")
    finally:
        shutil.move(tmp_path / "moved.json", tmp / "pub.twins.json")


def test_detect_twins_refusals(marked, tmp_path, capsys):
    tmp = marked
    key = Key.load(tmp / "key.safetensors")
    stranger = TwinSecret.generate(Key.generate(key.marker, seed=8), ["c0/00.png"], seed=1)
    stranger.save(tmp_path / "stranger.json")
    real = TwinSecret.load(tmp / "pub.twins.json")
    TwinSecret(real.key_fingerprint, real.seed + 1, real.coins, real.spread).save(tmp_path / "impostor.json")
    sidecar = str(tmp / "pub.twins.json")
    cases = [
        (_detect(tmp, "--twins", str(tmp_path / "missing.json"), "--published", str(tmp / "pub")), "missing.json"),
        (_detect(tmp, "--twins", str(tmp_path / "stranger.json"), "--published", str(tmp / "pub")), "made with key"),
        (_detect(tmp, "--twins", str(tmp_path / "impostor.json"), "--published", str(tmp / "pub")), "twin secret"),
        (_detect(tmp, "--twins", sidecar), "--published"),
        (_detect(tmp, "--twins", sidecar, "--published", str(tmp / "pub"), "--report", str(tmp_path / "r")), "--json"),
        (_detect(tmp, "--twins", sidecar, "--published", str(tmp / "pub"), "--twin-views", "0"), "--twin-views"),
        (_detect(tmp, "--twins", sidecar, "--published", str(tmp / "src")), "mark.json"),
        (_detect(tmp, "--black-box", "--published", str(tmp / "pub"), "--controls", "2"), "marked with twins"),
    ]
    for argv, names in cases:
        assert main(argv) == 2, argv
        _one_line_error(capsys.readouterr().err, names)

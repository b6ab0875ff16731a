"""``radioactive detect`` with several keys (repeated --key, or a folder): the table, JSON, report, the per-key
p-values of the single-key command, and errors that name the bad file."""

import json
import shutil

import pytest
from helpers.detect_files import write_detect_files

from radioactive.cli import main
from radioactive.detect import holm_adjust
from radioactive.key import Key
from radioactive.marker import Marker


@pytest.fixture()
def files(tmp_path):
    """detect_files (the suspect carries key.safetensors) plus other.safetensors, a second owner's key."""
    write_detect_files(tmp_path, classes=2, per_class=12, planted=2.0)
    Key.generate(Marker.from_checkpoint(tmp_path / "marker.safetensors").info, seed=7).save(tmp_path / "other.safetensors")
    return tmp_path


def _detect(tmp, keys, *more):
    args = ["detect", "--marker", str(tmp / "marker.safetensors"), "--model", str(tmp / "suspect.safetensors")]
    for key in keys:
        args += ["--key", str(key)]
    return main(args + list(more))


def test_repeated_keys_match_single_key_runs(files, capsys):
    tmp = files
    white = ["--reference", str(tmp / "ref")]
    singles = []
    for name in ("key", "other"):
        assert _detect(tmp, [tmp / f"{name}.safetensors"], *white, "--json", str(tmp / f"{name}.json")) == 0
        single = json.loads((tmp / f"{name}.json").read_text())
        assert single["command"]["key"] == str(tmp / f"{name}.safetensors")  # one key: recorded as before
        singles.append(single["verdict"])
    capsys.readouterr()
    keys = [tmp / "key.safetensors", tmp / "other.safetensors"]
    assert _detect(tmp, keys, *white, "--json", str(tmp / "family.json"), "--report", str(tmp / "rep")) == 0
    out = capsys.readouterr().out
    family = json.loads((tmp / "family.json").read_text())["family"]
    results = family["results"]
    assert [r["key_fingerprint"] for r in results] == [v["key_fingerprint"] for v in singles]
    assert [r["log10_p"] for r in results] == [v["log10_p"] for v in singles]  # exactly the single-key p-values
    assert [r["verdict"]["classes"] for r in results] == [v["classes"] for v in singles]
    assert [r["holm_log10_p"] for r in results] == holm_adjust([v["log10_p"] for v in singles]).tolist()
    assert [r["detected"] for r in results] == [True, False] and family["alpha"] == 1e-3
    rows = {line.split()[0]: line for line in out.splitlines() if line.split() and len(line.split()[0]) == 16}
    assert rows[singles[0]["key_fingerprint"]].endswith("DETECTED")
    assert rows[singles[1]["key_fingerprint"]].endswith("not detected")
    assert "1 of 2 keys DETECTED by Holm's step-down" in out
    page = (tmp / "rep" / "index.html").read_text()
    for verdict in singles:
        assert verdict["key_fingerprint"] in page
        assert (tmp / "rep" / verdict["key_fingerprint"] / "index.html").is_file()
        assert (tmp / "rep" / verdict["key_fingerprint"] / "null_density.png").is_file()
    assert json.loads((tmp / "rep" / "family.json").read_text())["family"]["keys"] == 2


def test_key_folder_is_read_sorted_and_one_key_stays_single(files, capsys):
    tmp = files
    folder = tmp / "keys"
    folder.mkdir()
    shutil.copy(tmp / "other.safetensors", folder / "a-other.safetensors")
    shutil.copy(tmp / "key.safetensors", folder / "b-owner.key")
    (folder / "notes.txt").write_text("not a key")
    assert _detect(tmp, [folder], "--reference", str(tmp / "ref"), "--json", str(tmp / "f.json")) == 0
    results = json.loads((tmp / "f.json").read_text())["family"]["results"]
    fingerprints = [Key.load(folder / n).fingerprint for n in ("a-other.safetensors", "b-owner.key")]
    assert [r["key_fingerprint"] for r in results] == fingerprints
    capsys.readouterr()
    # a folder with one key file runs the single-key command: the same output as naming the file
    (folder / "a-other.safetensors").unlink()
    assert _detect(tmp, [folder], "--reference", str(tmp / "ref")) == 0
    from_folder = capsys.readouterr().out
    assert _detect(tmp, [folder / "b-owner.key"], "--reference", str(tmp / "ref")) == 0
    assert capsys.readouterr().out == from_folder and "decision    DETECTED" in from_folder


@pytest.mark.filterwarnings("ignore:no probe images of classes")
def test_blackbox_with_several_keys(files, capsys):
    tmp = files
    black = ["--black-box", "--probes", str(tmp / "ref"), "--probes-per-class", "3", "--controls", "3",
             "--mark-steps", "1", "--cache-dir", "", "--combine", "perm"]
    assert _detect(tmp, [tmp / "other.safetensors"], *black, "--json", str(tmp / "one.json")) == 0
    single = json.loads((tmp / "one.json").read_text())["verdict"]
    keys = [tmp / "key.safetensors", tmp / "other.safetensors"]
    assert _detect(tmp, keys, *black, "--json", str(tmp / "two.json")) == 0
    results = json.loads((tmp / "two.json").read_text())["family"]["results"]
    assert results[1]["log10_p"] == single["log10_p"] and results[1]["verdict"]["classes"] == single["classes"]
    assert results[0]["test"] == "blackbox-perm"
    assert "blackbox-perm; 2 keys" in capsys.readouterr().out


def test_bad_key_files_are_named(files, capsys):
    tmp = files
    folder = tmp / "keys"
    folder.mkdir()
    shutil.copy(tmp / "key.safetensors", folder / "a.safetensors")
    (folder / "broken.safetensors").write_bytes(b"not a key at all")
    (folder / "broken.safetensors").chmod(0o600)
    assert _detect(tmp, [folder], "--reference", str(tmp / "ref")) == 2
    err = capsys.readouterr().err
    assert "broken.safetensors" in err and "unreadable or malformed" in err
    assert _detect(tmp, [tmp / "key.safetensors", tmp / "missing.key"], "--reference", str(tmp / "ref")) == 2
    assert "missing.key' does not exist" in capsys.readouterr().err
    assert _detect(tmp, [tmp / "key.safetensors", folder / "a.safetensors"], "--reference", str(tmp / "ref")) == 2
    err = capsys.readouterr().err
    assert "key.safetensors' and" in err and "a.safetensors' hold the same key" in err
    empty = tmp / "empty"
    empty.mkdir()
    assert _detect(tmp, [empty], "--reference", str(tmp / "ref")) == 2
    assert "holds no key files" in capsys.readouterr().err


def test_one_key_options_are_refused_with_several(files, capsys):
    tmp = files
    keys = [tmp / "key.safetensors", tmp / "other.safetensors"]
    assert _detect(tmp, keys, "--black-box", "--published", str(tmp / "ref")) == 2
    assert "--published belongs to the marking run of one key, but 2 keys were given" in capsys.readouterr().err

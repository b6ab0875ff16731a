"""``radioactive references``: a bank of clean reference models on a class-folder tree; refuses a published
folder; resumes; ``detect --reference-model BANK/`` takes the whole folder (mean or matched fit)."""

from __future__ import annotations

import json

import pytest
from helpers.detect_files import mark_whole, write_detect_files

from radioactive.cli import main
from radioactive.train.bank import bank_paths


@pytest.fixture()
def tree(tmp_path):
    return write_detect_files(tmp_path, classes=2, per_class=12, planted=2.0, images="src")


def _references(folder, *more):
    return ["references", "--data", str(folder / "src"), "--out", str(folder / "bank"), "--members",
            "cnn-cosine,mlp-cosine", "--epochs", "1", "--device", "cpu", *more]


def test_a_bank_is_trained_resumed_and_taken_by_detect(tree, capsys):
    assert main(_references(tree)) == 0
    err = capsys.readouterr().err
    assert "[1/2] cnn-cosine: training cnn on 24 clean images, 1 epochs" in err and "[2/2] mlp-cosine" in err
    index = json.loads((tree / "bank" / "bank.json").read_text())
    assert index["complete"] and [m["name"] for m in index["members"]] == ["cnn-cosine", "mlp-cosine"]
    assert index["data"] == str(tree / "src") and index["images"] == 24
    files = bank_paths(tree / "bank")
    stamps = [f.stat().st_mtime_ns for f in files]
    # A rerun trains nothing: every member is there.
    assert main(_references(tree)) == 0
    assert capsys.readouterr().err.count("done earlier") == 2
    assert [f.stat().st_mtime_ns for f in files] == stamps
    # An interrupted bank (one member lost) trains only what is missing.
    files[1].unlink()
    assert main(_references(tree)) == 0
    err = capsys.readouterr().err
    assert "[1/2] cnn-cosine: done earlier" in err and "[2/2] mlp-cosine: training" in err

    for fit, test in (("mean", "blackbox-perm-did"), ("matched", "blackbox-perm-matched")):
        out = tree / f"verdict-{fit}.json"
        assert main(["detect", "--key", str(tree / "key.safetensors"), "--marker", str(tree / "marker.safetensors"),
                     "--model", str(tree / "suspect.safetensors"), "--black-box", "--probes", str(tree / "src"),
                     "--probes-per-class", "4", "--controls", "3", "--mark-steps", "1", "--cache-dir", "",
                     "--class-map", "0:0,1:1", "--device", "cpu", "--reference-model", str(tree / "bank"),
                     "--reference-fit", fit, "--json", str(out)]) == 0
        verdict = json.loads(out.read_text())["verdict"]
        assert verdict["test"] == test and verdict["details"]["reference_models"] == 2
        assert "references_hint" not in verdict["details"]
    capsys.readouterr()


def test_a_published_folder_is_refused(tree, capsys):
    mark_whole(tree, ["--steps", "1"])
    assert main(["references", "--data", str(tree / "pub"), "--out", str(tree / "bank"), "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "is the output of 'radioactive mark'" in err and "clean originals" in err
    assert not (tree / "bank").exists()


def test_bad_arguments_are_refused_before_any_training(tree, capsys):
    assert main(_references(tree, "--epochs", "0")) == 2
    assert "--epochs must be at least 1" in capsys.readouterr().err
    assert main(["references", "--data", str(tree / "src"), "--out", str(tree / "bank"), "--members", "cnn,vit"]) == 2
    assert "unknown members ['cnn', 'vit']" in capsys.readouterr().err
    assert not (tree / "bank").exists()


def test_detect_without_references_says_how_to_make_them(tree, capsys):
    out = tree / "verdict.json"
    assert main(["detect", "--key", str(tree / "key.safetensors"), "--marker", str(tree / "marker.safetensors"),
                 "--model", str(tree / "suspect.safetensors"), "--black-box", "--probes", str(tree / "src"),
                 "--probes-per-class", "4", "--controls", "3", "--mark-steps", "1", "--cache-dir", "",
                 "--class-map", "0:0,1:1", "--device", "cpu", "--json", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "radioactive references --data ORIGINALS --out refs/" in shown
    verdict = json.loads(out.read_text())["verdict"]
    assert verdict["test"] == "blackbox-perm" and "references_hint" in verdict["details"]


def test_no_flip_trains_every_member_without_flips_and_pairs_data_gets_it_by_itself(tree, capsys, monkeypatch):
    from radioactive.nets import load_checkpoint

    assert main(_references(tree, "--no-flip", "--members", "cnn-cosine")) == 0
    capsys.readouterr()
    (member,) = bank_paths(tree / "bank")
    assert load_checkpoint(member)[2]["recipe"]["flip"] is False

    import radioactive.train.bank as bank

    seen = {}

    def record(images, labels, out, *, members, **kwargs):
        seen["flips"] = [m.train_recipe(None).flip for m in members]
        return []

    import radioactive.sources as sources

    small = sources.load_labelled(str(tree / "src"))  # stands in for the 54,700 composites: no training here
    monkeypatch.setattr(bank, "train_bank", record)
    monkeypatch.setattr(sources, "load_labelled", lambda *args, **kwargs: small)
    assert main(["references", "--data", "fashion-mnist-pairs", "--out", str(tree / "pairs-bank"), "--epochs", "1"]) == 0
    assert "trained without horizontal flips" in capsys.readouterr().err
    assert seen["flips"] == [False] * len(bank.DEFAULT_BANK)

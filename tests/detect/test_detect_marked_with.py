"""Probes marked like the data (issue 14, item 3): ``detect --marked-with OUT/mark.json`` marks its fresh probes
and control sets with the settings, seed and key of the run that marked the training data, and the same
image-changing flags as ``radioactive mark`` are refused when they contradict that record."""

import json

import numpy as np
import pytest
import torch
from helpers.detect_files import blackbox_detect_args, mark_whole, write_detect_files
from PIL import Image

import radioactive.detect.observations as observations
from radioactive.cli import main
from radioactive.key import Key
from radioactive.mark import MarkConfig

# Not MarkConfig's defaults (steps, lr, augment crop,flip, seed 0).
MARK_FLAGS = ["--steps", "3", "--lr", "0.03", "--augment", "flip", "--seed", "5"]


@pytest.fixture(scope="module")
def marked(tmp_path_factory):
    """``src`` (3 classes x 1 image) marked whole by the command line into ``pub`` with non-default settings."""
    tmp = write_detect_files(tmp_path_factory.mktemp("marked-with"), classes=3, per_class=1, planted=0.0, images="src")
    mark_whole(tmp, MARK_FLAGS)
    return tmp


def _detect(tmp, *more):
    return blackbox_detect_args(tmp, 1, *more)


def _true_versions(monkeypatch):
    """Capture the key-marked version (index 0) of the probes as detect's black-box test marks it."""
    seen = {}
    real = observations.marked_versions

    def spy(marker, key, probes, **options):
        for index, images in real(marker, key, probes, **options):
            if index == 0:
                seen.update(images=images.clone(), ids=probes.ids)
            yield index, images

    monkeypatch.setattr(observations, "marked_versions", spy)
    return seen


def test_probe_marked_through_detect_is_the_published_image(marked, monkeypatch):
    """A probe image marked by `detect --marked-with pub/mark.json` with the true key has exactly the pixels
    `radioactive mark` published for the same image (every byte of the decoded PNG)."""
    tmp = marked
    seen = _true_versions(monkeypatch)
    assert main(_detect(tmp, "--marked-with", str(tmp / "pub" / "mark.json"), "--json", str(tmp / "v.json"))) == 0
    assert seen["ids"] == ("c0/00.png", "c1/00.png", "c2/00.png")
    for n, ident in enumerate(seen["ids"]):
        published = torch.from_numpy(np.array(Image.open(tmp / "pub" / ident)))[None]  # (1, 28, 28) uint8
        assert seen["images"][n].shape == published.shape
        assert torch.equal(seen["images"][n], published), ident
    marking = json.loads((tmp / "v.json").read_text())["verdict"]["details"]["marking"]
    assert marking["config"]["steps"] == 3 and marking["config"]["lr"] == 0.03 and marking["seed"] == 5
    assert marking["config"]["augment"] == ["flip"] and marking["origin"] == str(tmp / "pub" / "mark.json")
    assert "warning" not in marking


def test_the_same_flags_mark_the_same_pixels(marked, monkeypatch):
    """Without the record, the flags 'radioactive mark' was given (same names) mark the probes the same way;
    the library defaults do not."""
    tmp = marked
    seen = _true_versions(monkeypatch)
    flags = ["--steps", "3", "--lr", "0.03", "--augment", "flip", "--mark-seed", "5"]
    assert main(_detect(tmp, *flags, "--json", str(tmp / "flags.json"))) == 0
    published = torch.from_numpy(np.array(Image.open(tmp / "pub" / "c1" / "00.png")))[None]
    assert torch.equal(seen["images"][1], published)
    assert json.loads((tmp / "flags.json").read_text())["verdict"]["details"]["marking"]["origin"] == "command line"
    assert main(_detect(tmp, "--json", str(tmp / "defaults.json"))) == 0
    assert not torch.equal(seen["images"][1], published)
    marking = json.loads((tmp / "defaults.json").read_text())["verdict"]["details"]["marking"]
    assert marking["origin"] == "library defaults" and marking["config"] == MarkConfig().to_dict()
    assert "may differ from how the data was marked" in marking["warning"]


def test_defaults_warning_is_printed(marked, capsys):
    assert main(_detect(marked)) == 0
    out = capsys.readouterr().out
    assert "WARNING" in out and "--marked-with" in out and "library defaults" in out


@pytest.mark.parametrize(("flag", "message"), [
    (["--lr", "0.01"], "--lr 0.01 contradicts settings.config.lr = 0.03 in"),
    (["--steps", "90"], "--steps 90 contradicts settings.config.steps = 3 in"),
    (["--augment", "crop,flip"], "--augment crop,flip contradicts settings.config.augment = flip in"),
    (["--epsilon", "8/255"], "--epsilon 0.03137254901960784 contradicts settings.config.epsilon = 0.0392156862745098"),
    (["--mark-seed", "0"], "--mark-seed 0 contradicts settings.seed = 5 in"),
])
def test_contradicting_flag_is_refused(marked, capsys, flag, message):
    tmp = marked
    assert main(_detect(tmp, "--marked-with", str(tmp / "pub"), *flag)) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert "Traceback" not in err and lines[-1].startswith("radioactive detect: error: ")
    assert message in lines[-1], lines[-1]


def test_agreeing_flags_and_other_refusals(marked, capsys):
    tmp = marked
    assert main(_detect(tmp, "--marked-with", str(tmp / "pub"), "--steps", "3", "--lr", "0.03", "--mark-seed",
                        "5")) == 0
    capsys.readouterr()
    assert main(_detect(tmp, "--marked-with", str(tmp / "nowhere"))) == 2
    assert "mark.json does not exist" in capsys.readouterr().err
    assert main(_detect(tmp, "--marked-with", str(tmp / "pub"), "--published", str(tmp / "pub"))) == 2
    assert "drop --marked-with" in capsys.readouterr().err
    other = Key.generate(Key.load(tmp / "key.safetensors").marker, seed=9)
    other.save(tmp / "other.safetensors")
    args = _detect(tmp, "--marked-with", str(tmp / "pub"))
    args[args.index("--key") + 1] = str(tmp / "other.safetensors")
    assert main(args) == 2
    assert "marked with key" in capsys.readouterr().err


def test_record_lacking_steps_and_lr_reads_the_defaults_it_was_written_with():
    """A field a marking record lacks takes the value the library used then (90 steps at lr 0.01), not
    today's default."""
    assert MarkConfig.from_record({}) == MarkConfig(steps=90, lr=0.01)
    assert MarkConfig.from_record({"steps": 3}) == MarkConfig(steps=3, lr=0.01)
    assert MarkConfig.from_record(MarkConfig().to_dict()) == MarkConfig()


def test_older_output_without_steps_and_lr_stays_matched(tmp_path_factory, monkeypatch):
    """An output of 'radioactive mark' at the old defaults whose mark.json does not name steps and lr: the
    probes `detect --marked-with` marks are still exactly the published images."""
    tmp = write_detect_files(tmp_path_factory.mktemp("old-record"), classes=3, per_class=1, planted=0.0, images="src")
    mark_whole(tmp, ["--steps", "90", "--lr", "0.01", "--seed", "5"])
    record_path = tmp / "pub" / "mark.json"
    record = json.loads(record_path.read_text())
    del record["settings"]["config"]["steps"], record["settings"]["config"]["lr"]
    record_path.write_text(json.dumps(record))
    seen = _true_versions(monkeypatch)
    assert main(_detect(tmp, "--marked-with", str(record_path), "--json", str(tmp / "v.json"))) == 0
    for n, ident in enumerate(seen["ids"]):
        published = torch.from_numpy(np.array(Image.open(tmp / "pub" / ident)))[None]
        assert torch.equal(seen["images"][n], published), ident
    marking = json.loads((tmp / "v.json").read_text())["verdict"]["details"]["marking"]
    assert marking["config"]["steps"] == 90 and marking["config"]["lr"] == 0.01

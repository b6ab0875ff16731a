"""``detect --black-box`` probe levers (issue 10): ``--probe-min-psnr`` / ``--probe-steps`` mark the probes
deliberately otherwise than the data (recorded, refused with ``--published``; contradicting data flags stay
refused), and ``--probe-mode cross`` marks fresh probes along other classes' carriers."""

import json

import pytest
from helpers.detect_files import blackbox_detect_args, mark_whole, write_detect_files

import radioactive.detect.observations as observations
from radioactive.cli import main

MARK_FLAGS = ["--steps", "3", "--lr", "0.03", "--augment", "flip", "--seed", "5"]


@pytest.fixture(scope="module")
def marked(tmp_path_factory):
    """``src`` (3 classes x 2 images) marked whole by the command line into ``pub`` (3 steps, PSNR >= 40)."""
    tmp = write_detect_files(tmp_path_factory.mktemp("levers"), classes=3, per_class=2, planted=0.0, images="src")
    mark_whole(tmp, MARK_FLAGS)
    return tmp


def _detect(tmp, *more):
    return blackbox_detect_args(tmp, 2, *more)


def _last_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


def test_stronger_probes_are_explicit_and_recorded(marked, monkeypatch):
    tmp = marked
    seen = {}
    real = observations.marked_versions

    def spy(marker, key, probes, **options):
        seen.update(config=options["config"], targets=options.get("targets"))
        yield from real(marker, key, probes, **options)

    monkeypatch.setattr(observations, "marked_versions", spy)
    assert main(_detect(tmp, "--marked-with", str(tmp / "pub"), "--probe-min-psnr", "30", "--probe-steps", "5",
                        "--json", str(tmp / "strong.json"))) == 0
    assert seen["config"].min_psnr == 30.0 and seen["config"].steps == 5 and seen["config"].lr == 0.03
    assert seen["targets"] is None
    details = json.loads((tmp / "strong.json").read_text())["verdict"]["details"]
    marking = details["marking"]
    assert marking["probes_differ_from_data"] == {"min_psnr": {"data": 40.0, "probes": 30.0},
                                                  "steps": {"data": 3, "probes": 5}}
    assert marking["data_config"]["steps"] == 3 and marking["config"]["steps"] == 5
    assert marking["origin"] == str(tmp / "pub" / "mark.json") and marking["seed"] == 5 and "warning" not in marking
    assert "probes deliberately marked otherwise than the data" in marking["summary"]
    assert "probe_mode" not in details


def test_cross_mode_from_the_command_line(marked, monkeypatch):
    tmp = marked
    seen = {}
    real = observations.marked_versions

    def spy(marker, key, probes, **options):
        seen["targets"] = options.get("targets")
        seen["labels"] = probes.labels
        yield from real(marker, key, probes, **options)

    monkeypatch.setattr(observations, "marked_versions", spy)
    assert main(_detect(tmp, "--marked-with", str(tmp / "pub"), "--probe-mode", "cross", "--combine", "perm",
                        "--json", str(tmp / "cross.json"))) == 0
    assert seen["labels"].tolist() == [0, 0, 1, 1, 2, 2] and seen["targets"].tolist() == [1, 2, 2, 0, 0, 1]
    details = json.loads((tmp / "cross.json").read_text())["verdict"]["details"]
    assert details["probe_mode"] == "cross" and details["marking"]["probe_mode"] == "cross"


def test_refusals(marked, capsys):
    tmp = marked
    # The data's own flags still may not contradict the record: a stronger probe needs --probe-min-psnr.
    assert main(_detect(tmp, "--marked-with", str(tmp / "pub"), "--min-psnr", "30")) == 2
    assert "--min-psnr 30.0 contradicts settings.config.min_psnr = 40.0" in _last_error(capsys)
    assert main(_detect(tmp, "--published", str(tmp / "pub"), "--probe-min-psnr", "30")) == 2
    line = _last_error(capsys)
    assert "--probe-min-psnr 30.0 with --published" in line and "need fresh probes" in line
    assert main(_detect(tmp, "--published", str(tmp / "pub"), "--probe-mode", "cross")) == 2
    assert "cross-class probes must be fresh" in _last_error(capsys)
    assert main(_detect(tmp, "--marked-with", str(tmp / "pub"), "--probe-min-psnr", "0")) == 2
    assert "min_psnr must be in (0, 200) dB" in _last_error(capsys)

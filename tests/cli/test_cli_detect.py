"""``radioactive detect`` end to end on tiny files: white-box, black-box, class maps, marked references."""

import json

import pytest
from helpers.detect_files import write_detect_files
from helpers.tiny import tiny_spec

from radioactive.cli import main
from radioactive.key import Key
from radioactive.mark import MarkConfig
from radioactive.marker import Marker
from radioactive.nets import build_from_spec, save_checkpoint
from radioactive.publish import mark_dataset
from radioactive.sources import open_source


@pytest.fixture()
def cli_setup(tmp_path):
    return write_detect_files(tmp_path, classes=2, per_class=12, planted=2.0)


def _base(tmp, *more):
    return ["detect", "--key", str(tmp / "key.safetensors"), "--marker", str(tmp / "marker.safetensors"), *more]


def test_cli_whitebox_end_to_end(cli_setup, capsys):
    tmp = cli_setup
    args = _base(tmp, "--model", str(tmp / "suspect.safetensors"), "--reference", str(tmp / "ref"),
                 "--null-trials", "20", "--json", str(tmp / "v.json"), "--report", str(tmp / "rep"))
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "DETECTED" in out and "identity" in out and "null trials 20" in out
    data = json.loads((tmp / "v.json").read_text())
    assert data["verdict"]["test"] == "whitebox" and data["verdict"]["counts"]["reference"] == 24
    assert (tmp / "rep" / "index.html").is_file()


def test_cli_marked_reference_is_refused_unless_allowed(cli_setup, capsys):
    """The output folder of `radioactive mark` is a marked set: refused as reference unless explicitly allowed."""
    tmp = cli_setup
    marker = Marker.from_checkpoint(tmp / "marker.safetensors")
    mark_dataset(open_source(tmp / "ref"), tmp / "pub", marker=marker, key=Key.load(tmp / "key.safetensors"),
                 fraction=0.25, config=MarkConfig(steps=1, eval_draws=0), progress=False)
    args = _base(tmp, "--model", str(tmp / "suspect.safetensors"), "--reference", str(tmp / "pub"))
    assert main(args) != 0
    assert "6 of 24 reference images are marked" in capsys.readouterr().err  # 25 % of each class; copies are clean
    with pytest.warns(UserWarning, match="may not be calibrated"):
        assert main(args + ["--allow-marked-reference"]) == 0
    assert main(_base(tmp, "--model", str(tmp / "suspect.safetensors"), "--black-box", "--probes",
                      str(tmp / "pub"))) != 0
    assert "fresh probes must never have been published" in capsys.readouterr().err


def test_cli_blackbox_end_to_end(cli_setup, capsys):
    tmp = cli_setup
    args = _base(tmp, "--model", str(tmp / "suspect.safetensors"), "--black-box", "--probes", str(tmp / "ref"),
                 "--probes-per-class", "4", "--controls", "3", "--mark-steps", "1", "--cache-dir", str(tmp / "cache"),
                 "--reference-model", str(tmp / "suspect.safetensors"), "--combine", "t", "--json",
                 str(tmp / "b.json"), "--report", str(tmp / "brep"))
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "blackbox-t-matched" in out  # references matched to the suspect: the default fit
    assert json.loads((tmp / "b.json").read_text())["verdict"]["counts"]["controls"] == 3
    assert (tmp / "brep" / "blackbox.png").is_file()
    assert main(_base(tmp, "--black-box")) != 0
    assert "needs --endpoint URL or --model FILE" in capsys.readouterr().err


def test_cli_combine_offers_every_combination(cli_setup, capsys):
    """`--combine` takes every combination the API has; `perm` runs the exact permutation test."""
    from radioactive.detect.settings import COMBINATIONS

    tmp = cli_setup
    assert main(_base(tmp, "--black-box", "--combine", "nope")) == 2  # a usage error
    err = capsys.readouterr().err
    assert all(f"'{name}'" in err for name in COMBINATIONS), err
    args = _base(tmp, "--model", str(tmp / "suspect.safetensors"), "--black-box", "--probes", str(tmp / "ref"),
                 "--probes-per-class", "4", "--controls", "3", "--mark-steps", "1", "--cache-dir", "",
                 "--combine", "perm", "--json", str(tmp / "perm.json"))
    assert main(args) == 0
    verdict = json.loads((tmp / "perm.json").read_text())["verdict"]
    assert verdict["test"] == "blackbox-perm" and verdict["details"]["combination"].startswith("exact stratified")


def test_cli_class_count_mismatch_message(cli_setup, capsys):
    tmp = cli_setup
    other = tiny_spec(5, feature_dim=16)
    save_checkpoint(build_from_spec(other), tmp / "five.safetensors", other)
    base = _base(tmp, "--model", str(tmp / "five.safetensors"), "--reference", str(tmp / "ref"))
    assert main(base) != 0
    assert "--class-map" in capsys.readouterr().err
    assert main(base + ["--class-map", "0:0,1:1"]) == 0
    assert main(base + ["--class-map", "0-0"]) != 0
    assert "bad class map entry '0-0'" in capsys.readouterr().err


def test_cli_refuses_the_old_split_names(cli_setup, capsys):
    tmp = cli_setup
    assert main(_base(tmp, "--model", str(tmp / "suspect.safetensors"), "--reference", "fashion-mnist:val")) != 0
    assert "'val' is now 'holdout'" in capsys.readouterr().err

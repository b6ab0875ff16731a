"""``radioactive detect``: several --reference-model, the references-alone diagnostic, evidence levels and the
default decision level."""

import json

import pytest
import torch
from helpers.detect_files import SPEC, write_detect_files

from radioactive.cli import build_parser, main
from radioactive.nets import build_from_spec, save_checkpoint


@pytest.fixture()
def files(tmp_path):
    folder = write_detect_files(tmp_path, classes=2, per_class=12, planted=2.0)
    for seed in (1, 2):
        torch.manual_seed(seed)
        save_checkpoint(build_from_spec(SPEC).eval(), folder / f"ref{seed}.safetensors", SPEC)
    return folder


def _blackbox(tmp, *more):
    return ["detect", "--key", str(tmp / "key.safetensors"), "--marker", str(tmp / "marker.safetensors"),
            "--model", str(tmp / "suspect.safetensors"), "--black-box", "--probes", str(tmp / "ref"),
            "--probes-per-class", "4", "--controls", "3", "--mark-steps", "1", "--cache-dir", "",
            "--combine", "perm", "--class-map", "0:0,1:1", *more]  # the tree holds 2 of the key's 10 classes


def test_two_reference_models_are_averaged_and_reported(files, capsys):
    tmp = files
    args = _blackbox(tmp, "--reference-model", str(tmp / "ref1.safetensors"), "--reference-model",
                     str(tmp / "ref2.safetensors"), "--json", str(tmp / "two.json"), "--report", str(tmp / "rep"),
                     "--reference-fit", "mean")
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "blackbox-perm-did" in out and "reference   2 model(s) alone vs controls" in out and "evidence    " in out
    verdict = json.loads((tmp / "two.json").read_text())["verdict"]
    alone = verdict["details"]["reference_alone"]
    assert verdict["details"]["reference_models"] == 2 and alone["references"] == 2
    assert len(alone["per_reference"]) == 2 and {"log10_p_upper", "log10_p_lower", "extreme", "note"} <= set(alone)
    assert verdict["evidence"] in ("none", "weak", "strong", "very strong")
    page = (tmp / "rep" / "index.html").read_text()
    assert "reference alone" in page and "Evidence:" in page and "Sellke" in page
    # One reference gives another statistic than two (their mean is subtracted, not the first one's).
    assert main(_blackbox(tmp, "--reference-model", str(tmp / "ref1.safetensors"), "--json",
                          str(tmp / "one.json"))) == 0
    one = json.loads((tmp / "one.json").read_text())["verdict"]
    assert one["details"]["reference_models"] == 1 and "per_reference" not in one["details"]["reference_alone"]
    assert [c["statistic"] for c in one["classes"]] != [c["statistic"] for c in verdict["classes"]]


def test_reference_arch_count_must_match(files, capsys):
    tmp = files
    refs = ["--reference-model", str(tmp / "ref1.safetensors"), "--reference-model", str(tmp / "ref2.safetensors")]
    assert main(_blackbox(tmp, *refs, "--reference-arch", "cnn", "--reference-arch", "mlp",
                          "--reference-arch", "cnn")) == 2
    assert "3 --reference-arch for 2 --reference-model" in capsys.readouterr().err
    assert main(_blackbox(tmp, "--reference-arch", "cnn")) == 2
    assert "--reference-arch needs --reference-model" in capsys.readouterr().err


def test_default_alpha_is_strong_evidence():
    args = build_parser().parse_args(["detect", "--key", "k"])
    assert args.alpha == 1e-3
    assert build_parser().parse_args(["detect", "--key", "k", "--alpha", "0.05"]).alpha == 0.05  # still overridable

import json
import math

import pytest
import torch

from radioactive import report
from radioactive.detect import ClassScore, Verdict
from radioactive.nets import NetSpec, build_from_spec, save_checkpoint


def _white() -> Verdict:
    classes = tuple(ClassScore(index=k, log10_p=-0.5 * k, z=0.3 * k, cosine=0.05 * k, output=k) for k in range(4))
    return Verdict(test="whitebox", log10_p=-1087.3, alpha=0.05, classes=classes, z=70.0, key_fingerprint="abcd",
                   model_sha256="f" * 64, counts={"classes": 4, "reference": 100},
                   alignment={"method": "identity", "reason": "requested", "r2": 1.0, "r2_identity": 1.0},
                   details={"null_dim": 32},
                   null_trials={"trials": 3, "rank": 1, "empirical_p": 0.25, "null_log10_p": [-0.1, -0.5, -0.2],
                                "null_fraction_below_alpha": 0.0, "seeds": [1, 2, 3]})


def _black() -> Verdict:
    classes = tuple(ClassScore(index=k, log10_p=-1.0, z=1.28, statistic=1.0 + k, controls=(0.1, 0.2, 0.3), count=5)
                    for k in range(3))
    return Verdict(test="blackbox-rank-did", log10_p=-2.0, alpha=0.01, classes=classes, z=2.3, key_fingerprint="abcd",
                   details={"statistic": "margin", "difference_in_differences": True})


def test_whitebox_report_and_json(tmp_path):
    page = report.write_report(_white(), tmp_path / "rep", command={"model": "m"})
    text = page.read_text()
    assert "DETECTED" in text and "10^-1087.3" in text and "null_density.png" in text and "null_trials.png" in text
    for name in ("null_density.png", "null_trials.png", "verdict.json"):
        assert (tmp_path / "rep" / name).stat().st_size > 1000 or name == "verdict.json"
    data = json.loads((tmp_path / "rep" / "verdict.json").read_text())
    assert data["verdict"]["log10_p"] == -1087.3 and data["verdict"]["p"] == 0.0
    assert data["command"] == {"model": "m"} and "torch" in data["versions"]


def test_blackbox_report(tmp_path):
    page = report.write_report(_black(), tmp_path)
    text = page.read_text()
    assert "DETECTED" in text and "blackbox.png" in text and "exchangeable" in text
    assert (tmp_path / "blackbox.png").stat().st_size > 1000


def test_json_handles_infinities(tmp_path):
    verdict = Verdict(test="whitebox", log10_p=-math.inf, alpha=0.05, classes=(), z=math.inf, key_fingerprint="k")
    report.write_json(verdict, tmp_path / "v.json")
    data = json.loads((tmp_path / "v.json").read_text())
    assert data["verdict"]["log10_p"] == "-inf"


@pytest.fixture()
def cli_setup(tmp_path):
    from radioactive.key import Key
    from radioactive.marker import Marker

    torch.manual_seed(0)
    spec = NetSpec("cnn", 10, kwargs={"width": 4, "feature_dim": 16})
    marker_model = build_from_spec(spec)
    save_checkpoint(marker_model, tmp_path / "marker.safetensors", spec)
    marker = Marker.from_checkpoint(tmp_path / "marker.safetensors")
    key = Key.generate(marker.info, seed=1)
    key.save(tmp_path / "key.safetensors")
    with torch.no_grad():
        marker_model[1].fc.weight += 2.0 * key.carriers.float()
    save_checkpoint(marker_model, tmp_path / "suspect.safetensors", spec)
    folder = tmp_path / "ref"
    from PIL import Image

    for k in range(2):
        (folder / f"c{k}").mkdir(parents=True)
        for i in range(12):
            Image.fromarray((torch.rand(28, 28) * 255).to(torch.uint8).numpy()).save(folder / f"c{k}" / f"{i}.png")
    return tmp_path


def test_cli_whitebox_end_to_end(cli_setup, capsys):
    from radioactive.cli import main

    tmp = cli_setup
    args = ["detect", "--key", str(tmp / "key.safetensors"), "--marker", str(tmp / "marker.safetensors"),
            "--model", str(tmp / "suspect.safetensors"), "--reference", str(tmp / "ref"), "--null-trials", "20",
            "--json", str(tmp / "v.json"), "--report", str(tmp / "rep")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "DETECTED" in out and "identity" in out and "null trials 20" in out
    data = json.loads((tmp / "v.json").read_text())
    assert data["verdict"]["test"] == "whitebox" and data["verdict"]["counts"]["reference"] == 24
    assert (tmp / "rep" / "index.html").is_file()
    # A folder holding a marking manifest is a marked output: refused unless explicitly allowed.
    (tmp / "ref" / "manifest.jsonl").write_text("{}\n")
    assert main(args[:-4]) == 1
    assert "reference images are marked" in capsys.readouterr().err
    assert main(args[:-4] + ["--allow-marked-reference"]) == 0


def test_cli_blackbox_end_to_end(cli_setup, capsys):
    from radioactive.cli import main

    tmp = cli_setup
    args = ["detect", "--key", str(tmp / "key.safetensors"), "--marker", str(tmp / "marker.safetensors"),
            "--model", str(tmp / "suspect.safetensors"), "--black-box", "--probes", str(tmp / "ref"),
            "--probes-per-class", "4", "--controls", "3", "--mark-steps", "1", "--cache-dir", str(tmp / "cache"),
            "--reference-model", str(tmp / "suspect.safetensors"), "--combine", "t", "--json", str(tmp / "b.json"),
            "--report", str(tmp / "brep")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "blackbox-t-did" in out
    assert json.loads((tmp / "b.json").read_text())["verdict"]["counts"]["controls"] == 3
    assert (tmp / "brep" / "blackbox.png").is_file()
    assert main(["detect", "--key", str(tmp / "key.safetensors"), "--marker", str(tmp / "marker.safetensors"),
                 "--black-box"]) == 1
    assert "needs --endpoint URL or --model FILE" in capsys.readouterr().err


def test_cli_class_count_mismatch_message(cli_setup, capsys):
    from radioactive.cli import main

    tmp = cli_setup
    other = NetSpec("cnn", 5, kwargs={"width": 4, "feature_dim": 16})
    save_checkpoint(build_from_spec(other), tmp / "five.safetensors", other)
    base = ["detect", "--key", str(tmp / "key.safetensors"), "--marker", str(tmp / "marker.safetensors"),
            "--model", str(tmp / "five.safetensors"), "--reference", str(tmp / "ref")]
    assert main(base) == 1
    assert "--class-map" in capsys.readouterr().err
    assert main(base + ["--class-map", "0:0,1:1"]) == 0


def test_cli_blackbox_published_probes(cli_setup, capsys, monkeypatch):
    from PIL import Image

    import radioactive.detect.black_box as black_box
    from radioactive.cli import main
    from radioactive.cli.detect import _image_files, load_images
    from radioactive.key import Key
    from radioactive.mark import MarkConfig, image_seeds, mark
    from radioactive.marker import Marker

    tmp = cli_setup
    images, labels, _ = load_images(str(tmp / "ref"))
    picks = torch.cat([torch.nonzero(labels == k).flatten()[:4] for k in range(10)])
    key = Key.load(tmp / "key.safetensors")
    marker = Marker.from_checkpoint(tmp / "marker.safetensors")
    rels = [f.relative_to(tmp / "ref").as_posix() for f in _image_files(tmp / "ref")]
    # As `radioactive mark` does: each image's augmentation stream comes from its relative path.
    marked = mark(marker, images[picks], labels[picks], key, MarkConfig(steps=1),
                  seed=image_seeds(0, [rels[i] for i in picks.tolist()])).images
    published = images.clone()
    published[picks] = (marked * 255).round().to(torch.uint8)
    seen = []
    real_collect = black_box.collect

    def spy(predict, key, probes, **kwargs):
        seen.append(probes)
        return real_collect(predict, key, probes, **kwargs)

    monkeypatch.setattr(black_box, "collect", spy)
    files = sorted(p.relative_to(tmp / "ref") for p in (tmp / "ref").rglob("*.png"))
    for rel, image in zip(files, published):
        (tmp / "pub" / rel.parent).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image[0].numpy()).save(tmp / "pub" / rel)
    args = ["detect", "--key", str(tmp / "key.safetensors"), "--marker", str(tmp / "marker.safetensors"),
            "--model", str(tmp / "suspect.safetensors"), "--black-box", "--probes", str(tmp / "ref"),
            "--published", str(tmp / "pub"), "--probes-per-class", "4", "--controls", "3", "--mark-steps", "1",
            "--cache-dir", "", "--json", str(tmp / "p.json")]
    assert main(args) == 0
    data = json.loads((tmp / "p.json").read_text())
    assert data["verdict"]["details"]["probe_source"] == "published"
    # The control twins share the published images' streams: re-marking with the true key through the
    # black-box path reproduces the published pixels.
    probes = seen[0]
    assert list(probes.ids) == [rels[i] for i in picks.tolist()]
    _, remarked = next(black_box.marked_versions(
        marker, key, black_box.Probes(probes.images, probes.labels, ids=probes.ids), num_controls=1,
        config=MarkConfig(steps=1), seed=0))
    assert torch.equal(remarked, probes.published)

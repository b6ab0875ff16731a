"""Published probes (issue 9, defect 2): the control twins of published images are marked with the settings and
the seed the folder's mark.json records, so that the K + 1 versions are exchangeable."""

import json
import shutil

import pytest
import torch
from helpers.detect_files import write_detect_files

import radioactive.detect as detect_package
from radioactive.cli import main
from radioactive.detect import Probes
from radioactive.detect.probes import marked_versions
from radioactive.detect.published import marking_settings, published_probes, recorded_source
from radioactive.errors import ConfigError, DatasetError, KeyMismatchError
from radioactive.key import Key
from radioactive.manifest import read_manifest_rows
from radioactive.mark import MarkConfig
from radioactive.marker import Marker
from radioactive.publish import mark_dataset
from radioactive.sources import LabelledImages, load_labelled, open_source

# Not MarkConfig's defaults (steps, lr, seed 0): twins marked with those would differ from what was published.
PUBLISHED = MarkConfig(steps=3, lr=0.03, eval_draws=0)
SEED = 5


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    tmp = write_detect_files(tmp_path_factory.mktemp("published"), classes=3, per_class=10, planted=0.0, images="src")
    mark_dataset(open_source(tmp / "src"), tmp / "pub", marker=Marker.from_checkpoint(tmp / "marker.safetensors"),
                 key=Key.load(tmp / "key.safetensors"), fraction=0.5, config=PUBLISHED, seed=SEED, progress=False)
    return tmp


def _cli(tmp, *more):
    return ["detect", "--key", str(tmp / "key.safetensors"), "--marker", str(tmp / "marker.safetensors"),
            "--model", str(tmp / "suspect.safetensors"), "--black-box", "--published", str(tmp / "pub"),
            "--controls", "3", "--cache-dir", "", *more]


def test_cli_published_twins_reproduce_the_published_pixels(published, monkeypatch):
    """Through `radioactive detect --published`, re-marking the probes with the true key, with the settings and
    seed detect marks the twins with, gives the published pixels bit for bit: the true version is one more draw
    of the twins' marking. (The old command marked the twins with MarkConfig's defaults and seed 0.)"""
    tmp = published
    seen = {}
    real = detect_package.blackbox

    def spy(predict, key, probes, **options):
        seen.update(probes=probes, settings=options["settings"])
        return real(predict, key, probes, **options)

    monkeypatch.setattr(detect_package, "blackbox", spy)
    assert main(_cli(tmp, "--probes", str(tmp / "src"), "--probes-per-class", "4", "--json", str(tmp / "v.json"))) == 0
    probes, settings = seen["probes"], seen["settings"]
    assert settings.mark == PUBLISHED and settings.seed == SEED
    marked = {row["source"] for row in read_manifest_rows(tmp / "pub") if row["marked"]}
    assert len(probes) == 12 and set(probes.ids) <= marked  # only marked images: 4 of the 5 per class
    assert probes.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    marker = Marker.from_checkpoint(tmp / "marker.safetensors")
    key = Key.load(tmp / "key.safetensors")
    fresh = Probes(probes.images, probes.labels, ids=probes.ids)
    _, remarked = next(marked_versions(marker, key, fresh, num_controls=0, config=settings.mark, seed=settings.seed))
    assert torch.equal(remarked, probes.published)
    _, with_defaults = next(marked_versions(marker, key, fresh, num_controls=0, config=MarkConfig(), seed=0))
    assert not torch.equal(with_defaults, probes.published)  # what the old command's twins were marked like
    verdict = json.loads((tmp / "v.json").read_text())["verdict"]
    assert verdict["details"]["probe_source"] == "published" and verdict["counts"]["probes"] == 12


def test_cli_probes_default_to_the_recorded_source(published, capsys):
    tmp = published
    assert recorded_source(tmp / "pub") == str((tmp / "src").resolve())
    assert main(_cli(tmp, "--combine", "perm")) == 0
    assert "blackbox-perm" in capsys.readouterr().out


def test_cli_refuses_contradicting_flags(published, capsys):
    tmp = published
    assert main(_cli(tmp, "--mark-steps", "90")) != 0
    err = capsys.readouterr().err
    assert "--steps 90 contradicts settings.config.steps = 3" in err and "Traceback" not in err  # --mark-steps: older name
    assert main(_cli(tmp, "--mark-seed", "0")) != 0
    assert "--mark-seed 0 contradicts settings.seed = 5" in capsys.readouterr().err
    assert main(_cli(tmp, "--mark-steps", "3", "--mark-seed", "5", "--probes-per-class", "2")) == 0


def _copy_with_record(tmp, name, edit=None):
    """A copy of the published folder whose mark.json is changed by ``edit`` (removed without one)."""
    target = tmp / name
    shutil.copytree(tmp / "pub", target)
    if edit is None:
        (target / "mark.json").unlink()
        return target
    record = json.loads((target / "mark.json").read_text())
    edit(record)
    (target / "mark.json").write_text(json.dumps(record))
    return target


def test_missing_record_or_field_is_refused_by_name(published, capsys):
    tmp = published
    no_record = _copy_with_record(tmp, "no-record")
    with pytest.raises(ConfigError, match=r"mark.json does not exist.*settings.config, settings.seed"):
        marking_settings(no_record)
    no_seed = _copy_with_record(tmp, "no-seed", lambda record: record["settings"].pop("seed"))
    with pytest.raises(ConfigError, match="has no 'settings.seed'"):
        marking_settings(no_seed)
    no_config = _copy_with_record(tmp, "no-config", lambda record: record["settings"].pop("config"))
    with pytest.raises(ConfigError, match="has no 'settings.config'"):
        marking_settings(no_config)
    assert main(_cli(tmp, "--probes", str(tmp / "src")) + ["--published", str(no_seed)]) != 0
    assert "settings.seed" in capsys.readouterr().err
    other = Key.generate(Key.load(tmp / "key.safetensors").marker, seed=9)
    with pytest.raises(KeyMismatchError, match="marked with key"):
        marking_settings(tmp / "pub", key=other)
    assert marking_settings(tmp / "pub") == (PUBLISHED, SEED)


def test_published_probes_pair_marked_images_with_their_originals(published):
    tmp = published
    pub, src = load_labelled(tmp / "pub"), load_labelled(tmp / "src")
    probes = published_probes(tmp / "pub", pub, src, num_classes=10)
    assert len(probes) == 15 and probes.source == "published"
    rows = {row["source"]: row for row in read_manifest_rows(tmp / "pub")}
    assert all(rows[ident]["marked"] for ident in probes.ids)
    where = {ident: i for i, ident in enumerate(src.ids)}
    for n, ident in enumerate(probes.ids):
        assert torch.equal(probes.images[n], src.images[where[ident]])
        assert not torch.equal(probes.published[n], probes.images[n])
    others = LabelledImages(src.images[:3], src.labels[:3], [f"other/{i}.png" for i in range(3)], src.classes)
    with pytest.raises(DatasetError, match="do not hold the originals"):
        published_probes(tmp / "pub", pub, others, num_classes=10)

"""load_labelled (every dataset spec read whole as tensors) and read_mark_record."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from radioactive.data import read_image
from radioactive.errors import ConfigError, DatasetError, ImageReadError, ManifestError
from radioactive.manifest import read_mark_record
from radioactive.sources import LabelledImages, load_labelled


def _image(path, shape=(8, 8), value=None, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8) if value is None else \
        np.full(shape, value, dtype=np.uint8)
    Image.fromarray(array).save(path)
    return path


def _published(root, rows):
    root.mkdir(parents=True, exist_ok=True)
    (root / "manifest.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return root


def test_class_tree_and_list(tmp_path):
    for i, name in enumerate(["x/b.png", "x/a.png", "y/c.png"]):
        _image(tmp_path / "tree" / name, seed=i)
    data = load_labelled(tmp_path / "tree")
    assert isinstance(data, LabelledImages) and len(data) == 3
    assert data.ids == ["x/a.png", "x/b.png", "y/c.png"] and data.labels.tolist() == [0, 0, 1]
    assert data.images.dtype == torch.uint8 and data.images.shape == (3, 1, 8, 8)
    assert torch.equal(data.images[0], read_image(tmp_path / "tree" / "x" / "a.png"))
    (tmp_path / "list.csv").write_text("path,label\ntree/y/c.png,cat\ntree/x/a.png,ant\n")
    listed = load_labelled(tmp_path / "list.csv", limit=1)
    assert listed.ids == ["tree/x/a.png"] and listed.classes == ["ant", "cat"] and listed.labels.tolist() == [0]
    assert torch.equal(listed.images[0], data.images[0])


def test_sizes_must_agree_unless_resized(tmp_path):
    _image(tmp_path / "tree" / "a" / "small.png", (8, 8))
    _image(tmp_path / "tree" / "a" / "wide.png", (8, 12))
    with pytest.raises(DatasetError, match=r"a/wide.png: 8x12 pixels but a/small.png is 8x8; pass a size"):
        load_labelled(tmp_path / "tree")
    resized = load_labelled(tmp_path / "tree", size=4, channels=3)
    assert resized.images.shape == (2, 3, 4, 4)
    flat = _image(tmp_path / "flat" / "a" / "v.png", (8, 8), value=77)
    assert load_labelled(flat.parent.parent, size=4).images.unique().tolist() == [77]


@pytest.mark.parametrize("options", [{"limit": 0}, {"size": -1}, {"channels": 2}, {"limit": True}])
def test_bad_options(tmp_path, options):
    _image(tmp_path / "tree" / "a" / "x.png")
    with pytest.raises(ConfigError, match=next(iter(options))):
        load_labelled(tmp_path / "tree", **options)


def test_published_folder_reads_through_its_manifest(tmp_path):
    out = tmp_path / "out"
    _image(out / "b" / "2.png", seed=2)
    _image(out / "a" / "1.png", seed=1)
    _image(out / "a" / "stray.png", seed=3)  # not in the manifest: not part of the published set
    rows = [
        {"source": "b/2.jpg", "output": "b/2.png", "label": 1, "marked": True},
        {"source": "a/1.png", "output": "a/1.png", "label": 0, "marked": False},
        {"source": "a/bad.png", "output": None, "label": 0, "marked": False, "bad": True, "error": "corrupt"},
    ]
    _published(out, rows)
    with open(out / "manifest.jsonl", "a") as handle:
        handle.write('{"source": "a/torn')  # an interrupted append
    data = load_labelled(out)
    assert data.marked and data.ids == ["a/1.png", "b/2.jpg"] and data.labels.tolist() == [0, 1]
    assert data.classes == ["0", "1"]
    assert torch.equal(data.images[1], read_image(out / "b" / "2.png"))


@pytest.mark.parametrize(("row", "error", "match"), [
    ({"source": "a", "output": "../../etc/x.png", "label": 0}, ManifestError, "escapes the dataset root"),
    ({"source": "a", "output": "a.png", "label": -1}, ManifestError, "invalid label -1"),
    ({"source": "a", "output": "a.png", "label": "0"}, ManifestError, "invalid label '0'"),
    ({"source": 3, "output": "a.png", "label": 0}, ManifestError, "missing or repeated source"),
    ({"source": "a", "output": "missing.png", "label": 0}, ImageReadError, "missing.png: file does not exist"),
])
def test_published_rows_are_checked(tmp_path, row, error, match):
    out = _published(tmp_path / "out", [row, {"source": "z", "output": "z.png", "label": 0}])
    _image(out / "a.png")
    _image(out / "z.png")
    with pytest.raises(error, match=match):
        load_labelled(out)


def test_published_links_and_corrupt_lines_are_refused(tmp_path):
    secret = _image(tmp_path / "secret.png")
    out = _published(tmp_path / "out", [{"source": "a", "output": "a.png", "label": 0}])
    os.symlink(secret, out / "a.png")
    with pytest.raises(ImageReadError, match="a.png: refused: a symbolic link leading outside"):
        load_labelled(out)
    (out / "manifest.jsonl").write_text('not json\n{"source": "a", "output": "a.png", "label": 0}\n')
    with pytest.raises(ManifestError, match="manifest.jsonl line 1 is corrupt"):
        load_labelled(out)


def test_read_mark_record(tmp_path):
    with pytest.raises(DatasetError, match=r"mark.json does not exist; expected the output folder"):
        read_mark_record(tmp_path)
    (tmp_path / "mark.json").write_text("[1, 2]")
    with pytest.raises(ManifestError, match="mark.json is corrupt"):
        read_mark_record(tmp_path)
    record = {"status": "complete", "settings": {"seed": 3, "config": {"steps": 4}, "key_fingerprint": "ab"}}
    (tmp_path / "mark.json").write_text(json.dumps(record))
    assert read_mark_record(tmp_path) == record == read_mark_record(tmp_path / "mark.json")


def test_load_labelled_errors(tmp_path):
    with pytest.raises(DatasetError, match="no such folder or list file"):
        load_labelled(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError):
        load_labelled(str(tmp_path / "empty"))


def test_a_published_folder_flags_only_the_images_its_marking_changed(tmp_path):
    """A published folder is mostly unchanged copies: ``marked_flags`` holds, per image, whether the manifest says
    it was marked and changed (an image marked with epsilon 0 is published unchanged)."""
    import json

    from helpers.tiny import save_tiny_marker, tiny_spec, write_class_tree

    from radioactive.key import Key
    from radioactive.mark import MarkConfig
    from radioactive.marker import Marker
    from radioactive.publish import mark_dataset
    from radioactive.sources import load_labelled, open_source

    spec = tiny_spec(3, 16)
    marker = Marker.from_checkpoint(save_tiny_marker(tmp_path / "marker.safetensors", spec))
    key = Key.generate(marker.info, seed=0)
    src = write_class_tree(tmp_path / "src", per_class=4, seed=0)
    for name, config in (("pub", MarkConfig(steps=2, eval_draws=0)), ("same", MarkConfig(epsilon=0.0, eval_draws=0))):
        mark_dataset(open_source(src), tmp_path / name, marker=marker, key=key, fraction=0.4, config=config,
                     progress=False)
    rows = {row["source"]: row for row in map(json.loads, (tmp_path / "pub" / "manifest.jsonl").read_text().splitlines())}
    published = load_labelled(tmp_path / "pub", size=16, channels=1)
    assert published.marked and published.marked_flags.dtype == torch.bool
    assert published.marked_flags.tolist() == [rows[i]["marked"] for i in published.ids]
    assert 0 < int(published.marked_flags.sum()) < len(published)
    unchanged = load_labelled(tmp_path / "same", size=16, channels=1)
    assert unchanged.marked and not unchanged.marked_flags.any()  # selected, but not one pixel changed
    assert load_labelled(src, size=16, channels=1).marked_flags is None

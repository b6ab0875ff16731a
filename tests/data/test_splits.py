"""Fashion-MNIST's named splits mean the same images in every command (issue 9, defect 1).

The documented flow (``mark --data fashion-mnist``, then ``detect`` with its default reference and probes)
must never publish an image that detection treats as never published. A tiny stand-in for the idx files
(``RADIOACTIVE_FASHION_MNIST``) keeps the real 55k/5k/10k rule while marking only a few images.
"""

from __future__ import annotations

import hashlib
import json
import re

import pytest
import torch
from helpers.fmnist_stub import fake_fashion_mnist
from helpers.tiny import save_tiny_marker, tiny_spec

from radioactive._io import sha256_bytes
from radioactive.cli import build_parser, main
from radioactive.cli.detect import HELD_OUT
from radioactive.data import read_image
from radioactive.errors import DatasetError
from radioactive.fmnist import (
    HOLDOUT,
    SPLITS,
    fashion_mnist_indices,
    fashion_mnist_splits,
    holdout_indices,
    load_fashion_mnist,
)
from radioactive.sources import load_labelled, open_source

OWNER_IMAGES = 100  # the stand-in training file holds HOLDOUT + OWNER_IMAGES images
TEST_IMAGES = 30


@pytest.fixture()
def fake_fmnist(tmp_path, monkeypatch):
    return fake_fashion_mnist(tmp_path / "fmnist", monkeypatch, OWNER_IMAGES, TEST_IMAGES)


def _index(rel: str) -> int:
    match = re.fullmatch(r"(owner|holdout|test)/[a-z-]+/(\d+)\.png", rel)
    assert match, rel
    return int(match.group(2))


def _pixel_hash(image: torch.Tensor) -> str:
    return sha256_bytes(image.contiguous().numpy().tobytes())


def test_holdout_is_the_committed_permutation():
    """``holdout`` is the 5000 images every committed number used as ``val`` (seed 0, 60k training file)."""
    held, kept = holdout_indices(60_000)
    assert held[:8].tolist() == [1, 3, 47, 49, 80, 83, 109, 111]
    assert hashlib.sha256(held.numpy().tobytes()).hexdigest() == (
        "e1f4a1de3b6a574559c71f58127c0e23a9a9e561a4af7313a16d3af3810e80a8")
    assert len(kept) == 55_000 and not set(held.tolist()) & set(kept.tolist())
    with pytest.raises(DatasetError, match="cannot hold out 5000 of 100"):
        holdout_indices(100)


def test_named_splits_agree_everywhere(fake_fmnist):
    images, labels = load_fashion_mnist("train")
    indices = fashion_mnist_indices()
    splits = fashion_mnist_splits()
    assert SPLITS == ("owner", "holdout", "test") and set(splits) == set(SPLITS)
    assert len(indices["owner"]) == OWNER_IMAGES and len(indices["holdout"]) == HOLDOUT
    for name in ("owner", "holdout"):
        assert torch.equal(splits[name][0], images[indices[name]])
        assert torch.equal(splits[name][1], labels[indices[name]])
        listed = open_source(f"fashion-mnist:{name}")
        assert sorted(_index(item.rel) for item in listed.items) == indices[name].tolist()
        read = load_labelled(f"fashion-mnist:{name}")
        assert torch.equal(read.images, splits[name][0]) and torch.equal(read.labels, splits[name][1])
        assert [_index(rel) for rel in read.ids] == indices[name].tolist() and not read.marked
    assert [item.rel for item in open_source("fashion-mnist").items] == [
        item.rel for item in open_source("fashion-mnist:owner").items]
    assert open_source("fashion-mnist").items[0].rel.startswith("owner/")
    test = load_labelled("fashion-mnist:test", limit=5)
    assert torch.equal(test.images, splits["test"][0][:5]) and test.ids[0] == f"test/{test.classes[test.labels[0]]}/00.png"


@pytest.mark.parametrize("spec", ["fashion-mnist:train", "fashion-mnist:val", "fashion-mnist:nope",
                                  "fashion-mnist-test"])
def test_old_and_unknown_split_names_are_refused(fake_fmnist, spec):
    with pytest.raises(DatasetError, match=r"choose from \['fashion-mnist', 'fashion-mnist:owner', "
                       r"'fashion-mnist:holdout', 'fashion-mnist:test'\]"):
        open_source(spec)
    with pytest.raises(DatasetError, match="fashion-mnist:holdout"):
        load_labelled(spec)


def test_documented_flow_never_publishes_a_reference_or_probe_image(fake_fmnist, tmp_path, capsys):
    """``mark --data fashion-mnist`` then ``detect``'s default ``--reference`` and ``--probes``: disjoint by
    index and by pixel hash (of the originals and of the published files)."""
    save_tiny_marker(tmp_path / "marker.safetensors", tiny_spec(10))
    key, out = tmp_path / "key.safetensors", tmp_path / "published"
    assert main(["keygen", "--marker", str(tmp_path / "marker.safetensors"), "--out", str(key)]) == 0
    assert main(["mark", "--key", str(key), "--data", "fashion-mnist", "--fraction", "0.1", "--out", str(out),
                 "--steps", "2", "--device", "cpu", "--no-progress"]) == 0
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    published = {_index(row["source"]) for row in rows}
    assert published == set(fashion_mnist_indices()["owner"].tolist())
    per_class = torch.bincount(fashion_mnist_splits()["owner"][1], minlength=10).tolist()
    assert sum(row["marked"] for row in rows) == sum(int(0.1 * n + 0.5) for n in per_class) > 0
    published_hashes = {row["source_sha256"] for row in rows}
    published_hashes |= {_pixel_hash(read_image(out / row["output"])) for row in rows}

    defaults = build_parser().parse_args(["detect", "--key", str(key)])
    for option in ("reference", "probes"):
        # --probes without --published falls back to the held-out split (cli/detect.py's HELD_OUT).
        used = load_labelled(getattr(defaults, option) or HELD_OUT)
        assert len(used) == HOLDOUT and not used.marked, option
        assert not published & {_index(rel) for rel in used.ids}, option
        assert not published_hashes & {_pixel_hash(image) for image in used.images}, option
    # The published folder reads back through its manifest under the ids mark used.
    again = load_labelled(out)
    assert again.marked and sorted(again.ids) == again.ids == sorted(row["source"] for row in rows)

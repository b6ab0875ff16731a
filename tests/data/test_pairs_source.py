"""The Fashion-MNIST pairs sources (issue 27, item 1): ``fashion-mnist-pairs`` (100 classes, label 10 a + b) and
its 10-class control ``fashion-mnist-pairs10`` (label a), 28 x 56 composites of one split's images each.

A small stand-in for the idx files (``RADIOACTIVE_FASHION_MNIST``) keeps the real owner/holdout rule (5,000
held out by the seed-0 permutation) with few owner and test images; one test checks the real files' sizes.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from helpers.fmnist_stub import fake_fashion_mnist
from helpers.tiny import save_tiny_marker, tiny_spec

from radioactive.cli import main
from radioactive.errors import ConfigError, DatasetError
from radioactive.experiment.config import ExperimentConfig
from radioactive.experiment.context import Context
from radioactive.fmnist import SPLITS, fashion_mnist_indices, find_fashion_mnist, load_fashion_mnist
from radioactive.fmnist_pairs import (
    PAIRS,
    PAIRS10,
    fashion_mnist_pairs_splits,
    pair_positions,
    pairs_split,
)
from radioactive.marker import Marker
from radioactive.nets import load_checkpoint
from radioactive.sources import load_labelled, named_test_split, open_source

OWNER_IMAGES = 400  # the stand-in training file holds HOLDOUT + OWNER_IMAGES images
TEST_IMAGES = 200  # 20 per class: 2 composites per pair class


@pytest.fixture()
def fake_fmnist(tmp_path, monkeypatch):
    return fake_fashion_mnist(tmp_path / "fmnist", monkeypatch, OWNER_IMAGES, TEST_IMAGES)


def _members(split: str) -> set[int]:
    """Indices into the split's idx file of the split's Fashion-MNIST images."""
    if split == "test":
        return set(range(len(load_fashion_mnist("test")[1])))
    return set(fashion_mnist_indices()[split].tolist())


def test_splits_are_disjoint_and_each_uses_only_its_own_images(fake_fmnist):
    used = {}
    for split in SPLITS:
        pairs = pairs_split(PAIRS, split)
        left, right = pairs.left.tolist(), pairs.right.tolist()
        assert set(left) | set(right) <= _members(split), split
        # At most once a left half and once a right half; never both halves of one composite.
        assert len(set(left)) == len(left) and len(set(right)) == len(right), split
        assert all(a != b for a, b in zip(left, right, strict=True)), split
        used[split] = set(left) | set(right)
    assert not used["owner"] & used["holdout"]  # both from the training file; the test file is another file
    assert len(used["test"]) == TEST_IMAGES


def test_labels_are_10a_plus_b_balanced_and_the_control_is_a(fake_fmnist):
    for split in SPLITS:
        _, file_labels = load_fashion_mnist("test" if split == "test" else "train")
        pairs, control = pairs_split(PAIRS, split), pairs_split(PAIRS10, split)
        a, b = file_labels[pairs.left], file_labels[pairs.right]
        assert torch.equal(pairs.labels, 10 * a + b) and torch.equal(control.labels, a)
        rarest = int(torch.bincount(file_labels[sorted(_members(split))], minlength=10).min())
        assert torch.bincount(pairs.labels, minlength=100).tolist() == [rarest // 10] * 100, split
        assert torch.bincount(control.labels, minlength=10).tolist() == [10 * (rarest // 10)] * 10
        assert len(pairs.classes) == 100 and pairs.classes[10 * 3 + 8] == "dress+bag" and len(control.classes) == 10
    assert len(pairs_split(PAIRS, "test").labels) == TEST_IMAGES  # 20 per class: every test image used twice


def test_composition_is_deterministic_and_pixels_are_the_two_images_side_by_side(fake_fmnist):
    first, again = pairs_split(PAIRS, "holdout"), pairs_split(PAIRS, "holdout")
    assert first.ids == again.ids and torch.equal(first.left, again.left) and torch.equal(first.right, again.right)
    file_images, _ = load_fashion_mnist("train")
    some = torch.tensor([0, 1, len(first.ids) - 1])
    stack = first.images[some]
    assert stack.shape == (3, 1, 28, 56) and stack.dtype == torch.uint8 and first.images.shape[1:] == (1, 28, 56)
    for row, k in enumerate(some.tolist()):
        expected = torch.cat((file_images[first.left[k]], file_images[first.right[k]]), dim=-1)
        assert torch.equal(first.images[k], expected) and torch.equal(stack[row], expected)
        left, right = (int(part) for part in first.ids[k].removesuffix(".png").split("/")[1].split("-")[1:])
        assert (left, right) == (int(first.left[k]), int(first.right[k]))
    assert first.ids[0].startswith("holdout/0000-")
    splits = fashion_mnist_pairs_splits(PAIRS)
    assert torch.equal(splits["holdout"][0], first.images[torch.arange(len(first.ids))])
    assert torch.equal(splits["holdout"][1], first.labels)


def test_the_control_holds_the_same_images_under_the_same_ids(fake_fmnist):
    for split in SPLITS:
        pairs, control = pairs_split(PAIRS, split), pairs_split(PAIRS10, split)
        assert pairs.ids == control.ids and torch.equal(pairs.left, control.left)
        assert torch.equal(pairs.right, control.right) and torch.equal(control.labels, pairs.labels // 10)
    many, few = load_labelled(PAIRS, limit=20), load_labelled(PAIRS10, limit=20)
    assert torch.equal(many.images, few.images) and many.ids == few.ids


def test_pair_positions_rules():
    labels = torch.arange(300) % 10  # 30 per class: room for 3 per pair class
    left, right = pair_positions(labels, "owner")
    assert len(left) == 300 and torch.bincount(labels[left] * 10 + labels[right]).tolist() == [3] * 100
    assert torch.equal(pair_positions(labels, "owner")[0], left)
    assert not torch.equal(pair_positions(labels, "test")[0], left)  # each split has its own draws
    assert len(pair_positions(labels, "owner", per_pair=2)[0]) == 200
    # Every image of a class is a left and a right half: same-class draws often meet, and are swapped apart.
    tight = torch.arange(200) % 10
    for name in range(40):
        left, right = pair_positions(tight, f"draw{name}")
        assert not (left == right).any() and sorted(left.tolist()) == sorted(right.tolist()) == list(range(200))
    with pytest.raises(DatasetError, match=r"cannot compose 4 pairs per class from the 'owner' split: its rarest"):
        pair_positions(labels, "owner", per_pair=4)
    with pytest.raises(DatasetError, match="at least 2"):
        pair_positions(torch.arange(15) % 10, "test")


@pytest.mark.parametrize("spec", ["fashion-mnist-pairs:train", "fashion-mnist-pairs10:val", "fashion-mnist-pairs:"])
def test_an_unknown_split_is_refused_naming_the_spec(fake_fmnist, spec):
    name = spec.partition(":")[0]
    valid = rf"choose from \['{name}', '{name}:owner', '{name}:holdout', '{name}:test'\]"
    with pytest.raises(DatasetError, match=rf"unknown split .* in '{spec}'; {valid}"):
        open_source(spec)
    with pytest.raises(DatasetError, match=spec):
        load_labelled(spec)
    with pytest.raises(DatasetError, match=r"or the 28 x 56 pairs \['fashion-mnist-pairs', 'fashion-mnist-pairs10'\]"):
        open_source("fashion-mnist-pair")  # a typo reads as an unknown Fashion-MNIST name, listing the pairs


def test_every_reader_accepts_the_names(fake_fmnist):
    source = open_source(PAIRS10 + ":test")
    assert len(source) == TEST_IMAGES and source.classes[0] == "t-shirt" and source.description == PAIRS10 + ":test"
    image, label, rel = next(iter(source))
    assert image.shape == (1, 28, 56) and rel == source.items[0].rel and label == source.items[0].label
    assert source.header_size(source.items[0]) == (1, 28, 56) and len(source.source_sha256(source.items[0])) == 64
    held = load_labelled(PAIRS + ":holdout", limit=5)
    assert held.images.shape == (5, 1, 28, 56) and held.ids == pairs_split(PAIRS, "holdout").ids[:5]
    assert load_labelled(PAIRS, limit=3, size=(14, 28), channels=3).images.shape == (3, 3, 14, 28)
    assert named_test_split(PAIRS) == PAIRS + ":test" and named_test_split("fashion-mnist:owner") == "fashion-mnist:test"
    assert named_test_split(fake_fmnist) is None


def test_mark_command_publishes_pairs(fake_fmnist, tmp_path):
    marker = save_tiny_marker(tmp_path / "marker.safetensors", replace(tiny_spec(100), input_size=(28, 56)))
    key, out = tmp_path / "key.safetensors", tmp_path / "published"
    assert main(["keygen", "--marker", str(marker), "--out", str(key)]) == 0
    assert main(["mark", "--key", str(key), "--data", PAIRS + ":test", "--fraction", "0.5", "--classes", "0,38,99",
                 "--out", str(out), "--steps", "2", "--device", "cpu", "--no-progress"]) == 0
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    pairs = pairs_split(PAIRS, "test")
    assert sorted(row["source"] for row in rows) == sorted(pairs.ids)
    assert sorted(row["label"] for row in rows if row["marked"]) == [0, 38, 99]
    published = load_labelled(out)
    assert published.marked and published.images.shape == (TEST_IMAGES, 1, 28, 56)


def test_commands_refuse_a_bad_split_naming_it(fake_fmnist, tmp_path, capsys):
    assert main(["train", "--data", "fashion-mnist-pairs:train", "--out", str(tmp_path / "m.safetensors")]) == 2
    assert "fashion-mnist-pairs:train" in capsys.readouterr().err
    assert main(["train-marker", "--data", "fashion-mnist-pairs:owner", "--out", str(tmp_path / "m.safetensors")]) == 2
    assert "'fashion-mnist-pairs:owner' (choose from 'fashion-mnist', 'fashion-mnist-pairs', 'fashion-mnist-pairs10')" \
        in capsys.readouterr().err


def test_train_marker_trains_on_the_pairs_without_flips(fake_fmnist, tmp_path, capsys):
    out = tmp_path / "pairs-marker.safetensors"
    assert main(["train-marker", "--data", PAIRS, "--arch", "mlp", "--epochs", "1", "--out", str(out),
                 "--device", "cpu"]) == 0
    marker = Marker.from_checkpoint(out)
    _, spec, extra = load_checkpoint(out)
    assert spec.input_size == (28, 56) and spec.num_classes == 100 and marker.spec == spec
    assert extra["dataset"] == PAIRS and extra["recipe"]["flip"] is False and len(extra["classes"]) == 100
    assert extra["command"].startswith(f"radioactive train-marker --data {PAIRS} --arch mlp")


def test_experiment_reads_the_pairs_and_asks_for_a_marker_with_their_classes(fake_fmnist, tmp_path):
    config = ExperimentConfig(dataset=PAIRS, detect={"reference_images": 10, "probes": 10}, train={"flip": False})
    context = Context(config, tmp_path / "run")
    data = context.data
    assert data["owner"][0].shape[1:] == (1, 28, 56) and context.num_classes == 100
    assert torch.equal(data["test"][1], pairs_split(PAIRS, "test").labels)
    with pytest.raises(ConfigError, match="has 100 classes but the marker 'default' has 10; train one on it"):
        _ = context.marker
    with pytest.warns(UserWarning, match="flips swap the two halves"):
        _ = Context(ExperimentConfig(dataset=PAIRS10, detect={"reference_images": 10, "probes": 10}),
                    tmp_path / "other").data


def test_real_files_give_the_documented_sizes():
    try:
        find_fashion_mnist()
    except DatasetError:
        pytest.skip("Fashion-MNIST is not installed here")
    sizes = {split: len(pairs_split(PAIRS, split).labels) for split in SPLITS}
    assert sizes == {"owner": 54_700, "holdout": 4_700, "test": 10_000}

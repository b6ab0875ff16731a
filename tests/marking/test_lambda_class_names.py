"""``MarkConfig.lambda_class`` pushes against the marker's classifier row of each image's *class*: when the
dataset and the marker both name their classes, rows are matched by name (a folder's alphabetical order is not
Fashion-MNIST's), and names that cannot be matched are refused."""

import pytest
import torch
from helpers.tiny import save_tiny_marker, tiny_marker, tiny_spec, write_class_tree

from radioactive.errors import ConfigError
from radioactive.fmnist import CLASSES as FMNIST_CLASSES
from radioactive.key import Key
from radioactive.mark import MarkConfig, mark
from radioactive.marker import Marker
from radioactive.nets import save_checkpoint
from radioactive.publish import mark_dataset
from radioactive.sources import open_source

HARD = MarkConfig(steps=6, lr=0.02, epsilon=8 / 255, min_psnr=30, lambda_class=5.0, eval_draws=0)
SPEC = tiny_spec(3, 16)


def _marker(classes=("cow", "ant", "bee")):
    marker = tiny_marker(SPEC, seed=0)
    return Marker(marker.model, marker.spec, marker.split, marker.info, classes=classes)


def _inputs(n=9):
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 1, 16, 16), generator=gen, dtype=torch.uint8)
    carriers = torch.nn.functional.normalize(torch.randn(3, 8, generator=gen, dtype=torch.float64), dim=1)
    return images, torch.arange(n) % 3, carriers


def test_rows_are_matched_by_class_name():
    marker = _marker()
    images, labels, carriers = _inputs()
    dataset_classes = ["Ant", "bee", "COW"]  # alphabetical folders; the marker's order is cow, ant, bee
    by_name = mark(marker, images, labels, carriers, HARD, seed=0, classes=dataset_classes)
    # The same marking, with each image's class row picked by hand (labels) and its carrier kept (targets).
    marker_rows = torch.tensor([1, 2, 0])[labels]
    by_hand = mark(marker, images, marker_rows, carriers, HARD, seed=0, targets=labels)
    assert torch.equal(by_name.images, by_hand.images)
    by_index = mark(marker, images, labels, carriers, HARD, seed=0)  # no dataset names: rows by label, as before
    assert not torch.equal(by_name.images, by_index.images)
    # Without lambda_class, the names play no part.
    plain = HARD.__class__(**{**HARD.__dict__, "lambda_class": 0.0})
    assert torch.equal(mark(marker, images, labels, carriers, plain, seed=0, classes=["x", "y", "z"]).images,
                       mark(marker, images, labels, carriers, plain, seed=0).images)


def test_unmatched_class_names_are_refused():
    images, labels, carriers = _inputs()
    with pytest.raises(ConfigError, match=r"lambda_class.*'dog'.*\['cow', 'ant', 'bee'\]"):
        mark(_marker(), images, labels, carriers, HARD, seed=0, classes=["ant", "bee", "dog"])


def test_marker_class_names_come_from_its_checkpoint(tmp_path):
    path = save_tiny_marker(tmp_path / "plain.safetensors", SPEC)
    assert Marker.from_checkpoint(path).classes is None
    model = tiny_marker(SPEC).model
    save_checkpoint(model, tmp_path / "named.safetensors", SPEC, {"classes": ["cow", "ant", "bee"]})
    assert Marker.from_checkpoint(tmp_path / "named.safetensors").classes == ("cow", "ant", "bee")
    fmnist_spec = tiny_spec(10, 16)
    save_checkpoint(tiny_marker(fmnist_spec).model, tmp_path / "fm.safetensors", fmnist_spec,
                    {"kind": "marker", "dataset": "fashion-mnist"})  # as the shipped marker records it
    assert Marker.from_checkpoint(tmp_path / "fm.safetensors").classes == FMNIST_CLASSES


def test_publishing_a_folder_matches_the_marker_rows_by_name(tmp_path):
    src = write_class_tree(tmp_path / "src", per_class=2, seed=0)  # ant, bee, cow
    key = Key.generate(_marker().info, seed=0)
    mark_dataset(open_source(src), tmp_path / "ok", marker=_marker(), key=key, fraction=0.5, config=HARD,
                 progress=False)
    with pytest.raises(ConfigError, match=r"'ant'.*\['cat', 'dog', 'emu'\]"):
        mark_dataset(open_source(src), tmp_path / "no", marker=_marker(("cat", "dog", "emu")), key=key,
                     fraction=0.5, config=HARD, progress=False)

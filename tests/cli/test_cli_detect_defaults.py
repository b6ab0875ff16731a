"""`radioactive detect` without --reference / --probes: the built-in held-out split that matches the key's marker
(the shipped 10-class one, the 100-class pairs one, its 10-class control), and a clear error for any other."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from radioactive import Key
from radioactive.cli.detect import HELD_OUT, held_out_default
from radioactive.errors import ConfigError
from radioactive.marker import Marker

MARKERS = Path(__file__).resolve().parents[2] / "src" / "radioactive" / "markers"


def key_of(info, classes: int | None = None) -> Key:
    key = Key.generate(info, seed=5)
    return key if classes is None else Key.generate(replace(info, spec=replace(info.spec, num_classes=classes)), seed=5)


def test_the_shipped_markers_keys_default_to_their_own_holdout():
    fmnist = Marker.from_checkpoint(MARKERS / "fmnist-cnn.safetensors").info
    pairs = Marker.from_checkpoint(MARKERS / "fmnist-pairs-cnn.safetensors").info
    assert held_out_default(key_of(fmnist)) == HELD_OUT == "fashion-mnist:holdout"
    assert key_of(pairs).num_classes == 100
    assert held_out_default(key_of(pairs)) == "fashion-mnist-pairs:holdout"
    assert held_out_default(key_of(pairs, classes=10)) == "fashion-mnist-pairs10:holdout"


def test_a_marker_no_built_in_data_matches_asks_for_the_users_images():
    fmnist = Marker.from_checkpoint(MARKERS / "fmnist-cnn.safetensors").info
    other = replace(fmnist, spec=replace(fmnist.spec, input_size=(32, 32)))
    with pytest.raises(ConfigError, match="32 x 32 images of 10 classes.*--reference.*--probes"):
        held_out_default(Key.generate(other, seed=5))
    with pytest.raises(ConfigError, match="28 x 28 images of 100 classes"):
        held_out_default(key_of(fmnist, classes=100))


@pytest.mark.parametrize(("classes", "available", "per_class"), [(10, 500, 100), (100, 47, 10)])
def test_without_a_count_the_probes_are_one_thousand_spread_over_the_classes(monkeypatch, classes, available,
                                                                            per_class):
    import argparse
    import types

    import torch

    import radioactive.sources
    from radioactive.cli import detect as detect_cli
    from radioactive.detect.probes import default_per_class

    labels = torch.arange(classes).repeat_interleave(available)
    fresh = types.SimpleNamespace(images=torch.zeros(len(labels), 1, 2, 2), labels=labels, ids=None, marked=False)
    monkeypatch.setattr(radioactive.sources, "load_labelled", lambda source: fresh)
    monkeypatch.setattr(detect_cli, "probe_marking", lambda args, key: types.SimpleNamespace(source_ids=False))
    args = argparse.Namespace(probes="holdout/", published=None, probes_per_class=None)
    key = types.SimpleNamespace(num_classes=classes)
    probes = detect_cli._probes(args, key)
    assert args.probes_per_class == per_class == default_per_class(classes)  # recorded in the report's command
    assert len(probes.labels) == 1000 and torch.equal(torch.bincount(probes.labels), torch.full((classes,), per_class))
    args.probes_per_class = 3  # an explicit count is kept
    assert len(detect_cli._probes(args, key).labels) == 3 * classes

"""The shipped Fashion-MNIST reference bank: found by name (API and ``--reference-model fashion-mnist``), every
member a clean 10-class model trained on the owner split, and an unknown name refused with the shipped names."""

from __future__ import annotations

import pytest
import torch

from radioactive.cli.detect import _reference_files
from radioactive.errors import ConfigError
from radioactive.nets import load_checkpoint
from radioactive.train.bank import bank_paths
from radioactive.zoo import shipped_bank


def test_the_shipped_bank_holds_five_clean_models_of_three_architectures():
    paths = bank_paths(shipped_bank("fashion-mnist"))
    assert len(paths) == 5
    archs, fingerprints = set(), set()
    for path in paths:
        model, spec, extra = load_checkpoint(path)
        assert extra["kind"] == "reference" and extra["data"] == "fashion-mnist" and spec.num_classes == 10
        assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)
        archs.add(spec.arch)
        fingerprints.add(extra["dataset_fingerprint"])
    assert archs == {"cnn", "resnet_narrow", "mlp"} and len(fingerprints) == 1  # all on the same clean images


def test_the_command_line_takes_the_bank_by_name_and_refuses_unknown_names():
    files = _reference_files(["fashion-mnist"], [None])
    assert [f for f, _ in files] == [str(p) for p in bank_paths(shipped_bank("fashion-mnist"))]
    with pytest.raises(ConfigError, match=r"no reference bank is shipped for 'cifar10'; shipped: \['fashion-mnist'\]"):
        shipped_bank("cifar10")

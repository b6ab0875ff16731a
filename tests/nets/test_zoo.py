"""The marker zoo: the shipped marker, resolve_marker (the key's marker first) and resolve_device."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from radioactive.cli import main
from radioactive.errors import ConfigError, KeyMismatchError, ModelLoadError
from radioactive.key import Key
from radioactive.marker import Marker
from radioactive.zoo import (
    default_marker,
    default_marker_path,
    default_marker_sha256,
    resolve_device,
    resolve_marker,
)

SHIPPED_SHA = "67db1e5179f1cb01e25da342d68e46dd402bc05c2f92a26b5f6d4367fc0e42a1"  # markers/README.md


@pytest.fixture(scope="module")
def shipped() -> Marker:
    return default_marker(train_if_missing=False)


def test_default_marker_is_the_shipped_checkpoint(shipped):
    assert default_marker_sha256() == SHIPPED_SHA
    assert shipped.info.weights_sha256 == SHIPPED_SHA
    assert default_marker_path().name == "fmnist-cnn.safetensors"


def test_no_shipped_marker_and_no_training_is_a_typed_error(tmp_path, monkeypatch):
    import radioactive.zoo as zoo

    monkeypatch.setattr(zoo, "default_marker_path", lambda: tmp_path / "missing.safetensors")
    with pytest.raises(ModelLoadError, match="train-marker"):
        default_marker(tmp_path / "cache", train_if_missing=False)


def test_resolve_marker_finds_the_shipped_marker_by_the_keys_weight_hash(shipped):
    assert resolve_marker().info.weights_sha256 == SHIPPED_SHA
    # The recorded path is stale (another machine, another venv): the weight hash decides.
    key = replace(Key.generate(shipped.info, seed=0), metadata={"marker_source": "/elsewhere/fmnist.safetensors"})
    assert resolve_marker(key).info.weights_sha256 == SHIPPED_SHA
    assert resolve_marker(key, "default").info.weights_sha256 == SHIPPED_SHA


def test_resolve_marker_loads_the_marker_the_key_records(tiny_marker_file):
    marker, path = tiny_marker_file[0], str(tiny_marker_file[1])
    key = replace(Key.generate(marker.info, seed=0), metadata={"marker_source": path})
    assert resolve_marker(key).info.weights_sha256 == marker.info.weights_sha256
    assert resolve_marker(key, path).info.weights_sha256 == marker.info.weights_sha256


def test_resolve_marker_names_the_missing_marker(tiny_marker_file, tmp_path):
    marker = tiny_marker_file[0]
    key = replace(Key.generate(marker.info, seed=0), metadata={"marker_source": str(tmp_path / "gone.safetensors")})
    with pytest.raises(KeyMismatchError) as info:
        resolve_marker(key)
    message = str(info.value)
    assert marker.info.weights_sha256 in message and "'cnn'" in message and "--marker" in message
    with pytest.raises(KeyMismatchError, match="marking network"):
        resolve_marker(key, "default")  # found, but not the key's marker


def test_keygen_defaults_to_the_shipped_marker_and_mark_finds_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["keygen", "--out", "owner.key", "--seed", "1"]) == 0
    key = Key.load(tmp_path / "owner.key")
    assert key.marker.weights_sha256 == SHIPPED_SHA
    assert key.metadata == {"marker_source": "default"}
    assert resolve_marker(key).info.weights_sha256 == SHIPPED_SHA


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(ConfigError, match="unknown device 'gpu0'"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda:1")

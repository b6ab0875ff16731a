"""``radioactive train-marker`` checks its architecture before it reads any image."""

import pytest

import radioactive.fmnist as fmnist
from radioactive.cli import EXIT_USAGE, main
from radioactive.errors import ConfigError


@pytest.fixture
def no_data(monkeypatch):
    def loading(*args, **kwargs):
        pytest.fail("the training data was loaded before the architecture was checked")

    monkeypatch.setattr(fmnist, "fashion_mnist_splits", loading)
    monkeypatch.setattr(fmnist, "load_fashion_mnist", loading)


def test_unknown_architecture_fails_at_once_listing_the_valid_ones(tmp_path, capsys, no_data):
    out = tmp_path / "marker.safetensors"
    assert main(["train-marker", "--out", str(out), "--arch", "typo"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "typo" in err and "--arch" in err
    assert all(name in err for name in ("cnn", "mlp", "resnet_narrow")), err
    assert not out.exists()


def test_the_api_checks_the_architecture_before_loading_data(tmp_path, no_data):
    from radioactive.zoo import train_fmnist_marker

    with pytest.raises(ConfigError, match=r"unknown architecture 'typo'.*\['cnn', 'mlp', 'resnet_narrow'\]"):
        train_fmnist_marker(tmp_path / "marker.safetensors", arch="typo")

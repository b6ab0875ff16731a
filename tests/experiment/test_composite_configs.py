"""The 100-class composite grid and its 10-class control (issue 27) differ only by the labels (and so the marker)."""

from pathlib import Path

from radioactive.experiment import load_config

ROOT = Path(__file__).resolve().parents[2]


def test_the_control_grid_changes_only_the_number_of_classes():
    many = load_config(ROOT / "configs" / "composite-100.toml")
    control = load_config(ROOT / "configs" / "composite-10.toml")
    assert (many.dataset, control.dataset) == ("fashion-mnist-pairs", "fashion-mnist-pairs10")
    assert many.marker.endswith("fmnist-pairs-cnn.safetensors")
    assert control.marker.endswith("fmnist-pairs10-cnn.safetensors")
    first, second = many.to_dict(), control.to_dict()
    for name in ("name", "dataset", "marker"):
        first.pop(name), second.pop(name)
    assert first == second
    assert many.fractions == (0.0, 0.01, 0.02, 0.05, 0.10) and many.seeds == (0, 1, 2)
    assert many.train["flip"] is False  # a flip swaps the halves: it would change the label
    assert [name for name, *_ in many.detect.variant_names()] == [
        "blackbox", "blackbox-loss-perm", "blackbox-margin-perm-mean", "blackbox-margin-rank"]
    assert many.detect.reference_fit == "matched" and set(many.detect.tests) == {"whitebox", "gradient", "blackbox"}


def test_both_grids_markers_are_shipped_with_the_same_architecture_and_their_own_classes():
    from radioactive.marker import Marker

    for name, classes in (("composite-100", 100), ("composite-10", 10)):
        config = load_config(ROOT / "configs" / f"{name}.toml")
        info = Marker.from_checkpoint(ROOT / config.marker).info
        assert (info.spec.arch, info.feature_dim, tuple(info.spec.input_size)) == ("cnn", 128, (28, 56)), name
        assert info.spec.num_classes == classes, name

import dataclasses

import pytest
import torch
from helpers.tiny import tiny_marker, tiny_spec

from radioactive.errors import ConfigError, KeyMismatchError
from radioactive.key import Key, MarkerInfo
from radioactive.mark import MarkConfig, MarkResult, image_seeds, mark, psnr
from radioactive.marker import Marker
from radioactive.nets import build_from_spec

CLASSES = 3


def _marker(seed=0, channels=1, size=16):
    spec = tiny_spec(CLASSES, size, channels=channels, mean=(0.5,) * channels, std=(0.5,) * channels)
    return tiny_marker(spec, seed=seed)


def _batch(n=6, c=1, size=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, c, size, size), generator=gen).float() / 255
    return images, torch.arange(n) % CLASSES


def _carriers(seed=0, dim=8):
    return torch.nn.functional.normalize(
        torch.randn(CLASSES, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64), dim=1)


FAST = MarkConfig(steps=8)


def test_config_validation_and_roundtrip():
    with pytest.raises(ConfigError, match="steps"):
        MarkConfig(steps=-1)
    with pytest.raises(ConfigError, match="epsilon"):
        MarkConfig(epsilon=2.0)
    with pytest.raises(ConfigError, match="min_psnr"):
        MarkConfig(min_psnr=0)
    with pytest.raises(ConfigError, match=r"unknown augmentation 'jpg'; choose from"):
        MarkConfig(augment=("crop", "jpg"))
    with pytest.warns(UserWarning, match="16/255"):
        MarkConfig(epsilon=0.2)
    config = MarkConfig(steps=3, augment=("crop", "flip", "jpeg"))
    assert MarkConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match="unknown marking settings"):
        MarkConfig.from_dict({"stepz": 3})
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.steps = 4


@pytest.mark.parametrize("config", [MarkConfig(steps=0), MarkConfig(steps=5, epsilon=0.0),
                                    MarkConfig(steps=5, epsilon=0.5 / 255)])
def test_zero_steps_or_zero_radius_is_identity(config):
    images, labels = _batch()
    result = mark(_marker(), images, labels, _carriers(), config)
    assert torch.equal(result.images, images)
    assert torch.isinf(result.psnr).all() and (result.shift == 0).all() and (result.cosine == 0).all()


def test_outputs_are_8bit_within_radius_and_floor():
    images, labels = _batch(n=8)
    for floor in (30.0, 40.0, 48.0):
        config = MarkConfig(steps=10, min_psnr=floor, epsilon=16 / 255, lr=0.05)
        result = mark(_marker(), images, labels, _carriers(), config, seed=1)
        assert isinstance(result, MarkResult) and len(result) == 8
        scaled = result.images * 255
        assert torch.equal(scaled, scaled.round())
        assert (result.images - images).abs().max() <= 16 / 255 + 1e-6
        assert result.images.min() >= 0 and result.images.max() <= 1
        assert (result.psnr >= floor).all(), (floor, result.psnr)
        torch.testing.assert_close(result.psnr, psnr(result.images, images))
        if floor <= 40:  # the budget is used, not wasted (above ~45 dB most changes round away)
            assert (result.psnr < floor + 3).all()


def test_psnr_floor_holds_after_rounding_for_many_seeds():
    images, labels = _batch(n=16, size=16, seed=3)
    config = MarkConfig(steps=6, lr=0.1, epsilon=30 / 255, min_psnr=35.0, round_every=0)
    for seed in range(4):
        result = mark(_marker(seed), images, labels, _carriers(seed), config, seed=seed)
        assert (result.psnr >= 35.0).all()


def test_deterministic_on_cpu_and_seed_dependent():
    images, labels = _batch()
    first = mark(_marker(), images, labels, _carriers(), FAST, seed=5)
    again = mark(_marker(), images, labels, _carriers(), FAST, seed=5)
    other = mark(_marker(), images, labels, _carriers(), FAST, seed=6)
    assert torch.equal(first.images, again.images) and torch.equal(first.shift, again.shift)
    assert not torch.equal(first.images, other.images)
    assert image_seeds(5, ["a", "b"]) == image_seeds(5, ["a", "b"]) != image_seeds(6, ["a", "b"])


def test_shift_points_along_the_carrier():
    images, labels = _batch(n=12)
    result = mark(_marker(), images, labels, _carriers(), MarkConfig(steps=20, eval_draws=3), seed=0)
    assert result.cosine.mean() > 0.2 and (result.shift > 0).double().mean() > 0.7


def test_weights_get_no_gradients_and_mode_is_restored():
    marker = _marker()
    marker.model.train()
    for p in marker.model.parameters():
        p.requires_grad_(True)
    images, labels = _batch(n=2)
    mark(marker, images, labels, _carriers(), FAST)
    assert marker.model.training
    assert all(p.grad is None and p.requires_grad for p in marker.model.parameters())


def _snapshot(model: torch.nn.Module) -> dict:
    """Everything of a model that mark() could change: values, layouts, devices, modes, gradient flags."""
    tensors = dict(model.named_parameters()) | dict(model.named_buffers())
    return {
        "values": {name: t.detach().clone() for name, t in tensors.items()},
        "layout": {name: (t.stride(), t.device, t.dtype, t.data_ptr()) for name, t in tensors.items()},
        "training": {name: m.training for name, m in model.named_modules()},
        "requires_grad": {name: p.requires_grad for name, p in model.named_parameters()},
    }


def test_mark_leaves_the_callers_marker_as_it_was():
    """Regression (issue 9, defect 5): mark() converted the caller's marker to channels-last and never
    restored it, ran it in the caller's mode (a training-mode marker's batch-norm statistics moved), and
    reset every submodule to the top module's mode."""
    marker = _marker()
    model = marker.model
    model.train()
    model[1].body[0][1].eval()  # mixed modes: one batch norm frozen by the caller
    for index, param in enumerate(model.parameters()):
        param.requires_grad_(index % 2 == 0)
    before = _snapshot(model)
    images, labels = _batch(n=4)
    mark(marker, images, labels, _carriers(), FAST)
    mark(marker, images, labels, _carriers(), MarkConfig(steps=0))
    after = _snapshot(model)
    assert after["layout"] == before["layout"]
    assert after["training"] == before["training"]
    assert after["requires_grad"] == before["requires_grad"]
    for name, value in before["values"].items():
        assert torch.equal(after["values"][name], value), name
    assert all(p.grad is None for p in model.parameters())


def test_mark_uses_weights_changed_in_place():
    """Regression (issue 9, defect 5): the fused-feature cache was keyed by the model object, so weights
    changed in place after a first mark() kept serving the old features, and a key was checked against
    the weight hash recorded when the Marker was built."""
    marker = _marker()
    images, labels = _batch(n=6)
    old_key = Key.generate(marker.info, seed=0)
    mark(marker, images, labels, _carriers(), FAST, seed=1)  # fills the cache
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for param in marker.model.parameters():
            param.data.add_(0.2 * torch.randn(param.shape, generator=gen))  # .data: no version bump
    fresh_model = build_from_spec(marker.spec)
    fresh_model.load_state_dict(marker.model.state_dict())
    fresh = Marker.from_model(fresh_model, marker.spec)
    got = mark(marker, images, labels, _carriers(), FAST, seed=1)
    want = mark(fresh, images, labels, _carriers(), FAST, seed=1)
    assert torch.equal(got.images, want.images)
    torch.testing.assert_close(got.shift, want.shift)
    with pytest.raises(KeyMismatchError, match="marking network"):
        mark(marker, images, labels, old_key, FAST)
    new_key = Key.generate(fresh.info, seed=0)
    assert torch.equal(mark(marker, images, labels, new_key, FAST).images,
                       mark(fresh, images, labels, new_key, FAST).images)


def test_key_and_carrier_mismatch_refused():
    marker = _marker()
    foreign = Key.generate(MarkerInfo(marker.spec, weights_sha256="f" * 64, feature_dim=8), seed=0)
    images, labels = _batch(n=2)
    with pytest.raises(KeyMismatchError, match="marking network"):
        mark(marker, images, labels, foreign, FAST)
    own = Key.generate(marker.info, seed=0)
    assert len(mark(marker, images, labels, own, FAST)) == 2
    with pytest.raises(KeyMismatchError, match="dimension 5"):
        mark(marker, images, labels, torch.randn(CLASSES, 5), FAST)


def test_bad_inputs():
    marker = _marker()
    images, labels = _batch(n=2)
    with pytest.raises(ConfigError, match="labels must lie"):
        mark(marker, images, torch.tensor([0, 7]), _carriers(), FAST)
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        mark(marker, images * 255, labels, _carriers(), FAST)
    with pytest.raises(ConfigError, match="2 images but 1 labels"):
        mark(marker, images, labels[:1], _carriers(), FAST)
    with pytest.raises(ConfigError, match="seeds"):
        mark(marker, images, labels, _carriers(), FAST, seed=[1])


def test_uint8_other_sizes_colour_and_empty():
    marker = _marker()
    images, labels = _batch(n=3, size=24)
    result = mark(marker, (images * 255).to(torch.uint8), labels, _carriers(), FAST)
    assert result.images.shape == (3, 1, 24, 24) and (result.psnr >= 40).all()
    colour, _ = _batch(n=3, c=3, size=20)
    assert mark(marker, colour, labels, _carriers(), FAST).images.shape == (3, 3, 20, 20)
    rgb_marker = _marker(channels=3)
    assert mark(rgb_marker, images, labels, _carriers(), FAST).images.shape == (3, 1, 24, 24)
    empty = mark(marker, images[:0], labels[:0], _carriers(), FAST)
    assert len(empty) == 0 and empty.to_dict()["count"] == 0


def test_batch_size_and_progress():
    images, labels = _batch(n=5)
    seen = []
    result = mark(_marker(), images, labels, _carriers(), FAST, batch_size=2, progress=seen.append)
    assert seen == [2, 2, 1] and len(result) == 5
    summary = result.to_dict()
    assert summary["psnr_min"] >= 40 and summary["psnr_min"] == float(result.psnr.min())
    assert summary["cosine_mean"] == pytest.approx(float(result.cosine.mean()), abs=1e-12) and summary["count"] == 5


def test_lambda_class_makes_marked_images_harder_for_the_marker():
    # Left out of to_dict at its default: run and cache identities made before the setting existed hold.
    assert "lambda_class" not in MarkConfig().to_dict()
    hard = MarkConfig(steps=20, lr=0.02, epsilon=8 / 255, min_psnr=30, lambda_class=5.0)
    assert MarkConfig.from_dict(hard.to_dict()) == hard and hard.to_dict()["lambda_class"] == 5.0
    with pytest.raises(ConfigError, match="lambda_class"):
        MarkConfig(lambda_class=-1)
    marker = _marker()
    images, labels = _batch(n=12)
    carriers = _carriers()

    rows = torch.nn.functional.normalize(marker.split.weight(), dim=1)[labels].float()

    def along_class(x):  # mean move of the marker's features along the image's own class row
        with torch.no_grad():
            return ((marker.features(x) - marker.features(images)) * rows).sum(1).mean().item()

    plain = mark(marker, images, labels, carriers, dataclasses.replace(hard, lambda_class=0.0), seed=0)
    harder = mark(marker, images, labels, carriers, hard, seed=0)
    assert float(harder.psnr.min()) >= 30 - 1e-6
    # Features move against the class row, by more than half the plain marking's carrier shift beyond where
    # the carrier term alone leaves them (this random tiny net's features move by about 1e-3); the carrier
    # shift stays positive.
    assert along_class(harder.images) < along_class(plain.images) - 0.5 * float(plain.shift.mean())
    assert float(harder.shift.mean()) > 0
    # Labels of stacked control blocks (label + j * C) get the same class direction.
    stacked = mark(marker, images, labels + CLASSES, torch.cat([carriers, carriers]), hard, seed=0)
    assert torch.equal(stacked.images, harder.images)

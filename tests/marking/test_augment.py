import pytest
import torch

from radioactive.augment import AUGMENTATIONS, Augmentation, AugmentParams, build_augmentation
from radioactive.errors import ConfigError


def _images(n=4, c=1, size=20, seed=0):
    return torch.rand(n, c, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("names", [(), ("crop",), ("crop", "flip"), ("flip",), ("jpeg",), ("blur",), ("resize",),
                                   ("resize", "jpeg", "crop", "flip", "blur")])
@pytest.mark.parametrize("channels", [1, 3])
def test_output_size_and_gradient(names, channels):
    aug = Augmentation(names, (16, 16))
    x = _images(c=channels, size=32).requires_grad_(True)
    out = aug(x, torch.Generator().manual_seed(0))
    assert out.shape == (4, channels, 16, 16)
    (grad,) = torch.autograd.grad(out.sum(), x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_unknown_name_lists_valid_names():
    with pytest.raises(ConfigError, match=r"unknown augmentation 'crp'; choose from \['blur', 'crop'"):
        build_augmentation("crp,flip", (16, 16))
    with pytest.raises(ConfigError, match="twice"):
        Augmentation(("flip", "flip"), (8, 8))
    assert set(AUGMENTATIONS) == {"crop", "flip", "jpeg", "blur", "resize"}
    assert build_augmentation("none", (8, 8)).names == ()


def test_same_uniforms_same_output_and_streams_per_image():
    aug = Augmentation(("crop", "flip"), (16, 16))
    x = _images()
    uniforms = aug.draw(4, torch.Generator().manual_seed(3))
    assert torch.equal(aug(x, uniforms), aug(x, uniforms.clone()))
    # an image's output depends only on its own row of uniforms
    alone = aug(x[2:3], uniforms[2:3])
    torch.testing.assert_close(alone, aug(x, uniforms)[2:3])
    assert not torch.equal(aug(x, uniforms), aug(x, aug.draw(4, torch.Generator().manual_seed(4))))


def test_full_crop_is_identity_and_folded_flip_is_a_flip():
    params = AugmentParams(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0))
    x = _images(size=16)
    crop = Augmentation(("crop",), (16, 16), params)
    torch.testing.assert_close(crop(x, torch.zeros(4, 5)), x, atol=1e-5, rtol=0)
    flip = Augmentation(("crop", "flip"), (16, 16), params)
    uniforms = torch.zeros(4, 6)  # u[:, 4] < 0.5 -> mirrored
    torch.testing.assert_close(flip(x, uniforms), x.flip(-1), atol=1e-5, rtol=0)


def test_bad_params_and_uniform_shapes():
    with pytest.raises(ConfigError, match="crop_scale"):
        AugmentParams(crop_scale=(0.9, 0.5))
    aug = Augmentation(("crop",), (8, 8))
    with pytest.raises(ValueError, match="uniforms of shape"):
        aug(_images(), torch.zeros(4, 2))


def test_jpeg_and_blur_change_images_mildly():
    x = _images(c=3, size=32)
    for name in ("jpeg", "blur"):
        out = Augmentation((name,), (32, 32))(x, torch.Generator().manual_seed(0))
        assert 0 < (out - x).abs().mean() < 0.3

"""The robustness treatments on tiny tensors and models: each changes what it should, by the amount it should."""

import math

import pytest
import torch
import torch.nn.functional as F
from helpers.tiny import TINY_CNN, tiny_model, tiny_spec
from torch import nn

from radioactive.errors import ConfigError
from radioactive.experiment import Context, config_from_dict
from radioactive.experiment.treatments import (
    Treatment,
    clean_pool,
    dequantized,
    downscale_and_back,
    jpeg_reencode,
    prune_global,
    quantize_int8,
)
from radioactive.mark import psnr
from radioactive.nets import split_head


def _smooth_images(num: int, channels: int = 1, size: int = 32, seed: int = 0) -> torch.Tensor:
    """uint8 (N, c, size, size): smooth random blobs plus mild noise, like photographs at this scale; colour
    images are the grey ones tinted (channel gains 0.9, 1, 1.1), since real chroma varies slowly."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(num, 1, 4, 4, generator=gen)
    x = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    x = x + 0.04 * torch.randn(num, 1, size, size, generator=gen)
    if channels == 3:
        x = x * torch.tensor([0.9, 1.0, 1.1]).view(1, 3, 1, 1)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def _psnr_u8(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return psnr(a.float() / 255, b.float() / 255)


@pytest.mark.parametrize("channels", [1, 3])
def test_jpeg_q75_changes_pixels_more_than_q90_at_a_plausible_psnr(channels):
    images = _smooth_images(16, channels)
    q90, q75 = jpeg_reencode(images, 90), jpeg_reencode(images, 75)
    assert q90.shape == q75.shape == images.shape and q90.dtype == torch.uint8
    p90, p75 = _psnr_u8(q90, images), _psnr_u8(q75, images)
    assert torch.all(p75 < p90)  # every image: lower quality, larger change
    # Measured 36 and 31 dB (grey and tinted colour alike): q75 costs a few dB more than q90.
    assert 32 < float(p90.mean()) < 45 and 26 < float(p75.mean()) < 35 and float((p90 - p75).min()) > 3
    assert not torch.equal(q90, images)  # a real lossy codec, not a no-op
    flat = torch.full((2, channels, 16, 16), 128, dtype=torch.uint8)
    assert torch.equal(jpeg_reencode(flat, 75), flat)  # a flat block has nothing to lose


def test_jpeg_refuses_bad_input():
    with pytest.raises(ConfigError, match="uint8 images"):
        jpeg_reencode(torch.rand(2, 1, 8, 8), 90)
    with pytest.raises(ConfigError, match=r"quality must be in \[1, 100\]"):
        jpeg_reencode(torch.zeros(2, 1, 8, 8, dtype=torch.uint8), 0)


def test_downscale_and_back_keeps_shape_and_smooth_content_but_not_fine_detail():
    smooth = _smooth_images(8, size=28)
    back = downscale_and_back(smooth, 0.5)
    assert back.shape == smooth.shape and back.dtype == torch.uint8
    assert float(_psnr_u8(back, smooth).mean()) > 25
    checker = ((torch.arange(28)[:, None] + torch.arange(28)[None, :]) % 2 * 255).to(torch.uint8)
    checker = checker.expand(2, 1, 28, 28).contiguous()
    lost = downscale_and_back(checker, 0.5).float()
    assert lost.std() < 0.1 * checker.float().std()  # the pixel-scale pattern is gone (antialiased)
    assert abs(float(lost.mean()) - 127.5) < 2
    with pytest.raises(ConfigError, match=r"factor must be in \(0, 1\)"):
        downscale_and_back(smooth, 1.0)


def test_pruning_zeroes_exactly_half_of_the_prunable_weights_the_smallest_ones():
    model = tiny_model(tiny_spec(4, 16, **TINY_CNN), seed=0).eval()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    pruned = prune_global(model, 0.5)
    weights = {name: p for name, p in pruned.named_parameters()
               if name.endswith("weight") and p.dim() > 1}  # conv and linear weights
    total = sum(p.numel() for p in weights.values())
    zeros = sum(int((p == 0).sum()) for p in weights.values())
    assert zeros == round(0.5 * total)
    kept = torch.cat([before[name][p != 0].abs() for name, p in weights.items()])
    dropped = torch.cat([before[name][p == 0].abs() for name, p in weights.items()])
    assert float(kept.min()) >= float(dropped.max())  # global magnitude order
    for name, p in pruned.named_parameters():
        if name not in weights:
            assert torch.equal(p, before[name])  # biases and batch norms untouched
    assert all(torch.equal(p, before[name]) for name, p in model.named_parameters())  # a copy
    assert not any("orig" in name for name in pruned.state_dict())  # made permanent


def test_quantized_model_runs_close_to_float_and_white_box_reads_the_int8_weights():
    model = tiny_model(tiny_spec(4, 16, **TINY_CNN), seed=0).eval()
    x = torch.rand(8, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    quantized = quantize_int8(model)
    with torch.no_grad():
        exact, approx = model(x), quantized(x)
    assert not isinstance(quantized[1].fc, nn.Linear)  # the classifier is int8
    assert (approx - exact).abs().max() < 0.02 * exact.abs().max() + 1e-3
    assert not torch.equal(approx, exact)
    view = dequantized(quantized)
    head = split_head(view, x[:2]).head
    weight = quantized[1].fc.weight()
    assert isinstance(head, nn.Linear) and torch.equal(head.weight, weight.dequantize())
    step = weight.q_scale()
    assert (head.weight - model[1].fc.weight).abs().max() <= step / 2 + 1e-7  # round to the nearest int8 level
    assert dequantized(model) is model
    assert Treatment("quantize").weights(model) is model


def _toy_context(tmp_path, toy_data, toy_marker, **changes):
    config = config_from_dict({
        "name": "toy", "fractions": [0.0, 0.25], "seeds": [0],
        "models": [{"mode": "scratch", "arch": "cnn", "kwargs": TINY_CNN}],
        "mark": {"steps": 1, "min_psnr": 30.0}, "train": {"epochs": 1, "batch_size": 16, "flip": False},
        "detect": {"reference_images": 8, "probes": 8, "num_controls": 2, "reference_model": False}, **changes})
    return Context(config, tmp_path, marker=toy_marker, data=toy_data)


def test_clean_pool_is_the_owner_split_less_the_largest_marked_subset(tmp_path, toy_data, toy_marker):
    context = _toy_context(tmp_path, toy_data, toy_marker)
    images, labels = clean_pool(context, 0)
    marked = context.marked_subset(0, 0.25)[0]
    assert len(labels) == 80 - len(marked) == 60
    owner = toy_data["owner"][0]
    rest = [i for i in range(80) if i not in set(marked.tolist())]
    assert torch.equal(images, owner[rest])


def test_distilled_student_moves_toward_the_teacher(tmp_path, toy_data, toy_marker):
    context = _toy_context(tmp_path, toy_data, toy_marker)
    teacher = toy_marker.model
    x = toy_data["test"][0].float() / 255

    def gap(student):  # mean KL(teacher || student) at temperature 4 on the test images
        with torch.no_grad():
            t, s = F.log_softmax(teacher(x) / 4, 1), F.log_softmax(student(x) / 4, 1)
        return float(F.kl_div(s, t, log_target=True, reduction="batchmean"))

    untrained = Treatment("distill", {"arch": "mlp", "kwargs": {"hidden": 16, "input_size": 16}, "recipe": {"epochs": 0}})
    trained = Treatment("distill", {"arch": "mlp", "kwargs": {"hidden": 16, "input_size": 16}, "recipe": {"epochs": 8, "lr": 0.05}})
    before, after = untrained.apply(teacher, context, 0), trained.apply(teacher, context, 0)
    assert type(after[1]).__name__ == "MLP"  # another architecture than the teacher's cnn
    assert gap(after) < 0.5 * gap(before)


def test_finetune_trains_a_copy(tmp_path, toy_data, toy_marker):
    context = _toy_context(tmp_path, toy_data, toy_marker)
    model = toy_marker.model
    weight = split_head(model, toy_data["test"][0][:2].float() / 255).head.weight.detach().clone()
    tuned = Treatment("finetune", {"recipe": {"epochs": 1}}).apply(model, context, 0)
    new = split_head(tuned, toy_data["test"][0][:2].float() / 255).head.weight
    assert not torch.equal(new, weight) and torch.isfinite(new).all()
    assert torch.equal(split_head(model, toy_data["test"][0][:2].float() / 255).head.weight, weight)


def test_treatment_settings_are_checked_and_named():
    assert Treatment("jpeg", {"quality": 90}).name == "jpeg-q90"
    assert Treatment("downscale").params == {"factor": 0.5} and Treatment("downscale").name == "downscale-0.5"
    assert Treatment("distill").recipe({"epochs": 5, "lr": 0.1}).epochs == 3  # the treatment's own over [train]
    assert Treatment("finetune").recipe({"lr": 0.1}).lr == 0.01 and Treatment("finetune").stage == "model"
    assert Treatment("jpeg").stage == "published" and Treatment().stage == "none"
    with pytest.raises(ConfigError, match="unknown treatment 'blur'"):
        Treatment("blur")
    with pytest.raises(ConfigError, match=r"unknown parameters \['qualty'\]"):
        Treatment("jpeg", {"qualty": 90})
    with pytest.raises(ConfigError, match="jpeg quality must be an integer"):
        Treatment("jpeg", {"quality": 0})
    with pytest.raises(ConfigError, match=r"prune amount must be in \(0, 1\)"):
        Treatment("prune", {"amount": 1.5})
    with pytest.raises(ConfigError, match="unknown recipe fields"):
        Treatment("finetune", {"recipe": {"epoch": 2}})
    assert math.isclose(Treatment("prune", {"amount": 0.3}).params["amount"], 0.3)

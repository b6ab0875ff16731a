"""The device path of marking and white-box detection (issue 11).

On CPU: the augmentations prepared for an accelerator (what the GPU path runs) against the kornia path,
the precision setting, the TF32 switches, the batch-size rule, uint8 input and the white-box least squares
through a QR. Marked ``gpu`` (skipped without CUDA; ``benchmarks/gpu_check.sh`` runs them): marking on
CUDA against CPU, no host synchronisation inside the step loop, device memory flat in the dataset size,
the batch size chosen from free memory, each precision keeping the PSNR floor, pinned uint8 input, and
white-box detection on CUDA against CPU.
"""

from __future__ import annotations

import copy
import functools
import importlib

import pytest
import torch

from radioactive._device import (
    _tf32_switches,
    batch_for_memory,
    network_precision,
    step_augmentations,
    step_memory,
)
from radioactive.augment import Augmentation
from radioactive.detect.white_box import lstsq_reduced, prepare
from radioactive.errors import ConfigError
from radioactive.key import Key
from radioactive.mark import MarkConfig, choose_batch_size, default_batch_size, mark
from radioactive.marker import Marker
from radioactive.nets import NetSpec, build_from_spec

mark_module = importlib.import_module("radioactive.mark")  # the package re-exports mark(), the function
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _marker(channels: int = 1, size: int = 28, classes: int = 4, seed: int = 0) -> Marker:
    torch.manual_seed(seed)
    spec = NetSpec("cnn", classes, in_channels=channels, input_size=(size, size), mean=(0.5,) * channels,
                   std=(0.5,) * channels, kwargs={"width": 8, "feature_dim": 16})
    return Marker.from_model(build_from_spec(spec), spec)


def _images(count: int, channels: int = 1, size: int = 28, seed: int = 0) -> torch.Tensor:
    """Smooth random uint8 images (noise blurred by a 4x down- and up-sampling)."""
    gen = torch.Generator().manual_seed(seed)
    small = torch.rand(count, channels, size // 4, size // 4, generator=gen)
    smooth = torch.nn.functional.interpolate(small, size=(size, size), mode="bilinear", align_corners=False)
    return torch.round(smooth * 255).to(torch.uint8)


def _marks_close(a, b, original: torch.Tensor, floor: float) -> dict:
    """Two markings of the same images agree as far as float rounding lets them: both meet the floor, the
    perturbations point the same way (cosine of the 8-bit perturbations) and the mark is as strong."""
    da = torch.round(a.images.cpu() * 255) - original.float()
    db = torch.round(b.images.cpu() * 255) - original.float()
    agreement = torch.nn.functional.cosine_similarity(da.flatten(1), db.flatten(1))
    stats = {"perturbation_cosine_min": float(agreement.min()), "perturbation_cosine_mean": float(agreement.mean()),
             "mean_abs_levels": float((da - db).abs().mean()),
             "cosine_means": (float(a.cosine.mean()), float(b.cosine.mean()))}
    assert (a.psnr >= floor).all() and (b.psnr >= floor).all(), stats
    assert stats["perturbation_cosine_mean"] >= 0.8 and stats["perturbation_cosine_min"] >= 0.5, stats
    assert stats["mean_abs_levels"] <= 1.0, stats
    assert abs(stats["cosine_means"][0] - stats["cosine_means"][1]) <= 0.05 + 0.15 * abs(stats["cosine_means"][0]), stats
    return stats


def _carriers(marker: Marker, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(
        torch.randn(marker.spec.num_classes, marker.feature_dim, generator=gen, dtype=torch.float64), dim=1)


# ---------------------------------------------------------------------------------------------------- CPU


@pytest.mark.parametrize("names", [("crop",), ("crop", "flip"), ("flip",), ("flip", "crop"), ("blur", "crop", "flip"),
                                   ("crop", "flip", "jpeg", "blur"), ("resize",), ()])
@pytest.mark.parametrize("size", [(32, 32), (20, 24)])
def test_prepared_augmentations_match_the_kornia_path(names, size):
    """The GPU path's augmentations (parameters computed before the loop, affine grid + grid_sample) are the
    kornia crop and flip up to float rounding, values and gradients."""
    aug = Augmentation(names, (16, 16))
    x = torch.rand(5, 3, *size, generator=torch.Generator().manual_seed(1), requires_grad=True)
    uniforms = torch.rand(3, 5, aug.num_uniforms, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    cpu = torch.device("cpu")
    kornia_path = step_augmentations(aug, uniforms, size, cpu)
    prepared = step_augmentations(aug, uniforms, size, cpu, prepared=True)
    for step in range(3):
        want, got = kornia_path(x, step), prepared(x, step)
        torch.testing.assert_close(got, want, atol=2e-5, rtol=0)
        weights = torch.rand(want.shape, generator=torch.Generator().manual_seed(step))
        (grad_want,) = torch.autograd.grad((want * weights).sum(), x)
        (grad_got,) = torch.autograd.grad((got * weights).sum(), x)
        torch.testing.assert_close(grad_got, grad_want, atol=1e-4, rtol=1e-3)


def test_prepared_path_marks_like_the_cpu_path(monkeypatch):
    """What differs between devices (float rounding in the augmentations) moves pixels by a level here and
    there, not the mark: the tolerance the CUDA comparison below uses."""
    marker, images = _marker(), _images(12)
    labels = torch.arange(12) % 4
    config = MarkConfig(steps=30)
    plain = mark(marker, images, labels, _carriers(marker), config, seed=3)
    monkeypatch.setattr(mark_module, "step_augmentations", functools.partial(step_augmentations, prepared=True))
    prepared = mark(marker, images, labels, _carriers(marker), config, seed=3)
    _marks_close(plain, prepared, images, config.min_psnr)


def test_precision_setting_is_validated_and_left_out_of_run_identities():
    assert "precision" not in MarkConfig().to_dict()  # run ids hash to_dict(): earlier ids hold
    config = MarkConfig(steps=3, precision="bf16")
    assert config.to_dict()["precision"] == "bf16" and MarkConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match=r"precision must be one of \['fp32', 'tf32', 'bf16'\], got 'fp16'"):
        MarkConfig(precision="fp16")


def test_bf16_on_cpu_keeps_the_floor_and_the_direction():
    marker, images = _marker(), _images(8)
    labels = torch.arange(8) % 4
    fp32 = mark(marker, images, labels, _carriers(marker), MarkConfig(steps=20), seed=0)
    bf16 = mark(marker, images, labels, _carriers(marker), MarkConfig(steps=20, precision="bf16"), seed=0)
    assert (bf16.psnr >= 40).all() and bf16.images.dtype == torch.float32
    assert float(bf16.cosine.mean()) > 0.5 * float(fp32.cosine.mean()) > 0


def test_tf32_switches_are_set_inside_and_restored_after():
    """The switches are plain flags (no GPU needed to set them); "fp32" means IEEE fp32 even where cuDNN
    defaults to TF32, and whatever the caller had is back afterwards, also after an error."""
    switches = _tf32_switches()
    before = [getattr(obj, name) for obj, name, _, _ in switches]
    device = torch.device("cuda")
    with network_precision("tf32", device):
        assert [getattr(obj, name) for obj, name, _, _ in switches] == [on for _, _, on, _ in switches]
    with pytest.raises(RuntimeError, match="boom"), network_precision("fp32", device):
        assert [getattr(obj, name) for obj, name, _, _ in switches] == [off for _, _, _, off in switches]
        raise RuntimeError("boom")
    assert [getattr(obj, name) for obj, name, _, _ in switches] == before
    with network_precision("tf32", torch.device("cpu")):  # no TF32 mode off CUDA: nothing changes
        assert [getattr(obj, name) for obj, name, _, _ in switches] == before


def test_batch_size_rule_off_cuda_is_the_pixel_budget():
    marker = _marker()
    assert choose_batch_size(marker, (1, 28, 28)) == default_batch_size((28, 28)) == 512
    big = Marker.from_model(build_from_spec(NetSpec("cnn", 4, input_size=(224, 224), kwargs={"width": 4})),
                            NetSpec("cnn", 4, input_size=(224, 224), kwargs={"width": 4}))
    assert choose_batch_size(big, (3, 224, 224)) == 10


def test_memory_probe_arithmetic(monkeypatch):
    """The CUDA batch-size rule's arithmetic, with the device's memory counters faked: a step that takes
    1 MB fixed + 5 MB per image, 2 GB free -> as many images as fit in 80 % of it."""
    seen = {}
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 0)
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 0)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: 1e6 + 5e6 * seen["count"])
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (2e9, 80e9))
    marker = _marker(channels=3, size=32)
    inner = mark_module._marker_features(marker, marker.split.features)

    def features(x):
        seen["count"] = x.shape[0]
        return inner(x)

    per_image, fixed = step_memory(features, Augmentation(("crop", "flip"), (32, 32)), (3, 40, 40), "fp32",
                                   torch.device("cpu"))
    assert per_image == pytest.approx(5e6 + 7 * 4 * 3 * 40 * 40) and fixed == pytest.approx(1e6)
    assert batch_for_memory(per_image, fixed, torch.device("cpu")) == int((0.8 * 2e9 - 1e6) // per_image) == 311
    assert batch_for_memory(1.0, 0.0, torch.device("cpu")) == 1024  # capped
    assert batch_for_memory(1e12, 0.0, torch.device("cpu")) == 1  # at least one image


def test_uint8_and_float_inputs_mark_to_the_same_bytes():
    marker, images = _marker(), _images(6)
    labels = torch.arange(6) % 4
    from_u8 = mark(marker, images, labels, _carriers(marker), MarkConfig(steps=5), seed=2)
    from_float = mark(marker, images.float() / 255, labels, _carriers(marker), MarkConfig(steps=5), seed=2)
    assert torch.equal(from_u8.images, from_float.images) and torch.equal(from_u8.cosine, from_float.cosine)


def test_least_squares_through_a_qr_is_the_minimum_norm_solution():
    """The device route of the white-box alignment (QR where the features are, gelsd on the small system)
    gives gelsd's minimum-norm answer, also for rank-deficient features (dead units)."""
    gen = torch.Generator().manual_seed(0)
    f_m = torch.randn(3000, 32, generator=gen, dtype=torch.float64).relu()
    f_m[:, :3] = 0
    f_m[:, 3] = f_m[:, 4]  # a duplicated unit
    f_s = f_m @ torch.randn(32, 24, generator=gen, dtype=torch.float64) + 0.1 * torch.randn(3000, 24, generator=gen,
                                                                                          dtype=torch.float64)
    want = torch.linalg.lstsq(f_m, f_s, driver="gelsd").solution
    torch.testing.assert_close(lstsq_reduced(f_m, f_s), want, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(lstsq_reduced(f_m[:20], f_s[:20]),
                               torch.linalg.lstsq(f_m[:20], f_s[:20], driver="gelsd").solution)


# ---------------------------------------------------------------------------------------------------- CUDA


def _resnet(size: int = 64, classes: int = 10) -> Marker:
    torch.manual_seed(0)
    return Marker.from_torchvision("resnet18", num_classes=classes, input_size=size)


def _on_cuda(marker: Marker) -> Marker:
    return Marker.from_model(copy.deepcopy(marker.model).cuda(), marker.spec)


@pytest.mark.gpu
@cuda
def test_cuda_marks_match_cpu():
    marker, images = _marker(channels=3, size=32), _images(16, channels=3, size=32)
    labels = torch.arange(16) % 4
    config = MarkConfig(steps=30)
    on_cpu = mark(marker, images, labels, _carriers(marker), config, seed=5)
    on_cuda = mark(_on_cuda(marker), images, labels, _carriers(marker), config, seed=5)
    assert on_cuda.images.device.type == "cpu"  # results come back where the images were
    _marks_close(on_cpu, on_cuda, images, config.min_psnr)


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("precision", ["fp32", "tf32", "bf16"])
@pytest.mark.parametrize("augment", [("crop", "flip"), ("flip",), ()])
def test_no_host_synchronisation_inside_the_step_loop(monkeypatch, precision, augment):
    """torch raises on any synchronising call (a value read back, a blocking copy) while the step loop runs."""
    real = mark_module.optimise
    calls = []

    def strict(*args, **kwargs):
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            out = real(*args, **kwargs)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        calls.append(out.shape)
        return out

    monkeypatch.setattr(mark_module, "optimise", strict)
    marker = _on_cuda(_resnet())
    images = _images(6, channels=3, size=80)
    result = mark(marker, images, torch.arange(6), _carriers(marker), MarkConfig(steps=12, augment=augment,
                                                                                 precision=precision), seed=0)
    assert calls == [(6, 3, 80, 80)] and (result.psnr >= 40).all()


@pytest.mark.gpu
@cuda
def test_device_memory_is_flat_in_the_dataset_size():
    marker = _on_cuda(_resnet())
    mark(marker, _images(8, channels=3, size=64), torch.arange(8), _carriers(marker), MarkConfig(steps=1),
         batch_size=8)  # builds the private copy of the marker first: it stays for later calls
    peaks = []
    for count in (8, 64):
        images = _images(count, channels=3, size=64)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        mark(marker, images, torch.arange(count) % 10, _carriers(marker), MarkConfig(steps=3), batch_size=8)
        torch.cuda.synchronize()
        peaks.append(torch.cuda.max_memory_allocated() - base)
    assert peaks[1] <= 1.05 * peaks[0] + (1 << 20), peaks


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_batch_size_from_free_memory_fits(precision):
    marker = _on_cuda(_resnet(size=224, classes=1000))
    config = MarkConfig(steps=2, precision=precision)
    batch = choose_batch_size(marker, (3, 224, 224), config)
    assert 1 <= batch <= 1024
    free_before, _ = torch.cuda.mem_get_info()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    count = min(batch, 256)  # one (part of a) batch is enough to check the estimate's scale
    images = torch.randint(0, 256, (count, 3, 224, 224), dtype=torch.uint8)
    result = mark(marker, images, torch.arange(count) % 1000, _carriers(marker), config, batch_size=count)
    used = torch.cuda.max_memory_allocated() - base
    assert (result.psnr >= 40).all()
    assert used * batch / count <= 0.95 * free_before, (batch, count, used, free_before)


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("precision", ["tf32", "bf16"])
def test_reduced_precisions_keep_the_floor_on_cuda(precision):
    marker, images = _on_cuda(_marker(channels=3, size=32)), _images(16, channels=3, size=32)
    labels = torch.arange(16) % 4
    fp32 = mark(marker, images, labels, _carriers(marker), MarkConfig(steps=30), seed=1)
    other = mark(marker, images, labels, _carriers(marker), MarkConfig(steps=30, precision=precision), seed=1)
    assert (other.psnr >= 40).all()
    assert float(other.cosine.mean()) >= 0.8 * float(fp32.cosine.mean()) > 0


@pytest.mark.gpu
@cuda
def test_pinned_uint8_input_marks_like_pageable():
    """Pinned memory travels without waiting; the marks are the same (up to the run-to-run float noise of
    CUDA kernels with atomics, e.g. grid_sample's backward)."""
    marker, images = _on_cuda(_marker(channels=3, size=32)), _images(8, channels=3, size=32)
    labels = torch.arange(8) % 4
    config = MarkConfig(steps=10)
    pageable = mark(marker, images, labels, _carriers(marker), config, seed=0, batch_size=8)
    pinned = mark(marker, images.pin_memory(), labels, _carriers(marker), config, seed=0, batch_size=8)
    _marks_close(pageable, pinned, images, config.min_psnr)


@pytest.mark.gpu
@cuda
def test_whitebox_on_cuda_matches_cpu():
    marker = _marker()
    torch.manual_seed(1)
    suspect = build_from_spec(marker.spec).eval()
    key = Key.generate(marker.info, seed=0)
    reference = _images(3000, seed=7)
    on_cpu = prepare(suspect, key, reference, marker=marker, batch_size=512)
    with network_precision("fp32", torch.device("cuda")):  # compare IEEE fp32 with the CPU, not TF32
        on_cuda = prepare(copy.deepcopy(suspect).cuda(), key, reference, marker=_on_cuda(marker), batch_size=512)
    torch.testing.assert_close(on_cuda.rows, on_cpu.rows, atol=1e-4, rtol=1e-3)
    assert abs(on_cuda.alignment["r2"] - on_cpu.alignment["r2"]) < 1e-5

"""Marking benchmark: quality of the mark on Fashion-MNIST, what the network's precision costs it, and
throughput (built-in marker, ResNet-18 224).

Usage (heavy: run one at a time)::

    flock /tmp/radioactive-heavy.lock .venv/bin/python benchmarks/bench_mark.py quality
    flock /tmp/radioactive-heavy.lock .venv/bin/python benchmarks/bench_mark.py precision
    flock /tmp/radioactive-heavy.lock .venv/bin/python benchmarks/bench_mark.py speed [--marker ""]

``quality`` marks 1,000 Fashion-MNIST training images with the default :class:`MarkConfig` and measures,
under fresh random augmentations (independent of those used while marking), the feature shift
``phi(A(x~)) - phi(A(x))``: its component along the image's carrier and its cosine with it, and the same
against unused random directions (which should be centred on 0). ``speed`` measures images/s at the default
settings for the built-in marker and for a ResNet-18 at 224x224 (random weights) with 90 steps, and the
achieved FLOP/s of the necessary work (forward plus input gradient, counted with FlopCounterMode) as a
fraction of the measured fp32 matmul peak (``--marker ""`` runs the ResNet-18 part only). ``precision``
marks 256 Fashion-MNIST images with the shipped marker in each ``MarkConfig.precision`` (fp32 and bf16 on
CPU) and reports the same quality figures plus how far the marked pixels are from fp32's. ``--device``
runs any of them on another device (the GPU check uses these functions). Each writes JSON to
benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import replace
from pathlib import Path

import torch

from radioactive._device import autocast_for, network_precision
from radioactive._io import atomic_write_json, versions
from radioactive._optimise import feature_function
from radioactive.augment import Augmentation
from radioactive.fmnist import load_fashion_mnist
from radioactive.key import Key, random_carriers
from radioactive.mark import MarkConfig, image_seeds, mark, marker_channels
from radioactive.marker import Marker
from radioactive.nets import state_dict_sha256
from radioactive.zoo import load_marker

RESULTS = Path(__file__).resolve().parent / "results"


def mark_quality(marker: Marker, key: Key, x: torch.Tensor, y: torch.Tensor, marked: torch.Tensor,
                 config: MarkConfig, draws: int, chunk: int = 256) -> dict:
    """Feature shift of ``marked`` against ``x`` under fresh augmentations (streams the marking never used),
    along each image's carrier and along unused random directions; on the marker's device, in IEEE fp32."""
    device = marker.device
    count = x.shape[0]
    aug = Augmentation(config.augment, marker.spec.input_size, config.augment_params)
    carriers = key.carriers.float()[y]  # (N, d)
    unused = random_carriers(count, marker.feature_dim, torch.Generator().manual_seed(12345)).float()
    along, along_unused, cos, cos_unused = [], [], [], []
    with torch.no_grad(), network_precision("fp32", device):
        for draw in range(draws):
            seeds = image_seeds(10_000 + draw, range(count))
            uniforms = torch.stack([aug.draw(1, torch.Generator().manual_seed(s))[0] for s in seeds])
            shift = torch.cat([
                (marker.features(aug(marked[i:i + chunk].to(device), uniforms[i:i + chunk]))
                 - marker.features(aug(x[i:i + chunk].to(device), uniforms[i:i + chunk]))).float().cpu()
                for i in range(0, count, chunk)])  # (N, d)
            norm = shift.norm(dim=1).clamp_min(1e-12)
            along.append((shift * carriers).sum(1))
            along_unused.append((shift * unused).sum(1))
            cos.append(along[-1] / norm)
            cos_unused.append(along_unused[-1] / norm)
    along_t, along_u, cos_t, cos_u = (torch.stack(v).double() for v in (along, along_unused, cos, cos_unused))
    return {
        "fresh_augmentation_draws": draws,
        "carrier": {
            "fraction_positive_single_draw": float((along_t > 0).double().mean()),
            "fraction_positive_mean_over_draws": float((along_t.mean(0) > 0).double().mean()),
            "cosine_mean": float(cos_t.mean()),
            "cosine_median": float(cos_t.median()),
            "shift_mean": float(along_t.mean()),
        },
        "unused_random_directions": {
            "fraction_positive_single_draw": float((along_u > 0).double().mean()),
            "cosine_mean": float(cos_u.mean()),
            "cosine_std": float(cos_u.std()),
            "cosine_mean_standard_error": float(cos_u.mean(0).std() / math.sqrt(count)),
            "null_cosine_std_1_over_sqrt_d": 1 / math.sqrt(marker.feature_dim),
            "shift_mean": float(along_u.mean()),
        },
    }


def _fmnist_sample(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = load_fashion_mnist("train")
    pick = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(seed))[:count]
    return images[pick].float() / 255, labels[pick]


def quality(args: argparse.Namespace) -> dict:
    marker = load_marker(args.marker).to(args.device)
    key = Key.generate(marker.info, seed=args.key_seed)
    x, y = _fmnist_sample(args.count, args.seed)
    config = MarkConfig(**args.overrides)
    start = time.perf_counter()
    result = mark(marker, x, y, key, config, seed=args.seed)
    elapsed = time.perf_counter() - start
    null_sd = 1 / math.sqrt(marker.feature_dim)
    out = {
        "benchmark": "mark_quality_fashion_mnist",
        "marker": str(args.marker),
        "marker_weights_sha256": marker.info.weights_sha256,
        "feature_dim": marker.feature_dim,
        "key_fingerprint": key.fingerprint,
        "images": args.count,
        "config": config.to_dict(),
        "seconds": elapsed,
        "images_per_second": args.count / elapsed,
        "psnr_min": float(result.psnr.min()),
        "psnr_mean": float(result.psnr[torch.isfinite(result.psnr)].mean()),
        "fraction_psnr_ge_floor": float((result.psnr >= config.min_psnr).double().mean()),
        **mark_quality(marker, key, x, y, result.images, config, args.draws),
        "mark_reported_cosine_mean": float(result.cosine.mean()),
        "versions": versions(),
    }
    out["acceptance"] = {
        "every_psnr_ge_40": out["psnr_min"] >= 40.0,
        "fraction_positive_ge_0.95": out["carrier"]["fraction_positive_single_draw"] >= 0.95,
        "mean_cosine_ge_0.15": out["carrier"]["cosine_mean"] >= 0.15,
        "unused_centred_on_0": abs(out["unused_random_directions"]["cosine_mean"]) < 4 * null_sd / math.sqrt(args.count),
    }
    return out


def precision_effect(marker: Marker, key: Key, x: torch.Tensor, y: torch.Tensor, precisions: list[str],
                     config: MarkConfig, draws: int, batch_size: int | None = None) -> dict:
    """Marks ``x`` once per precision on the marker's device: time, PSNR floor, the mark's quality
    (:func:`mark_quality`) and the distance of the marked pixels from the fp32 ones, in 8-bit levels."""
    out: dict = {}
    reference = None
    for name in precisions:
        chosen = replace(config, precision=name)
        start = time.perf_counter()
        result = mark(marker, x, y, key, chosen, seed=0, batch_size=batch_size)
        seconds = time.perf_counter() - start
        levels = torch.round(result.images * 255)
        row = {
            "seconds": seconds,
            "images_per_second": x.shape[0] / seconds,
            "psnr_min": float(result.psnr.min()),
            "fraction_psnr_ge_floor": float((result.psnr >= chosen.min_psnr).double().mean()),
            "mark_reported_cosine_mean": float(result.cosine.mean()),
            "fraction_positive_shift": float((result.shift > 0).double().mean()),
            **mark_quality(marker, key, x, y, result.images, chosen, draws),
        }
        if reference is None:
            reference = levels
        else:
            diff = (levels - reference).abs()
            row["vs_first"] = {"fraction_pixels_equal": float((diff == 0).double().mean()),
                               "mean_abs_levels": float(diff.mean()), "max_abs_levels": float(diff.max())}
        out[name] = row
    first = out[precisions[0]]["carrier"]["cosine_mean"]
    for name in precisions[1:]:
        cosine = out[name]["carrier"]["cosine_mean"]
        out[name]["keeps_mark"] = bool(out[name]["psnr_min"] >= config.min_psnr and cosine >= 0.9 * first)
    return out


def precision(args: argparse.Namespace) -> dict:
    marker = load_marker(args.marker).to(args.device)
    key = Key.generate(marker.info, seed=args.key_seed)
    x, y = _fmnist_sample(args.precision_count, args.seed)
    precisions = args.precisions.split(",") if args.precisions else (
        ["fp32", "tf32", "bf16"] if marker.device.type == "cuda" else ["fp32", "bf16"])
    config = MarkConfig(**args.overrides)
    return {
        "benchmark": "mark_precision_fashion_mnist",
        "device": str(marker.device),
        "threads": torch.get_num_threads(),
        "marker": str(args.marker),
        "marker_weights_sha256": marker.info.weights_sha256,
        "images": x.shape[0],
        "config": config.to_dict(),
        "rule": "a precision keeps the mark when every PSNR meets the floor and the mean cosine with the carrier "
                "under fresh augmentations is at least 0.9 x fp32's",
        "precisions": precision_effect(marker, key, x, y, precisions, config, args.draws),
        "versions": versions(),
    }


def matmul_peak(seconds: float = 3.0, size: int = 2048) -> float:
    """Measured fp32 matmul FLOP/s (best of repeated square products)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    for _ in range(2):
        a @ b
    best = 0.0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        start = time.perf_counter()
        a @ b
        best = max(best, 2 * size**3 / (time.perf_counter() - start))
    return best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_flops(marker: Marker, batch: int, channels: int) -> float:
    """FLOPs of one forward plus input gradient at the marker's input size for ``batch`` images."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.rand(batch, channels, *marker.spec.input_size, device=marker.device)
    x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    with FlopCounterMode(display=False) as counter:
        feats = marker.features(x)
        # backward(), not autograd.grad(): the counter's module hooks refuse the latter; weights are frozen,
        # so this is the same work (forward plus input gradient).
        feats.sum().backward()
    return float(counter.get_total_flops())


def bare_loop(marker: Marker, batch: int, channels: int, steps: int, precision: str = "fp32",
              fused: bool = False) -> float:
    """Image-steps/s of a bare forward + input-gradient loop on the marker's device, in ``precision`` (the
    floor of the work: no augmentation, no Adam, no projection). ``fused``: through the batch-norm-fused
    private copy that marking runs (else the marker as it is, the limit the committed CPU figures use)."""
    device = marker.device
    x = torch.rand(batch, channels, *marker.spec.input_size, device=device)
    x = x.contiguous(memory_format=torch.channels_last).requires_grad_(True)
    features = marker.features
    if fused:
        features = feature_function(marker, marker_channels(marker), state_dict_sha256(marker.model))

    def step() -> None:
        with autocast_for(precision, device):
            feats = features(x)
        torch.autograd.grad(feats.float().sum(), x)

    with network_precision(precision, device):
        step()
        _sync(device)
        start = time.perf_counter()
        for _ in range(steps):
            step()
        _sync(device)
    return batch * steps / (time.perf_counter() - start)


def throughput(marker: Marker, images: torch.Tensor, labels: torch.Tensor, config: MarkConfig, batch: int,
               peak: float | None, channels: int, bare_steps: int) -> dict:
    """Marking speed on the marker's device (``peak``: matmul FLOP/s to compare with, None to skip)."""
    carriers = random_carriers(marker.spec.num_classes, marker.feature_dim, torch.Generator().manual_seed(0))
    warm = replace(config, steps=2)
    mark(marker, images[:batch], labels[:batch], carriers, warm, batch_size=batch)  # warm-up
    _sync(marker.device)
    start = time.perf_counter()
    result = mark(marker, images, labels, carriers, config, batch_size=batch)
    elapsed = time.perf_counter() - start
    flops = step_flops(marker, batch, channels) / batch * images.shape[0] * config.steps
    out = {
        "device": str(marker.device),
        "precision": config.precision,
        "images": images.shape[0],
        "image_size": list(images.shape[-2:]),
        "marker_input_size": list(marker.spec.input_size),
        "steps": config.steps,
        "batch_size": batch,
        "seconds": elapsed,
        "images_per_second": images.shape[0] / elapsed,
        "image_steps_per_second": images.shape[0] * config.steps / elapsed,
        "necessary_flops": flops,
        "achieved_flops_per_second": flops / elapsed,
        "psnr_min": float(result.psnr.min()),
        "mark_reported_cosine_mean": float(result.cosine.mean()),
    }
    if peak:
        out["fraction_of_matmul_peak"] = flops / elapsed / peak
    if bare_steps:
        bare = bare_loop(marker, batch, channels, bare_steps, config.precision)
        out["bare_forward_input_grad_image_steps_per_second"] = bare
        out["fraction_of_bare_loop"] = out["image_steps_per_second"] / bare
        fused = bare_loop(marker, batch, channels, bare_steps, config.precision, fused=True)
        out["bare_loop_through_fused_copy_image_steps_per_second"] = fused
        out["fraction_of_fused_bare_loop"] = out["image_steps_per_second"] / fused
    return out


def speed(args: argparse.Namespace) -> dict:
    torch.manual_seed(0)
    peak = matmul_peak()
    out: dict = {"benchmark": "mark_speed", "threads": torch.get_num_threads(), "matmul_peak_flops": peak}
    if args.marker:
        marker = load_marker(args.marker)
        images, labels = load_fashion_mnist("train")
        x, y = images[: args.fmnist_count].float() / 255, labels[: args.fmnist_count]
        out["fashion_mnist_cnn"] = throughput(marker, x, y, MarkConfig(), args.fmnist_batch, peak, 1, 0)
    resnet = Marker.from_torchvision("resnet18", input_size=224)
    resnet.model.to(memory_format=torch.channels_last)
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (args.resnet_count, 3, 224, 224), generator=gen).float() / 255
    y = torch.randint(0, 1000, (args.resnet_count,), generator=gen)
    out["resnet18_224"] = throughput(resnet, x, y, MarkConfig(steps=90), args.resnet_batch, peak, 3, 10)
    out["resnet18_224"]["target_images_per_second"] = 0.17
    out["versions"] = versions()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["quality", "precision", "speed"])
    parser.add_argument("--marker", default="default",
                        help="Fashion-MNIST marker: 'default' (the one shipped with radioactive) or a checkpoint")
    parser.add_argument("--device", default="cpu", help="device to mark on (cpu, cuda, ...)")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--precision-count", type=int, default=256, help="images for the precision run")
    parser.add_argument("--precisions", default="", help="comma-separated (default: fp32,bf16 on CPU; all on CUDA)")
    parser.add_argument("--draws", type=int, default=8, help="fresh augmentations for the quality measurement")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--key-seed", type=int, default=0)
    parser.add_argument("--fmnist-count", type=int, default=512)
    parser.add_argument("--fmnist-batch", type=int, default=256)
    parser.add_argument("--resnet-count", type=int, default=16)
    parser.add_argument("--resnet-batch", type=int, default=16)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="NAME=VALUE",
                        help="override a MarkConfig default for the quality run (e.g. --set steps=30)")
    parser.add_argument("--out", help="JSON path (default benchmarks/results/bench_mark_<what>.json)")
    args = parser.parse_args()
    overrides = {}
    for item in args.overrides:
        name, _, value = item.partition("=")
        overrides[name] = json.loads(value)
    args.overrides = overrides
    result = {"quality": quality, "precision": precision, "speed": speed}[args.what](args)
    path = Path(args.out) if args.out else RESULTS / f"bench_mark_{args.what}.json"
    atomic_write_json(path, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

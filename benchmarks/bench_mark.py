"""Marking benchmark: quality of the mark on Fashion-MNIST and throughput (built-in marker, ResNet-18 224).

Usage (heavy: run one at a time)::

    flock /tmp/radioactive-heavy.lock .venv/bin/python benchmarks/bench_mark.py quality
    flock /tmp/radioactive-heavy.lock .venv/bin/python benchmarks/bench_mark.py speed

``quality`` marks 1,000 Fashion-MNIST training images with the default :class:`MarkConfig` and measures,
under fresh random augmentations (independent of those used while marking), the feature shift
``phi(A(x~)) - phi(A(x))``: its component along the image's carrier and its cosine with it, and the same
against unused random directions (which should be centred on 0). ``speed`` measures images/s at the default
settings for the built-in marker and for a ResNet-18 at 224x224 (random weights) with 90 steps, and the
achieved FLOP/s of the necessary work (forward plus input gradient, counted with FlopCounterMode) as a
fraction of the measured fp32 matmul peak. Each writes JSON to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from radioactive._io import atomic_write_json, versions
from radioactive.augment import Augmentation
from radioactive.fmnist import load_fashion_mnist
from radioactive.key import Key, random_carriers
from radioactive.mark import MarkConfig, image_seeds, mark
from radioactive.marker import Marker
from radioactive.zoo import load_marker

RESULTS = Path(__file__).resolve().parent / "results"


def quality(args: argparse.Namespace) -> dict:
    marker = load_marker(args.marker)
    key = Key.generate(marker.info, seed=args.key_seed)
    images, labels = load_fashion_mnist("train")
    pick = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(args.seed))[: args.count]
    x = images[pick].float() / 255
    y = labels[pick]
    config = MarkConfig(**args.overrides)
    start = time.perf_counter()
    result = mark(marker, x, y, key, config, seed=args.seed)
    elapsed = time.perf_counter() - start

    # Fresh augmentations, drawn from streams the marking never used.
    aug = Augmentation(config.augment, marker.spec.input_size, config.augment_params)
    carriers = key.carriers.float()[y]  # (N, d)
    unused = random_carriers(args.count, marker.feature_dim, torch.Generator().manual_seed(12345)).float()
    along, along_unused, cos, cos_unused = [], [], [], []
    with torch.no_grad():
        for draw in range(args.draws):
            seeds = image_seeds(10_000 + draw, range(args.count))
            uniforms = torch.stack([aug.draw(1, torch.Generator().manual_seed(s))[0] for s in seeds])
            shift = marker.features(aug(result.images, uniforms)) - marker.features(aug(x, uniforms))  # (N, d)
            norm = shift.norm(dim=1).clamp_min(1e-12)
            along.append((shift * carriers).sum(1))
            along_unused.append((shift * unused).sum(1))
            cos.append(along[-1] / norm)
            cos_unused.append(along_unused[-1] / norm)
    along_t, along_u, cos_t, cos_u = (torch.stack(v).double() for v in (along, along_unused, cos, cos_unused))
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
        "fresh_augmentation_draws": args.draws,
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
            "cosine_mean_standard_error": float(cos_u.mean(0).std() / math.sqrt(args.count)),
            "null_cosine_std_1_over_sqrt_d": null_sd,
            "shift_mean": float(along_u.mean()),
        },
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


def step_flops(marker: Marker, batch: int, channels: int) -> float:
    """FLOPs of one forward plus input gradient at the marker's input size for ``batch`` images."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.rand(batch, channels, *marker.spec.input_size).contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    with FlopCounterMode(display=False) as counter:
        feats = marker.features(x)
        # backward(), not autograd.grad(): the counter's module hooks refuse the latter; weights are frozen,
        # so this is the same work (forward plus input gradient).
        feats.sum().backward()
    return float(counter.get_total_flops())


def bare_loop(marker: Marker, batch: int, channels: int, steps: int) -> float:
    """Image-steps/s of a bare forward + input-gradient loop (the floor of the work)."""
    x = torch.rand(batch, channels, *marker.spec.input_size).contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    torch.autograd.grad(marker.features(x).sum(), x)
    start = time.perf_counter()
    for _ in range(steps):
        torch.autograd.grad(marker.features(x).sum(), x)
    return batch * steps / (time.perf_counter() - start)


def throughput(marker: Marker, images: torch.Tensor, labels: torch.Tensor, config: MarkConfig, batch: int,
               peak: float, channels: int, bare_steps: int) -> dict:
    carriers = random_carriers(marker.spec.num_classes, marker.feature_dim, torch.Generator().manual_seed(0))
    mark(marker, images[:batch], labels[:batch], carriers, MarkConfig(steps=2), batch_size=batch)  # warm-up
    start = time.perf_counter()
    result = mark(marker, images, labels, carriers, config, batch_size=batch)
    elapsed = time.perf_counter() - start
    flops = step_flops(marker, batch, channels) / batch * images.shape[0] * config.steps
    out = {
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
        "fraction_of_matmul_peak": flops / elapsed / peak,
        "psnr_min": float(result.psnr.min()),
    }
    if bare_steps:
        out["bare_forward_input_grad_image_steps_per_second"] = bare_loop(marker, batch, channels, bare_steps)
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
    parser.add_argument("what", choices=["quality", "speed"])
    parser.add_argument("--marker", default="default",
                        help="Fashion-MNIST marker: 'default' (the one shipped with radioactive) or a checkpoint")
    parser.add_argument("--count", type=int, default=1000)
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
    result = quality(args) if args.what == "quality" else speed(args)
    path = Path(args.out) if args.out else RESULTS / f"bench_mark_{args.what}.json"
    atomic_write_json(path, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

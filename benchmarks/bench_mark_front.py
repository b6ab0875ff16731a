"""Marking front: steps x lr against the feature shift along the carrier and the seconds it costs.

Usage (heavy: about 10 minutes on 2 CPU cores)::

    flock /tmp/radioactive-heavy.lock nice -n 5 .venv/bin/python benchmarks/bench_mark_front.py

For every cell of a grid of ``MarkConfig.steps`` x ``MarkConfig.lr`` (every other setting at MarkConfig's,
so the PSNR floor is 40 dB), it marks the same images with the same key and seed and measures, under fresh
random augmentations that the marking never used (``bench_mark.mark_quality``: the same draws for every
cell), the mean feature shift ``<phi(A(x~)) - phi(A(x)), u_k>`` along each image's carrier, its cosine with
the carrier, the PSNR (min, mean) and the wall seconds per image of the marking call.

Two marking networks:

- the built-in Fashion-MNIST marker (``radioactive.default_marker()``, trained weights) on ``--count``
  Fashion-MNIST training images (the owner's images): the front the default is chosen on;
- a torchvision ResNet-18 at 224 x 224 with RANDOMLY INITIALISED weights (``torch.manual_seed(0)``), on
  ``--resnet-count`` Fashion-MNIST images resized to 224 x 224 and repeated to 3 channels: its seconds per
  image and step are what a ResNet-18 marker costs on this machine whatever its weights; its shift is that
  of the random network, labelled as such (it says nothing about trained weights).

The chosen default is the cheapest cell (fewest steps: every step costs the same, lr changes nothing but
the step size, which the measured seconds confirm; ties go to the larger shift) whose shift is within
``--tolerance`` (2 %) of the best cell's, for the built-in marker. Writes
``benchmarks/results/mark_front.json`` (configuration, seeds, versions, the command and every cell).
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_mark import mark_quality  # noqa: E402

from radioactive._device import network_precision  # noqa: E402
from radioactive._io import atomic_write_json, versions  # noqa: E402
from radioactive.augment import Augmentation  # noqa: E402
from radioactive.fmnist import load_fashion_mnist  # noqa: E402
from radioactive.key import Key  # noqa: E402
from radioactive.mark import MarkConfig, image_seeds, mark  # noqa: E402
from radioactive.marker import Marker  # noqa: E402
from radioactive.zoo import default_marker  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def _numbers(text: str, kind: type) -> list:
    return [kind(v) for v in text.split(",") if v]


def owner_images(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` Fashion-MNIST training images ``(N, 1, 28, 28)`` in [0, 1] and labels, a seeded draw."""
    images, labels = load_fashion_mnist("train")
    pick = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(seed))[:count]
    return images[pick].float() / 255, labels[pick]


def shift_per_image(marker: Marker, key: Key, x: torch.Tensor, y: torch.Tensor, marked: torch.Tensor,
                    config: MarkConfig, draws: int, chunk: int = 256) -> torch.Tensor:
    """``(N,)`` float64: each image's shift along its carrier, averaged over ``draws`` fresh augmentations (the
    streams of ``bench_mark.mark_quality``, so its ``shift_mean`` is the mean of this), in IEEE fp32."""
    aug = Augmentation(config.augment, marker.spec.input_size, config.augment_params)
    carriers = key.carriers.float()[y]  # (N, d)
    along = []
    with torch.no_grad(), network_precision("fp32", marker.device):
        for draw in range(draws):
            uniforms = torch.stack([aug.draw(1, torch.Generator().manual_seed(s))[0]
                                    for s in image_seeds(10_000 + draw, range(x.shape[0]))])
            shift = torch.cat([
                (marker.features(aug(marked[i:i + chunk], uniforms[i:i + chunk]))
                 - marker.features(aug(x[i:i + chunk], uniforms[i:i + chunk]))).float()
                for i in range(0, x.shape[0], chunk)])  # (N, d)
            along.append((shift * carriers).sum(1).double())
    return torch.stack(along).mean(0)


def run_grid(marker: Marker, key: Key, x: torch.Tensor, y: torch.Tensor, steps_grid: list[int],
             lr_grid: list[float], *, seed: int, draws: int, batch_size: int | None, label: str) -> list[dict]:
    """Mark ``x`` at every (steps, lr) cell and measure each cell's shift under fresh augmentations."""
    base = MarkConfig()
    mark(marker, x[:2], y[:2], key, replace(base, steps=2), seed=seed, batch_size=batch_size)  # warm-up
    cells = []
    for steps in steps_grid:
        for lr in lr_grid:
            config = replace(base, steps=steps, lr=lr)
            start = time.perf_counter()
            result = mark(marker, x, y, key, config, seed=seed, batch_size=batch_size)
            seconds = time.perf_counter() - start
            quality = mark_quality(marker, key, x, y, result.images, config, draws)
            per_image = shift_per_image(marker, key, x, y, result.images, config, draws)
            finite = result.psnr[torch.isfinite(result.psnr)]
            cell = {
                "steps": steps,
                "lr": lr,
                "seconds": seconds,
                "seconds_per_image": seconds / x.shape[0],
                "seconds_per_image_step": seconds / (x.shape[0] * steps),
                "psnr_min": float(result.psnr.min()),
                "psnr_mean": float(finite.mean()) if finite.numel() else math.inf,
                "fraction_psnr_ge_floor": float((result.psnr >= config.min_psnr).double().mean()),
                "shift_mean": float(per_image.mean()),
                "shift_standard_error": float(per_image.std() / math.sqrt(len(per_image))),
                "cosine_mean": quality["carrier"]["cosine_mean"],
                "fraction_positive_single_draw": quality["carrier"]["fraction_positive_single_draw"],
                "unused_directions_cosine_mean": quality["unused_random_directions"]["cosine_mean"],
            }
            cell["_per_image"] = per_image
            cells.append(cell)
            print(f"[{label}] steps {steps:3d} lr {lr:<5g} shift {cell['shift_mean']:.4f} "
                  f"(+- {cell['shift_standard_error']:.4f}) cosine {cell['cosine_mean']:.3f} PSNR min "
                  f"{cell['psnr_min']:.2f} mean {cell['psnr_mean']:.2f}  {cell['seconds_per_image'] * 1e3:.2f} "
                  "ms/image", flush=True)
    return cells


def choose(cells: list[dict], tolerance: float) -> dict:
    """The best cell and the cheapest cell within ``tolerance`` of its shift (fewest steps, then the larger
    shift); every cell meets the PSNR floor by construction, which is checked too."""
    valid = [c for c in cells if c["fraction_psnr_ge_floor"] == 1.0]
    best = max(valid, key=lambda c: c["shift_mean"])
    near = [c for c in valid if c["shift_mean"] >= (1 - tolerance) * best["shift_mean"]]
    chosen = min(near, key=lambda c: (c["steps"], -c["shift_mean"]))
    difference = chosen["_per_image"] - best["_per_image"]  # paired: same images, same fresh augmentations
    # Seconds per image and step vary from cell to cell with the load of a shared machine; their median over
    # every cell gives each setting a steadier cost (steps x median).
    per_step = sorted(c["seconds_per_image_step"] for c in cells)[len(cells) // 2]

    def summary(cell: dict) -> dict:
        return {"steps": cell["steps"], "lr": cell["lr"], "shift_mean": cell["shift_mean"],
                "shift_standard_error": cell["shift_standard_error"], "cosine_mean": cell["cosine_mean"],
                "psnr_min": cell["psnr_min"], "psnr_mean": cell["psnr_mean"],
                "seconds_per_image_measured": cell["seconds_per_image"],
                "seconds_per_image_at_median_step_cost": cell["steps"] * per_step}

    previous = next((c for c in cells if (c["steps"], c["lr"]) == (90, 0.01)), None)
    return {
        "median_seconds_per_image_step": per_step,
        "previous_default": summary(previous) if previous else None,
        "rule": f"fewest steps among the cells whose shift is >= (1 - {tolerance:g}) x the best cell's (seconds are "
                "proportional to steps; lr does not change the cost); ties: the larger shift",
        "best": summary(best),
        "within_tolerance": [{"steps": c["steps"], "lr": c["lr"], "shift_mean": c["shift_mean"]} for c in near],
        "chosen": {**summary(chosen), "shift_fraction_of_best": chosen["shift_mean"] / best["shift_mean"],
                   "paired_difference_from_best": float(difference.mean()),
                   "paired_difference_standard_error": float(difference.std() / math.sqrt(len(difference)))},
    }


def retime(path: Path, repeats: int, count: int, resnet_count: int, command: str) -> None:
    """Time the chosen default against the previous one again, alternating them ``repeats`` times on the same
    images (the grid's seconds follow the load of a shared machine from cell to cell): the fastest wall time
    of each, and the CPU time of that call. Adds ``timing`` to the record at ``path``."""
    record = json.loads(path.read_text())
    chosen, previous = record["builtin"]["choice"]["chosen"], record["previous_default"]
    settings = {"chosen": (chosen["steps"], chosen["lr"]), "previous_default": (previous["steps"], previous["lr"])}
    seed, key_seed = record["seeds"]["images"], record["seeds"]["key"]
    marker = default_marker()
    x, y = owner_images(count, seed)
    torch.manual_seed(0)
    resnet = Marker.from_torchvision("resnet18", input_size=224)
    resnet_x = _resnet_images(x[:resnet_count])
    setups = {"builtin": (marker, x, y, None)}
    if resnet_count:
        setups["resnet18_224"] = (resnet, resnet_x, y[:resnet_count], resnet_count)
    timing: dict = {"command": command, "repeats": repeats, "rule": "fastest wall time of the repeats (alternating "
                    "the two settings); cpu_seconds: process CPU time of that call (all threads)"}
    for name, (net, images, labels, batch) in setups.items():
        key = Key.generate(net.info, seed=key_seed)
        mark(net, images[:2], labels[:2], key, replace(MarkConfig(), steps=2), seed=seed, batch_size=batch)
        best: dict = {}
        for _ in range(repeats):
            for which, (steps, lr) in settings.items():
                config = replace(MarkConfig(), steps=steps, lr=lr)
                wall, cpu = time.perf_counter(), time.process_time()
                mark(net, images, labels, key, config, seed=seed, batch_size=batch)
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                if which not in best or wall < best[which]["seconds"]:
                    best[which] = {"steps": steps, "lr": lr, "seconds": wall, "cpu_seconds": cpu,
                                   "seconds_per_image": wall / images.shape[0],
                                   "seconds_per_image_step": wall / (images.shape[0] * steps)}
        best["images"] = int(images.shape[0])
        best["speed_up"] = best["previous_default"]["seconds"] / best["chosen"]["seconds"]
        timing[name] = best
        print(f"[{name}] chosen {best['chosen']['seconds_per_image'] * 1e3:.2f} ms/image, previous "
              f"{best['previous_default']['seconds_per_image'] * 1e3:.2f} ms/image ({best['speed_up']:.2f}x)",
              flush=True)
    timing["versions"] = versions()
    record["timing"] = timing
    atomic_write_json(path, record)


def _resnet_images(x: torch.Tensor) -> torch.Tensor:
    """Fashion-MNIST images ``(N, 1, 28, 28)`` as 8-bit 3-channel 224 x 224 images (bilinear)."""
    images = torch.nn.functional.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False)
    return torch.round(images.clamp(0, 1).repeat(1, 3, 1, 1) * 255) / 255


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", default="10,20,30,60,90", help="comma-separated steps")
    parser.add_argument("--lrs", default="0.01,0.02,0.04,0.06,0.1", help="comma-separated learning rates")
    parser.add_argument("--count", type=int, default=256, help="Fashion-MNIST images for the built-in marker")
    parser.add_argument("--resnet-count", type=int, default=4, help="224 x 224 images for the ResNet-18 (0: skip)")
    parser.add_argument("--draws", type=int, default=4, help="fresh augmentations for the shift")
    parser.add_argument("--seed", type=int, default=0, help="image draw and marking seed")
    parser.add_argument("--key-seed", type=int, default=0)
    parser.add_argument("--tolerance", type=float, default=0.02)
    parser.add_argument("--only-first-cell", action="store_true", help="time the first cell only (an estimate)")
    parser.add_argument("--retime", type=int, default=0, metavar="REPEATS",
                        help="instead of the grid: time the chosen default against the previous one REPEATS times "
                        "each on the record at --out and add the fastest to it")
    parser.add_argument("--out", default=str(RESULTS / "mark_front.json"))
    args = parser.parse_args()
    command = "flock /tmp/radioactive-heavy.lock nice -n 5 .venv/bin/python " + " ".join(shlex.quote(a) for a in sys.argv)
    if args.retime:
        retime(Path(args.out), args.retime, args.count, args.resnet_count, command)
        return
    steps_grid, lr_grid = _numbers(args.steps, int), _numbers(args.lrs, float)
    if args.only_first_cell:
        steps_grid, lr_grid = steps_grid[:1], lr_grid[:1]
    started = time.perf_counter()

    marker = default_marker()
    key = Key.generate(marker.info, seed=args.key_seed)
    x, y = owner_images(args.count, args.seed)
    builtin_cells = run_grid(marker, key, x, y, steps_grid, lr_grid, seed=args.seed, draws=args.draws,
                             batch_size=None, label="built-in")
    out: dict = {
        "benchmark": "mark_front",
        "command": command,
        "device": "cpu",
        "threads": torch.get_num_threads(),
        "grid": {"steps": steps_grid, "lr": lr_grid},
        "fixed_settings": {k: v for k, v in MarkConfig().to_dict().items() if k not in ("steps", "lr")},
        "previous_default": {"steps": 90, "lr": 0.01},
        "seeds": {"images": args.seed, "marking": args.seed, "key": args.key_seed,
                  "fresh_augmentations": "bench_mark.mark_quality: image_seeds(10000 + draw, ...)",
                  "resnet_init": "torch.manual_seed(0)"},
        "fresh_augmentation_draws": args.draws,
        "builtin": {
            "marker": "default (the Fashion-MNIST cnn shipped with radioactive, trained weights)",
            "marker_weights_sha256": marker.info.weights_sha256,
            "feature_dim": marker.feature_dim,
            "key_fingerprint": key.fingerprint,
            "images": f"{args.count} Fashion-MNIST training images (seeded draw), 28 x 28 grey",
            "image_count": args.count,
            "cells": builtin_cells,
            "choice": choose(builtin_cells, args.tolerance),
        },
    }
    if args.resnet_count:
        torch.manual_seed(0)
        resnet = Marker.from_torchvision("resnet18", input_size=224)
        resnet_key = Key.generate(resnet.info, seed=args.key_seed)
        images = _resnet_images(x[: args.resnet_count])
        cells = run_grid(resnet, resnet_key, images, y[: args.resnet_count], steps_grid, lr_grid, seed=args.seed,
                         draws=args.draws, batch_size=args.resnet_count, label="resnet18-224 random")
        out["resnet18_224"] = {
            "marker": "torchvision resnet18, 224 x 224, RANDOMLY INITIALISED weights (timing; the shift is that "
                      "of the random network, not of a trained one)",
            "marker_weights_sha256": resnet.info.weights_sha256,
            "feature_dim": resnet.feature_dim,
            "key_fingerprint": resnet_key.fingerprint,
            "images": f"the first {args.resnet_count} of the same Fashion-MNIST draw, resized to 224 x 224 "
                      "(bilinear), 3 channels",
            "image_count": args.resnet_count,
            "cells": cells,
            "seconds_per_image_step_median": sorted(c["seconds_per_image_step"] for c in cells)[len(cells) // 2],
        }
        chosen = out["builtin"]["choice"]["chosen"]
        resnet_cell = next(c for c in cells if (c["steps"], c["lr"]) == (chosen["steps"], chosen["lr"]))
        out["resnet18_224"]["at_chosen_default"] = {
            "steps": chosen["steps"], "lr": chosen["lr"], "shift_mean_random_weights": resnet_cell["shift_mean"],
            "seconds_per_image_at_median_step_cost": chosen["steps"] * out["resnet18_224"]["seconds_per_image_step_median"],
            "seconds_per_image_measured": resnet_cell["seconds_per_image"]}
    for section in ("builtin", "resnet18_224"):
        for cell in out.get(section, {}).get("cells", []):
            del cell["_per_image"]
    out["seconds_total"] = time.perf_counter() - started
    out["versions"] = versions()
    atomic_write_json(Path(args.out), out)
    print(f"wrote {args.out} ({out['seconds_total']:.0f} s); choice: {out['builtin']['choice']['chosen']}")


if __name__ == "__main__":
    main()

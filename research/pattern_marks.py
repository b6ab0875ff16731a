"""Research (issue 10, the demo): class-wise *pixel patterns* against the marker's per-image carrier marks.

One-off research code, not part of the product. Question: at the demo's setting (cnn suspects from scratch on the
20,000-image subset, 10 % marked, 4 epochs, the shipped clean references for difference in differences), does a
mark that is the same smooth random pattern P_c on every marked image of class c (at PSNR >= 40 dB per image) get
learned more strongly than the marker's per-image feature-space marks? The black-box test is the demo's: fresh
held-out probes, the key's version against K control versions, margin statistic, exact stratified permutation
combination, difference in differences against the references. With patterns, the K + 1 versions are the probes
plus the key's patterns and plus K control pattern sets drawn the same way, so the test stays exact.

    .venv/bin/python research/pattern_marks.py --seeds 0 1 2 --sigma 1.5 --out benchmarks/results/research/pattern-marks.json
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import radioactive.detect.observations as observations
from radioactive._io import atomic_write_json, versions
from radioactive.demo import demo_config
from radioactive.detect import Probes
from radioactive.detect.combine import verdict_from_observations
from radioactive.detect.observations import collect, model_predictor
from radioactive.experiment import Context, derive_seed
from radioactive.nets import make_spec
from radioactive.train import fit

log = logging.getLogger("pattern_marks")
TARGET_MSE = 1e-4  # PSNR 40 dB on [0, 1] images


def patterns(seed: int, classes: int, size: int, sigma: float, symmetric: bool) -> torch.Tensor:
    """``(classes, 1, size, size)`` smooth random unit-RMS patterns (Gaussian noise blurred with ``sigma`` px;
    left-right symmetric when ``symmetric``, so the trainer's flips keep them)."""
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(classes, 1, size, size, generator=gen, dtype=torch.float64)
    if sigma > 0:
        radius = int(math.ceil(3 * sigma))
        x = torch.arange(-radius, radius + 1, dtype=torch.float64)
        kernel = torch.exp(-x**2 / (2 * sigma**2))
        kernel /= kernel.sum()
        noise = F.conv2d(F.pad(noise, (radius,) * 4, mode="circular"), kernel.view(1, 1, 1, -1))
        noise = F.conv2d(noise, kernel.view(1, 1, -1, 1))
    if symmetric:
        noise = (noise + noise.flip(-1)) / 2
    noise -= noise.mean(dim=(1, 2, 3), keepdim=True)
    return noise / noise.pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt()


def apply(images: torch.Tensor, labels: torch.Tensor, pats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images plus their class's pattern, scaled per image so that PSNR >= 40 dB after clipping and
    rounding: (marked uint8, PSNR)."""
    x = images.double() / 255
    p = pats[labels]
    scale = torch.full((len(x), 1, 1, 1), math.sqrt(TARGET_MSE), dtype=torch.float64)
    for _ in range(30):
        out = ((x + scale * p).clamp(0, 1) * 255).round() / 255
        mse = (out - x).pow(2).mean(dim=(1, 2, 3))
        over = mse > TARGET_MSE
        low = mse < 0.98 * TARGET_MSE
        if not over.any() and not low.any():
            break
        factor = torch.ones_like(mse)
        factor[over] = 0.97
        factor[low] = torch.clamp((TARGET_MSE / mse[low].clamp_min(1e-12)).sqrt() * 0.99, max=1.5)
        scale = scale * factor.view(-1, 1, 1, 1)
    out = ((x + scale * p).clamp(0, 1) * 255).round()
    mse = (out / 255 - x).pow(2).mean(dim=(1, 2, 3))
    # any image still above the target: no pattern (never breaks the floor)
    bad = mse > TARGET_MSE
    out[bad] = images[bad].double()
    mse[bad] = 0
    psnr = 10 * torch.log10(1 / mse.clamp_min(1e-20))
    return out.to(torch.uint8), psnr


def run_seed(seed: int, args: argparse.Namespace) -> dict:
    config = demo_config(seed=seed)
    context = Context(config, args.workdir)
    images, labels = context.data["owner"]
    classes = context.num_classes
    size = images.shape[-1]
    key_seed = 10_000 + seed  # never a control seed
    key_pats = patterns(key_seed, classes, size, args.sigma, not args.asymmetric)
    indices = context.selection(seed, config.fractions[-1])
    marked, psnr = apply(images[indices], labels[indices], key_pats)
    published = images.clone()
    published[indices] = marked
    setting = config.models[0]
    start = time.perf_counter()
    result = fit(make_spec(setting.arch, classes, images), published, labels, recipe=config.recipe(setting),
                 seed=derive_seed("training", seed), test=context.data["test"], device="cpu", num_classes=classes)
    train_seconds = time.perf_counter() - start
    model = result.model.eval()
    references = [model_predictor(m) for m in context.reference_models()]
    probes = Probes(*context.probes())
    control_seeds = [1_000_000 + 1_000 * seed + j for j in range(args.controls)]
    control_pats = [patterns(s, classes, size, args.sigma, not args.asymmetric) for s in control_seeds]

    def versions_(marker, key, probes_, **_):
        for j, pats in enumerate([key_pats, *control_pats]):
            yield j, apply(probes_.images, probes_.labels, pats)[0]

    original = observations.marked_versions
    observations.marked_versions = versions_
    try:
        obs = collect(model_predictor(model), context.key(seed), probes, marker=context.marker,
                      num_controls=args.controls, reference=references)
    finally:
        observations.marked_versions = original
    out = {"seed": seed, "test_accuracy": result.metrics.get("test_accuracy"), "marked": len(indices),
           "psnr_min": float(psnr.min()), "psnr_mean": float(psnr[torch.isfinite(psnr)].mean()),
           "train_seconds": train_seconds, "log10_p": {}}
    for statistic in ("margin", "loss"):
        for did in (True, False):
            verdict = verdict_from_observations(obs, statistic=statistic, combine="perm", difference=did)
            out["log10_p"][f"{statistic}-perm{'-did' if did else ''}"] = verdict.log10_p
    log.info("seed %d: %s (accuracy %.4f, PSNR min %.2f)", seed, {k: round(v, 2) for k, v in out["log10_p"].items()},
             out["test_accuracy"], out["psnr_min"])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--sigma", type=float, default=1.5, help="blur of the patterns, pixels")
    parser.add_argument("--asymmetric", action="store_true", help="patterns not left-right symmetric")
    parser.add_argument("--controls", type=int, default=20)
    parser.add_argument("--workdir", default="/tmp/pattern-marks")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(2)
    runs = [run_seed(seed, args) for seed in args.seeds]
    atomic_write_json(args.out, {"research": "pattern_marks", "command": " ".join(sys.argv),
                                 "settings": {k: str(v) for k, v in vars(args).items()}, "runs": runs,
                                 "baseline": "benchmarks/results/demo_seeds.json (the marker's per-image marks, "
                                             "same subset, fraction, recipe, probes, K and references)",
                                 "versions": versions()})
    print(json.dumps([{k: r[k] for k in ("seed", "log10_p", "test_accuracy", "psnr_min")} for r in runs], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

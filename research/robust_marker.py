"""Research (issue 10, part 2): do marks made with a *robust* marking network transfer better to a suspect of
another architecture?

One-off research code, not part of the product. Adversarially trained networks have features that follow the
image rather than its high-frequency noise, and perturbations made through them transfer better between
architectures; a mark that moves such features along the carrier might be learned more by a suspect that is not
the marker. This script trains the Fashion-MNIST ``cnn`` marker like ``radioactive train-marker`` (same owner split,
5 epochs, SGD with Nesterov at lr 0.05, cosine, crop and flip) but on L2 PGD adversarial examples (``--epsilon``
in [0, 1] pixel units, ``--pgd-steps`` steps; a 40 dB mark on 28 x 28 images has an L2 norm of 0.28), or on
Gaussian noise (``--noise``), and then runs the demo's grid cell (10 % of the 55k owner split marked at >= 40 dB,
10 marking steps at lr 0.06, 400 probes x 21 carrier sets, margin, exact permutation, difference in differences
against the 4 shipped clean cnn references) with ``resnet_narrow`` suspects (not the marker's architecture)
trained 4 epochs in bfloat16, for the shipped marker and the robust one, on the same seeds. Both use the same
detection, so both are exact; only the marking network differs.

    flock /tmp/radioactive-heavy.lock .venv/bin/python research/robust_marker.py --seeds 0 1 2 \
        --out benchmarks/results/research/robust-marker.json
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

from radioactive._io import atomic_write_json, sha256_file, versions
from radioactive.demo import demo_config
from radioactive.experiment import Context
from radioactive.experiment.run import RunSpec, run_one
from radioactive.fmnist import fashion_mnist_splits
from radioactive.marker import Marker
from radioactive.nets import build_from_spec, save_checkpoint
from radioactive.train import dataset_fingerprint
from radioactive.train.batches import as_float, augment_batch
from radioactive.train.loop import evaluate
from radioactive.zoo import FMNIST_SPEC, MARKER_RECIPE

log = logging.getLogger("robust_marker")


def l2_pgd(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, epsilon: float, steps: int) -> torch.Tensor:
    """Images within L2 distance ``epsilon`` of ``x`` (and in [0, 1]) that raise the loss, by ``steps`` normalised
    gradient steps of 2.5 epsilon / steps from a random start."""
    step = 2.5 * epsilon / steps
    delta = torch.randn_like(x)
    delta = delta * (epsilon * torch.rand(len(x), 1, 1, 1) / delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1))
    for _ in range(steps):
        delta.requires_grad_(True)
        loss = F.cross_entropy(model((x + delta).clamp(0, 1)), y)
        (grad,) = torch.autograd.grad(loss, delta)
        with torch.no_grad():
            delta = delta + step * grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
            norm = delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
            delta = delta * (epsilon / norm).clamp(max=1.0)
    return (x + delta.detach()).clamp(0, 1)


def train_marker(out: Path, *, epsilon: float, pgd_steps: int, noise: float, seed: int) -> dict:
    """The ``cnn`` marker trained on adversarial (``epsilon`` > 0) or noisy (``noise`` > 0) owner images."""
    splits = fashion_mnist_splits()
    images, labels = splits["owner"]
    recipe = MARKER_RECIPE
    torch.manual_seed(seed)
    model = build_from_spec(FMNIST_SPEC)
    params_decay = [p for p in model.parameters() if p.ndim > 1]
    params_other = [p for p in model.parameters() if p.ndim <= 1]
    opt = torch.optim.SGD([{"params": params_decay, "weight_decay": recipe.weight_decay},
                           {"params": params_other, "weight_decay": 0.0}], lr=recipe.lr,
                          momentum=recipe.momentum, nesterov=recipe.nesterov)
    per_epoch = math.ceil(len(labels) / recipe.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=recipe.epochs * per_epoch)
    gen = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    for epoch in range(recipe.epochs):
        model.train()
        order = torch.randperm(len(labels), generator=gen)
        total = 0.0
        for b in range(per_epoch):
            idx = order[b * recipe.batch_size:(b + 1) * recipe.batch_size]
            x = augment_batch(as_float(images[idx]), padding=recipe.crop_padding, flip=recipe.flip, generator=gen)
            y = labels[idx]
            if epsilon > 0:
                model.eval()  # batch-norm statistics from the clean images only
                x = l2_pgd(model, x, y, epsilon, pgd_steps)
                model.train()
            if noise > 0:
                x = (x + noise * torch.randn(x.shape, generator=gen)).clamp(0, 1)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach())
        log.info("marker epoch %d/%d: loss %.4f (%.0f s)", epoch + 1, recipe.epochs, total / per_epoch,
                 time.perf_counter() - start)
    model.eval()
    metrics = {"test_accuracy": evaluate(model, *splits["test"])["accuracy"],
               "val_accuracy": evaluate(model, *splits["holdout"])["accuracy"],
               "wall_time_s": time.perf_counter() - start}
    extra = {"kind": "marker", "dataset": "fashion-mnist", "dataset_fingerprint": dataset_fingerprint(images, labels),
             "recipe": recipe.to_dict(), "seed": seed, "robust": {"epsilon": epsilon, "pgd_steps": pgd_steps,
                                                                   "noise": noise}, **metrics,
             "command": "research/robust_marker.py"}
    save_checkpoint(model, out, FMNIST_SPEC, extra)
    log.info("robust marker: test accuracy %.4f (%.0f s)", metrics["test_accuracy"], metrics["wall_time_s"])
    return metrics


def run_cell(marker: str | Marker, seed: int, workdir: Path, arch: str) -> dict:
    """The demo's cell at its largest fraction with ``arch`` suspects; ``marker``: a checkpoint path, "default",
    or a :class:`Marker` built in memory (``research/ensemble_marker.py``)."""
    in_memory = isinstance(marker, Marker)
    config = demo_config(seed=seed, arch=arch, marker="default" if in_memory else marker, whitebox_null_trials=0)
    config = replace(config, fractions=(config.fractions[-1],))
    context = Context(config, workdir, marker=marker if in_memory else None)
    spec = RunSpec.of(config, fraction=config.fractions[-1], model=config.models[0], seed=seed)
    record = run_one(spec, context, progress=lambda line: log.info("%s", line))
    return {k: record[k] for k in ("seed", "fraction", "arch", "key_fingerprint", "marked_images", "psnr_min",
                                   "psnr_mean", "test_accuracy", "log10_p", "seconds")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epsilon", type=float, default=0.5, help="L2 radius of adversarial training, [0, 1] units")
    parser.add_argument("--pgd-steps", type=int, default=3)
    parser.add_argument("--noise", type=float, default=0.0, help="Gaussian noise std during marker training")
    parser.add_argument("--arch", default="resnet_narrow", help="the suspects' architecture")
    parser.add_argument("--markers", nargs="+", default=["default", "robust"])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/robust-marker"))
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(2)
    args.workdir.mkdir(parents=True, exist_ok=True)
    tag = f"eps{args.epsilon}-steps{args.pgd_steps}-noise{args.noise}"
    robust_path = args.workdir / f"marker-{tag}.safetensors"
    marker_metrics = None
    if "robust" in args.markers:
        if not robust_path.is_file():
            train_marker(robust_path, epsilon=args.epsilon, pgd_steps=args.pgd_steps, noise=args.noise, seed=0)
        from safetensors import safe_open
        with safe_open(str(robust_path), framework="pt") as handle:
            marker_metrics = {k: v for k, v in json.loads(handle.metadata()["radioactive.extra"]).items()
                              if k in ("test_accuracy", "val_accuracy", "wall_time_s", "robust")}
    partial = args.workdir / f"cells-{tag}-{args.arch}.json"
    cells = json.loads(partial.read_text()) if partial.is_file() else {}
    for name in args.markers:
        marker = str(robust_path) if name == "robust" else "default"
        for seed in args.seeds:
            ident = f"{name}/{seed}"
            if ident in cells:
                continue
            log.info("cell %s", ident)
            cells[ident] = {"marker": name, **run_cell(marker, seed, args.workdir / f"{name}-{tag}", args.arch)}
            atomic_write_json(partial, cells)  # resumable
    summary = {}
    for name in args.markers:
        rows = [c for c in cells.values() if c["marker"] == name and c["seed"] in args.seeds]
        summary[name] = {test: sorted(r["log10_p"][test] for r in rows)[len(rows) // 2]
                         for test in rows[0]["log10_p"]} if rows else {}
        summary[name]["test_accuracy"] = sorted(r["test_accuracy"] for r in rows)[len(rows) // 2] if rows else None
    atomic_write_json(args.out, {
        "research": "robust_marker", "command": " ".join(sys.argv),
        "settings": {k: str(v) for k, v in vars(args).items()},
        "robust_marker": {"path": str(robust_path), "sha256": sha256_file(robust_path) if robust_path.is_file()
                          else None, **(marker_metrics or {})},
        "median_over_seeds": summary, "cells": list(cells.values()), "versions": versions(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S")})
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

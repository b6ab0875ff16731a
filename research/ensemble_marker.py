"""Research (issue 10, part 2): do marks made through an *ensemble* of marking networks transfer better to a
suspect whose architecture is in none of them?

One-off research code, not part of the product. Perturbations optimised against several architectures at once
transfer better to an unseen one than those made against a single network. This script builds a marking network
from the shipped ``cnn`` marker and a second Fashion-MNIST marker of another architecture (``--second``, default
``mlp``, trained like ``radioactive train-marker --arch mlp``: owner split, 5 epochs, the marker recipe; or a
second ``cnn`` of another ``--second-seed``). Its
features are the two members' features side by side, each divided by its mean norm on 1,000 owner images (so
both weigh the same in the marking loss), and its head averages the members' logits; the key's carriers are
random unit vectors in that joined space (d = 128 + the second member's d). Marking, probes and tests then run
unchanged on the demo's grid cell (10 % of the 55k owner split marked at >= 40 dB, 10 marking steps at lr 0.06,
400 probes x 21 carrier sets, margin, exact permutation, difference in differences against the 4 shipped clean
cnn references) with ``resnet_narrow`` suspects (in neither member) trained 4 epochs in bfloat16, on the seeds of
``research/robust_marker.py`` so that its shipped-marker cells are the comparison. Every test stays exact: only
the marking network differs.

    flock /tmp/radioactive-heavy.lock .venv/bin/python research/ensemble_marker.py --seeds 0 1 2 \
        --out benchmarks/results/research/ensemble-marker.json
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import torch
from robust_marker import run_cell  # research/ is on sys.path when this script runs
from torch import nn

from radioactive._io import atomic_write_json, sha256_file, versions
from radioactive.fmnist import fashion_mnist_splits
from radioactive.marker import Marker
from radioactive.nets.head import FeatureSplit
from radioactive.train.batches import as_float
from radioactive.zoo import FMNIST_SPEC, default_marker, train_fmnist_marker

log = logging.getLogger("ensemble_marker")


class Ensemble(nn.Module):
    """Features: the members' features, each divided by ``scales[i]``, side by side; logits: their mean logits."""

    def __init__(self, members: list[Marker], scales: list[float]):
        super().__init__()
        self.members = nn.ModuleList(m.model for m in members)
        self._splits: list[FeatureSplit] = [m.split for m in members]
        self.register_buffer("scales", torch.tensor(scales, dtype=torch.float32))
        dim = sum(s.feature_dim for s in self._splits)
        self.head = nn.Linear(dim, self._splits[0].num_classes)
        with torch.no_grad():
            weights = [s.head.weight * scale / len(members) for s, scale in zip(self._splits, scales, strict=True)]
            self.head.weight.copy_(torch.cat(weights, dim=1))
            self.head.bias.copy_(sum(s.head.bias for s in self._splits) / len(members))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [split.features(x) / self.scales[i] for i, split in enumerate(self._splits)]
        return self.head(torch.cat(feats, dim=1))


def build_ensemble(second: Path) -> tuple[Marker, dict]:
    members = [default_marker(), Marker.from_checkpoint(second)]
    images = as_float(fashion_mnist_splits()["owner"][0][:1000])
    with torch.no_grad():
        scales = [float(m.features(images).norm(dim=1).mean()) for m in members]
    model = Ensemble(members, scales)
    marker = Marker.from_model(model, FMNIST_SPEC, head="head")
    with torch.no_grad():  # the joined head reproduces the mean of the members' logits
        mean_logits = sum(m.model(images[:64]) for m in members) / len(members)
        assert torch.allclose(model(images[:64]), mean_logits, atol=1e-4)
    return marker, {"scales": scales, "feature_dim": marker.feature_dim,
                    "member_dims": [m.feature_dim for m in members]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--second", default="mlp", help="the second member's architecture")
    parser.add_argument("--second-seed", type=int, default=0, help="the second member's training seed")
    parser.add_argument("--arch", default="resnet_narrow", help="the suspects' architecture")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/ensemble-marker"))
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.arch in ("cnn", args.second):
        parser.error(f"--arch {args.arch} is a member of the ensemble; the question is transfer to another one")
    if args.second == "cnn" and args.second_seed == 0:
        parser.error("the shipped marker is the cnn of seed 0: give the second cnn another --second-seed")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(2)
    args.workdir.mkdir(parents=True, exist_ok=True)
    name = args.second if args.second_seed == 0 else f"{args.second}-seed{args.second_seed}"
    second = args.workdir / f"marker-{name}.safetensors"
    if not second.is_file():
        result = train_fmnist_marker(second, arch=args.second, seed=args.second_seed)
        log.info("second member %s: test accuracy %.4f", args.second, result.metrics["test_accuracy"])
    from safetensors import safe_open
    with safe_open(str(second), framework="pt") as handle:
        second_metrics = {k: v for k, v in json.loads(handle.metadata()["radioactive.extra"]).items()
                          if k in ("test_accuracy", "val_accuracy", "wall_time_s")}
    marker, ensemble_info = build_ensemble(second)
    log.info("ensemble: %s", ensemble_info)
    partial = args.workdir / f"cells-{name}-{args.arch}.json"
    cells = json.loads(partial.read_text()) if partial.is_file() else {}
    for seed in args.seeds:
        if str(seed) in cells:
            continue
        log.info("cell seed %d", seed)
        cells[str(seed)] = {"marker": f"ensemble cnn+{name}",
                            **run_cell(marker, seed, args.workdir / f"cnn+{name}", args.arch)}
        atomic_write_json(partial, cells)  # resumable
    rows = [c for c in cells.values() if c["seed"] in args.seeds]
    summary = {test: sorted(r["log10_p"][test] for r in rows)[len(rows) // 2] for test in rows[0]["log10_p"]}
    summary["test_accuracy"] = sorted(r["test_accuracy"] for r in rows)[len(rows) // 2]
    atomic_write_json(args.out, {
        "research": "ensemble_marker", "command": " ".join(sys.argv),
        "settings": {k: str(v) for k, v in vars(args).items()},
        "second_member": {"arch": args.second, "seed": args.second_seed, "path": str(second), "sha256": sha256_file(second), **second_metrics},
        "ensemble": ensemble_info, "median_over_seeds": summary, "cells": list(cells.values()),
        "comparison": "the shipped marker's cells on the same seeds: benchmarks/results/research/robust-marker.json",
        "versions": versions(), "date": time.strftime("%Y-%m-%d %H:%M:%S")})
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Research (issue 25, lever 5): data taggants — secret OOD key images with secret labels, clean-label marks made
by gradient matching on a surrogate, the exact rank test of :mod:`radioactive.detect.taggants`.

One-off research code, not part of the product. The commands that made the records (each heavy one under the
shared lock, ``flock /tmp/radioactive-heavy.lock``; ``P = .venv/bin/python research/taggants.py``):

    # calibration: random keys x clean suspects (the open suite's two clean seed-0 suspects, the shipped bank)
    $P calibration --keys 200 --out benchmarks/results/taggants/calibration.json                  # smooth keys
    $P calibration --keys 200 --key-family mix2 --out benchmarks/results/taggants/calibration-mix2.json
    $P calibration --keys 1000 --counts 30 100 --key-family mix2 --seed-base 7600000 --seed-stride 10000 \
        --out benchmarks/results/taggants/calibration-mix2-confirm.json
    # crafting: 10 % of the owner split (5,500 images), <= ~30 min on 2 cores (the steps follow the time budget)
    $P craft --num-keys 100 --key-seed 2500001 --steps 200 --max-seconds 1500 --lr 0.005 \
        --out runs/taggants/craft-k100.safetensors       # (ran with commit 1fbcc02's step-count schedule)
    $P craft --num-keys 10 --key-family mix2 --key-seed 2500011 --steps 400 --max-seconds 1500 --lr 0.005 \
        --out runs/taggants/craft-mix2-k10.safetensors
    # feasibility: the grid's cnn recipe on the published set and its clean twin (same seed, originals);
    # --suspects preact_resnet-adamw trains the open suite's third party (heldout/train.py) instead
    $P feasibility --craft runs/taggants/craft-k100.safetensors --seeds 0 --suspects cnn
    $P feasibility --craft runs/taggants/craft-mix2-k10.safetensors --seeds 0 --suspects cnn
    # upper bound: the key images themselves, labelled, 10 copies each, added to the originals
    $P feasibility --craft runs/taggants/craft-k100.safetensors --seeds 0 --suspects cnn --oracle-copies 10
    $P feasibility --craft runs/taggants/craft-mix2-k10.safetensors --seeds 0 --suspects cnn --oracle-copies 10
    # does a craft work at the surrogate itself? (1 epoch of fine-tuning on published vs originals)
    $P proxy --craft runs/taggants/craft-k100.safetensors
    $P proxy --craft runs/taggants/craft-mix2-k10.safetensors

Every feasibility / proxy result goes to ``benchmarks/results/taggants/feasibility.json`` (default ``--out``).

Marking (Witches' Brew / Data Taggants): the owner's surrogate (a clean model trained on the owner's originals:
the shipped marker cnn, optionally bank members) gives per class c the target gradient
g_c = grad_theta sum_{keys k with label c} CE(f(key_k), c). The published fraction is drawn from the key labels'
classes, in proportion to their number of keys (their clean labels agree with the target), and each image's
perturbation delta minimises 1 - cos(grad_theta CE(f(A(x + delta)), c), g_c) over batches of its class, with A
the trainer's random crop (pad 2) and flip, projected onto the per-image PSNR ball (||delta||_2 <= r) and the
[0, 1] box, then rounded to 8 bits with the PSNR rechecked (shrunk where rounding pushed it under the floor).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import logging
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from radioactive._io import atomic_write, atomic_write_json, sha256_file, versions
from radioactive.detect.taggants import TaggantKeys, taggant_keys, taggant_test
from radioactive.fmnist import fashion_mnist_splits
from radioactive.nets import load_checkpoint, make_spec, save_checkpoint
from radioactive.train import TrainRecipe, dataset_fingerprint, fit
from radioactive.train.bank import bank_paths
from radioactive.train.batches import augment_batch
from radioactive.zoo import default_marker_path, shipped_bank

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "runs" / "taggants"
log = logging.getLogger("taggants")
GRID_RECIPE = TrainRecipe(epochs=3, batch_size=128, lr=0.05, schedule="cosine", crop_padding=2, flip=True)
CALIBRATION_SEED = 7_300_000  # calibration keys: seed base + stride * count + i (no other key's seeds)


def say(message: str) -> None:
    print(f"[taggants {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def psnr(marked: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR (dB) of [0, 1] images ``(N, c, H, W)``."""
    mse = (marked.double() - original.double()).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-20))


# -- models -------------------------------------------------------------------------------------------------
def load_surrogate(name: str) -> tuple[torch.nn.Module, str]:
    """``marker`` (the shipped marker cnn) or a shipped bank member by file prefix (e.g. ``resnet_narrow-cosine``)."""
    if name == "marker":
        path = default_marker_path()
    else:
        matches = [p for p in bank_paths(shipped_bank("fashion-mnist")) if Path(p).name.startswith(name)]
        if len(matches) != 1:
            raise SystemExit(f"surrogate {name!r}: expected one bank member with that prefix, got {matches}")
        path = Path(matches[0])
    model, _, _ = load_checkpoint(path)
    return model.eval(), str(Path(path).name)


def heldout_suite():
    """heldout/run_suite.py's Suite over results/heldout (its cached clean seed-0 suspects)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("heldout_run_suite", ROOT / "heldout" / "run_suite.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["heldout_run_suite"] = module
    spec.loader.exec_module(module)
    config = module.load_config(ROOT / "heldout" / "suite.toml")
    return module, config, module.Suite(config, ROOT / "results" / "heldout")


def suite_clean(pair_name: str, seed: int) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The open suite's clean (0 % marked) suspect of ``pair_name`` and ``seed``, from its cache."""
    _, config, suite = heldout_suite()
    pair = next(p for p in config["pairs"] if p["name"] == pair_name)
    empty = torch.zeros(0, dtype=torch.long)
    model, info = suite.train({"pair": pair, "fraction": 0.0, "seed": seed}, empty, torch.zeros(0, 1, 28, 28,
                                                                                                dtype=torch.uint8))
    return model.eval(), info


@torch.no_grad()
def scores_of(model: torch.nn.Module, images: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    model.eval()
    return torch.cat([model(images[i:i + batch]).float() for i in range(0, len(images), batch)])


def exact_level(statistic: str, count: int, alpha: float, num_classes: int = 10) -> float:
    """P(p <= alpha) under H0 for a test of ``count`` keys: at most alpha, below it where the law is discrete."""
    from scipy.stats import binom

    from radioactive.detect.taggants import _count_at_most

    if statistic == "rank_sum":
        level = 0.0
        for total in range(count * (num_classes - 1) + 1):
            p = _count_at_most(total, count, num_classes) / num_classes**count
            if p > alpha * (1 + 1e-12):
                return level
            level = p
        return level
    prob = int(statistic[3:]) / num_classes  # topK
    tails = binom.sf(np.arange(count + 1) - 1, count, prob)
    return float(tails[tails <= alpha * (1 + 1e-12)].max(initial=0.0))


def fpr_check(log10_ps: np.ndarray, statistic: str, count: int, alphas=(0.01, 0.05, 0.1)) -> dict:
    """Empirical P(p <= alpha) against the 99 % binomial upper bound at alpha (as benchmarks/bench_calibration.py),
    and against the 99 % interval around the exact level (the discrete laws reach alpha only at their atoms); a
    KS p against the continuous uniform (small for discrete tests at few keys: their p-values are conservative)."""
    from scipy.stats import kstest

    from radioactive.stats import binomial_interval

    out: dict[str, Any] = {"n": len(log10_ps)}
    for alpha in alphas:
        hits = int((log10_ps <= math.log10(alpha) + 1e-12).sum())
        _, high = binomial_interval(len(log10_ps), alpha, 0.99)
        level = exact_level(statistic, count, alpha)
        low_exact, high_exact = binomial_interval(len(log10_ps), level, 0.99) if level > 0 else (0, 0)
        out |= {f"fpr@{alpha}": hits / len(log10_ps), f"hits@{alpha}": hits, f"upper99@{alpha}": high,
                f"ok@{alpha}": hits <= high, f"exact_level@{alpha}": level,
                f"within99_of_exact@{alpha}": low_exact <= hits <= high_exact}
    out["ks_pvalue"] = float(kstest(10.0 ** log10_ps, "uniform").pvalue)
    out["min_log10_p"] = float(log10_ps.min())
    return out


# -- calibration --------------------------------------------------------------------------------------------
def calibration(args: argparse.Namespace) -> None:
    """FPR of both combinations over random keys on clean suspects the project did not train (and the bank)."""
    suspects: dict[str, Any] = {}
    described: dict[str, Any] = {}
    for pair in ("preact_resnet-adamw", "convmixer-mixup_ema")[: 0 if args.bank_only else 2]:
        model, info = suite_clean(pair, 0)
        suspects[pair] = model
        described[pair] = {"source": f"heldout/suite.toml {pair}, fraction 0, seed 0 (heldout/train.py; not "
                                     "trained by the project's trainer)", "weights_sha256": info.get("weights_sha256"),
                           "test_accuracy": info.get("test_accuracy")}
    for path in bank_paths(shipped_bank("fashion-mnist")):
        model, _, extra = load_checkpoint(path)
        name = "bank:" + Path(path).name.rsplit("-", 1)[0]
        suspects[name] = model.eval()
        described[name] = {"source": f"shipped bank {Path(path).name} (trained by the project, clean)",
                           "sha256": sha256_file(path)}
    start = time.perf_counter()
    cells: dict[str, Any] = {}
    for count in args.counts:
        keys = [make_keys(args.key_family, count, args.seed_base + args.seed_stride * count + i, args.sigma)
                for i in range(args.keys)]
        images = torch.cat([k.images for k in keys])
        for name, model in suspects.items():
            scores = scores_of(model, images).view(args.keys, count, 10)
            rank_sum, top1, top3 = [], [], []
            for key, key_scores in zip(keys, scores):
                verdict = taggant_test(key_scores, key.labels)
                rank_sum.append(verdict.log10_p_rank_sum)
                top1.append(verdict.log10_p_top_k)
                top3.append(taggant_test(key_scores, key.labels, k=3).log10_p_top_k)
            cells.setdefault(str(count), {})[name] = {
                stat: fpr_check(np.array(v), stat, count) | {"log10_p": [round(x, 6) for x in v]}
                for stat, v in (("rank_sum", rank_sum), ("top1", top1), ("top3", top3))}
        say(f"{count} keys per audit: done ({time.perf_counter() - start:.0f} s)")
    ok = all(c[f"ok@{a}"] for by_suspect in cells.values() for stats in by_suspect.values() for c in stats.values()
             for a in (0.01, 0.05, 0.1))
    atomic_write_json(Path(args.out), {
        "what": "false-positive rates of the data-taggant test (sum of ranks; top-1 and top-3 binomial) over random "
                "keys (key images and secret labels) on clean suspects",
        "command": "research/taggants.py " + " ".join(sys.argv[1:]), "suspects": described,
        "keys_per_cell": args.keys, "key_counts": args.counts, "queries_per_audit": {str(c): c for c in args.counts},
        "key_recipe": {"family": args.key_family, "sigma": args.sigma, "kind": {
                           "smooth": "blurred Gaussian noise stretched to [0, 1], 8-bit grid (taggant_keys)",
                           "mix2": "average of two held-out images, 8-bit grid"}[args.key_family],
                       "seeds": f"{args.seed_base} + {args.seed_stride} * count + i, i < {args.keys}"},
        "ties": "conservative", "cells": cells, "ok": ok, "seconds": time.perf_counter() - start,
        "versions": versions()})
    say(f"calibration ok={ok}")


def recheck(args: argparse.Namespace) -> None:
    """Recompute every cell's rates of a calibration record from its stored log10 p (no model is run)."""
    record = json.loads(Path(args.record).read_text())
    for count, by_suspect in record["cells"].items():
        for stats in by_suspect.values():
            for stat, cell in stats.items():
                stats[stat] = fpr_check(np.array(cell["log10_p"]), stat, int(count)) | {"log10_p": cell["log10_p"]}
    record["ok"] = all(c[f"ok@{a}"] for by_suspect in record["cells"].values() for stats in by_suspect.values()
                       for c in stats.values() for a in (0.01, 0.05, 0.1))
    record["rechecked_with"] = "research/taggants.py " + " ".join(sys.argv[1:])
    atomic_write_json(Path(args.record), record)
    say(f"{args.record}: ok={record['ok']}")


# -- crafting -----------------------------------------------------------------------------------------------
def allocate(key_labels: torch.Tensor, budget: int, num_classes: int) -> list[int]:
    """Marked images per class, proportional to the class's number of keys (largest remainders)."""
    counts = torch.bincount(key_labels, minlength=num_classes).double()
    share = counts / counts.sum() * budget
    base = share.floor().long()
    order = torch.argsort(share - base, descending=True)
    for c in order[: budget - int(base.sum())]:
        base[c] += 1
    return base.tolist()


@functools.lru_cache(maxsize=1)
def _holdout_images() -> torch.Tensor:
    return fashion_mnist_splits()["holdout"][0].double()


def make_keys(family: str, num_keys: int, seed: int, sigma: float) -> TaggantKeys:
    """Key images of a family and secret labels uniform on the 10 classes (drawn from ``seed`` alone, with no look
    at any model). ``smooth``: :func:`taggant_keys`; ``mix2``: the average of two held-out (never published)
    Fashion-MNIST images, rounded to 8 bits (less confident, more varied predictions than smooth noise, which every
    clean model measured here calls ``bag``)."""
    if family == "smooth":
        return taggant_keys(num_keys, 10, seed=seed, sigma=sigma)
    holdout = _holdout_images()
    order = torch.randperm(len(holdout), generator=torch.Generator().manual_seed(seed + 3))[: 2 * num_keys]
    images = ((holdout[order[0::2]] + holdout[order[1::2]]) / 2).round().div(255).float()
    labels = torch.randint(10, (num_keys,), generator=torch.Generator().manual_seed(seed), dtype=torch.int64)
    return TaggantKeys(images, labels, 10, seed, 0.0)


def target_gradients(model: torch.nn.Module, keys_images: torch.Tensor, key_labels: torch.Tensor,
                     classes: list[int]) -> dict[int, list[torch.Tensor]]:
    params = [p for p in model.parameters() if p.requires_grad]
    out = {}
    for c in classes:
        chosen = key_labels == c
        loss = F.cross_entropy(model(keys_images[chosen]), key_labels[chosen], reduction="sum")
        out[c] = [g.detach() for g in torch.autograd.grad(loss, params)]
    return out


def craft(args: argparse.Namespace) -> None:
    torch.manual_seed(0)  # unused by the code below (explicit generators); guards library defaults
    splits = fashion_mnist_splits()
    images, labels = splits["owner"]
    keys = make_keys(args.key_family, args.num_keys, args.key_seed, args.sigma)
    budget = int(round(args.fraction * len(labels)))
    per_class = allocate(keys.labels, budget, 10)
    gen = torch.Generator().manual_seed(args.key_seed + 1)
    chosen = []
    for c, count in enumerate(per_class):
        members = (labels == c).nonzero().flatten()
        chosen.append(members[torch.randperm(len(members), generator=gen)[:count]])
    indices = torch.cat(chosen)
    originals = images[indices].float() / 255  # (M, 1, 28, 28)
    poison_labels = labels[indices]
    surrogates = [load_surrogate(name) for name in args.surrogates]
    for model, _ in surrogates:
        for p in model.parameters():
            p.requires_grad_(True)
    classes = sorted({int(c) for c in poison_labels})
    targets = [target_gradients(model, keys.images, keys.labels, classes) for model, _ in surrogates]
    pixels = originals[0].numel()
    radius = math.sqrt(10 ** (-args.psnr / 10) * pixels)
    delta = torch.zeros_like(originals, requires_grad=True)
    optimiser = torch.optim.Adam([delta], lr=args.lr)
    steps = args.steps
    aug_gen = torch.Generator().manual_seed(args.key_seed + 2)
    start, history = time.perf_counter(), []
    batches = [(c, (poison_labels == c).nonzero().flatten()) for c in classes]
    batches = [(c, rows[i:i + args.batch]) for c, rows in batches for i in range(0, len(rows), args.batch)]
    step = 0
    while step < steps:
        model, _ = surrogates[step % len(surrogates)]
        target = targets[step % len(surrogates)]
        params = [p for p in model.parameters() if p.requires_grad]
        optimiser.zero_grad(set_to_none=True)
        losses = []
        for c, rows in batches:
            x = (originals[rows] + delta[rows]).clamp(0, 1)
            x = augment_batch(x, padding=2, flip=True, generator=aug_gen)
            loss = F.cross_entropy(model(x), poison_labels[rows], reduction="sum")
            grads = torch.autograd.grad(loss, params, create_graph=True)
            dot = sum((g * t).sum() for g, t in zip(grads, target[c]))
            norm = torch.sqrt(sum(g.pow(2).sum() for g in grads)) * torch.sqrt(sum(t.pow(2).sum() for t in target[c]))
            alignment = 1 - dot / norm
            alignment.backward()
            losses.append(float(alignment.detach()))
        optimiser.step()
        # The learning rate drops tenfold at 3/8, 5/8 and 7/8 of the budget: of --steps, or with --max-seconds of
        # the wall time (the machine is shared: a step's time varies), stopping when the time is spent.
        progress = ((time.perf_counter() - start) / args.max_seconds if args.max_seconds else (step + 1) / steps)
        for group in optimiser.param_groups:
            group["lr"] = args.lr * 0.1 ** sum(progress >= f for f in (3 / 8, 5 / 8, 7 / 8))
        if args.max_seconds and progress >= 1:
            steps = step + 1
        with torch.no_grad():
            norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
            delta.mul_((radius / norms).clamp(max=1.0).view(-1, 1, 1, 1))
            delta.copy_((originals + delta).clamp(0, 1) - originals)
        history.append({"step": step, "mean_alignment_loss": float(np.mean(losses)),
                        "seconds": time.perf_counter() - start})
        say(f"step {step + 1}: 1 - cos {np.mean(losses):.4f} ({time.perf_counter() - start:.0f} s)")
        step += 1
    craft_seconds = time.perf_counter() - start
    marked, values = quantise(originals, delta.detach(), args.psnr)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"config": vars(args), "steps_run": steps, "per_class": per_class, "surrogates": [name for _, name in surrogates],
            "key": keys.to_dict() | {"family": args.key_family}, "radius_l2": radius, "craft_seconds": craft_seconds, "history": history,
            "psnr_min": float(values.min()), "psnr_median": float(values.median()), "marked": len(indices),
            "owner_fingerprint": dataset_fingerprint(images, labels), "threads": torch.get_num_threads(),
            "versions": versions()}
    with atomic_write(out) as tmp:
        save_file({"indices": indices.contiguous(), "marked": marked.contiguous(), "psnr": values.contiguous(),
                   "key_images": keys.images.contiguous(), "key_labels": keys.labels.contiguous()}, str(tmp),
                  metadata={"taggants": json.dumps(meta)})
    say(f"crafted {len(indices)} images in {craft_seconds:.0f} s; PSNR min {values.min():.2f} median "
        f"{values.median():.2f} dB -> {out}")


def quantise(originals: torch.Tensor, delta: torch.Tensor, floor: float) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 marked images and their PSNR; a delta whose rounding falls under the floor is shrunk until it holds."""
    scale = torch.ones(len(originals), 1, 1, 1, dtype=delta.dtype)
    for _ in range(200):
        marked = ((originals + delta * scale).clamp(0, 1) * 255).round().to(torch.uint8)
        values = psnr(marked.float() / 255, originals)
        low = values < floor
        if not low.any():
            return marked, values
        scale[low] *= 0.98
    raise RuntimeError("could not meet the PSNR floor after rounding")


# -- feasibility --------------------------------------------------------------------------------------------
def read_craft(path: str) -> dict[str, Any]:
    tensors = load_file(path)
    with safe_open(path, "pt") as handle:
        tensors["meta"] = json.loads(handle.metadata()["taggants"])
    tensors["sha256"] = sha256_file(path)
    return tensors


def published(craft_data: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = fashion_mnist_splits()["owner"]
    out = images.clone()
    out[craft_data["indices"]] = craft_data["marked"]
    return out, labels


def train_cnn(images: torch.Tensor, labels: torch.Tensor, seed: int, tag: str) -> tuple[torch.nn.Module, dict]:
    ident = hashlib.sha256(json.dumps([dataset_fingerprint(images, labels), GRID_RECIPE.to_dict(), seed]).encode()
                           ).hexdigest()[:12]
    path = RUNS / "models" / f"cnn-{tag}-{ident}.safetensors"
    if path.is_file():
        model, _, extra = load_checkpoint(path)
        return model.eval(), extra
    splits = fashion_mnist_splits()
    spec = make_spec("cnn", 10, images)
    result = fit(spec, images, labels, recipe=GRID_RECIPE, seed=seed, test=splits["test"])
    extra = {"test_accuracy": result.metrics["test_accuracy"], "wall_time_s": result.metrics["wall_time_s"],
             "seed": seed, "recipe": GRID_RECIPE.to_dict()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(result.model, path, spec, extra)
    return result.model.eval(), extra


def train_third_party(images: torch.Tensor, labels: torch.Tensor, pair: str, seed: int) -> tuple[torch.nn.Module,
                                                                                                   dict]:
    """heldout/train.py (the third party's script) on the published set, as heldout/run_suite.py calls it."""
    arch, recipe = pair.split("-", 1)
    ident = hashlib.sha256(json.dumps([dataset_fingerprint(images, labels), pair, seed]).encode()).hexdigest()[:12]
    weights = RUNS / "models" / f"{pair}-{ident}.safetensors"
    if not weights.with_suffix(".json").is_file():
        data = RUNS / "published" / f"{ident}.safetensors"
        data.parent.mkdir(parents=True, exist_ok=True)
        save_file({"images": images.contiguous(), "labels": labels.contiguous()}, str(data))
        command = [sys.executable, str(ROOT / "heldout" / "train.py"), "--arch", arch, "--recipe", recipe, "--data",
                   str(data), "--test", str(ROOT / "results" / "heldout" / "cache" / "test.safetensors"),
                   "--epochs", "3", "--seed", str(seed), "--out", str(weights), "--device", "cpu"]
        say("training: " + " ".join(command[1:]))
        if subprocess.run(command).returncode != 0:
            raise SystemExit("heldout/train.py failed")
        data.unlink()
    _, _, suite = heldout_suite()
    model = suite.nets.build(arch)
    model.load_state_dict(load_file(str(weights)))
    return model.eval(), json.loads(weights.with_suffix(".json").read_text())


def audit(model: torch.nn.Module, key_images: torch.Tensor, key_labels: torch.Tensor, counts: list[int]) -> dict:
    scores = scores_of(model, key_images)
    out = {}
    for count in counts:
        if count > len(key_labels):
            continue
        verdict = taggant_test(scores[:count], key_labels[:count])
        top3 = taggant_test(scores[:count], key_labels[:count], k=3)
        out[str(count)] = {"queries": count, "log10_p_rank_sum": verdict.log10_p_rank_sum,
                           "log10_p_top1": verdict.log10_p_top_k, "top1_hits": verdict.top_k_hits,
                           "log10_p_top3": top3.log10_p_top_k, "top3_hits": top3.top_k_hits,
                           "mean_rank": verdict.mean_rank}
    return out


def feasibility(args: argparse.Namespace) -> None:
    craft_data = read_craft(args.craft)
    meta = craft_data["meta"]
    key_images, key_labels = craft_data["key_images"], craft_data["key_labels"]
    images, labels = published(craft_data)
    clean_images, _ = fashion_mnist_splits()["owner"]
    tag = "taggants"
    if args.oracle_copies:  # upper bound: the originals plus the key images themselves, labelled, N copies each
        images = torch.cat([clean_images, (key_images * 255).round().to(torch.uint8).repeat(args.oracle_copies, 1, 1, 1)])
        labels = torch.cat([labels, key_labels.repeat(args.oracle_copies)])
        tag = f"oracle{args.oracle_copies}"
    counts = [c for c in (10, 30, 100, 300) if c <= len(key_labels)]
    if len(key_labels) not in counts:
        counts.append(len(key_labels))
    out_path = Path(args.out)
    record = json.loads(out_path.read_text()) if out_path.is_file() else {"runs": {}}
    for seed in args.seeds:
        for suspect in args.suspects:
            name = f"{Path(args.craft).stem}/{suspect}/seed{seed}" + (f"/{tag}" if args.oracle_copies else "")
            if name in record["runs"]:
                say(f"{name}: done earlier")
                continue
            start = time.perf_counter()
            if suspect == "cnn":
                marked_model, marked_info = train_cnn(images, labels, seed, tag)
                clean_model, clean_info = train_cnn(clean_images, labels[: len(clean_images)], seed, "clean")
                recipe = {"trainer": "radioactive.train.fit", **GRID_RECIPE.to_dict()}
            else:
                marked_model, marked_info = train_third_party(images, labels, suspect, seed)
                clean_model, clean_info = suite_clean(suspect, seed)
                recipe = {"trainer": f"heldout/train.py --arch {suspect.split('-')[0]} --recipe "
                                     f"{suspect.split('-', 1)[1]} --epochs 3 --seed {seed}"}
            run = {"suspect": suspect, "seed": seed, "recipe": recipe, "oracle_copies": args.oracle_copies,
                   "marked": {"test_accuracy": marked_info.get("test_accuracy"),
                              "audit": audit(marked_model, key_images, key_labels, counts)},
                   "clean_twin": {"test_accuracy": clean_info.get("test_accuracy"),
                                  "audit": audit(clean_model, key_images, key_labels, counts)},
                   "seconds": time.perf_counter() - start}
            run["accuracy_cost"] = (run["clean_twin"]["test_accuracy"] or 0) - (run["marked"]["test_accuracy"] or 0)
            record["runs"][name] = run
            top = run["marked"]["audit"][str(counts[-1])]
            say(f"{name}: marked {top['log10_p_rank_sum']:.2f} / {top['log10_p_top1']:.2f}, clean "
                f"{run['clean_twin']['audit'][str(counts[-1])]['log10_p_rank_sum']:.2f}; acc "
                f"{run['marked']['test_accuracy']:.4f} vs {run['clean_twin']['test_accuracy']:.4f}")
            record.setdefault("crafts", {})[Path(args.craft).stem] = {
                k: v for k, v in meta.items() if k != "history"} | {"sha256": craft_data["sha256"],
                                                                    "final_alignment_loss":
                                                                        meta["history"][-1]["mean_alignment_loss"]}
            record.update({"what": "data taggants (issue 25, lever 5): exact rank test on suspects trained on the "
                                   "taggant-marked owner split, and their clean twins",
                           "command": "research/taggants.py " + " ".join(sys.argv[1:]), "versions": versions()})
            atomic_write_json(out_path, record)


def proxy(args: argparse.Namespace) -> None:
    """Does the craft work at the surrogate itself? One epoch of fine-tuning of the surrogate on the published set
    and, with the same seed, on the originals; the secret labels' log-probabilities and ranks on the keys after
    each. A craft with no effect here cannot work on a model trained from scratch."""
    craft_data = read_craft(args.craft)
    key_images, key_labels = craft_data["key_images"], craft_data["key_labels"]
    images, labels = published(craft_data)
    clean_images, _ = fashion_mnist_splits()["owner"]
    recipe = TrainRecipe(mode="finetune", epochs=1, lr=args.lr, schedule="constant", crop_padding=2, flip=True)
    rows = torch.arange(len(key_labels))
    out = {}
    for name, data in (("published", images), ("originals", clean_images)):
        surrogate, surrogate_name = load_surrogate(craft_data["meta"]["config"]["surrogates"][0])
        start = time.perf_counter()
        keep = slice(0, args.train_images or len(labels))  # a prefix, for smoke runs only
        model = fit(surrogate, data[keep], labels[keep], recipe=recipe, seed=args.seed).model.eval()
        log_probs = scores_of(model, key_images).log_softmax(1)[rows, key_labels]
        out[name] = {"secret_log_prob": log_probs.tolist(), "mean_secret_log_prob": float(log_probs.mean()),
                     "audit": audit(model, key_images, key_labels, [len(key_labels)]), "surrogate": surrogate_name,
                     "seconds": time.perf_counter() - start}
    delta = np.array(out["published"]["secret_log_prob"]) - np.array(out["originals"]["secret_log_prob"])
    record_path = Path(args.out)
    record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    record.setdefault("proxy", {})[Path(args.craft).stem] = {
        "what": "surrogate fine-tuned 1 epoch on the published set vs on the originals (same seed)",
        "recipe": recipe.to_dict(), "seed": args.seed, "train_images": args.train_images or len(labels), "runs": out,
        "mean_delta_secret_log_prob": float(delta.mean()),
        "t_delta": float(delta.mean() / (delta.std(ddof=1) / math.sqrt(len(delta)))) if len(delta) > 1 else None}
    atomic_write_json(record_path, record)
    say(f"proxy {Path(args.craft).stem}: mean delta secret log-prob {delta.mean():.3f}")


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    cal = sub.add_parser("calibration")
    cal.add_argument("--keys", type=int, default=200)
    cal.add_argument("--counts", type=int, nargs="+", default=[10, 30, 100, 300])
    cal.add_argument("--sigma", type=float, default=2.0)
    cal.add_argument("--key-family", choices=["smooth", "mix2"], default="smooth")
    cal.add_argument("--seed-base", type=int, default=CALIBRATION_SEED)
    cal.add_argument("--seed-stride", type=int, default=1000, help="key seeds: base + stride * count + i")
    cal.add_argument("--bank-only", action="store_true", help="only the shipped bank's members as suspects")
    cal.add_argument("--out", default="benchmarks/results/taggants/calibration.json")
    rc = sub.add_parser("recheck")
    rc.add_argument("record")
    cr = sub.add_parser("craft")
    cr.add_argument("--num-keys", type=int, default=100)
    cr.add_argument("--key-seed", type=int, default=2_500_001)
    cr.add_argument("--sigma", type=float, default=2.0)
    cr.add_argument("--key-family", choices=["smooth", "mix2"], default="smooth")
    cr.add_argument("--fraction", type=float, default=0.1)
    cr.add_argument("--surrogates", nargs="+", default=["marker"])
    cr.add_argument("--steps", type=int, default=40)
    cr.add_argument("--max-seconds", type=float, default=0.0,
                    help="stop after this wall time (at most --steps); the lr schedule follows the time (0: --steps)")
    cr.add_argument("--lr", type=float, default=0.005)
    cr.add_argument("--batch", type=int, default=256)
    cr.add_argument("--psnr", type=float, default=40.0)
    cr.add_argument("--out", required=True)
    fe = sub.add_parser("feasibility")
    fe.add_argument("--craft", required=True)
    fe.add_argument("--seeds", type=int, nargs="+", default=[0])
    fe.add_argument("--suspects", nargs="+", default=["cnn"])
    fe.add_argument("--oracle-copies", type=int, default=0,
                    help="upper bound instead of the craft: train on the originals plus N labelled copies of each key")
    fe.add_argument("--out", default="benchmarks/results/taggants/feasibility.json")
    px = sub.add_parser("proxy")
    px.add_argument("--craft", required=True)
    px.add_argument("--lr", type=float, default=0.01)
    px.add_argument("--seed", type=int, default=0)
    px.add_argument("--train-images", type=int, default=0, help="smoke: fine-tune on this many images (0: all)")
    px.add_argument("--out", default="benchmarks/results/taggants/feasibility.json")
    args = parser.parse_args(argv)
    {"calibration": calibration, "recheck": recheck, "craft": craft, "feasibility": feasibility,
     "proxy": proxy}[args.command](args)


if __name__ == "__main__":
    main()

"""Shared, cached building blocks of the few-class research (Fashion-MNIST, 10 classes, scratch, other arch).

Everything expensive is cached under research/cache/ (git-ignored): marked training subsets, suspects,
reference models, marked probe versions. Every heavy call is meant to run under
``flock /tmp/radioactive-heavy.lock``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch

torch.set_num_threads(int(os.environ.get("RA_THREADS", "2")))

from radioactive import Key, Marker  # noqa: E402
from radioactive.mark import MarkConfig, mark  # noqa: E402
from radioactive.nets import load_checkpoint, save_checkpoint  # noqa: E402
from radioactive.train import TrainRecipe, fashion_mnist_splits, fit, make_spec  # noqa: E402

ROOT = Path(__file__).resolve().parent
CACHE = ROOT / "cache"
RESULTS = ROOT / "results"
CACHE.mkdir(exist_ok=True)
RESULTS.mkdir(exist_ok=True)
MARKER_PATH = ROOT.parent / "markers" / "fmnist-cnn.safetensors"
KEY_SEED = 20240501

_splits = None


def splits():
    global _splits
    if _splits is None:
        _splits = fashion_mnist_splits()
    return _splits


def marker() -> Marker:
    return Marker.from_checkpoint(MARKER_PATH)


def key(space: str = "full", m: Marker | None = None) -> Key:
    m = m or marker()
    head = m.split.weight().detach() if space == "neutral" else None
    return Key.generate(m.info, seed=KEY_SEED, space=space, head_weight=head)


def subset_indices(fraction: float, seed: int = 0) -> torch.Tensor:
    """Nested per-class subsets of the 55k train split: the 1 % set is inside the 5 % set, etc.
    Ordered so that the first rows of the 5 % list are the 1 % list (one marking call covers all)."""
    images, labels = splits()["train"]
    gen = torch.Generator().manual_seed(1000 + seed)
    perm = torch.randperm(len(labels), generator=gen)
    out = []
    for k in range(10):
        idx = perm[labels[perm] == k]
        out.append(idx[: int(round(fraction * len(idx)))])
    return torch.cat(out)


def ordered_marked_indices(max_fraction: float = 0.05) -> torch.Tensor:
    """The max-fraction subset, ordered as [1 % subset, rest]; the order defines per-image mark seeds."""
    big = subset_indices(max_fraction)
    small = subset_indices(0.01)
    small_set = set(small.tolist())
    rest = torch.tensor([i for i in big.tolist() if i not in small_set], dtype=torch.long)
    return torch.cat([small, rest])


def mark_config(name: str) -> MarkConfig:
    configs = {
        "default": MarkConfig(),
        "s30": MarkConfig(steps=30, lr=0.02),  # 3x cheaper, larger shift (0.22 vs 0.20) at PSNR >= 40
        "s150": MarkConfig(steps=150),
        "ft0": MarkConfig(lambda_ft=0.0),
    }
    return configs[name]


def marked_train(space: str, cfg: str, max_fraction: float = 0.05):
    """(indices (M,), marked uint8 images (M, 1, 28, 28), psnr (M,)) cached."""
    path = CACHE / f"marked-{space}-{cfg}-{max_fraction}.pt"
    if path.exists():
        return torch.load(path)
    m = marker()
    k = key(space, m)
    idx = ordered_marked_indices(max_fraction)
    images, labels = splits()["train"]
    t0 = time.time()
    res = mark(m, images[idx], labels[idx], k, mark_config(cfg), seed=0)
    out = {
        "idx": idx,
        "images": (res.images * 255).round().clamp(0, 255).to(torch.uint8),
        "psnr": res.psnr,
        "shift": res.shift,
        "cosine": res.cosine,
        "seconds": time.time() - t0,
    }
    torch.save(out, path)
    return out


def train_set(fraction: float, space: str, cfg: str):
    images, labels = splits()["train"]
    images = images.clone()
    if fraction > 0:
        data = marked_train(space, cfg)
        n = len(subset_indices(fraction))
        images[data["idx"][:n]] = data["images"][:n]
    return images, labels


def suspect(arch: str, fraction: float, seed: int, space: str = "full", cfg: str = "default", epochs: int = 5):
    """Train (or load) a suspect; returns (model, metrics)."""
    tag = f"{arch}-f{fraction}-s{seed}-e{epochs}" + (f"-{space}-{cfg}" if fraction > 0 else "")
    path = CACHE / f"suspect-{tag}.safetensors"
    meta = CACHE / f"suspect-{tag}.json"
    if path.exists() and meta.exists():
        model, _, _ = load_checkpoint(path)
        model.eval()
        return model, json.loads(meta.read_text())
    images, labels = train_set(fraction, space, cfg)
    spec = make_spec(arch, 10, images)
    result = fit(spec, images, labels, recipe=TrainRecipe(epochs=epochs), seed=seed, test=splits()["test"])
    result.model.to("cpu")
    save_checkpoint(result.model, path, result.spec or spec, {"tag": tag})
    metrics = {k: v for k, v in result.metrics.items() if isinstance(v, int | float | str)}
    meta.write_text(json.dumps({"tag": tag, **metrics}, indent=1))
    model, _, _ = load_checkpoint(path)
    model.eval()
    return model, json.loads(meta.read_text())

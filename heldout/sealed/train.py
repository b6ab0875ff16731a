"""Train a classifier on a published image set: the sealed suite's third-party training script.

A plain torchvision training script, written apart from ``heldout/train.py`` and from ``radioactive``: a
Dataset with per-sample torchvision transforms (automatic augmentation policies), a DataLoader, an optimiser
chosen per recipe, a per-step schedule, optional gradient clipping and an exponential moving average of the
weights. Recipes, each trained to convergence (the suite trains 10 epochs or more):

- ``sgd_step``: the classic DenseNet recipe: SGD, momentum 0.9, Nesterov, weight decay 1e-4, lr 0.1 divided by
  10 at 50 % and 75 % of the run, random crop (pad 2) and flip;
- ``adamw_autoaug``: AdamW (lr 2e-3, weight decay 0.05), AutoAugment (CIFAR-10 policy), crop and flip, label
  smoothing 0.1, one epoch of linear warm-up then cosine, EMA of the weights and batch-norm buffers (decay
  0.999 with the usual warm-up, min(0.999, (1 + n) / (10 + n)) at update n, as TensorFlow's and timm's EMA; the
  EMA model is the one evaluated and saved). Amended before any sealed suspect was tested: without the warm-up
  the EMA of a 1,560-step run keeps 0.999^1560 = 21 % of its first step's weights and buffers, and the first
  EfficientNet-B0 trained with it scored 10.0 % test accuracy (every image one class), a model no trainer would
  publish;
- ``sgd_ls``: the RegNet-style recipe: SGD, momentum 0.9, weight decay 5e-5, lr 0.1, one epoch of warm-up then
  cosine, label smoothing 0.1, crop and flip;
- ``adamw_randaug``: the small-ViT recipe: AdamW (lr 1e-3, weight decay 0.05), RandAugment (2 ops, magnitude
  9), crop and flip, random erasing 0.1, label smoothing 0.1, two epochs of warm-up then cosine, gradient
  norm clipped at 1.

No recipe puts weight decay on biases, normalisation weights, positional embeddings or the class token.

Input files are safetensors with ``images`` (uint8, ``(N, 1, 28, 28)``) and ``labels`` (int64, ``(N,)``).
Output: ``--out`` (safetensors state dict of an ``models.build(arch)`` network, taking [0, 1] images) and a JSON
sidecar next to it (same name, ``.json``) written last: its presence means the weights are complete.

Example:
    python heldout/sealed/train.py --arch vit --recipe adamw_randaug --data published.safetensors \\
        --test test.safetensors --epochs 10 --seed 0 --out model.safetensors
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from safetensors.torch import load_file, save_file
from torch import nn
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

sys.path.insert(0, str(Path(__file__).resolve().parent))
from models import ARCHITECTURES, build  # noqa: E402

RECIPES: dict[str, dict] = {
    "sgd_step": {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-4,
                 "schedule": "step", "milestones": [0.5, 0.75], "warmup_epochs": 0.0, "batch_size": 128,
                 "label_smoothing": 0.0, "augment": "none", "random_erasing": 0.0, "clip_norm": 0.0,
                 "ema_decay": 0.0},
    "adamw_autoaug": {"optimizer": "adamw", "lr": 2e-3, "betas": [0.9, 0.999], "weight_decay": 0.05,
                      "schedule": "warmup_cosine", "warmup_epochs": 1.0, "batch_size": 128, "label_smoothing": 0.1,
                      "augment": "autoaugment", "random_erasing": 0.0, "clip_norm": 0.0, "ema_decay": 0.999,
                      "ema_warmup": True},
    "sgd_ls": {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": False, "weight_decay": 5e-5,
               "schedule": "warmup_cosine", "warmup_epochs": 1.0, "batch_size": 128, "label_smoothing": 0.1,
               "augment": "none", "random_erasing": 0.0, "clip_norm": 0.0, "ema_decay": 0.0},
    "adamw_randaug": {"optimizer": "adamw", "lr": 1e-3, "betas": [0.9, 0.999], "weight_decay": 0.05,
                      "schedule": "warmup_cosine", "warmup_epochs": 2.0, "batch_size": 128, "label_smoothing": 0.1,
                      "augment": "randaugment", "random_erasing": 0.1, "clip_norm": 1.0, "ema_decay": 0.0},
}
NUM_CLASSES = 10
NO_DECAY = ("pos_embedding", "class_token")


class Images(Dataset):
    def __init__(self, path: str, transform: nn.Module):
        tensors = load_file(path)
        self.images, self.labels = tensors["images"], tensors["labels"].long()
        if self.images.dtype != torch.uint8 or self.images.dim() != 4 or len(self.images) != len(self.labels):
            raise SystemExit(f"{path}: expected uint8 images (N, 1, H, W) and int64 labels (N,)")
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.images[index]), int(self.labels[index])


def make_transform(recipe: dict, train: bool) -> nn.Module:
    if not train:
        return v2.ToDtype(torch.float32, scale=True)
    steps: list[nn.Module] = [v2.RandomCrop(28, padding=2), v2.RandomHorizontalFlip()]
    if recipe["augment"] == "autoaugment":
        steps.append(v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10))
    elif recipe["augment"] == "randaugment":
        steps.append(v2.RandAugment(num_ops=2, magnitude=9))
    steps.append(v2.ToDtype(torch.float32, scale=True))
    if recipe["random_erasing"]:
        steps.append(v2.RandomErasing(p=recipe["random_erasing"]))
    return v2.Compose(steps)


def ema_average(decay: float, warmup: bool):
    """The EMA update ``decay * average + (1 - decay) * current``; with ``warmup`` the decay at update ``n`` is
    ``min(decay, (1 + n) / (10 + n))``, so that the first steps' weights are forgotten in a short run."""
    def average(averaged: torch.Tensor, current: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
        rate = min(decay, (1.0 + float(count)) / (10.0 + float(count))) if warmup else decay
        return averaged * rate + current * (1.0 - rate)
    return average


def make_optimizer(model: nn.Module, recipe: dict) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        (no_decay if param.dim() <= 1 or name.endswith(NO_DECAY) else decay).append(param)
    groups = [{"params": decay, "weight_decay": recipe["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}]
    if recipe["optimizer"] == "sgd":
        return torch.optim.SGD(groups, lr=recipe["lr"], momentum=recipe["momentum"], nesterov=recipe["nesterov"])
    return torch.optim.AdamW(groups, lr=recipe["lr"], betas=tuple(recipe["betas"]))


def make_schedule(optimizer: torch.optim.Optimizer, recipe: dict, total: int, per_epoch: int):
    if recipe["schedule"] == "step":
        milestones = [int(m * total) for m in recipe["milestones"]]
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=0.1)
    warmup = min(int(recipe["warmup_epochs"] * per_epoch), max(total - 1, 0))
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total - warmup, 1))
    if warmup == 0:
        return cosine
    ramp = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.01, total_iters=warmup)
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [ramp, cosine], milestones=[warmup])


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, device: torch.device) -> dict[str, float]:
    model.eval()
    correct, loss, count = 0, 0.0, 0
    for images, labels in loader:
        logits = model(images.to(device))
        labels = labels.to(device)
        correct += int((logits.argmax(1) == labels).sum())
        loss += float(F.cross_entropy(logits, labels, reduction="sum"))
        count += len(labels)
    return {"accuracy": correct / max(count, 1), "loss": loss / max(count, 1)}


def sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", required=True, choices=sorted(ARCHITECTURES))
    parser.add_argument("--recipe", required=True, choices=sorted(RECIPES))
    parser.add_argument("--data", required=True, help="training images: safetensors with images and labels")
    parser.add_argument("--test", required=True, help="test images: safetensors with images and labels")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="weights (.safetensors); the sidecar goes next to it (.json)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: PyTorch's default)")
    parser.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (0: all epochs)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    start = time.perf_counter()
    recipe = RECIPES[args.recipe]
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    torch.manual_seed(args.seed)

    train_set = Images(args.data, make_transform(recipe, train=True))
    test_set = Images(args.test, make_transform(recipe, train=False))
    loader = DataLoader(train_set, batch_size=recipe["batch_size"], shuffle=True,
                        drop_last=len(train_set) > recipe["batch_size"], num_workers=args.workers,
                        generator=torch.Generator().manual_seed(args.seed), persistent_workers=args.workers > 0)
    test_loader = DataLoader(test_set, batch_size=500, num_workers=args.workers)

    model = build(args.arch, NUM_CLASSES).to(device)
    optimizer = make_optimizer(model, recipe)
    per_epoch = len(loader)
    total = per_epoch * args.epochs if not args.max_steps else min(args.max_steps, per_epoch * args.epochs)
    schedule = make_schedule(optimizer, recipe, total, per_epoch)
    ema = None
    if recipe["ema_decay"]:
        ema = AveragedModel(model, avg_fn=ema_average(recipe["ema_decay"], recipe.get("ema_warmup", False)),
                            use_buffers=True)

    history, step = [], 0
    train_start = time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        epoch_start, loss_sum, seen = time.perf_counter(), 0.0, 0
        for images, targets in loader:
            images, targets = images.to(device), targets.to(device)
            loss = F.cross_entropy(model(images), targets, label_smoothing=recipe["label_smoothing"])
            if not torch.isfinite(loss):
                raise SystemExit(f"loss is {float(loss)} at step {step}; lower the learning rate")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if recipe["clip_norm"]:
                nn.utils.clip_grad_norm_(model.parameters(), recipe["clip_norm"])
            optimizer.step()
            schedule.step()
            if ema is not None:
                ema.update_parameters(model)
            loss_sum += float(loss.detach()) * len(images)
            seen += len(images)
            step += 1
            if step >= total:
                break
        history.append({"epoch": epoch + 1, "loss": loss_sum / max(seen, 1),
                        "seconds": time.perf_counter() - epoch_start})
        print(f"epoch {epoch + 1}: loss {history[-1]['loss']:.4f} ({history[-1]['seconds']:.0f} s)", file=sys.stderr)
        if step >= total:
            break
    train_seconds = time.perf_counter() - train_start

    final = ema.module if ema is not None else model
    scores = evaluate(final, test_loader, device)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in final.state_dict().items()}
    tmp = out.with_name(f".{out.name}.tmp")
    save_file(state, str(tmp), metadata={"arch": args.arch, "recipe": args.recipe, "num_classes": str(NUM_CLASSES)})
    os.replace(tmp, out)
    record = {
        "arch": args.arch, "recipe": args.recipe, "hyperparameters": recipe, "ema": ema is not None,
        "seed": args.seed, "epochs": args.epochs, "steps": step, "train_images": len(train_set),
        "data_sha256": sha256(args.data), "test_accuracy": scores["accuracy"], "test_loss": scores["loss"],
        "history": history,
        "seconds": {"train": train_seconds, "total": time.perf_counter() - start,
                    "per_epoch": train_seconds / max(len(history), 1)},
        "device": str(device), "threads": torch.get_num_threads(),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "torchvision": torchvision.__version__},
        "weights": out.name, "weights_sha256": sha256(str(out)),
    }
    sidecar = out.with_suffix(".json")
    tmp = sidecar.with_name(f".{sidecar.name}.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, sidecar)
    print(f"test accuracy {scores['accuracy']:.4f}; {train_seconds:.0f} s training", file=sys.stderr)
    return record


if __name__ == "__main__":
    main()

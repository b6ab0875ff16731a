"""Train an image classifier on a published dataset: the held-out suite's third-party training script.

Plain PyTorch and torchvision, nothing of ``radioactive``: a Dataset with per-sample torchvision transforms,
a DataLoader, an optimiser and a per-step learning-rate schedule, as in torchvision's
``references/classification/train.py`` and timm's ``train.py``. Three recipes:

- ``sgd``: SGD, momentum 0.9, Nesterov, weight decay 5e-4, linear warm-up then cosine, random crop (pad 2)
  and horizontal flip (the classic torchvision recipe);
- ``adamw``: AdamW (weight decay 0.05), label smoothing 0.1, random erasing, one-cycle schedule, crop and
  flip (timm-style);
- ``mixup_ema``: SGD with MixUp (alpha 0.2) or CutMix (alpha 1.0), one of the two per batch, an exponential
  moving average of the weights over the last tenth of the steps or so (the EMA model is the one evaluated and
  saved), warm-up then cosine, crop and flip (torchvision's newer recipe).

No recipe puts weight decay on biases and normalisation weights.

Input files are safetensors with ``images`` (uint8, ``(N, 1, 28, 28)``) and ``labels`` (int64, ``(N,)``).
Output: ``--out`` (safetensors state dict of an ``archs.build(arch)`` network, taking [0, 1] images) and a JSON
sidecar next to it (same name, ``.json``) with the test accuracy, the recipe, the seed and the times; the
sidecar is written last, so its presence means the weights are complete.

Example:
    python heldout/train.py --arch convmixer --recipe adamw --data published.safetensors \\
        --test test.safetensors --epochs 3 --seed 0 --out model.safetensors
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
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, Dataset, default_collate
from torchvision.transforms import v2

sys.path.insert(0, str(Path(__file__).resolve().parent))
from archs import ARCHITECTURES, build  # noqa: E402

RECIPES: dict[str, dict] = {
    "sgd": {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4,
            "schedule": "warmup_cosine", "warmup_epochs": 0.5, "batch_size": 128, "label_smoothing": 0.0,
            "crop_padding": 2, "flip": True, "random_erasing": 0.0, "mixup_alpha": 0.0, "cutmix_alpha": 0.0,
            "ema_horizon": 0.0},
    "adamw": {"optimizer": "adamw", "lr": 2e-3, "betas": [0.9, 0.999], "weight_decay": 0.05,
              "schedule": "onecycle", "pct_start": 0.25, "batch_size": 128, "label_smoothing": 0.1,
              "crop_padding": 2, "flip": True, "random_erasing": 0.25, "mixup_alpha": 0.0, "cutmix_alpha": 0.0,
              "ema_horizon": 0.0},
    "mixup_ema": {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": False, "weight_decay": 1e-4,
                  "schedule": "warmup_cosine", "warmup_epochs": 0.5, "batch_size": 128, "label_smoothing": 0.0,
                  "crop_padding": 2, "flip": True, "random_erasing": 0.0, "mixup_alpha": 0.2, "cutmix_alpha": 1.0,
                  "ema_horizon": 0.1},
}
NUM_CLASSES = 10


class ImageFile(Dataset):
    """(image, label) pairs of a safetensors file, each image through ``transform``."""

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


def transforms(recipe: dict, train: bool) -> nn.Module:
    steps: list[nn.Module] = []
    if train and recipe["crop_padding"]:
        steps.append(v2.RandomCrop(28, padding=recipe["crop_padding"]))
    if train and recipe["flip"]:
        steps.append(v2.RandomHorizontalFlip())
    steps.append(v2.ToDtype(torch.float32, scale=True))
    if train and recipe["random_erasing"]:
        steps.append(v2.RandomErasing(p=recipe["random_erasing"]))
    return v2.Compose(steps)


def mixing_collate(recipe: dict):
    """Batch collation that applies MixUp or CutMix (one of them per batch), or None for plain batches."""
    choices = []
    if recipe["mixup_alpha"]:
        choices.append(v2.MixUp(alpha=recipe["mixup_alpha"], num_classes=NUM_CLASSES))
    if recipe["cutmix_alpha"]:
        choices.append(v2.CutMix(alpha=recipe["cutmix_alpha"], num_classes=NUM_CLASSES))
    if not choices:
        return None
    mix = v2.RandomChoice(choices)

    def collate(batch):
        return mix(*default_collate(batch))

    return collate


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for param in model.parameters():
        (no_decay if param.dim() <= 1 else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: nn.Module, recipe: dict) -> torch.optim.Optimizer:
    groups = parameter_groups(model, recipe["weight_decay"])
    if recipe["optimizer"] == "sgd":
        return torch.optim.SGD(groups, lr=recipe["lr"], momentum=recipe["momentum"], nesterov=recipe["nesterov"])
    return torch.optim.AdamW(groups, lr=recipe["lr"], betas=tuple(recipe["betas"]))


def make_schedule(optimizer: torch.optim.Optimizer, recipe: dict, total: int, per_epoch: int):
    if recipe["schedule"] == "onecycle":
        # A one-cycle schedule needs a few steps per phase; a run shorter than 10 steps stops early in it.
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=recipe["lr"], total_steps=max(total, 10),
                                                   pct_start=recipe["pct_start"])
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
        images = images.to(device).contiguous(memory_format=torch.channels_last)
        labels = labels.to(device)
        logits = model(images)
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


def write_json(path: Path, record: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, path)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", required=True, choices=sorted(ARCHITECTURES))
    parser.add_argument("--recipe", required=True, choices=sorted(RECIPES))
    parser.add_argument("--data", required=True, help="training images: safetensors with images and labels")
    parser.add_argument("--test", required=True, help="test images: safetensors with images and labels")
    parser.add_argument("--epochs", type=int, default=3)
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

    train_set = ImageFile(args.data, transforms(recipe, train=True))
    test_set = ImageFile(args.test, transforms(recipe, train=False))
    batch = recipe["batch_size"]
    loader = DataLoader(train_set, batch_size=batch, shuffle=True, drop_last=len(train_set) > batch,
                        num_workers=args.workers, collate_fn=mixing_collate(recipe),
                        generator=torch.Generator().manual_seed(args.seed), pin_memory=device.type == "cuda",
                        persistent_workers=args.workers > 0)
    test_loader = DataLoader(test_set, batch_size=512, num_workers=args.workers)

    model = build(args.arch, NUM_CLASSES).to(device).to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, recipe)
    per_epoch = len(loader)
    total = per_epoch * args.epochs if not args.max_steps else min(args.max_steps, per_epoch * args.epochs)
    schedule = make_schedule(optimizer, recipe, total, per_epoch)
    warmup = int(recipe.get("warmup_epochs", 0) * per_epoch)
    ema, ema_decay = None, 0.0
    if recipe["ema_horizon"]:
        # The average spans a fixed share of the run (torchvision scales its EMA decay with the run's length too).
        ema_decay = 1.0 - 1.0 / max(recipe["ema_horizon"] * total, 1.0)
        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(ema_decay), use_buffers=True)

    history, step = [], 0
    train_start = time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        epoch_start, loss_sum, seen = time.perf_counter(), 0.0, 0
        for images, targets in loader:
            images = images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            targets = targets.to(device, non_blocking=True)
            loss = F.cross_entropy(model(images), targets, label_smoothing=recipe["label_smoothing"])
            if not torch.isfinite(loss):
                raise SystemExit(f"loss is {float(loss)} at step {step}; lower the learning rate")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            if ema is not None:
                ema.update_parameters(model)
                if step < warmup:
                    ema.n_averaged.fill_(0)  # during warm-up the average restarts from the current weights
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
        "arch": args.arch,
        "recipe": args.recipe,
        "hyperparameters": recipe,
        "ema": ema is not None,
        "ema_decay": ema_decay,
        "seed": args.seed,
        "epochs": args.epochs,
        "steps": step,
        "train_images": len(train_set),
        "data_sha256": sha256(args.data),
        "test_accuracy": scores["accuracy"],
        "test_loss": scores["loss"],
        "history": history,
        "seconds": {"train": train_seconds, "total": time.perf_counter() - start,
                    "per_epoch": train_seconds / max(len(history), 1)},
        "device": str(device),
        "threads": torch.get_num_threads(),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "torchvision": torchvision.__version__},
        "weights": out.name,
        "weights_sha256": sha256(str(out)),
    }
    write_json(out.with_suffix(".json"), record)
    print(f"test accuracy {scores['accuracy']:.4f}; {train_seconds:.0f} s training", file=sys.stderr)
    return record


if __name__ == "__main__":
    main()

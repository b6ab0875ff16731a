"""``radioactive train``: simulate a third party training a classifier on a published dataset.

Runs on CPU or GPU, and under ``torchrun`` (DistributedDataParallel; gloo on CPU, nccl on GPU).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DatasetError

log = logging.getLogger(__name__)

def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a suspect model on a (published) image dataset, as a third party would",
        description="Train a classifier on DATA the way a third party would: from scratch, fine-tuning a "
        "network, a linear probe on frozen features, or distilling a teacher. SGD with momentum, cosine or "
        "step schedule, random crop and flip. Writes a safetensors checkpoint (architecture, recipe, "
        "dataset fingerprint, accuracy). Under torchrun, trains with DistributedDataParallel.",
    )
    parser.add_argument("--data", required=True,
                        help="fashion-mnist (the 55k owner split), the output folder of 'radioactive mark' "
                        "(manifest.jsonl), or a class-subfolder image tree")
    parser.add_argument("--out", required=True, help="checkpoint to write (.safetensors)")
    parser.add_argument("--mode", default="scratch", choices=["scratch", "finetune", "linear_probe", "distill"])
    parser.add_argument("--arch", default="cnn",
                        help="cnn, resnet_narrow, mlp, torchvision:<name>, timm:<name> (default cnn)")
    parser.add_argument("--init", help="checkpoint to start from (finetune, linear_probe)")
    parser.add_argument("--teacher", help="teacher checkpoint (distill)")
    parser.add_argument("--test", default=None,
                        help="test set scored after training: fashion-mnist-test or a folder (default: "
                        "fashion-mnist-test when --data is fashion-mnist)")
    parser.add_argument("--size", type=int, default=None, help="resize images to SIZE x SIZE (default: as read)")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--batch-size", type=int, default=None, help="global batch size")
    parser.add_argument("--schedule", choices=["cosine", "step", "constant"], default=None)
    parser.add_argument("--weight-decay", type=float, default=None)
    parser.add_argument("--no-augment", action="store_true", help="no random crop and flip")
    parser.add_argument("--recipe", help="JSON file with TrainRecipe fields (command-line options win)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.set_defaults(func=run)


# ---------------------------------------------------------------------------------------------------------
# Reading a dataset (a published tree, a manifest, or Fashion-MNIST).


def _fit_image(image, channels: int, size: int | None):
    """uint8 ``(c, H, W)`` to ``channels`` channels and, when given, ``size`` x ``size`` (bilinear, antialiased)."""
    import torch

    if image.shape[0] != channels:
        image = image.expand(channels, -1, -1) if image.shape[0] == 1 else image.float().mean(0, keepdim=True).round().to(torch.uint8)
    if size is not None and tuple(image.shape[1:]) != (size, size):
        resized = torch.nn.functional.interpolate(image[None].float(), size=(size, size), mode="bilinear",
                                                  antialias=True, align_corners=False)[0]
        image = resized.round().clamp(0, 255).to(torch.uint8)
    return image.contiguous()


def read_dataset(source: str, *, size: int | None = None) -> tuple[Any, Any, list[str], int]:
    """``(images uint8 (N, c, H, W), labels (N,), ids, num_classes)`` from ``fashion-mnist`` (the owner's 55k
    split), ``fashion-mnist-test``, the output folder of ``radioactive mark`` (read through its
    ``manifest.jsonl``; rows of unreadable images are skipped), or anything :func:`radioactive.data.open_source`
    reads (class-subfolder tree, CSV/JSONL list). Images are decoded by :mod:`radioactive.data`."""
    import torch

    from ..data import open_source, read_image

    if source in ("fashion-mnist", "fashion-mnist-train", "fashion-mnist:train"):
        from ..train import fashion_mnist_splits

        images, labels = fashion_mnist_splits()["train"]
        return images, labels, [f"train/{i}" for i in range(len(labels))], 10
    if source in ("fashion-mnist-test", "fashion-mnist:test"):
        from ..fmnist import load_fashion_mnist

        images, labels = load_fashion_mnist("test")
        return images, labels, [f"test/{i}" for i in range(len(labels))], 10
    root = Path(source)
    manifest = root / "manifest.jsonl"
    entries: list[tuple[Any, int, str]] = []
    num_classes = 0
    if root.is_dir() and manifest.is_file():
        with open(manifest) as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DatasetError(f"{manifest}:{number}: not JSON ({exc})") from exc
                if row.get("bad") or row.get("error") or row.get("output") is None:
                    continue
                if "label" not in row:
                    raise DatasetError(f"{manifest}:{number}: a row needs 'output' and 'label'")
                rel = str(row["output"])
                entries.append((lambda rel=rel: read_image(root / rel, name=rel), int(row["label"]), rel))
    else:
        listed = open_source(source)
        num_classes = len(listed.classes)
        entries = [(lambda item=item: listed.read(item), item.label, item.rel) for item in listed.items]
    if not entries:
        raise DatasetError(f"no images found in {source!r}")
    first = entries[0][0]()
    channels = first.shape[0]
    tensors = []
    for load, _, rel in entries:
        image = _fit_image(load(), channels, size)
        if size is None and image.shape != first.shape:
            raise DatasetError(
                f"{rel!r} is {tuple(image.shape[1:])} but {entries[0][2]!r} is {tuple(first.shape[1:])}; "
                "pass --size to resize every image"
            )
        tensors.append(image)
    labels = torch.tensor([label for _, label, _ in entries], dtype=torch.int64)
    num_classes = max(num_classes, int(labels.max()) + 1)
    return torch.stack(tensors), labels, [rel for _, _, rel in entries], num_classes


# ---------------------------------------------------------------------------------------------------------


def resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def _init_distributed(device: str) -> tuple[int, int, str]:
    """Join the torchrun process group if there is one; returns (rank, world size, this rank's device)."""
    import torch

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, device
    if not torch.distributed.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        torch.distributed.init_process_group(backend=backend)
    if device.startswith("cuda"):
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    return torch.distributed.get_rank(), world, device


def run(args: argparse.Namespace) -> int:
    import torch

    from ..nets import load_checkpoint, save_checkpoint
    from ..train import TrainRecipe, dataset_fingerprint, fit, make_spec

    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise ConfigError(f"--out must end in .safetensors, got {str(out)!r}")
    base: dict[str, Any] = {}
    if args.recipe:
        base = json.loads(Path(args.recipe).read_text())
    base["mode"] = args.mode
    for field, value in (("epochs", args.epochs), ("lr", args.lr), ("batch_size", args.batch_size),
                         ("schedule", args.schedule), ("weight_decay", args.weight_decay)):
        if value is not None:
            base[field] = value
    if args.no_augment:
        base.update(crop_padding=0, flip=False)
    recipe = TrainRecipe.from_dict(base)
    if recipe.mode in ("finetune", "linear_probe") and not args.init:
        raise ConfigError(f"--mode {recipe.mode} needs --init CHECKPOINT (the network to start from)")
    if recipe.mode == "distill" and not args.teacher:
        raise ConfigError("--mode distill needs --teacher CHECKPOINT")

    rank, world, device = _init_distributed(resolve_device(args.device))
    try:
        images, labels, _, num_classes = read_dataset(args.data, size=args.size)
        test_source = args.test or ("fashion-mnist-test" if args.data.startswith("fashion-mnist") else None)
        test = None
        if test_source:
            test_images, test_labels, _, _ = read_dataset(test_source, size=args.size or images.shape[-1])
            test = (test_images, test_labels)
        teacher = None
        if args.teacher:
            teacher = load_checkpoint(args.teacher)[0].to(device)
        if args.init:
            start, spec, _ = load_checkpoint(args.init)
            start_point: Any = start.to(device)
            if spec.num_classes != num_classes:
                from dataclasses import replace

                spec = replace(spec, num_classes=num_classes)
        else:
            spec = make_spec(args.arch, num_classes, images)
            start_point = spec

        def progress(record: dict) -> None:
            if rank == 0:
                print(f"epoch {record['epoch']}/{recipe.epochs}: loss {record['loss']:.4f} "
                      f"({record['seconds']:.1f} s)", file=sys.stderr, flush=True)

        result = fit(start_point, images, labels, recipe=recipe, seed=args.seed, test=test, teacher=teacher,
                     device=device, num_classes=num_classes, progress=progress)
        if rank == 0:
            extra = {
                "kind": "suspect",
                "data": str(args.data),
                "dataset_fingerprint": dataset_fingerprint(images, labels),
                "recipe": recipe.to_dict(),
                "seed": args.seed,
                "init": str(args.init) if args.init else None,
                "teacher": str(args.teacher) if args.teacher else None,
                "world_size": world,
                "test_accuracy": result.metrics.get("test_accuracy"),
                "wall_time_s": result.metrics["wall_time_s"],
            }
            save_checkpoint(result.model.to("cpu"), out, result.spec or spec, extra)
            accuracy = result.metrics.get("test_accuracy")
            shown = f"test accuracy {accuracy:.4f}, " if accuracy is not None else ""
            print(f"trained {recipe.mode} {spec.arch} on {len(labels)} images: {shown}"
                  f"{result.metrics['seconds_per_epoch']:.1f} s/epoch; saved {out}")
        if world > 1:
            # Every rank waits for rank 0's checkpoint before the group is torn down: a rank that destroys
            # the gloo group while the other still holds it aborts the process ("terminate called ...").
            torch.distributed.barrier()
    finally:
        if world > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    return 0

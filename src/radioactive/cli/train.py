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

from ..errors import ConfigError

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
                        help="fashion-mnist (= fashion-mnist:owner, the 55k owner split), the output folder of "
                        "'radioactive mark' (read through its manifest.jsonl), a class-subfolder image tree or a "
                        "CSV/JSONL list")
    parser.add_argument("--out", required=True, help="checkpoint to write (.safetensors)")
    parser.add_argument("--mode", default="scratch", choices=["scratch", "finetune", "linear_probe", "distill"])
    parser.add_argument("--arch", default="cnn",
                        help="cnn, resnet_narrow, mlp, torchvision:<name>, timm:<name> (default cnn)")
    parser.add_argument("--init", help="checkpoint to start from (finetune, linear_probe)")
    parser.add_argument("--teacher", help="teacher checkpoint (distill)")
    parser.add_argument("--test", default=None,
                        help="test set scored after training: fashion-mnist:test or a folder (default: "
                        "fashion-mnist:test when --data is fashion-mnist)")
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

    from ..nets import load_checkpoint, make_spec, save_checkpoint
    from ..sources import load_labelled
    from ..train import TrainRecipe, dataset_fingerprint, fit
    from ..zoo import resolve_device

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

    rank, world, device = _init_distributed(str(resolve_device(args.device)))
    try:
        data = load_labelled(args.data, size=args.size)
        images, labels = data.images, data.labels
        num_classes = max(len(data.classes), int(labels.max()) + 1)
        test_source = args.test or ("fashion-mnist:test" if args.data.startswith("fashion-mnist") else None)
        test = None
        if test_source:
            held = load_labelled(test_source, size=args.size or images.shape[-1], channels=images.shape[1])
            test = (held.images, held.labels)
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

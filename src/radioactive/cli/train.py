"""``radioactive train``: simulate a third party training a classifier on a published dataset.

Runs on CPU or GPU, and under ``torchrun`` (DistributedDataParallel; gloo on CPU, nccl on GPU).
"""

from __future__ import annotations

import argparse
import json
import logging
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
                        help="fashion-mnist (= fashion-mnist:owner, the 55k owner split), fashion-mnist-pairs[10] "
                        "(28 x 56 pairs, 100 or 10 classes; train them with --no-augment or a recipe without flips), "
                        "the output folder of 'radioactive mark' (read through its manifest.jsonl), a class-subfolder "
                        "image tree or a CSV/JSONL list")
    parser.add_argument("--out", required=True, help="checkpoint to write (.safetensors)")
    parser.add_argument("--mode", default="scratch", choices=["scratch", "finetune", "linear_probe", "distill"])
    parser.add_argument("--arch", default="cnn",
                        help="cnn, resnet_narrow, mlp, torchvision:<name>, timm:<name> (default cnn), or your own "
                        "package.module:callable / path/file.py:callable: imports and RUNS that code of yours, called "
                        "as callable(num_classes=N, in_channels=C) (in_channels only if it takes it); the checkpoint "
                        "records module:callable, and reloading it (--init, detect) needs the same --arch")
    parser.add_argument("--init", help="checkpoint to start from (finetune, linear_probe)")
    parser.add_argument("--teacher", help="teacher checkpoint (distill)")
    parser.add_argument("--test", default=None,
                        help="test set scored after training: fashion-mnist:test or a folder (default: the "
                        "test split of a named --data: fashion-mnist:test, fashion-mnist-pairs:test, ...)")
    parser.add_argument("--size", type=int, default=None, help="resize images to SIZE x SIZE (default: as read)")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--batch-size", type=int, default=None, help="global batch size")
    parser.add_argument("--schedule", choices=["cosine", "step", "constant"], default=None)
    parser.add_argument("--weight-decay", type=float, default=None)
    parser.add_argument("--no-augment", action="store_true", help="no random crop and flip")
    parser.add_argument("--precision", choices=["float32", "bfloat16"], default=None,
                        help="bfloat16: mixed precision (autocast forward passes; weights and optimiser in float32)")
    parser.add_argument("--recipe", help="JSON file with TrainRecipe fields (command-line options win)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.set_defaults(func=run)


def _init_distributed(device: str) -> tuple[int, int, str]:
    """Join the torchrun process group if there is one; returns (rank, world size, this rank's device)."""
    from ..distributed import init

    placement = init(device)
    return placement.rank, placement.world, str(placement.device)


def _read_recipe(path: Path) -> dict[str, Any]:
    """The JSON object of TrainRecipe fields in ``path`` (ConfigError naming the file when it is unusable)."""
    if not path.is_file():
        problem = "does not exist (that path is a folder)" if path.is_dir() else "does not exist"
        raise ConfigError(f"--recipe {str(path)!r} {problem}; give a JSON file of TrainRecipe fields, e.g. "
                          '{"epochs": 10, "lr": 0.05}')
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"--recipe {str(path)!r} is not readable JSON ({exc}); give a JSON object of "
                          "TrainRecipe fields, e.g. {\"epochs\": 10}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--recipe {str(path)!r} holds a JSON {type(data).__name__}, expected an object of "
                          "TrainRecipe fields, e.g. {\"epochs\": 10}")
    return data


def run(args: argparse.Namespace) -> int:
    import torch

    from ..fmnist_pairs import pairs_spec, warn_flips
    from ..nets import load_checkpoint, make_spec, save_checkpoint
    from ..nets.user import is_user_arch
    from ..sources import load_labelled, named_test_split
    from ..train import TrainRecipe, dataset_fingerprint, fit
    from ..zoo import resolve_device

    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise ConfigError(f"--out must end in .safetensors, got {str(out)!r}")
    base: dict[str, Any] = {}
    if args.recipe:
        base = _read_recipe(Path(args.recipe))
    base["mode"] = args.mode
    for field, value in (("epochs", args.epochs), ("lr", args.lr), ("batch_size", args.batch_size),
                         ("schedule", args.schedule), ("weight_decay", args.weight_decay),
                         ("precision", args.precision)):
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
        named = pairs_spec(args.data)
        if named is not None:
            warn_flips(named[0], recipe.flip)
        test_source = args.test or named_test_split(args.data)
        test = None
        if test_source:
            held = load_labelled(test_source, size=args.size or tuple(images.shape[-2:]), channels=images.shape[1])
            test = (held.images, held.labels)
        teacher = None
        user_arch = args.arch if is_user_arch(args.arch) else None  # the code --arch agrees to run, if any
        if args.teacher:
            teacher = load_checkpoint(args.teacher, user_arch=user_arch)[0].to(device)
        if args.init:
            start, spec, _ = load_checkpoint(args.init, user_arch=user_arch)
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
        from ..distributed import teardown

        teardown()
    return 0

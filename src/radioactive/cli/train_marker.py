"""``radioactive train-marker``: train the built-in marking network on the owner's clean data."""

from __future__ import annotations

import argparse
import logging
import sys

from ..errors import ConfigError
from ..fmnist_pairs import PAIR_SOURCES

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train-marker",
        help="train the built-in marking network on clean data (Fashion-MNIST: a few CPU minutes)",
        description="Train a small marking network on the owner's clean data (55k Fashion-MNIST training "
        "images; 5k held out) and save it as a safetensors checkpoint with its spec, recipe, dataset "
        "fingerprint and accuracy.",
    )
    parser.add_argument("--data", default="fashion-mnist", choices=["fashion-mnist", *PAIR_SOURCES],
                        help="training data: the owner split of Fashion-MNIST (default) or of its 28 x 56 pairs "
                        "(100 classes, or the 10-class control; trained without flips)")
    parser.add_argument("--out", required=True, help="checkpoint to write (.safetensors)")
    parser.add_argument("--arch", default="cnn", help="built-in architecture: cnn, resnet_narrow, mlp (default cnn)")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default 5)")
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate (default 0.05)")
    parser.add_argument("--batch-size", type=int, default=None, help="batch size (default 128)")
    parser.add_argument("--seed", type=int, default=0, help="seed of initialisation, order and augmentation")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace
    from pathlib import Path

    from ..nets import ARCHITECTURES
    from ..zoo import MARKER_RECIPE, resolve_device, train_fmnist_marker

    if args.arch not in ARCHITECTURES:  # before any image is read
        raise ConfigError(f"--arch {args.arch!r} is not a built-in architecture; choose from {sorted(ARCHITECTURES)}")
    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise ConfigError(f"--out must end in .safetensors, got {str(out)!r}")
    overrides = {k: v for k, v in (("epochs", args.epochs), ("lr", args.lr), ("batch_size", args.batch_size))
                 if v is not None}
    base = MARKER_RECIPE if args.data == "fashion-mnist" else replace(MARKER_RECIPE, flip=False)
    recipe = replace(base, **overrides)

    def progress(record: dict) -> None:
        print(f"epoch {record['epoch']}/{recipe.epochs}: loss {record['loss']:.4f}  "
              f"({record['seconds']:.1f} s)", file=sys.stderr, flush=True)

    result = train_fmnist_marker(out, arch=args.arch, recipe=recipe, seed=args.seed,
                                 device=resolve_device(args.device), progress=progress, data=args.data)
    metrics = result.metrics
    print(f"marker {args.arch}: test accuracy {metrics['test_accuracy']:.4f}, validation accuracy "
          f"{metrics['val_accuracy']:.4f}, {metrics['seconds_per_epoch']:.1f} s/epoch")
    print(f"saved {out}")
    return 0

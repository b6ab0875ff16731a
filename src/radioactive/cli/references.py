"""``radioactive references``: train a bank of clean reference models on the originals the owner holds."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import ConfigError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from ..train.bank import DEFAULT_BANK

    names = [m.name for m in DEFAULT_BANK]
    parser = subparsers.add_parser(
        "references",
        help="train a bank of clean reference models on your original images (for detect --reference-model)",
        description="Train several clean classifiers (architectures and recipes: "
        + ", ".join(names) + ") on the ORIGINAL images you hold, never on the published copy. "
        "'radioactive detect --black-box --reference-model OUT/' subtracts their response to the carriers "
        "(difference in differences, or a matched fit with --reference-fit matched): much more power, still "
        "exact. Resumable: a rerun skips the members already trained.",
    )
    parser.add_argument("--data", required=True,
                        help="your clean originals: fashion-mnist (the 55k owner split), fashion-mnist-pairs[10], a "
                        "class-subfolder image tree or a CSV/JSONL list (a 'radioactive mark' output folder is "
                        "refused)")
    parser.add_argument("--out", required=True, help="the bank folder (one checkpoint per member and bank.json)")
    parser.add_argument("--members", default=None,
                        help=f"comma-separated subset of the bank (default: all of {','.join(names)})")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per member (default 3)")
    parser.add_argument("--test", default=None,
                        help="test set scored after each member: fashion-mnist:test or a folder (default: the "
                        "test split of a named --data: fashion-mnist:test, fashion-mnist-pairs:test, ...)")
    parser.add_argument("--size", type=int, default=None, help="resize images to SIZE x SIZE (default: as read)")
    parser.add_argument("--no-flip", action="store_true",
                        help="train every member without random horizontal flips (for data whose label a flip "
                        "changes; automatic for fashion-mnist-pairs[10], whose flip swaps the two halves)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from ..sources import load_labelled, named_test_split
    from ..train.bank import DEFAULT_BANK, train_bank
    from ..zoo import resolve_device

    if args.epochs < 1:
        raise ConfigError(f"--epochs must be at least 1, got {args.epochs}")
    members = list(DEFAULT_BANK)
    if args.members:
        wanted = [w.strip() for w in args.members.split(",") if w.strip()]
        known = {m.name: m for m in DEFAULT_BANK}
        unknown = [w for w in wanted if w not in known]
        if unknown or not wanted:
            raise ConfigError(f"--members: unknown members {unknown}; choose from {sorted(known)}")
        members = [known[w] for w in wanted]
    from ..fmnist_pairs import pairs_spec

    if pairs_spec(str(args.data)) and not args.no_flip:
        print(f"note: {args.data} images are two images side by side, labelled by their order: every member is "
              "trained without horizontal flips (as with --no-flip)", file=sys.stderr)
        args.no_flip = True
    if args.no_flip:
        members = [replace(m, recipe={**m.recipe, "flip": False}) for m in members]
    data = load_labelled(args.data, size=args.size)
    if data.marked:
        raise ConfigError(f"--data {args.data!r} is the output of 'radioactive mark' (it holds a marking manifest): "
                          "references must be trained on the clean originals you hold, never on the published "
                          "copy (a reference that saw the marks would hide them)")
    test_source = args.test or named_test_split(args.data)
    test = None
    if test_source:
        held = load_labelled(test_source, size=args.size or tuple(data.images.shape[-2:]),
                             channels=data.images.shape[1])
        test = (held.images, held.labels)
    num_classes = max(len(data.classes), int(data.labels.max()) + 1)
    paths = train_bank(data.images, data.labels, Path(args.out), members=members, epochs=args.epochs, test=test,
                       device=str(resolve_device(args.device)), num_classes=num_classes, source=str(args.data),
                       progress=lambda line: print(line, file=sys.stderr, flush=True))
    print(f"reference bank of {len(paths)} clean models in {args.out}; use it with "
          f"'radioactive detect --black-box ... --reference-model {args.out}'")
    return 0

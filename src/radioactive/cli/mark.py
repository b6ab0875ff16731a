"""``radioactive mark``: publish a marked copy of an image dataset.

Under ``torchrun`` (``torchrun --nproc_per_node N -m radioactive mark ...``) every rank marks its share
(NCCL on GPUs, one GPU per local rank; gloo on CPU) and rank 0 prints the summary.
"""

from __future__ import annotations

import argparse
import logging

from ..errors import ConfigError
from ._marking_args import add_marking_args, mark_config
from ._twins import add_mark_twins_args, describe_secret, mark_twin_secret

log = logging.getLogger(__name__)

_RANK_TIMEOUT_S = 24 * 3600


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "mark",
        help="publish a marked copy of an image dataset",
        description="Mark a seeded random fraction of each class of SRC with the key and write the complete "
        "dataset to DST: marked images as PNG at the same relative paths, every other image copied unchanged, "
        "manifest.jsonl (one row per image) and mark.json (settings, key fingerprint, versions, summary). "
        "Rerun the same command to resume an interrupted run. Under torchrun, the ranks share the work and the "
        "output is the same whatever their number.",
    )
    parser.add_argument("--key", required=True, help="key file from 'radioactive keygen'")
    parser.add_argument("--data", required=True, metavar="SRC",
                        help="class-subfolder image tree, CSV/JSONL list of path,label, fashion-mnist (= "
                        "fashion-mnist:owner, the 55k images the owner publishes), or fashion-mnist-pairs / "
                        "fashion-mnist-pairs10 (their 28 x 56 pairs, 100 or 10 classes)")
    parser.add_argument("--fraction", required=True, type=float, help="fraction of each class to mark, in [0, 1]")
    parser.add_argument("--out", required=True, metavar="DST", help="output folder (new, or a run to resume)")
    parser.add_argument("--marker", help="marking network (default: the one recorded in the key)")
    parser.add_argument("--marker-weights", help="local weights file for a torchvision:<arch> marker")
    parser.add_argument("--classes", help="comma-separated class names or indices to mark (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the selection and the augmentations")
    parser.add_argument("--skip-bad", action="store_true",
                        help="list unreadable images in the manifest and summary instead of stopping")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="images optimised together (default: on CUDA as many as fit in the free memory, else "
                        "about 2^19 marker-input pixels; recorded in mark.json, and a resumed run keeps it)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--link", choices=["copy", "hardlink"], default="copy",
                        help="how unmarked images reach DST (hardlink falls back to copy across filesystems)")
    parser.add_argument("--root", help="folder that list paths are relative to (default: the list's folder)")
    parser.add_argument("--max-pixels", type=int, default=None, help="refuse larger images (decompression bombs)")
    parser.add_argument("--verify", choices=["stat", "full"], default="stat",
                        help="how a rerun checks the images already done: stat (re-hash only files whose size, "
                        "times or inode changed since they were hashed; default) or full (re-hash every file)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_marking_args(parser)  # the same flags as detect's, which marks its probes like the data
    add_mark_twins_args(parser)
    parser.set_defaults(func=run)


def _classes(text: str | None, names: list[str]) -> list[int] | None:
    if not text:
        return None
    out = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        if part in names:
            out.append(names.index(part))
        elif part.isascii() and part.isdigit() and int(part) < len(names):
            out.append(int(part))
        else:
            raise ConfigError(f"unknown class {part!r}; the dataset's classes are {names}")
    return out


def run(args: argparse.Namespace) -> int:
    import torch

    from .. import distributed
    from ..data import DEFAULT_MAX_PIXELS
    from ..key import Key
    from ..publish import mark_dataset
    from ..sources import open_source
    from ..zoo import resolve_device, resolve_marker

    config = mark_config(args)
    if args.batch_size is not None and args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    key = Key.load(args.key)
    marker = resolve_marker(key, args.marker, weights=args.marker_weights)
    # Ranks wait for each other (rank 0 verifying a large output, the slowest rank's last batch): long timeout.
    placement = distributed.init(resolve_device(args.device), timeout_s=_RANK_TIMEOUT_S)
    try:
        device = placement.device
        marker.to(device)
        if device.type == "cpu":
            marker.model.to(memory_format=torch.channels_last)
        source = open_source(args.data, root=args.root, max_pixels=args.max_pixels or DEFAULT_MAX_PIXELS)
        if placement.rank == 0:
            log.info("key %s, marker %s, %d images in %d classes from %s%s", key.fingerprint, marker.spec.arch,
                     len(source), len(source.classes), source.description,
                     f", {placement.world} ranks" if placement.world > 1 else "")
        classes = _classes(args.classes, source.classes)
        twins = mark_twin_secret(args, source, key, classes)  # saved (owner-only) before any image is marked
        summary = mark_dataset(
            source, args.out, marker=marker, key=key, fraction=args.fraction, config=config,
            classes=classes, seed=args.seed, skip_bad=args.skip_bad,
            batch_size=args.batch_size, link=args.link, progress=not args.no_progress, verify=args.verify,
            twins=twins,
        )
        distributed.barrier()  # no rank leaves the group while another still uses it
    finally:
        distributed.teardown()
    if placement.rank != 0:
        return 0
    psnr_min = "n/a" if summary["psnr_min"] is None else f"{summary['psnr_min']:.2f}"
    psnr_mean = "n/a" if summary["psnr_mean"] is None else f"{summary['psnr_mean']:.2f}"
    cosine = "n/a" if summary["cosine_mean"] is None else f"{summary['cosine_mean']:.3f}"
    print(f"{summary['written']} images written to {args.out}: {summary['marked']} marked, {summary['copied']} "
          f"unchanged, {summary['bad']} bad")
    print(f"PSNR min {psnr_min} dB, mean {psnr_mean} dB; mean cosine of the feature shift with the carrier under "
          f"fresh augmentations {cosine}")
    for row in summary["bad_images"]:
        print(f"bad image: {row['error']}")
    if twins is not None:
        print(describe_secret(twins, args))
    return 0

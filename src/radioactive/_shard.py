"""One rank's share of a marking run (private to :mod:`radioactive.publish`): copying unmarked images,
planning the batches of the images to mark, marking them, and the order of the finished manifest.

Batches are planned from the whole sorted selection (done or not), whatever the number of ranks, and are
given whole to ranks; so every image is optimised in the same batch, with the same batch-mates, as in a
single-process or an uninterrupted run, and its bytes do not depend on the number of ranks or on resuming.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import distributed
from ._io import atomic_write, sha256_file
from ._stamps import Entry, file_stamp
from .data import public_mode, write_png
from .errors import ConfigError, ImageReadError
from .key import Key
from .manifest import ManifestWriter
from .mark import MarkConfig, image_seeds, mark
from .sources import ImageSource, SourceItem

log = logging.getLogger(__name__)

Fail = Callable[[SourceItem, ImageReadError], None]


def inside(path: Path, folder: Path) -> bool:
    return path == folder or path.is_relative_to(folder)


def safe_target(out: Path, rel: str) -> Path:
    target = out / rel
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    if not inside(parent.resolve(), out.resolve()) or target.is_symlink():
        raise ConfigError(f"refusing to write {target}: a link in the output folder leads elsewhere")
    return target


def _stamped(key: str, path: Path, digest: str) -> list[Entry]:
    stamp = file_stamp(path)
    return [] if stamp is None else [(key, stamp, digest)]


def _hash_source(source: ImageSource, item: SourceItem) -> tuple[Path, str, list[Entry]]:
    """The source file, its sha256 and its stamp, taken before hashing so that a later change shows."""
    real = source.check_path(item)
    before = file_stamp(real)
    digest = sha256_file(real)
    return real, digest, [] if before is None else [(f"src:{item.rel}", before, digest)]


def _copy(source: ImageSource, item: SourceItem, target: Path, rel_out: str,
          link: str) -> tuple[str, str, list[Entry]]:
    """Copy (or hard-link) one unmarked image; returns the source and output sha256 and their stamps."""
    if source.in_memory:
        digest = write_png(target, source.read(item))
        return source.source_sha256(item), digest, _stamped(f"out:{rel_out}", target, digest)
    real, source_digest, stamps = _hash_source(source, item)
    if link == "hardlink":
        # Not via atomic_write: its chmod would change the source's mode through the link.
        tmp = target.with_name(f".{target.name}.{os.getpid()}.link.tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        try:
            os.link(real, tmp)
        except OSError:
            pass  # another filesystem, or links not allowed: copy instead
        else:
            os.replace(tmp, target)
            after = file_stamp(target)
            linked: list[Entry] = []
            # Linking changed the shared inode's ctime; the content is the one hashed if nothing else changed.
            if stamps and after is not None and _same_content(stamps[0][1], after):
                linked = [(f"src:{item.rel}", after, source_digest), (f"out:{rel_out}", after, source_digest)]
            return source_digest, source_digest, linked
    with atomic_write(target, mode=public_mode()) as tmp_copy:
        shutil.copyfile(real, tmp_copy)
    out_stamp = file_stamp(target)  # before hashing, like every stamp
    output_digest = sha256_file(target)
    if out_stamp is not None:
        stamps.append((f"out:{rel_out}", out_stamp, output_digest))
    return source_digest, output_digest, stamps


def _same_content(before: tuple[int, int, int, int], after: tuple[int, int, int, int]) -> bool:
    """Same inode, size and mtime: only the link count (and so the ctime) changed."""
    return (before[0], before[1], before[3]) == (after[0], after[1], after[3])


def share(count: int, rank: int, world: int) -> range:
    """This rank's contiguous block of ``count`` items (blocks differ in size by at most one)."""
    return range(rank * count // world, (rank + 1) * count // world)


def copy_share(source: ImageSource, out: Path, items: list[SourceItem], names: dict[str, str], link: str,
               writer: ManifestWriter, fail: Fail, progress: bool) -> None:
    """Copy ``items`` (this rank's share of the unmarked images not done yet), recording each in ``writer``."""
    import time

    from tqdm.auto import tqdm

    pending: list[dict[str, Any]] = []
    stamps: list[Entry] = []
    last_flush = time.monotonic()
    for item in tqdm(items, desc="copying", unit="img", disable=not progress or not items):
        rel_out = names[item.rel]
        try:
            source_digest, output_digest, entries = _copy(source, item, safe_target(out, rel_out), rel_out, link)
        except ImageReadError as exc:
            writer.append(pending, stamps)
            pending, stamps = [], []
            fail(item, exc)
            continue
        pending.append({"source": item.rel, "output": rel_out, "label": item.label,
                        "source_sha256": source_digest, "output_sha256": output_digest, "marked": False})
        stamps.extend(entries)
        if len(pending) >= 512 or time.monotonic() - last_flush > 2:
            writer.append(pending, stamps)
            pending, stamps, last_flush = [], [], time.monotonic()
    writer.append(pending, stamps)


@dataclass
class Plan:
    """The batches of the images to mark, and those whose header could not be read (with the error)."""

    to_mark: list[SourceItem]
    batches: list[list[SourceItem]]
    unreadable: list[tuple[SourceItem, str]]
    batch_size: int


def manifest_order(source: ImageSource, chosen: set[str], plan: Plan | None) -> Callable[[str, bool], tuple[int, ...]]:
    """Sort key ``(source id, bad) -> key`` of the manifest's canonical order: the order in which one
    uninterrupted process appends rows (unmarked images in source order; unreadable selected images; then
    batch by batch, its bad images before its marked ones). Without a plan, the rows of selected images keep
    the order they have (the sort is stable)."""
    index = {item.rel: i for i, item in enumerate(source.items)}
    where: dict[str, tuple[int, ...]] = {}
    if plan is not None:
        where = {item.rel: (1, i) for i, item in enumerate(plan.to_mark)}
        for number, batch in enumerate(plan.batches):
            for position, item in enumerate(batch):
                where[item.rel] = (2, number, position)

    def key(rel: str, bad: bool) -> tuple[int, ...]:
        if rel not in chosen:
            return (0, index[rel])
        found = where.get(rel, (1,))
        return (2, found[1], 0 if bad else 1, found[2]) if found[0] == 2 else found

    return key


def plan_batches(source: ImageSource, to_mark: list[SourceItem],
                 batch_size: int | Callable[[tuple[int, ...]], int]) -> Plan:
    """Group the images to mark by size (from their headers, read in shares by every rank) into batches.

    ``batch_size`` is a number, or a rule ``(c, H, W) -> number`` that rank 0 applies to the largest image to
    mark (the memory probe on CUDA) and every rank then follows.
    """
    rank, world = distributed.rank_world()
    mine = share(len(to_mark), rank, world)
    shapes: list[tuple[int, ...] | str] = []
    for item in to_mark[mine.start:mine.stop]:
        try:
            shapes.append(tuple(source.header_size(item)))
        except ImageReadError as exc:
            shapes.append(str(exc))
    every = [shape for part in distributed.gather(shapes) for shape in part]
    by_shape: dict[tuple[int, ...], list[SourceItem]] = defaultdict(list)
    unreadable = []
    for item, shape in zip(to_mark, every, strict=True):
        if isinstance(shape, str):
            unreadable.append((item, shape))
        else:
            by_shape[shape].append(item)
    if callable(batch_size):
        largest = max(by_shape, key=lambda shape: (math.prod(shape), shape), default=None)
        batch_size = distributed.broadcast(batch_size(largest) if rank == 0 and largest is not None else 1)
    batches = [group[i:i + batch_size] for group in by_shape.values() for i in range(0, len(group), batch_size)]
    return Plan(to_mark, batches, unreadable, batch_size)


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _read_batch(source: ImageSource, batch: list[SourceItem], pin: bool
                ) -> tuple[torch.Tensor | None, list[SourceItem], list[tuple[SourceItem, ImageReadError]]]:
    """Decode one planned batch (in a background thread): uint8 ``(B, c, H, W)``, pinned for a GPU marker."""
    images, kept, failed = [], [], []
    for item in batch:
        try:
            images.append(source.read(item))
            kept.append(item)
        except ImageReadError as exc:
            failed.append((item, exc))
    stacked = torch.stack(images) if images else None
    if stacked is not None and pin:
        stacked = stacked.pin_memory()
    return stacked, kept, failed


def mark_share(source: ImageSource, out: Path, batches: list[list[SourceItem]], marker: Any, key: Key,
               config: MarkConfig, seed: int, names: dict[str, str], done: set[str], writer: ManifestWriter,
               fail: Fail, progress: bool, twins: Any = None) -> None:
    """Mark this rank's ``batches`` (each whole, as planned), writing the images not done yet; with ``twins``
    (a :class:`radioactive.twins.TwinSecret`) each image as the twin its secret coin names.

    The next batch is decoded in a background thread while the current one is optimised, and the marked PNGs
    of a batch are encoded and written by a small thread pool (PIL and file I/O release the GIL); a batch's
    manifest rows are appended only once all its images are on disk, so resume semantics are unchanged.
    """
    from concurrent.futures import ThreadPoolExecutor

    from tqdm.auto import tqdm

    todo = sum(1 for batch in batches for item in batch if item.rel not in done)
    bar = tqdm(total=todo, desc="marking", unit="img", disable=not progress or not todo, smoothing=0.1)
    param = next(marker.model.parameters(), None)
    pin = param is not None and param.device.type == "cuda"
    with ThreadPoolExecutor(max_workers=1) as reader, ThreadPoolExecutor(max_workers=4) as encoder:
        upcoming = reader.submit(_read_batch, source, batches[0], pin) if batches else None
        try:
            for position in range(len(batches)):
                images, kept, failed = upcoming.result()
                upcoming = (reader.submit(_read_batch, source, batches[position + 1], pin)
                            if position + 1 < len(batches) else None)
                for item, exc in failed:
                    fail(item, exc)
                if not kept:
                    continue
                labels = torch.tensor([item.label for item in kept])
                if twins is None:
                    result = mark(marker, images, labels, key, config,
                                  seed=image_seeds(seed, [item.rel for item in kept]), batch_size=len(kept),
                                  classes=source.classes)
                else:
                    result = twins.mark_published(marker, images, labels, key, config,
                                                  ids=[item.rel for item in kept], batch_size=len(kept),
                                                  classes=source.classes)
                marked_u8 = torch.round(result.images * 255).to(torch.uint8).cpu()
                new = [(index, item) for index, item in enumerate(kept) if item.rel not in done]
                targets = [safe_target(out, names[item.rel]) for _, item in new]
                digests = list(encoder.map(write_png, targets, [marked_u8[index] for index, _ in new]))
                rows, stamps = [], []
                for (index, item), target, digest in zip(new, targets, digests):
                    rel_out = names[item.rel]
                    stamps.extend(_stamped(f"out:{rel_out}", target, digest))
                    if source.in_memory:
                        source_digest = source.source_sha256(item)
                    else:
                        _, source_digest, entries = _hash_source(source, item)
                        stamps.extend(entries)
                    rows.append({
                        "source": item.rel, "output": rel_out, "label": item.label,
                        "source_sha256": source_digest, "output_sha256": digest, "marked": True,
                        "psnr": _finite(float(result.psnr[index])), "shift": float(result.shift[index]),
                        "cosine": float(result.cosine[index]),
                    })
                writer.append(rows, stamps)
                bar.update(len(rows))
        finally:
            if upcoming is not None:
                upcoming.cancel()
            bar.close()

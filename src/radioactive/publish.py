"""Publishing a marked copy of a dataset: selection, output names, marking in batches, on one or many ranks.

``mark_dataset`` marks a seeded random fraction of each class of an :class:`~radioactive.sources.ImageSource`
and writes a complete dataset to ``out``: marked images as PNG at the same relative paths (a non-PNG source
``a/b.jpg`` becomes ``a/b.png``, or ``a/b.jpg.png`` if that name is taken), every other image copied or
hard-linked unchanged, ``manifest.jsonl`` (one row per image) and ``mark.json`` (settings, key fingerprint,
versions, summary). Carriers never leave the key.

Crash safety: every file is written atomically and a manifest row is appended only after its image is on
disk. A rerun with the same settings verifies every row (sha256 of the output, and of the source; a file
whose ``stat`` stamp is unchanged since it was hashed is trusted without being read), keeps the valid rows
byte for byte, drops a torn last line, removes stale temporaries and redoes the rest. Batches are planned
from the full sorted selection with the batch size ``mark.json`` records (given, or the marker's rule: the
memory probe on CUDA), so a resumed run writes the same bytes as an uninterrupted one. A lock file
refuses a concurrent run into ``out``. The lock, the manifest and ``mark.json`` are
:mod:`radioactive.manifest`'s.

Under ``torchrun`` (an initialised process group) rank 0 takes the lock, verifies what earlier runs left and
writes ``mark.json``; then every rank copies a contiguous share of the unmarked images and marks every
``world``-th pending batch of the plan, appending to its own manifest part; after the last rank is done,
rank 0 merges the parts into ``manifest.jsonl`` in the order one process writes it. The output is the same
bytes whatever the number of ranks (:mod:`radioactive._shard`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

import torch

from . import distributed
from ._io import versions
from ._shard import copy_share, inside, manifest_order, mark_share, plan_batches, share
from .errors import ConfigError, DatasetError, ImageReadError, KeyMismatchError
from .key import Key
from .manifest import (
    MANIFEST_NAME,
    RECORD_NAME,
    STAMPS_NAME,
    ManifestWriter,
    has_parts,
    load_verified_rows,
    merge_parts,
    output_lock,
    part_paths,
    prepare_out,
    read_manifest_rows,
    read_mark_record,
    remove_stale_temporaries,
    write_mark_record,
)
from .mark import MarkConfig, choose_batch_size, default_batch_size, image_seeds
from .sources import ImageSource, SourceItem

__all__ = ["mark_dataset", "select_marked", "output_names"]

log = logging.getLogger(__name__)


def select_marked(source: ImageSource, fraction: float, classes: list[int], seed: int) -> set[str]:
    """Relative ids of a seeded random ``round(fraction * n_k)`` images of each selected class ``k``."""
    by_class: dict[int, list[str]] = defaultdict(list)
    for item in source.items:
        by_class[item.label].append(item.rel)
    chosen: set[str] = set()
    for label in classes:
        rels = sorted(by_class.get(label, []))
        count = int(math.floor(fraction * len(rels) + 0.5))
        generator = torch.Generator().manual_seed(image_seeds(seed, [f"select:{label}"])[0])
        order = torch.randperm(len(rels), generator=generator)[:count]
        chosen.update(rels[i] for i in order.tolist())
    return chosen


def output_names(source: ImageSource, marked: set[str]) -> dict[str, str]:
    """Relative output path of every item: marked ones become PNG, the rest keep their name."""
    folded: dict[str, str] = {}
    for item in source.items:
        other = folded.setdefault(item.rel.casefold(), item.rel)
        if other != item.rel:
            raise DatasetError(f"{item.rel!r} and {other!r} differ only by case; they would collide on "
                               "case-insensitive filesystems, rename one of them")
    taken = {item.rel for item in source.items if item.rel not in marked}  # and every name given so far
    names: dict[str, str] = {}
    used: set[str] = set()  # the values of names (a set: listing 10^5 images stays linear)
    for item in source.items:
        rel = item.rel
        if rel in marked and PurePosixPath(rel).suffix.lower() != ".png":
            candidate = str(PurePosixPath(rel).with_suffix(".png"))
            if candidate in taken:
                candidate = rel + ".png"
            rel = candidate
        if rel in used:
            raise DatasetError(f"two images would be written to {rel!r}; rename one of them")
        names[item.rel] = rel
        used.add(rel)
        taken.add(rel)
    return names


def _check_places(source: ImageSource, out: Path) -> None:
    if source.root is None:
        return
    root = source.root.resolve()
    real_out = out.resolve()
    if inside(real_out, root) or inside(root, real_out):
        raise ConfigError(f"output folder {out} and source {root} overlap; write the marked dataset elsewhere "
                          "(the source is never written to)")


def _settings(source: ImageSource, key: Key, fraction: float, classes: list[int], seed: int,
              config: MarkConfig, link: str) -> dict[str, Any]:
    return {
        "source": source.description,
        "source_images": len(source),
        "classes": [source.classes[i] if i < len(source.classes) else str(i) for i in classes],
        "fraction": fraction,
        "seed": seed,
        "key_fingerprint": key.fingerprint,
        "marker_weights_sha256": key.marker.weights_sha256,
        "config": config.to_dict(),
        "link": link,
    }


def mark_dataset(
    source: ImageSource,
    out: str | os.PathLike,
    *,
    marker: Any,
    key: Key,
    fraction: float,
    config: MarkConfig | None = None,
    classes: list[int] | None = None,
    seed: int = 0,
    skip_bad: bool = False,
    batch_size: int | None = None,
    link: str = "copy",
    progress: bool = True,
    verify: str = "stat",
    twins: Any = None,
) -> dict[str, Any]:
    """Write the published dataset to ``out`` (see the module docstring); returns the summary.

    Under an initialised process group (``torchrun``), every rank calls this with the same arguments and
    does its share; every rank returns the summary.

    Args:
        verify: how a rerun checks the rows already done: ``stat`` re-hashes only files whose stamp (size,
            mtime, ctime, inode) changed since they were hashed; ``full`` re-hashes every file.
        twins: a :class:`radioactive.twins.TwinSecret` (saved by the caller beforehand) whose coins cover
            exactly the selected images: each is published as the twin its coin names, and ``mark.json``
            records the secret's fingerprint (never its seed or coins). See :func:`radioactive.twins.twin_secret_for`.

    Raises:
        KeyMismatchError: the key was made for another marker, or the dataset has more classes than the key.
        ImageReadError: an image cannot be read (unless ``skip_bad``).
        LockError: another run is writing to ``out``.
        ConfigError: ``out`` overlaps the source, holds another run, or a setting is invalid.
    """
    config = config or MarkConfig()
    key.check_marker(marker.info)
    if not 0 <= fraction <= 1:
        raise ConfigError(f"fraction must be in [0, 1], got {fraction}")
    if link not in ("copy", "hardlink"):
        raise ConfigError(f"unknown link mode {link!r}; choose from ['copy', 'hardlink']")
    if verify not in ("stat", "full"):
        raise ConfigError(f"unknown verify mode {verify!r}; choose from ['stat', 'full']")
    outside = next((item for item in source.items if not 0 <= item.label < key.num_classes), None)
    if outside is not None:
        raise KeyMismatchError(
            f"{outside.rel}: label {outside.label} is outside the key's classes 0..{key.num_classes - 1}; use the "
            "key made for this dataset, or remove the row"
        )
    if len(source.classes) > key.num_classes:
        raise KeyMismatchError(f"the dataset has {len(source.classes)} classes but the key has {key.num_classes}; use "
                               "the key (and marking network) made for this dataset")
    classes = sorted(set(range(len(source.classes))) if classes is None else set(classes))
    wrong = [c for c in classes if not 0 <= c < min(key.num_classes, max(len(source.classes), 1))]
    if wrong:
        raise ConfigError(f"--classes {wrong} are not classes of this dataset and key (0..{len(source.classes) - 1})")
    out = Path(out)
    _check_places(source, out)  # before creating anything
    settings = _settings(source, key, fraction, classes, seed, config, link)
    chosen = select_marked(source, fraction, classes, seed)
    if twins is not None:
        twins.check_key(key)
        if set(twins.coins) != chosen:
            raise ConfigError(f"the twin secret {twins.fingerprint} holds coins for {len(twins.coins)} images, not for "
                              f"the {len(chosen)} this run selects; make it with twin_secret_for() and the same "
                              "fraction, classes and seed")
        settings["twins"] = twins.describe()
    elif (out / RECORD_NAME).is_file() and read_mark_record(out).get("settings", {}).get("twins"):
        raise ConfigError(f"{out} holds a run marked with twins; resume it with its twin secret ('radioactive mark "
                          "--twins', twins= in the API), or use a new --out")
    out.mkdir(parents=True, exist_ok=True)
    rank, world = distributed.rank_world()
    started = time.time()
    record = {"status": "running", "settings": settings, "key": key.describe(), "versions": versions()}
    names = output_names(source, chosen)
    with contextlib.ExitStack() as stack:
        # Rank 0 holds the lock for the whole run and alone touches the bookkeeping; the other ranks are
        # part of the same run and wait for it (a concurrent run's rank 0 is refused, and so its ranks stop).
        error, merged, summary = None, False, None
        if rank == 0:
            try:
                stack.enter_context(output_lock(out))
                prepare_out(out, settings)
                record["batch_size"] = _recorded_batch_size(out, marker)
                remove_stale_temporaries(out)
                write_mark_record(out, record)
                merged = has_parts(out)  # a distributed run was interrupted: its rows need ordering
                done = set(load_verified_rows(out, source, names, verify=verify))
            except Exception as exc:  # every rank stops with it
                error = exc
        distributed.agree(error)
        merged = distributed.broadcast(merged)
        recorded = distributed.broadcast(record.get("batch_size"))

        def planned(size: int) -> None:  # rank 0: recorded before any image is marked with it
            if size != record["batch_size"]:
                record["batch_size"] = size
                write_mark_record(out, record)
        if rank != 0:
            done = {row["source"] for row in read_manifest_rows(out)} if (out / MANIFEST_NAME).is_file() else set()
        order = _publish(source, out, marker, key, config, seed, skip_bad, batch_size or recorded, link, progress,
                         chosen, names, done, merged, twins, planned)
        if rank == 0:
            try:
                if order is not None:
                    merge_parts(out, order)
                summary = _summary(out, len(source), started)
                record.update(status="complete", summary=summary)
                write_mark_record(out, record)
            except Exception as exc:
                error = exc
        distributed.agree(error)
    return distributed.broadcast(summary)


def _publish(source: ImageSource, out: Path, marker: Any, key: Key, config: MarkConfig, seed: int,
             skip_bad: bool, batch_size: int | None, link: str, progress: bool, chosen: set[str],
             names: dict[str, str], done: set[str], merged: bool, twins: Any = None,
             planned: Callable[[int], None] | None = None) -> Callable[[str, bool], Any] | None:
    """Every rank's share of the copying and marking. Returns the manifest's sort key when rows were added
    (None when nothing changed). ``merged``: the verified rows include those of an interrupted distributed
    run, whose order is unknown. ``batch_size``: given or recorded, else the marker's rule (the memory probe
    on CUDA) on the largest image; rank 0 calls ``planned`` with the batch size of the plan."""
    rank, world = distributed.rank_world()
    progress = progress and rank == 0
    # One process appends to the manifest itself (as it always did); ranks each to their own part.
    paths = (out / MANIFEST_NAME, out / STAMPS_NAME) if world == 1 else part_paths(out, rank)
    writer = ManifestWriter(*paths)

    def fail(item: SourceItem, exc: ImageReadError) -> None:
        if not skip_bad:
            raise exc
        log.warning("skipping bad image: %s", exc)
        writer.append([{"source": item.rel, "output": None, "label": item.label, "marked": False, "bad": True,
                        "error": str(exc)}])

    untouched = [item for item in source.items if item.rel not in chosen and item.rel not in done]
    to_mark = [item for item in source.items if item.rel in chosen]
    todo = any(item.rel not in done for item in to_mark)
    plan = None
    try:
        error = None
        try:
            mine = share(len(untouched), rank, world)
            copy_share(source, out, untouched[mine.start:mine.stop], names, link, writer, fail, progress)
        except Exception as exc:
            error = exc
        distributed.agree(error)
        try:
            # The plan (it reads the headers of the images to mark) is needed to mark, and to order marked rows
            # that did not come from one process in order.
            if todo or merged:
                plan = plan_batches(source, to_mark,
                                    batch_size or (lambda shape: choose_batch_size(marker, shape, config)))
                if rank == 0 and planned is not None:
                    planned(plan.batch_size)
                unreadable = [(item, message) for item, message in plan.unreadable if item.rel not in done]
                if unreadable and not skip_bad:
                    raise ImageReadError(unreadable[0][1])  # every rank knows it: all stop before marking
                for item, message in unreadable if rank == 0 else []:
                    fail(item, ImageReadError(message))
                pending = [batch for batch in plan.batches if any(item.rel not in done for item in batch)]
                mark_share(source, out, pending[rank::world], marker, key, config, seed, names, done, writer,
                           fail, progress, twins)
        except Exception as exc:
            error = exc
        distributed.agree(error)
    finally:
        writer.close()
    return manifest_order(source, chosen, plan) if plan is not None or untouched else None


def _recorded_batch_size(out: Path, marker: Any) -> int | None:
    """The batch size of the run in ``out`` that this run resumes (None: a new run, or none planned yet).
    Runs recorded before the batch size was (which lack the field) planned with the pixel budget."""
    if not (out / RECORD_NAME).is_file():
        return None
    record = read_mark_record(out)
    return record["batch_size"] if "batch_size" in record else default_batch_size(marker.spec.input_size)


def _summary(out: Path, total: int, started: float) -> dict[str, Any]:
    rows = read_manifest_rows(out)
    marked = [row for row in rows if row.get("marked")]
    psnrs = [row["psnr"] if row["psnr"] is not None else math.inf for row in marked]
    finite = [p for p in psnrs if math.isfinite(p)]
    cosines = [row["cosine"] for row in marked]
    bad_rows = [row for row in rows if row.get("bad")]
    return {
        "images": total,
        "written": sum(1 for row in rows if row.get("output")),
        "marked": len(marked),
        "copied": sum(1 for row in rows if not row.get("marked") and row.get("output")),
        "bad": len(bad_rows),
        "bad_images": [{"source": row["source"], "error": row["error"]} for row in bad_rows][:100],
        "psnr_min": min(psnrs) if psnrs and math.isfinite(min(psnrs)) else None,
        "psnr_mean": sum(finite) / len(finite) if finite else None,
        "cosine_mean": sum(cosines) / len(cosines) if cosines else None,
        "fraction_positive_shift": sum(1 for row in marked if row["shift"] > 0) / len(marked) if marked else None,
        "seconds_this_run": time.time() - started,
    }

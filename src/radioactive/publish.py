"""Publishing a marked copy of a dataset: selection, output names, marking in batches.

``mark_dataset`` marks a seeded random fraction of each class of an :class:`~radioactive.sources.ImageSource`
and writes a complete dataset to ``out``: marked images as PNG at the same relative paths (a non-PNG source
``a/b.jpg`` becomes ``a/b.png``, or ``a/b.jpg.png`` if that name is taken), every other image copied or
hard-linked unchanged, ``manifest.jsonl`` (one row per image) and ``mark.json`` (settings, key fingerprint,
versions, summary). Carriers never leave the key.

Crash safety: every file is written atomically and a manifest row is appended only after its image is on
disk. A rerun with the same settings verifies every row (sha256 of the output, and of the source), keeps the
valid rows byte for byte, drops a torn last line, removes stale temporaries and redoes the rest. Batches are
planned from the full sorted selection, so a resumed run writes the same bytes as an uninterrupted one. A
lock file refuses a concurrent run into ``out``. The lock, the manifest and ``mark.json`` are
:mod:`radioactive.manifest`'s.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import time
from collections import defaultdict
from pathlib import Path, PurePosixPath
from typing import Any

import torch

from ._io import atomic_write, sha256_file, versions
from .data import public_mode, write_png
from .errors import ConfigError, DatasetError, ImageReadError, KeyMismatchError
from .key import Key
from .manifest import (
    MANIFEST_NAME,
    ManifestWriter,
    load_verified_rows,
    output_lock,
    prepare_out,
    read_manifest_rows,
    remove_stale_temporaries,
    write_mark_record,
)
from .mark import MarkConfig, image_seeds, mark
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
    taken = {item.rel for item in source.items if item.rel not in marked}
    names: dict[str, str] = {}
    for item in source.items:
        rel = item.rel
        if rel in marked and PurePosixPath(rel).suffix.lower() != ".png":
            candidate = str(PurePosixPath(rel).with_suffix(".png"))
            if candidate in taken or candidate in names.values():
                candidate = rel + ".png"
            rel = candidate
        if rel in names.values():
            raise DatasetError(f"two images would be written to {rel!r}; rename one of them")
        names[item.rel] = rel
        taken.add(rel)
    return names


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or path.is_relative_to(folder)


def _check_places(source: ImageSource, out: Path) -> None:
    if source.root is None:
        return
    root = source.root.resolve()
    real_out = out.resolve()
    if _inside(real_out, root) or _inside(root, real_out):
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


def _safe_target(out: Path, rel: str) -> Path:
    target = out / rel
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    if not _inside(parent.resolve(), out.resolve()) or target.is_symlink():
        raise ConfigError(f"refusing to write {target}: a link in the output folder leads elsewhere")
    return target


def _copy(source: ImageSource, item: SourceItem, target: Path, link: str) -> tuple[str, str]:
    if source.in_memory:
        digest = write_png(target, source.read(item))
        return source.source_sha256(item), digest
    real = source.check_path(item)
    source_digest = sha256_file(real)
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
            return source_digest, sha256_file(target)
    with atomic_write(target, mode=public_mode()) as tmp_copy:
        shutil.copyfile(real, tmp_copy)
    return source_digest, sha256_file(target)


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


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
) -> dict[str, Any]:
    """Write the published dataset to ``out`` (see the module docstring); returns the summary.

    Raises:
        KeyMismatchError: the key was made for another marker, or the dataset has more classes than the key.
        ImageReadError: an image cannot be read (unless ``skip_bad``).
        LockError: another run is writing to ``out``.
        ConfigError: ``out`` overlaps the source, holds another run, or a setting is invalid.
    """
    from tqdm.auto import tqdm

    config = config or MarkConfig()
    key.check_marker(marker.info)
    if not 0 <= fraction <= 1:
        raise ConfigError(f"fraction must be in [0, 1], got {fraction}")
    if link not in ("copy", "hardlink"):
        raise ConfigError(f"unknown link mode {link!r}; choose from ['copy', 'hardlink']")
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
    out.mkdir(parents=True, exist_ok=True)
    settings = _settings(source, key, fraction, classes, seed, config, link)
    started = time.time()
    with output_lock(out):
        prepare_out(out, settings)
        remove_stale_temporaries(out)
        record = {"status": "running", "settings": settings, "key": key.describe(), "versions": versions()}
        write_mark_record(out, record)
        chosen = select_marked(source, fraction, classes, seed)
        names = output_names(source, chosen)
        done = load_verified_rows(out, source, names)
        manifest = ManifestWriter(out / MANIFEST_NAME)
        bad: list[dict[str, Any]] = []

        def fail(item: SourceItem, exc: ImageReadError) -> None:
            if not skip_bad:
                raise exc
            log.warning("skipping bad image: %s", exc)
            row = {"source": item.rel, "output": None, "label": item.label, "marked": False, "bad": True,
                   "error": str(exc)}
            bad.append(row)
            manifest.append([row])

        try:
            untouched = [item for item in source.items if item.rel not in chosen and item.rel not in done]
            pending: list[dict[str, Any]] = []
            last_flush = time.monotonic()
            for item in tqdm(untouched, desc="copying", unit="img", disable=not progress or not untouched):
                try:
                    source_digest, output_digest = _copy(source, item, _safe_target(out, names[item.rel]), link)
                except ImageReadError as exc:
                    manifest.append(pending)
                    pending = []
                    fail(item, exc)
                    continue
                pending.append({"source": item.rel, "output": names[item.rel], "label": item.label,
                                "source_sha256": source_digest, "output_sha256": output_digest, "marked": False})
                if len(pending) >= 512 or time.monotonic() - last_flush > 2:
                    manifest.append(pending)
                    pending, last_flush = [], time.monotonic()
            manifest.append(pending)
            _mark_all(source, out, marker, key, config, seed, batch_size, chosen, names, done, manifest, fail,
                      progress)
        finally:
            manifest.close()
        summary = _summary(out, len(source), started, bad)
        record.update(status="complete", summary=summary)
        write_mark_record(out, record)
    return summary


def _mark_all(source: ImageSource, out: Path, marker: Any, key: Key, config: MarkConfig, seed: int,
              batch_size: int | None, chosen: set[str], names: dict[str, str], done: dict[str, str],
              manifest: ManifestWriter, fail: Any, progress: bool) -> None:
    from tqdm.auto import tqdm

    from .mark import _default_batch_size

    batch_size = batch_size or _default_batch_size(marker.spec.input_size)
    to_mark = [item for item in source.items if item.rel in chosen]
    todo = sum(1 for item in to_mark if item.rel not in done)
    bar = tqdm(total=todo, desc="marking", unit="img", disable=not progress or not todo, smoothing=0.1)
    try:
        # Batches come from the whole sorted selection (done or not), so a resumed run marks every image in
        # the same batch as an uninterrupted run would and writes the same bytes.
        by_shape: dict[tuple[int, ...], list[SourceItem]] = defaultdict(list)
        for item in to_mark:
            try:
                by_shape[source.header_size(item)].append(item)
            except ImageReadError as exc:
                if item.rel not in done:
                    fail(item, exc)
        plan = [group[i:i + batch_size] for group in by_shape.values() for i in range(0, len(group), batch_size)]
        for batch in plan:
            if all(item.rel in done for item in batch):
                continue
            images, kept = [], []
            for item in batch:
                try:
                    images.append(source.read(item))
                    kept.append(item)
                except ImageReadError as exc:
                    fail(item, exc)
            if not kept:
                continue
            labels = torch.tensor([item.label for item in kept])
            result = mark(marker, torch.stack(images).float() / 255, labels, key, config,
                          seed=image_seeds(seed, [item.rel for item in kept]), batch_size=len(kept))
            rows = []
            marked_u8 = torch.round(result.images * 255).to(torch.uint8).cpu()
            for index, item in enumerate(kept):
                if item.rel in done:
                    continue
                rel_out = names[item.rel]
                digest = write_png(_safe_target(out, rel_out), marked_u8[index])
                rows.append({
                    "source": item.rel, "output": rel_out, "label": item.label,
                    "source_sha256": source.source_sha256(item), "output_sha256": digest, "marked": True,
                    "psnr": _finite(float(result.psnr[index])), "shift": float(result.shift[index]),
                    "cosine": float(result.cosine[index]),
                })
            manifest.append(rows)
            bar.update(len(rows))
    finally:
        bar.close()


def _summary(out: Path, total: int, started: float, bad: list[dict[str, Any]]) -> dict[str, Any]:
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

"""Publishing a marked copy of a dataset: selection, marking in batches, resumable manifest, run record.

``mark_dataset`` marks a seeded random fraction of each class of an :class:`~radioactive.data.ImageSource`
and writes a complete dataset to ``out``: marked images as PNG at the same relative paths (a non-PNG source
``a/b.jpg`` becomes ``a/b.png``, or ``a/b.jpg.png`` if that name is taken), every other image copied or
hard-linked unchanged, ``manifest.jsonl`` (one row per image) and ``mark.json`` (settings, key fingerprint,
versions, summary). Carriers never leave the key.

Crash safety: every file is written atomically and a manifest row is appended only after its image is on
disk. A rerun with the same settings verifies every row (sha256 of the output, and of the source), keeps the
valid rows byte for byte, drops a torn last line, removes stale temporaries and redoes the rest. Batches are
planned from the full sorted selection, so a resumed run writes the same bytes as an uninterrupted one. A
lock file (``fcntl.flock``, released by the kernel even on SIGKILL) refuses a concurrent run into ``out``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import os
import shutil
import socket
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import torch

from ._io import atomic_write, atomic_write_json, sha256_file, versions
from .data import ImageSource, SourceItem, public_mode, write_png
from .errors import ConfigError, DatasetError, ImageReadError, KeyMismatchError, LockError, ManifestError
from .key import Key
from .mark import MarkConfig, image_seeds, mark

__all__ = ["mark_dataset", "select_marked", "output_names", "LOCK_NAME", "MANIFEST_NAME", "RECORD_NAME"]

log = logging.getLogger(__name__)

LOCK_NAME = ".radioactive-mark.lock"
MANIFEST_NAME = "manifest.jsonl"
RECORD_NAME = "mark.json"
_OWN_FILES = {LOCK_NAME, MANIFEST_NAME, RECORD_NAME}


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


@contextlib.contextmanager
def _lock(out: Path) -> Iterator[None]:
    path = out / LOCK_NAME
    handle = open(path, "a+")
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "{}"
            try:
                info = json.loads(holder)
            except json.JSONDecodeError:
                info = {}
            raise LockError(
                f"{out} is being written by another 'radioactive mark' run (pid {info.get('pid', '?')} on host "
                f"{info.get('host', '?')}, started {info.get('started', '?')}); wait for it to finish, or use "
                "another --out"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}))
        handle.flush()
        yield
    finally:
        handle.close()


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


def _prepare_out(out: Path, settings: dict[str, Any]) -> None:
    record_path = out / RECORD_NAME
    if record_path.is_file():
        try:
            record = json.loads(record_path.read_text())
        except json.JSONDecodeError:
            raise ManifestError(f"{record_path} is corrupt; use a new --out") from None
        before = record.get("settings", {})
        changed = sorted(name for name in settings if before.get(name) != settings[name])
        if changed:
            raise ConfigError(
                f"{out} holds a marking run with different settings ({', '.join(changed)}); rerun with the same "
                "options to resume it, or use a new --out"
            )
        return
    stray = [entry.name for entry in out.iterdir() if entry.name not in _OWN_FILES]
    if stray:
        raise ConfigError(f"{out} is not empty and holds no marking run ({stray[:3]}...); use a new or empty --out")


def _remove_stale_temporaries(out: Path) -> None:
    for folder, _dirs, files in os.walk(out):
        for name in files:
            if name.startswith(".") and name.endswith(".tmp"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(folder, name))


def _load_manifest(out: Path, source: ImageSource, names: dict[str, str], skip_bad: bool) -> dict[str, str]:
    """Verified rows by source id (raw lines kept verbatim); rewrites the manifest if any row was dropped."""
    path = out / MANIFEST_NAME
    if not path.is_file():
        return {}
    items = {item.rel: item for item in source.items}
    lines = path.read_bytes().split(b"\n")
    kept: dict[str, str] = {}
    dropped = 0
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
            rel = row["source"]
        except (json.JSONDecodeError, KeyError, TypeError):
            if number >= len(lines) - 1:  # a torn last line from an interrupted append
                dropped += 1
                continue
            raise ManifestError(f"{path} line {number} is corrupt; delete the output folder and mark again") from None
        item = items.get(rel)
        ok = item is not None and rel not in kept
        if ok and row.get("bad"):
            ok = False  # bad images are retried on every run (the file may have been fixed)
        elif ok:
            ok = (row.get("output") == names[rel] and row.get("marked") is not None
                  and _verify(out / names[rel], row.get("output_sha256")))
            if ok:
                with contextlib.suppress(ImageReadError, OSError):
                    ok = source.source_sha256(item) == row.get("source_sha256")
        if ok:
            kept[rel] = raw.decode()
        else:
            dropped += 1
    if dropped:
        log.info("resuming: %d manifest rows kept, %d dropped (torn, unverifiable or retried)", len(kept), dropped)
        with atomic_write(path, mode=public_mode()) as tmp:
            Path(tmp).write_text("".join(line + "\n" for line in kept.values()))
    return kept


def _verify(path: Path, digest: object) -> bool:
    try:
        return isinstance(digest, str) and path.is_file() and not path.is_symlink() and sha256_file(path) == digest
    except OSError:
        return False


class _Manifest:
    """Appends rows; flushes and fsyncs after each group so a row never precedes its image on disk."""

    def __init__(self, path: Path):
        self.handle = open(path, "a", encoding="utf-8")

    def append(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            self.handle.write("".join(json.dumps(row, allow_nan=False) + "\n" for row in rows))
            self.handle.flush()
            os.fsync(self.handle.fileno())

    def close(self) -> None:
        self.handle.close()


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
    with _lock(out):
        _prepare_out(out, settings)
        _remove_stale_temporaries(out)
        record = {"status": "running", "settings": settings, "key": key.describe(), "versions": versions()}
        atomic_write_json(out / RECORD_NAME, record, mode=public_mode())
        chosen = select_marked(source, fraction, classes, seed)
        names = output_names(source, chosen)
        done = _load_manifest(out, source, names, skip_bad)
        manifest = _Manifest(out / MANIFEST_NAME)
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
        atomic_write_json(out / RECORD_NAME, record, mode=public_mode())
    return summary


def _mark_all(source: ImageSource, out: Path, marker: Any, key: Key, config: MarkConfig, seed: int,
              batch_size: int | None, chosen: set[str], names: dict[str, str], done: dict[str, str],
              manifest: _Manifest, fail: Any, progress: bool) -> None:
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
    rows = [json.loads(line) for line in (out / MANIFEST_NAME).read_text().splitlines() if line.strip()]
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

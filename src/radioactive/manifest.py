"""The bookkeeping of a published folder: the lock, ``manifest.jsonl`` and ``mark.json``.

``manifest.jsonl`` holds one JSON row per source image (``source``, ``output``, ``label``, ``source_sha256``,
``output_sha256``, ``marked``, and for marked images ``psnr``, ``shift``, ``cosine``; ``bad`` and ``error`` for
unreadable ones). A row is appended only after its image is on disk, so a crash leaves at most a torn last
line. ``mark.json`` records the settings of the run (``settings``: ``config`` = ``MarkConfig.to_dict()``,
``seed``, ``key_fingerprint``, ...), the batch size the images are marked in (a resume plans the same
batches), the key's public description, versions and, once complete, the summary.
A lock file (``fcntl.flock``, released by the kernel even on SIGKILL) refuses a concurrent run into a folder.

Under ``torchrun`` each rank appends to its own part (``.radioactive-parts/manifest.rank-R.jsonl``) and one
rank merges the parts into ``manifest.jsonl``. ``.radioactive-stamps.jsonl`` caches the sha256 of every
output and source file by its ``stat`` stamp (:mod:`radioactive._stamps`), so a rerun verifies unchanged
files without reading them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from ._io import atomic_write, atomic_write_json
from ._stamps import Entry, StampCache, encode
from .data import public_mode
from .errors import ConfigError, DatasetError, ImageReadError, LockError, ManifestError

__all__ = [
    "LOCK_NAME",
    "MANIFEST_NAME",
    "RECORD_NAME",
    "STAMPS_NAME",
    "PARTS_NAME",
    "OWN_FILES",
    "VOLATILE_FILES",
    "part_paths",
    "has_parts",
    "merge_parts",
    "output_lock",
    "prepare_out",
    "remove_stale_temporaries",
    "load_verified_rows",
    "read_manifest_rows",
    "ManifestWriter",
    "read_mark_record",
    "write_mark_record",
]

log = logging.getLogger(__name__)

LOCK_NAME = ".radioactive-mark.lock"
MANIFEST_NAME = "manifest.jsonl"
RECORD_NAME = "mark.json"
STAMPS_NAME = ".radioactive-stamps.jsonl"
PARTS_NAME = ".radioactive-parts"
OWN_FILES = frozenset({LOCK_NAME, MANIFEST_NAME, RECORD_NAME, STAMPS_NAME, PARTS_NAME})
# What differs between two runs that publish the same bytes: times, the lock's holder, file stamps.
VOLATILE_FILES = frozenset({LOCK_NAME, RECORD_NAME, STAMPS_NAME})


@contextlib.contextmanager
def output_lock(out: Path) -> Iterator[None]:
    """Hold the lock of the output folder ``out`` (which exists); :class:`LockError` naming the holder if taken."""
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


def read_mark_record(folder: str | os.PathLike) -> dict[str, Any]:
    """The parsed ``mark.json`` of a published folder (or of the ``mark.json`` path itself).

    Raises:
        DatasetError: naming the file, when it is missing; :class:`ManifestError` (a DatasetError) when it is
            not a JSON object.
    """
    path = Path(folder)
    if path.name != RECORD_NAME or path.is_dir():
        path = path / RECORD_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DatasetError(f"{path} does not exist; expected the output folder of 'radioactive mark', which "
                           "records its settings there") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read the marking record ({exc})") from None
    try:
        record = json.loads(text)
    except json.JSONDecodeError:
        record = None
    if not isinstance(record, dict):
        raise ManifestError(f"{path} is corrupt (expected a JSON object written by 'radioactive mark'); mark the "
                            "data again into a new --out")
    return record


def write_mark_record(out: Path, record: dict[str, Any]) -> None:
    """Write ``mark.json`` atomically (mode from the umask)."""
    atomic_write_json(out / RECORD_NAME, record, mode=public_mode())


def prepare_out(out: Path, settings: dict[str, Any]) -> None:
    """Refuse an output folder holding another run (different ``settings``) or files that are not a run's."""
    if (out / RECORD_NAME).is_file():
        before = read_mark_record(out).get("settings", {})
        changed = sorted(name for name in settings if before.get(name) != settings[name])
        if changed:
            raise ConfigError(
                f"{out} holds a marking run with different settings ({', '.join(changed)}); rerun with the same "
                "options to resume it, or use a new --out"
            )
        return
    stray = [entry.name for entry in out.iterdir() if entry.name not in OWN_FILES]
    if stray:
        raise ConfigError(f"{out} is not empty and holds no marking run ({stray[:3]}...); use a new or empty --out")


def remove_stale_temporaries(out: Path) -> None:
    """Remove the temporaries (``.*.tmp``) an interrupted run left behind."""
    for folder, _dirs, files in os.walk(out):
        for name in files:
            if name.startswith(".") and name.endswith(".tmp"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(folder, name))


def _parsed_lines(path: Path) -> Iterator[tuple[int, bytes, dict[str, Any] | None, bool]]:
    """``(line number, raw line, row or None when unparsable, is the last line)`` of every non-blank line."""
    lines = path.read_bytes().split(b"\n")
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
        except ValueError:  # not JSON, or not UTF-8
            row = None
        if not isinstance(row, dict) or "source" not in row:
            row = None
        yield number, raw, row, number >= len(lines) - 1


def _rows(paths: list[Path]) -> Iterator[tuple[bytes, dict[str, Any] | None]]:
    """``(raw line, row)`` of every non-blank line of ``paths`` in order; ``row`` is None for a torn last line
    (an interrupted append).

    Raises:
        ManifestError: naming the file and line, when another line is corrupt.
    """
    for path in paths:
        for number, raw, row, last in _parsed_lines(path):
            if row is None and not last:
                raise ManifestError(f"{path} line {number} is corrupt; delete the output folder and mark again")
            yield raw, row


def read_manifest_rows(folder: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of ``folder``'s manifest, in file order; a torn last line (an interrupted append) is dropped.

    Raises:
        ManifestError: naming the line, when another line is corrupt.
    """
    return [row for _, row in _rows([Path(folder) / MANIFEST_NAME]) if row is not None]


def part_paths(out: Path, rank: int) -> tuple[Path, Path]:
    """``(manifest part, stamps part)`` of rank ``rank`` of a distributed run."""
    parts = out / PARTS_NAME
    return parts / f"manifest.rank-{rank}.jsonl", parts / f"stamps.rank-{rank}.jsonl"


def _parts(out: Path, kind: str) -> list[Path]:
    """The part files of ``kind`` (``manifest`` or ``stamps``) that ranks left, in rank order."""
    folder = out / PARTS_NAME
    if not folder.is_dir():
        return []
    found = []
    for path in folder.glob(f"{kind}.rank-*.jsonl"):
        number = path.name[len(kind) + len(".rank-"):-len(".jsonl")]
        if number.isdigit():
            found.append((int(number), path))
    return [path for _, path in sorted(found)]


def has_parts(out: Path) -> bool:
    """Whether an interrupted distributed run left rank parts in ``out``."""
    return bool(_parts(out, "manifest"))


def _remove_parts(out: Path) -> None:
    folder = out / PARTS_NAME
    if folder.is_dir():
        for path in folder.iterdir():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        with contextlib.suppress(OSError):
            folder.rmdir()


class _Listed(Protocol):
    """What resuming needs of a :class:`radioactive.sources.ImageSource` (which imports this module)."""

    items: list[Any]
    in_memory: bool

    def check_path(self, item: Any) -> Path: ...

    def source_sha256(self, item: Any) -> str: ...


def _row_files(out: Path) -> list[Path]:
    """The manifest (when there is one), then each rank's part."""
    main = out / MANIFEST_NAME
    return ([main] if main.is_file() else []) + _parts(out, "manifest")


def source_sha256(source: _Listed, item: Any, stamps: StampCache, *, trust: bool = True) -> str | None:
    """The source image's sha256 through the stamp cache (None when it cannot be read)."""
    if source.in_memory:
        return source.source_sha256(item)
    key = f"src:{item.rel}"
    # A file with the cached stamp is the very file hashed before (same inode, size and times): it is neither
    # read nor checked again for where it lies. Anything else goes through check_path and is hashed.
    digest = stamps.cached(key, item.path) if trust and item.path is not None else None
    if digest is not None:
        return digest
    try:
        path = source.check_path(item)
    except (ImageReadError, OSError):
        return None
    return stamps.sha256(key, path, trust=trust)


def load_verified_rows(out: Path, source: _Listed, names: dict[str, str], *, verify: str = "stat") -> dict[str, str]:
    """Verified rows by source id (raw lines kept verbatim), from the manifest and the parts ranks left.

    A row is kept when its source image is still listed, its output is where ``names`` puts it and hashes to
    the recorded sha256, and the source hashes to its recorded sha256; rows of bad images are always retried.
    With ``verify="stat"`` a file whose stamp (size, mtime, ctime, inode) is the one cached when it was last
    hashed is not read again; ``verify="full"`` reads every file. When a row was dropped or parts were found,
    the manifest is rewritten (rows of the manifest first, then of the parts, in rank order) and the parts are
    removed; the stamp cache is rewritten when it changed.
    """
    if verify not in ("stat", "full"):
        raise ConfigError(f"unknown verify mode {verify!r}; choose from ['stat', 'full']")
    parts = _parts(out, "manifest")
    stamps = StampCache.load([out / STAMPS_NAME, *_parts(out, "stamps")])
    trust = verify == "stat"
    items = {item.rel: item for item in source.items}
    prefix = os.path.join(out, "")  # plain strings: pathlib costs seconds over 10^5 rows
    kept: dict[str, str] = {}
    dropped = 0
    for raw, row in _rows(_row_files(out)):
        if row is None:  # a torn last line
            dropped += 1
            continue
        rel = row["source"]
        item = items.get(rel) if isinstance(rel, str) else None
        ok = item is not None and rel not in kept
        if ok and row.get("bad"):
            ok = False  # bad images are retried on every run (the file may have been fixed)
        elif ok:
            digest = row.get("output_sha256")
            ok = (row.get("output") == names[rel] and row.get("marked") is not None and isinstance(digest, str)
                  and stamps.sha256(f"out:{names[rel]}", prefix + names[rel], trust=trust) == digest
                  and source_sha256(source, item, stamps, trust=trust) == row.get("source_sha256"))
        if ok:
            kept[rel] = raw.decode()
        else:
            dropped += 1
    if dropped or parts:
        log.info("resuming: %d manifest rows kept, %d dropped (torn, unverifiable or retried), %d rank parts merged",
                 len(kept), dropped, len(parts))
        write_manifest(out, list(kept.values()))
    stamps.keep_only({f"out:{names[rel]}" for rel in kept} | {f"src:{rel}" for rel in kept})
    if stamps.changed or parts:
        stamps.save(out / STAMPS_NAME, public_mode())
    _remove_parts(out)
    if kept or dropped:
        log.info("resuming: %d files hashed, the others trusted by their unchanged stamps", stamps.hashed)
    return kept


def write_manifest(out: Path, lines: list[str]) -> None:
    """Replace the manifest atomically with ``lines`` (raw JSON rows, without newlines)."""
    with atomic_write(out / MANIFEST_NAME, mode=public_mode()) as tmp:
        Path(tmp).write_text("".join(line + "\n" for line in lines))


def merge_parts(out: Path, order: Any) -> bool:
    """Fold the rank parts of a finished run into the manifest and the stamp cache; returns True if the
    manifest changed.

    The rows (all verified or written by this run) are sorted by ``order(source id, bad)`` (a stable sort,
    so rows with equal keys keep their order) and the manifest is rewritten only if that changes it.
    """
    rows: dict[str, tuple[str, bool]] = {}
    for raw, row in _rows(_row_files(out)):
        if row is not None:
            rows.setdefault(row["source"], (raw.decode(), bool(row.get("bad"))))
    lines = [line for rel, (line, _) in sorted(rows.items(), key=lambda pair: order(pair[0], pair[1][1]))]
    path = out / MANIFEST_NAME
    changed = "".join(line + "\n" for line in lines).encode() != (path.read_bytes() if path.is_file() else b"")
    if changed:
        write_manifest(out, lines)
    stamp_parts = _parts(out, "stamps")
    if stamp_parts:
        stamps = StampCache.load([out / STAMPS_NAME, *stamp_parts])
        stamps.save(out / STAMPS_NAME, public_mode())
    _remove_parts(out)
    return changed


class ManifestWriter:
    """Appends rows (and the stamps of their files); flushes and fsyncs after each group so a row never
    precedes its image on disk. Files are opened on the first append."""

    def __init__(self, path: Path, stamps_path: Path | None = None):
        self.path = path
        self.stamps_path = stamps_path
        self.handle: Any = None
        self.stamps: Any = None

    def append(self, rows: list[dict[str, Any]], stamps: list[Entry] | None = None) -> None:
        if stamps and self.stamps_path is not None:
            if self.stamps is None:
                self.stamps_path.parent.mkdir(parents=True, exist_ok=True)
                self.stamps = open(self.stamps_path, "a", encoding="utf-8")
            self.stamps.write(encode(stamps))
            self.stamps.flush()
        if rows:
            if self.handle is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.handle = open(self.path, "a", encoding="utf-8")
            self.handle.write("".join(json.dumps(row, allow_nan=False) + "\n" for row in rows))
            self.handle.flush()
            os.fsync(self.handle.fileno())

    def close(self) -> None:
        for handle in (self.handle, self.stamps):
            if handle is not None:
                handle.close()

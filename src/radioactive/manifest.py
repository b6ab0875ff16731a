"""The bookkeeping of a published folder: the lock, ``manifest.jsonl`` and ``mark.json``.

``manifest.jsonl`` holds one JSON row per source image (``source``, ``output``, ``label``, ``source_sha256``,
``output_sha256``, ``marked``, and for marked images ``psnr``, ``shift``, ``cosine``; ``bad`` and ``error`` for
unreadable ones). A row is appended only after its image is on disk, so a crash leaves at most a torn last
line. ``mark.json`` records the settings of the run (``settings``: ``config`` = ``MarkConfig.to_dict()``,
``seed``, ``key_fingerprint``, ...), the key's public description, versions and, once complete, the summary.
A lock file (``fcntl.flock``, released by the kernel even on SIGKILL) refuses a concurrent run into a folder.
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

from ._io import atomic_write, atomic_write_json, sha256_file
from .data import public_mode
from .errors import ConfigError, DatasetError, ImageReadError, LockError, ManifestError

__all__ = [
    "LOCK_NAME",
    "MANIFEST_NAME",
    "RECORD_NAME",
    "OWN_FILES",
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
OWN_FILES = frozenset({LOCK_NAME, MANIFEST_NAME, RECORD_NAME})


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


def read_manifest_rows(folder: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of ``folder``'s manifest, in file order; a torn last line (an interrupted append) is dropped.

    Raises:
        ManifestError: naming the line, when another line is corrupt.
    """
    path = Path(folder) / MANIFEST_NAME
    rows = []
    for number, _raw, row, last in _parsed_lines(path):
        if row is None:
            if last:
                continue
            raise ManifestError(f"{path} line {number} is corrupt; delete the output folder and mark again")
        rows.append(row)
    return rows


class _Listed(Protocol):
    """What resuming needs of a :class:`radioactive.sources.ImageSource` (which imports this module)."""

    items: list[Any]

    def source_sha256(self, item: Any) -> str: ...


def load_verified_rows(out: Path, source: _Listed, names: dict[str, str]) -> dict[str, str]:
    """Verified rows by source id (raw lines kept verbatim); rewrites the manifest if any row was dropped.

    A row is kept when its source image is still listed, its output is where ``names`` puts it and hashes to
    the recorded sha256, and the source hashes to its recorded sha256; rows of bad images are always retried.
    """
    path = out / MANIFEST_NAME
    if not path.is_file():
        return {}
    items = {item.rel: item for item in source.items}
    kept: dict[str, str] = {}
    dropped = 0
    for number, raw, row, last in _parsed_lines(path):
        if row is None:
            if last:  # a torn last line from an interrupted append
                dropped += 1
                continue
            raise ManifestError(f"{path} line {number} is corrupt; delete the output folder and mark again")
        rel = row["source"]
        item = items.get(rel) if isinstance(rel, str) else None
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


class ManifestWriter:
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

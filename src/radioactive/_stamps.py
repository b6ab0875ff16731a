"""A cache of file hashes keyed by ``stat``, so that resuming trusts unchanged files without reading them.

Each entry says: when the file had this stamp (size, mtime_ns, ctime_ns, inode), its sha256 was this. The
stamp is taken *before* the file is hashed, so a change during or after hashing shows as a different stamp
and the file is hashed again. ``ctime`` cannot be set from user space (``touch -d`` sets only atime and
mtime), so a file rewritten with the same size and a restored mtime is still noticed; copying or moving
the folder changes inodes and ctimes, which costs one full re-hash and nothing else. Like git's index, an
entry trusts the filesystem's clock: a file rewritten within the same timestamp tick, keeping its size and
inode, right after its stamp was taken, would go unnoticed (``--verify full`` re-hashes everything).

The cache is a JSON-lines file of ``[key, size, mtime_ns, ctime_ns, inode, sha256]``; later lines win, and
an unreadable line only means a re-hash.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from ._io import atomic_write, sha256_file

__all__ = ["Stamp", "Entry", "file_stamp", "StampCache"]

Stamp = tuple[int, int, int, int]  # (size, mtime_ns, ctime_ns, inode)
Entry = tuple[str, Stamp, str]  # (key, stamp, sha256)


def file_stamp(path: str | os.PathLike) -> Stamp | None:
    """The stamp of a regular file (not following a final symbolic link); None if it is not one."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if not (st.st_mode & 0o170000 == 0o100000):  # S_ISREG
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def encode(entries: Iterable[Entry]) -> str:
    return "".join(json.dumps([key, *stamp, digest]) + "\n" for key, stamp, digest in entries)


class StampCache:
    """Hashes of files by key (``out:<path>``, ``src:<path>``), trusted while their stamp is unchanged."""

    def __init__(self) -> None:
        self.entries: dict[str, tuple[Stamp, str]] = {}
        self.changed = False  # entries differ from what was loaded
        self.hashed = 0  # files read this run

    @classmethod
    def load(cls, paths: Iterable[Path]) -> StampCache:
        cache = cls()
        for path in paths:
            try:
                lines = path.read_bytes().split(b"\n")
            except OSError:
                continue
            for raw in lines:
                try:
                    key, size, mtime, ctime, ino, digest = json.loads(raw)
                    stamp = (int(size), int(mtime), int(ctime), int(ino))
                except (ValueError, TypeError):  # blank, torn or foreign: that file is hashed again
                    continue
                if isinstance(key, str) and isinstance(digest, str):
                    cache.entries[key] = (stamp, digest)
        return cache

    def add(self, entries: Iterable[Entry]) -> None:
        for key, stamp, digest in entries:
            if self.entries.get(key) != (stamp, digest):
                self.entries[key] = (stamp, digest)
                self.changed = True

    def cached(self, key: str, path: str | os.PathLike) -> str | None:
        """The cached sha256 if ``path`` (not following a final link) still has the cached stamp, else None."""
        cached = self.entries.get(key)
        return cached[1] if cached is not None and cached[0] == file_stamp(path) else None

    def sha256(self, key: str, path: str | os.PathLike, *, trust: bool = True) -> str | None:
        """The file's sha256: the cached one while its stamp is unchanged (and ``trust``), else read it."""
        stamp = file_stamp(path)
        if stamp is None:
            return None
        cached = self.entries.get(key)
        if trust and cached is not None and cached[0] == stamp:
            return cached[1]
        try:
            digest = sha256_file(path)
        except OSError:
            return None
        self.hashed += 1
        self.add([(key, stamp, digest)])
        return digest

    def keep_only(self, keys: set[str]) -> None:
        """Forget entries of files no longer described by the manifest."""
        stale = [key for key in self.entries if key not in keys]
        for key in stale:
            del self.entries[key]
        self.changed = self.changed or bool(stale)

    def save(self, path: Path, mode: int) -> None:
        with atomic_write(path, mode=mode) as tmp:
            Path(tmp).write_text(encode((key, stamp, digest) for key, (stamp, digest) in self.entries.items()))
        self.changed = False

"""Small file helpers shared by every module that writes: atomic writes, hashing, provenance."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import platform
import stat
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import KeyFileError, OutputWriteError

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_json", "save_png", "sha256_file", "sha256_bytes",
           "versions"]

_NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: int | None = None) -> Iterator[Path]:
    """Yield a temporary path in the destination's folder; rename it over ``path`` only on success.

    A crash or an exception (a full disk included) leaves no partial file at ``path`` and removes the
    temporary. ``mode`` (e.g. ``0o600``) is applied before the rename, so the file is never visible with
    wider permissions.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        if mode is not None:
            os.chmod(tmp_path, mode)
        yield tmp_path
        if mode is not None:
            os.chmod(tmp_path, mode)
        with open(tmp_path, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp_path, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        code = _no_space_errno(exc)
        if code is not None and not isinstance(exc, OutputWriteError):
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else os.strerror(code)
            raise OutputWriteError(
                code, f"could not write {str(path)!r}: {reason}; no partial file was left (free some space and rerun)"
            ) from exc
        raise


def _no_space_errno(exc: BaseException) -> int | None:
    """The errno of a full disk / quota / size-limit failure, also when a library (safetensors) wraps it."""
    if isinstance(exc, OSError):
        return exc.errno if exc.errno in _NO_SPACE else None
    if isinstance(exc, Exception):
        text = str(exc)
        for code in _NO_SPACE:
            if f"os error {code})" in text:
                return code
    return None


def atomic_write_bytes(path: str | os.PathLike, data: bytes, mode: int | None = None) -> None:
    with atomic_write(path, mode=mode) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(data)


def atomic_write_json(path: str | os.PathLike, obj: Any, mode: int | None = None) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n").encode(), mode=mode)


def save_png(fig: Any, path: str | os.PathLike, *, dpi: int = 110, tight: bool = False) -> Path:
    """Write a matplotlib figure as PNG atomically and close it. No timestamp or software name goes into the
    metadata, so the same plot is the same file (committed plots change only when their numbers do)."""
    import matplotlib.pyplot as plt

    path = Path(path)
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight" if tight else None, metadata={"Software": None})
    plt.close(fig)
    return path


def open_secret(path: str | os.PathLike, what: str, hint: str) -> Path:
    """Check a secret file before it is read (a key, a twin sidecar): it must be a file, and a warning names
    it when other users can read it. ``what`` names the kind of file in messages, ``hint`` says where the
    right file comes from."""
    path = Path(path)
    if not path.is_file():
        problem = "does not exist (that path is a folder)" if path.is_dir() else "does not exist"
        raise KeyFileError(f"{what} {str(path)!r} {problem}; {hint}")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        warnings.warn(f"{what} {str(path)!r} is readable by other users (mode {oct(mode)}); run: chmod 600 {path}",
                      stacklevel=3)
    return path


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def versions() -> dict[str, str]:
    """Versions of the software that produced a result, for provenance records.

    A module already imported gives its ``__version__`` (torch's names its build, e.g. ``+cu130``); the others
    are read from the installed distributions' metadata, since importing torchvision, kornia, scipy and timm
    only to read a version cost about 2 s of every command.
    """
    from importlib import metadata

    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in ("radioactive", "torch", "torchvision", "kornia", "numpy", "scipy", "timm"):
        module = sys.modules.get(name)
        if module is not None and hasattr(module, "__version__"):
            out[name] = str(module.__version__)
            continue
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out

"""Fashion-MNIST from local files: Debian's ``dataset-fashion-mnist`` or torchvision's download folder.

Nothing is downloaded here; ``scripts/setup.sh`` puts the files in place.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch

from .errors import DatasetError

__all__ = ["CLASSES", "find_fashion_mnist", "load_fashion_mnist"]

CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot")
_SEARCH = (
    "/usr/share/datasets/fashion-mnist",
    "data/FashionMNIST/raw",
    "~/.cache/radioactive/FashionMNIST/raw",
)


def find_fashion_mnist() -> Path:
    """Folder holding the four idx files (``$RADIOACTIVE_FASHION_MNIST`` first)."""
    candidates = [os.environ.get("RADIOACTIVE_FASHION_MNIST", "")] + list(_SEARCH)
    for candidate in candidates:
        if not candidate:
            continue
        folder = Path(candidate).expanduser()
        if (folder / "train-images-idx3-ubyte.gz").is_file() or (folder / "train-images-idx3-ubyte").is_file():
            return folder
    raise DatasetError(
        "Fashion-MNIST not found: install Debian's package dataset-fashion-mnist, run scripts/setup.sh, or set "
        f"RADIOACTIVE_FASHION_MNIST to a folder with the idx files (searched {[c for c in candidates if c]})"
    )


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    magic = int.from_bytes(data[0:4], "big")
    ndim = magic & 0xFF
    if magic >> 8 != 0x08:
        raise DatasetError(f"{str(path)!r} is not an unsigned-byte idx file")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    array = np.frombuffer(data, dtype=np.uint8, offset=offset)
    if array.size != int(np.prod(shape)):
        raise DatasetError(f"{str(path)!r} is truncated: {array.size} values for shape {shape}")
    return array.reshape(shape)


def load_fashion_mnist(split: str = "train", root: str | os.PathLike | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``(N, 1, 28, 28)`` uint8 and labels ``(N,)`` int64 of the ``train`` (60k) or ``test`` (10k) split."""
    if split not in ("train", "test"):
        raise ValueError(f"unknown split {split!r}; choose from ['train', 'test']")
    folder = Path(root) if root is not None else find_fashion_mnist()
    stem = "train" if split == "train" else "t10k"
    paths = []
    for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
        path = folder / f"{stem}-{kind}.gz"
        paths.append(path if path.is_file() else folder / f"{stem}-{kind}")
    images = torch.from_numpy(_read_idx(paths[0]).copy()).unsqueeze(1)
    labels = torch.from_numpy(_read_idx(paths[1]).astype(np.int64))
    return images, labels

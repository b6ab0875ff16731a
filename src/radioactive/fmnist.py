"""Fashion-MNIST from local files, and its named splits.

Nothing is downloaded here; ``scripts/setup.sh`` puts the files in place (Debian's ``dataset-fashion-mnist``
or torchvision's download folder).

The owner of the data holds three named splits, the same images in every command and in the API:

- ``owner`` (55,000): the images the owner publishes (``radioactive mark --data fashion-mnist``) and that a
  suspect trains on;
- ``holdout`` (5,000): clean images carved out of the 60,000-image training file by a seeded permutation
  (seed 0) and never published: the reference and probe images of the tests;
- ``test`` (10,000): the test file, for accuracy.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch

from .errors import DatasetError

__all__ = [
    "CLASSES",
    "HOLDOUT",
    "SPLITS",
    "find_fashion_mnist",
    "load_fashion_mnist",
    "holdout_indices",
    "fashion_mnist_indices",
    "fashion_mnist_splits",
]

CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot")
SPLITS = ("owner", "holdout", "test")
HOLDOUT = 5000  # images of the training file held out; every committed number depends on this and seed 0
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


def load_fashion_mnist(file: str = "train", root: str | os.PathLike | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``(N, 1, 28, 28)`` uint8 and labels ``(N,)`` int64 of one idx file: ``train`` (60k) or ``test``
    (10k). These are the files, not the named splits: see :func:`fashion_mnist_splits`."""
    if file not in ("train", "test"):
        raise DatasetError(f"unknown Fashion-MNIST file {file!r}; choose from ['train', 'test'] (the named "
                           f"splits {list(SPLITS)} come from fashion_mnist_splits)")
    folder = Path(root) if root is not None else find_fashion_mnist()
    stem = "train" if file == "train" else "t10k"
    paths = []
    for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
        path = folder / f"{stem}-{kind}.gz"
        paths.append(path if path.is_file() else folder / f"{stem}-{kind}")
    images = torch.from_numpy(_read_idx(paths[0]).copy()).unsqueeze(1)
    labels = torch.from_numpy(_read_idx(paths[1]).astype(np.int64))
    return images, labels


def holdout_indices(count: int, *, holdout: int = HOLDOUT, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(held, kept)``: sorted indices of ``holdout`` images drawn from ``count`` by a seeded permutation, and
    of the rest. The one rule that carves the never-published images out of a dataset.

    Raises:
        DatasetError: ``holdout`` is not in ``[0, count)``.
    """
    if not 0 <= holdout < count:
        raise DatasetError(f"cannot hold out {holdout} of {count} images; hold out between 0 and {count - 1}")
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    return order[:holdout].sort().values, order[holdout:].sort().values


def fashion_mnist_indices(*, root: str | os.PathLike | None = None, holdout: int = HOLDOUT) -> dict[str, torch.Tensor]:
    """Original indices (into the 60k training file), sorted, of the ``owner`` and ``holdout`` splits."""
    _, labels = load_fashion_mnist("train", root)
    held, kept = holdout_indices(len(labels), holdout=holdout)
    return {"owner": kept, "holdout": held}


def fashion_mnist_splits(
    *, root: str | os.PathLike | None = None, holdout: int = HOLDOUT
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The named splits ``owner``, ``holdout`` and ``test``: uint8 images ``(N, 1, 28, 28)``, int64 labels ``(N,)``.

    ``owner`` and ``holdout`` keep the training file's order. ``holdout`` other than 5000 changes which images
    are owner and holdout images; only the default is what the command line and the committed results use.
    """
    images, labels = load_fashion_mnist("train", root)
    held, kept = holdout_indices(len(labels), holdout=holdout)
    test_images, test_labels = load_fashion_mnist("test", root)
    return {
        "owner": (images[kept], labels[kept]),
        "holdout": (images[held], labels[held]),
        "test": (test_images, test_labels),
    }

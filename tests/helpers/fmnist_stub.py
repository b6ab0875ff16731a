"""A small stand-in for Fashion-MNIST's idx files, pointed to by ``RADIOACTIVE_FASHION_MNIST``.

It keeps the real files' layout and the real owner / holdout rule (``radioactive.fmnist.HOLDOUT`` training
images held out by the seed-0 permutation) with only a few owner and test images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from radioactive.fmnist import HOLDOUT


def write_idx(path: Path, array: np.ndarray) -> None:
    """``array`` as an unsigned-byte idx file (the format of the Fashion-MNIST downloads)."""
    header = (0x08 << 8 | array.ndim).to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def fake_fashion_mnist(folder: Path, monkeypatch, owner_images: int, test_images: int) -> Path:
    """Distinct random images with balanced labels: ``HOLDOUT + owner_images`` training, ``test_images`` test."""
    rng = np.random.default_rng(0)
    folder.mkdir()
    for stem, count in (("train", HOLDOUT + owner_images), ("t10k", test_images)):
        write_idx(folder / f"{stem}-images-idx3-ubyte", rng.integers(0, 256, (count, 28, 28)))
        write_idx(folder / f"{stem}-labels-idx1-ubyte", rng.permutation(np.arange(count) % 10))
    monkeypatch.setenv("RADIOACTIVE_FASHION_MNIST", str(folder))
    return folder

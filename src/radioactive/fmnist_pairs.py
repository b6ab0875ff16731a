"""Fashion-MNIST pairs: a 100-class data set of two Fashion-MNIST images side by side, and its 10-class control.

A composite is a left and a right Fashion-MNIST image of one named split (:mod:`radioactive.fmnist`)
concatenated along the width: uint8 ``(1, 28, 56)``. Two named sources hold the same composites and differ only in
the label, so that the number of classes C is the only thing that changes between them:

- ``fashion-mnist-pairs``: 100 classes, label ``10 * a + b`` for left class ``a`` and right class ``b``;
- ``fashion-mnist-pairs10``: 10 classes, label ``a`` (the control).

Each has the splits ``owner`` (54,700 composites: 547 per pair class), ``holdout`` (4,700: 47 per pair class) and
``test`` (10,000: 100 per pair class), each composed only of its own Fashion-MNIST split's images, so no image is
in two splits. Within a split an image is at most once a left half and at most once a right half, and never both
halves of one composite; every pair class ``(a, b)`` has the same count, the most the split's rarest class allows
(class ``a`` fills ``10 n`` left halves). The composition is a fixed function of the split's labels: seeded
permutations whose seeds derive by SHA-256 from a constant tag, computed in well under a second and kept in memory
as index pairs (nothing is written to disk).

Horizontal flips swap the two halves, and so change the label of either source: train on them without flips.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass

import torch

from .errors import DatasetError
from .fmnist import CLASSES, HOLDOUT, SPLITS, holdout_indices, load_fashion_mnist

__all__ = [
    "PAIRS",
    "PAIRS10",
    "PAIR_SOURCES",
    "PairedImages",
    "PairSplit",
    "pair_positions",
    "pair_classes",
    "pairs_spec",
    "pairs_split",
    "fashion_mnist_pairs_splits",
    "warn_flips",
]

PAIRS = "fashion-mnist-pairs"
PAIRS10 = "fashion-mnist-pairs10"
PAIR_SOURCES = {PAIRS: 100, PAIRS10: 10}  # name -> number of classes
# Every seed derives from this tag (never from a source's name): both sources hold the same composites.
_TAG = "radioactive/fashion-mnist-pairs/v1"
_BASE = len(CLASSES)


def _seed(*parts: object) -> int:
    digest = hashlib.sha256("/".join([_TAG, *map(str, parts)]).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def _permutation(count: int, *parts: object) -> torch.Tensor:
    return torch.randperm(count, generator=torch.Generator().manual_seed(_seed(*parts)))


def pair_positions(labels: torch.Tensor, split: str, *, per_pair: int | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """The composites of one split: ``(left, right)``, positions into ``labels`` ``(M,)`` (the split's
    Fashion-MNIST labels), each ``(100 * n,)`` in one seeded order; composite ``k`` is ``left[k] | right[k]``.

    For each class ``c`` one seeded permutation of its images gives its ``10 n`` left halves (``n`` for each right
    class, in class order) and another its ``10 n`` right halves (``n`` for each left class). Where the two halves
    of a same-class composite would be one image, its right half is swapped with the next composite's of that
    class pair, which never makes a new coincidence.

    Args:
        labels: int64 ``(M,)`` in ``[0, 10)``.
        split: the split's name; part of every seed.
        per_pair: ``n``, the composites per pair class; default the most the rarest class allows
            (its count // 10).

    Raises:
        DatasetError: a class with fewer than ``10 n`` images, or ``n`` < 2.
    """
    counts = torch.bincount(labels, minlength=_BASE)  # (10,)
    most = int(counts.min()) // _BASE
    n = most if per_pair is None else per_pair
    if n < 2 or n > most:
        raise DatasetError(f"cannot compose {n} pairs per class from the {split!r} split: its rarest class has "
                           f"{int(counts.min())} images (room for {most} per pair class; at least 2 are needed)")
    left = torch.empty(_BASE, _BASE, n, dtype=torch.int64)  # [a, b, k]
    right = torch.empty(_BASE, _BASE, n, dtype=torch.int64)  # [a, b, k]
    for cls in range(_BASE):
        members = torch.nonzero(labels == cls).flatten()  # (count,)
        left[cls] = members[_permutation(len(members), split, cls, "left")[: _BASE * n]].view(_BASE, n)
        right[:, cls] = members[_permutation(len(members), split, cls, "right")[: _BASE * n]].view(_BASE, n)
    for cls in range(_BASE):
        halves, others = left[cls, cls].tolist(), right[cls, cls].tolist()
        for k in range(n):
            if halves[k] == others[k]:
                others[k], others[(k + 1) % n] = others[(k + 1) % n], others[k]
        right[cls, cls] = torch.tensor(others, dtype=torch.int64)
    order = _permutation(_BASE * _BASE * n, split, "order")
    return left.reshape(-1)[order], right.reshape(-1)[order]


def pair_classes(num_classes: int) -> list[str]:
    """Class names (index -> name): ``left+right`` Fashion-MNIST names for 100 classes, its own for 10."""
    if num_classes == _BASE:
        return list(CLASSES)
    return [f"{CLASSES[label // _BASE]}+{CLASSES[label % _BASE]}" for label in range(_BASE * _BASE)]


class PairedImages:
    """Composites made on indexing: ``images[left[i]]`` and ``images[right[i]]`` side by side.

    Indexing with an int gives uint8 ``(c, H, 2W)``, with an index tensor ``(N, c, H, 2W)``; ``shape`` is that of
    the whole stack, which is never held in memory.
    """

    def __init__(self, images: torch.Tensor, left: torch.Tensor, right: torch.Tensor):
        self.images = images  # (M, c, H, W): a whole idx file
        self.left = left  # (N,) indices into images
        self.right = right

    @property
    def shape(self) -> torch.Size:
        count, channels, height, width = len(self.left), *self.images.shape[1:]
        return torch.Size((count, channels, height, 2 * width))

    def __len__(self) -> int:
        return len(self.left)

    def __getitem__(self, index: int | torch.Tensor) -> torch.Tensor:
        return torch.cat((self.images[self.left[index]], self.images[self.right[index]]), dim=-1)


@dataclass(frozen=True)
class PairSplit:
    """One split of a pairs source.

    Attributes:
        images: the composites, uint8 ``(N, 1, 28, 56)`` on indexing.
        labels: int64 ``(N,)``: ``10 a + b`` (100 classes) or ``a`` (10).
        left, right: int64 ``(N,)``: the halves' indices into the split's idx file (the training file for
            ``owner`` and ``holdout``, the test file for ``test``).
        ids: ``SPLIT/<position>-<left index>-<right index>.png``, the same in both sources.
        classes: class names (index -> name).
    """

    images: PairedImages
    labels: torch.Tensor
    left: torch.Tensor
    right: torch.Tensor
    ids: list[str]
    classes: list[str]


def pairs_spec(text: str) -> tuple[str, str] | None:
    """``(source, split)`` of a ``fashion-mnist-pairs[10][:SPLIT]`` spec (no split: ``owner``); None for any
    other spec.

    Raises:
        DatasetError: an unknown split, naming the spec and the valid ones.
    """
    name, colon, split = text.partition(":")
    if name not in PAIR_SOURCES:
        return None
    if not colon:
        return name, "owner"
    if split in SPLITS:
        return name, split
    valid = [name] + [f"{name}:{option}" for option in SPLITS]
    raise DatasetError(f"unknown split {split!r} in {text!r}; choose from {valid} (owner: the images the owner "
                       "publishes, holdout: never published, test: for accuracy)")


def _check_source(name: str) -> int:
    if name not in PAIR_SOURCES:
        raise DatasetError(f"unknown pairs source {name!r}; choose from {list(PAIR_SOURCES)}")
    return PAIR_SOURCES[name]


def _compose(name: str, split: str, images: torch.Tensor, labels: torch.Tensor, members: torch.Tensor
             ) -> PairSplit:
    left_pos, right_pos = pair_positions(labels[members], split)
    left, right = members[left_pos], members[right_pos]  # (N,) into the idx file
    num_classes = _check_source(name)
    pair_labels = labels[left] * _BASE + labels[right] if num_classes > _BASE else labels[left].clone()
    width, index_width = len(str(len(left) - 1)), len(str(len(labels) - 1))
    ids = [f"{split}/{position:0{width}d}-{a:0{index_width}d}-{b:0{index_width}d}.png"
           for position, (a, b) in enumerate(zip(left.tolist(), right.tolist(), strict=True))]
    return PairSplit(PairedImages(images, left, right), pair_labels, left, right, ids, pair_classes(num_classes))


def _members(split: str, count: int, holdout: int) -> torch.Tensor:
    if split == "test":
        return torch.arange(count)
    held, kept = holdout_indices(count, holdout=holdout)
    return kept if split == "owner" else held


def pairs_split(name: str, split: str, *, root: str | os.PathLike | None = None, holdout: int = HOLDOUT
                ) -> PairSplit:
    """One split (``owner``, ``holdout``, ``test``) of ``fashion-mnist-pairs`` or ``fashion-mnist-pairs10``.

    Raises:
        DatasetError: an unknown source or split; Fashion-MNIST not found.
    """
    _check_source(name)
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r} of {name}; choose from {list(SPLITS)}")
    images, labels = load_fashion_mnist("test" if split == "test" else "train", root)
    return _compose(name, split, images, labels, _members(split, len(labels), holdout))


def warn_flips(name: str, flip: bool) -> None:
    """Warn when a model is trained with random horizontal flips on a pairs source (they change the labels)."""
    if flip and name in PAIR_SOURCES:
        warnings.warn(f"random horizontal flips swap the two halves of {name} images and so change their label; "
                      "train without them (flip = false in the recipe, or --no-augment)", stacklevel=3)


def fashion_mnist_pairs_splits(name: str = PAIRS, *, root: str | os.PathLike | None = None,
                               holdout: int = HOLDOUT) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The splits ``owner``, ``holdout`` and ``test`` of a pairs source, as uint8 images ``(N, 1, 28, 56)`` and
    int64 labels ``(N,)`` (in memory: 86 MB for ``owner``), like :func:`radioactive.fmnist.fashion_mnist_splits`.

    ``holdout`` other than 5000 changes which Fashion-MNIST images are owner and holdout images, and so the
    composites.
    """
    _check_source(name)
    out = {}
    for file in ("train", "test"):
        images, labels = load_fashion_mnist(file, root)
        for split in (("owner", "holdout") if file == "train" else ("test",)):
            pairs = _compose(name, split, images, labels, _members(split, len(labels), holdout))
            out[split] = (pairs.images[torch.arange(len(pairs.labels))], pairs.labels)
    return {split: out[split] for split in SPLITS}

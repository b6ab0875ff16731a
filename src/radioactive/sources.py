"""Listing image datasets, and reading them whole as labelled tensors.

A dataset is named by one spec string, the same in every command and in the API:

- ``fashion-mnist`` (= ``fashion-mnist:owner``), ``fashion-mnist:holdout``, ``fashion-mnist:test``: the named
  splits of :mod:`radioactive.fmnist`;
- ``fashion-mnist-pairs[:SPLIT]`` (100 classes) and ``fashion-mnist-pairs10[:SPLIT]`` (its 10-class control): the
  same splits composed two images side by side, 28 x 56 (:mod:`radioactive.fmnist_pairs`);
- a class-subfolder tree ``ROOT/<class>/.../<image>`` (only the top level names classes);
- a CSV or JSONL list of ``(path, label)`` rows (paths relative to the list's folder, or to ``root``);
- for :func:`load_labelled`, also the output folder of ``radioactive mark``, read through its manifest.

Every image is decoded by :mod:`radioactive.data`. Listing refuses symbolic links leading out of the source
folder (:class:`ImageReadError` naming the file) and list rows whose path escapes the root
(:class:`ManifestError` naming the row).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from ._io import sha256_bytes, sha256_file
from ._lists import MAX_CLASSES, read_list, safe_rel
from .data import DEFAULT_MAX_PIXELS, image_shape, read_image
from .errors import DatasetError, ImageReadError, ManifestError

__all__ = [
    "IMAGE_EXTENSIONS",
    "SourceItem",
    "ImageSource",
    "open_source",
    "LabelledImages",
    "load_labelled",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
# Listed so that the reader refuses them by name instead of a dataset silently losing them.
_REFUSED_EXTENSIONS = (".tif", ".tiff")
FASHION_MNIST = "fashion-mnist"


@dataclass(frozen=True)
class SourceItem:
    """One image of a source: its relative id (a POSIX path inside the source), label and file (or index)."""

    rel: str
    label: int
    path: Path | None = None
    index: int | None = None


class ImageSource:
    """A listed dataset: ``items`` sorted by relative id, ``classes`` (index -> name), lazy decoding.

    Iterating yields ``(image uint8 (c, H, W), label, relative_id)``.
    """

    def __init__(self, description: str, items: list[SourceItem], classes: list[str], *, root: Path | None,
                 max_pixels: int = DEFAULT_MAX_PIXELS, arrays: torch.Tensor | None = None):
        self.description = description
        self.items = items
        self.classes = classes
        self.root = root
        self.max_pixels = max_pixels
        self._arrays = arrays

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, int, str]]:
        for item in self.items:
            yield self.read(item), item.label, item.rel

    @property
    def in_memory(self) -> bool:
        return self._arrays is not None

    def check_path(self, item: SourceItem) -> Path:
        """The item's file, refused if it is missing or a link that leads out of the source folder."""
        assert item.path is not None and self.root is not None
        try:
            real = item.path.resolve(strict=True)
        except (OSError, RuntimeError):
            raise ImageReadError(f"{item.rel}: file does not exist or is a broken link") from None
        if not real.is_relative_to(self.root):
            raise ImageReadError(f"{item.rel}: refused: a symbolic link leading outside the source folder ({real})")
        if not real.is_file():
            raise ImageReadError(f"{item.rel}: not a regular file")
        return real

    def read(self, item: SourceItem) -> torch.Tensor:
        if self._arrays is not None:
            assert item.index is not None
            return self._arrays[item.index].clone()
        return read_image(self.check_path(item), max_pixels=self.max_pixels, name=item.rel)

    def header_size(self, item: SourceItem) -> tuple[int, int, int]:
        """``(c, H, W)`` from the header only (after EXIF rotation); raises ImageReadError like ``read``."""
        if self._arrays is not None:
            return tuple(self._arrays.shape[1:])  # type: ignore[return-value]
        return image_shape(self.check_path(item), max_pixels=self.max_pixels, name=item.rel)

    def source_sha256(self, item: SourceItem) -> str:
        if self._arrays is not None:
            assert item.index is not None
            return sha256_bytes(self._arrays[item.index].contiguous().numpy().tobytes())
        return sha256_file(self.check_path(item))


def _folder_source(root: Path, max_pixels: int) -> ImageSource:
    linked = sorted(entry.name for entry in root.iterdir() if entry.is_symlink() and entry.is_dir())
    if linked:
        raise DatasetError(
            f"{root}: class folder(s) {linked} are symbolic links, which are not followed; copy them into SRC "
            "or list their images in a CSV/JSONL file"
        )
    classes = sorted(
        entry.name for entry in root.iterdir()
        if entry.is_dir() and not entry.name.startswith(".")
    )
    if not classes:
        raise DatasetError(f"{root}: no class subfolders; expected SRC/<class>/<image>.png (or a CSV/JSONL list)")
    items: list[SourceItem] = []
    for label, name in enumerate(classes):
        for folder, dirs, files in os.walk(root / name, followlinks=False):
            linked = [d for d in dirs if (Path(folder) / d).is_symlink()]
            if linked:
                where = (Path(folder) / linked[0]).relative_to(root).as_posix()
                raise DatasetError(
                    f"{where}: folder is a symbolic link, which is not followed; copy it into SRC or list its "
                    "images in a CSV/JSONL file"
                )
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for file in sorted(files):
                if file.startswith(".") or not file.lower().endswith(IMAGE_EXTENSIONS + _REFUSED_EXTENSIONS):
                    continue
                path = Path(folder) / file
                items.append(SourceItem(rel=path.relative_to(root).as_posix(), label=label, path=path))
    items.sort(key=lambda item: item.rel)
    if not items:
        raise DatasetError(f"{root}: no images ({', '.join(IMAGE_EXTENSIONS)}) under the class subfolders")
    return ImageSource(f"folder:{root}", items, classes, root=root, max_pixels=max_pixels)


def _list_source(path: Path, root: Path | None, max_pixels: int) -> ImageSource:
    base = (root or path.parent).resolve()
    rows, classes = read_list(path)
    items = [SourceItem(rel=rel, label=label, path=base / rel) for rel, label in rows]
    items.sort(key=lambda item: item.rel)
    return ImageSource(f"list:{path}", items, classes, root=base, max_pixels=max_pixels)


def _fashion_mnist_split(text: str) -> str | None:
    """The named split a ``fashion-mnist[:SPLIT]`` spec asks for; None for any other spec."""
    from .fmnist import SPLITS

    if text == FASHION_MNIST:
        return "owner"
    prefix = text.startswith(FASHION_MNIST + ":")
    if not prefix and not (text.startswith(FASHION_MNIST + "-") and not Path(text).exists()):
        return None
    split = text.partition(":")[2] if prefix else None
    if split in SPLITS:
        return split
    from .fmnist_pairs import PAIR_SOURCES

    valid = [FASHION_MNIST] + [f"{FASHION_MNIST}:{name}" for name in SPLITS]
    renamed = {"train": " ('train' is now 'owner')", "val": " ('val' is now 'holdout')"}.get(split or "", "")
    raise DatasetError(f"unknown Fashion-MNIST split in {text!r}; choose from {valid}{renamed}, or the 28 x 56 "
                       f"pairs {list(PAIR_SOURCES)}[:SPLIT]")


def _fashion_mnist_source(split: str) -> ImageSource:
    from .fmnist import CLASSES, holdout_indices, load_fashion_mnist

    images, labels = load_fashion_mnist("test" if split == "test" else "train")
    if split == "test":
        indices = torch.arange(len(labels))
    else:
        held, kept = holdout_indices(len(labels))
        indices = kept if split == "owner" else held
    width = len(str(images.shape[0] - 1))
    items = [
        SourceItem(rel=f"{split}/{CLASSES[label]}/{index:0{width}d}.png", label=label, index=index)
        for index, label in zip(indices.tolist(), labels[indices].tolist(), strict=True)
    ]
    items.sort(key=lambda item: item.rel)
    return ImageSource(f"{FASHION_MNIST}:{split}", items, list(CLASSES), root=None, arrays=images)


def _named_source(text: str) -> ImageSource | None:
    """The source a ``fashion-mnist[:SPLIT]`` or ``fashion-mnist-pairs[10][:SPLIT]`` spec names (items in index
    order); None for any other spec."""
    from .fmnist_pairs import pairs_spec, pairs_split

    named = pairs_spec(text)
    if named is not None:
        pairs = pairs_split(*named)
        items = [SourceItem(rel=rel, label=label, index=index)
                 for index, (rel, label) in enumerate(zip(pairs.ids, pairs.labels.tolist(), strict=True))]
        return ImageSource(":".join(named), items, pairs.classes, root=None, arrays=pairs.images)  # type: ignore[arg-type]
    split = _fashion_mnist_split(text)
    return None if split is None else _fashion_mnist_source(split)


def named_test_split(spec: str | os.PathLike) -> str | None:
    """The test split of the named source ``spec`` names (``fashion-mnist:test`` for ``fashion-mnist:owner``);
    None for a folder or list."""
    from .fmnist_pairs import pairs_spec

    named = pairs_spec(str(spec))
    if named is not None:
        return f"{named[0]}:test"
    return f"{FASHION_MNIST}:test" if _fashion_mnist_split(str(spec)) is not None else None


def open_source(spec: str | os.PathLike, *, root: str | os.PathLike | None = None,
                max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageSource:
    """List a dataset: ``fashion-mnist[:SPLIT]``, ``fashion-mnist-pairs[10][:SPLIT]``, a class-subfolder tree, or
    a CSV/JSONL file of ``(path, label)`` rows (paths relative to the list's folder, or to ``root``).

    Labels are class indices, or class names (mapped to indices in sorted order). Folder classes are the
    sorted top-level subfolder names; images in nested folders belong to their top-level class. Fashion-MNIST
    ids are ``SPLIT/<class>/<index into the idx file>.png``; pairs ids ``SPLIT/<position>-<left>-<right>.png``.

    Raises:
        DatasetError: the spec names nothing readable (an unknown Fashion-MNIST split included).
    """
    if max_pixels < 1:
        raise DatasetError(f"max_pixels must be >= 1, got {max_pixels}")
    text = str(spec)
    named = _named_source(text)
    if named is not None:
        return named
    path = Path(text)
    if path.is_dir():
        return _folder_source(path.resolve(), max_pixels)
    if path.is_file():
        if path.suffix.lower() not in (".csv", ".jsonl", ".ndjson"):
            raise DatasetError(f"{path}: a list must be .csv or .jsonl (got {path.suffix!r}); rename it, or give a "
                               "class-subfolder tree")
        return _list_source(path, Path(root) if root else None, max_pixels)
    raise DatasetError(f"{text}: no such folder or list file; give a class-subfolder tree, a CSV/JSONL list "
                       "or 'fashion-mnist[:owner|holdout|test]' (or fashion-mnist-pairs, fashion-mnist-pairs10)")


def _changed(row: dict) -> bool:
    """Whether a manifest row's image was marked and changed by it: an image the marking left as it was (PSNR
    infinite, recorded as None; or the same bytes as its source) is as clean as a copy."""
    if not row.get("marked") or ("psnr" in row and row["psnr"] is None):
        return False
    return not row.get("source_sha256") or row.get("source_sha256") != row.get("output_sha256")


def _published_source(folder: Path) -> tuple[ImageSource, list[str], dict[str, bool]]:
    """The outputs of a ``radioactive mark`` folder, listed through its manifest (rows of bad images skipped),
    sorted by source id, those source ids, and whether each (by source id) was marked and changed."""
    from .manifest import MANIFEST_NAME, read_manifest_rows

    root = folder.resolve()
    entries: dict[str, SourceItem] = {}
    changed: dict[str, bool] = {}
    for number, row in enumerate(read_manifest_rows(root), 1):
        if row.get("bad") or row.get("error") or row.get("output") is None:
            continue
        where = f"{MANIFEST_NAME} row {number}"
        label, source = row.get("label"), row.get("source")
        if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < MAX_CLASSES:
            raise ManifestError(f"{folder / MANIFEST_NAME} row {number}: invalid label {label!r}; the manifest was "
                                "changed after marking, mark the data again")
        if not isinstance(source, str) or source in entries:
            raise ManifestError(f"{folder / MANIFEST_NAME} row {number}: missing or repeated source {source!r}; "
                                "the manifest was changed after marking, mark the data again")
        rel = safe_rel(str(row["output"]), where)
        entries[source] = SourceItem(rel=rel, label=label, path=root / rel)
        changed[source] = _changed(row)
    ids = sorted(entries)
    items = [entries[source] for source in ids]
    top = max((item.label for item in items), default=-1)
    return ImageSource(f"published:{root}", items, [str(i) for i in range(top + 1)], root=root), ids, changed


@dataclass(frozen=True)
class LabelledImages:
    """A dataset read whole.

    Attributes:
        images: uint8 ``(N, c, H, W)``.
        labels: int64 ``(N,)``, indices into ``classes``.
        ids: the relative id of each image, the one ``radioactive mark`` uses for it (its augmentation streams
            derive from it); for a published folder, the manifest's ``source`` ids.
        classes: class names (index -> name); ``"0"``, ``"1"``, ... for a published folder.
        marked: True for the output folder of ``radioactive mark`` (its images may be marked).
        marked_flags: for such a folder, bool ``(N,)``: whether the manifest says the image was marked and the
            marking changed it (the other images are unchanged copies); None for any other dataset.
    """

    images: torch.Tensor
    labels: torch.Tensor
    ids: list[str]
    classes: list[str]
    marked: bool = False
    marked_flags: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if not len(self.images) == len(self.labels) == len(self.ids):
            raise DatasetError(f"{len(self.images)} images, {len(self.labels)} labels and {len(self.ids)} ids; give "
                               "one label and one id per image")

    def __len__(self) -> int:
        return len(self.ids)


def _fit(images: torch.Tensor, channels: int, size: tuple[int, int] | None) -> torch.Tensor:
    """uint8 ``(N, c, H, W)`` to ``channels`` channels (grey repeated, colour averaged) and, when given, ``size``
    ``(H, W)`` (bilinear, antialiased)."""
    if images.shape[1] != channels:
        images = (images.expand(-1, channels, -1, -1) if images.shape[1] == 1
                  else images.float().mean(1, keepdim=True).round().to(torch.uint8))
    if size is not None and tuple(images.shape[2:]) != size:
        chunks = []
        for chunk in images.split(1024):  # bounded float memory for large upsampled sets
            resized = torch.nn.functional.interpolate(chunk.float(), size=size, mode="bilinear",
                                                      antialias=True, align_corners=False)
            chunks.append(resized.round().clamp(0, 255).to(torch.uint8))
        images = torch.cat(chunks)
    return images.contiguous()


def load_labelled(spec: str | os.PathLike, *, limit: int | None = None, size: int | tuple[int, int] | None = None,
                  channels: int | None = None) -> LabelledImages:
    """Read a whole dataset (see the module docstring for ``spec``) as tensors, every file through
    :func:`radioactive.data.read_image`.

    Fashion-MNIST splits come in the idx file's order (pairs in their shuffled order), so that ``limit`` takes a
    prefix of mixed classes; other datasets in their ids' sorted order. The output folder of ``radioactive mark``
    is read through its ``manifest.jsonl`` (the output paths and labels; rows of bad images skipped) with
    ``marked=True``.

    Args:
        limit: read only the first ``limit`` images.
        size: resize every image to ``size`` x ``size``, or to ``(height, width)`` (antialiased bilinear).
        channels: 1 or 3 (grey repeated, colour averaged); default: 3 if any image has colour, else 1.

    Raises:
        DatasetError: nothing to read, or images of different sizes (naming the file) without ``size``.
        ImageReadError: naming the file, for an image :mod:`radioactive.data` refuses.
    """
    from .errors import ConfigError

    target = (size, size) if isinstance(size, int) else tuple(size) if isinstance(size, tuple | list) else size
    for name, value, allowed in (("limit", limit, None), ("channels", channels, (1, 3)),
                                 *((("size", v, None) for v in target) if target else ())):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1
                                  or (allowed and value not in allowed)):
            raise ConfigError(f"{name} must be {'1 or 3' if allowed else 'a positive integer'}, got {value!r}")
    if target is not None and len(target) != 2:
        raise ConfigError(f"size must be a positive integer or a (height, width) pair, got {size!r}")
    text = str(spec)
    named = _named_source(text)
    marked, flags = False, None
    if named is not None:
        source = named
        items = sorted(source.items, key=lambda item: item.index)[:limit]
        ids = [item.rel for item in items]
        assert source._arrays is not None
        images = source._arrays[torch.tensor([item.index for item in items], dtype=torch.int64)]
        images = _fit(images, channels or images.shape[1], target)
    else:
        folder = Path(text).expanduser()
        if folder.is_dir() and (folder / "manifest.jsonl").is_file():
            source, ids, changed = _published_source(folder)
            marked = True
            flags = torch.tensor([changed[i] for i in ids[:limit]], dtype=torch.bool)
        else:
            source = open_source(folder)
            ids = [item.rel for item in source.items]
        items, ids = source.items[:limit], ids[:limit]
        if not items:
            raise DatasetError(f"no images in {text!r}")
        decoded = [source.read(item) for item in items]
        channels = channels or max(image.shape[0] for image in decoded)
        fitted = [_fit(image[None], channels, target)[0] for image in decoded]
        first = fitted[0].shape
        for item, image in zip(items, fitted, strict=True):
            if image.shape != first:
                raise DatasetError(f"{item.rel}: {image.shape[1]}x{image.shape[2]} pixels but {items[0].rel} is "
                                   f"{first[1]}x{first[2]}; pass a size (--size) to resize every image")
        images = torch.stack(fitted)
    labels = torch.tensor([item.label for item in items], dtype=torch.int64)
    return LabelledImages(images, labels, ids, list(source.classes), marked, flags)

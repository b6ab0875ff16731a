"""Reading image datasets (class folders, CSV/JSONL lists, Fashion-MNIST) and writing images atomically.

One decoding rule for every file, so that the marker, the saved PNG and the manifest agree:

- EXIF orientation is applied;
- 16-bit images are scaled to 8 bits (``round(v / 257)``);
- an alpha channel (RGBA, LA, palette transparency) is composited onto white;
- images without colour (L, LA, 1, I;16, I, F and grey palettes) stay one-channel grey; every other image
  becomes RGB. The marker adapts channels itself (grey repeated to RGB, RGB averaged to grey), so a grey
  dataset is never published as colour and a colour one never loses its colour.

Images keep their own size. Readers refuse (with :class:`ImageReadError` naming the file) zero-byte,
truncated, corrupt or unsupported files, images above ``max_pixels`` (decompression bombs) and symbolic links
leading out of the source folder; list files refuse paths that escape their root (:class:`ManifestError`
naming the row).
"""

from __future__ import annotations

import csv
import io
import json
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import torch

from ._io import atomic_write, sha256_bytes, sha256_file
from .errors import DatasetError, ImageReadError, ManifestError

__all__ = [
    "IMAGE_EXTENSIONS",
    "DEFAULT_MAX_PIXELS",
    "SourceItem",
    "ImageSource",
    "open_source",
    "read_image",
    "decode_image",
    "encode_png",
    "write_png",
    "public_mode",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
_FORMATS = {"PNG", "JPEG", "MPO", "WEBP", "BMP", "DIB"}
DEFAULT_MAX_PIXELS = 64_000_000
MAX_CLASSES = 1_000_000  # a numeric label beyond this is an error, not a million-entry class table
_GREY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


def _pil():
    from PIL import Image, ImageOps

    return Image, ImageOps


def decode_image(data: bytes, name: str, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> torch.Tensor:
    """Decode encoded image bytes to uint8 ``(c, H, W)`` with ``c`` 1 (grey) or 3 (colour).

    Raises:
        ImageReadError: naming ``name``, for empty, truncated, corrupt, unsupported or oversized images.
    """
    Image, ImageOps = _pil()
    if not data:
        raise ImageReadError(f"{name}: empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                if image.format not in _FORMATS:
                    raise ImageReadError(f"{name}: {image.format} images are not accepted; use PNG, JPEG, WebP or BMP")
                width, height = image.size
                if width * height > max_pixels:
                    raise ImageReadError(
                        f"{name}: {width}x{height} = {width * height} pixels exceeds the limit of {max_pixels} "
                        "(possible decompression bomb); raise --max-pixels if the image is genuine"
                    )
                frames = getattr(image, "n_frames", 1)
                if frames > 1:
                    raise ImageReadError(f"{name}: animated image ({frames} frames); only still images can be "
                                         "published marked (use --skip-bad to list it and go on)")
                image.load()
                image = ImageOps.exif_transpose(image)
                return _to_tensor(image, name)
    except ImageReadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageReadError(f"{name}: refused as a possible decompression bomb ({exc})") from None
    except Exception as exc:  # PIL raises many types for damaged files
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ImageReadError(f"{name}: cannot decode image ({type(exc).__name__}: {detail}); the file is corrupt, "
                             "truncated or not an image") from None


def _to_tensor(image, name: str) -> torch.Tensor:
    Image, _ = _pil()
    mode = image.mode
    if mode == "P":
        palette_mode = image.palette.mode if image.palette is not None else "RGB"
        has_alpha = "transparency" in image.info or palette_mode == "RGBA"
        image = image.convert("RGBA" if has_alpha else "RGB")
        rgb = np.asarray(image)
        grey = bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())
        if grey:
            image = image.convert("LA" if has_alpha else "L")
        mode = image.mode
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        array = np.clip(np.round(np.asarray(image).astype(np.float64) / 257.0), 0, 255).astype(np.uint8)[..., None]
    elif mode == "F":
        array = np.asarray(image).astype(np.float64)
        high = 1.0 if array.max(initial=0) <= 1.0 else 255.0
        array = np.clip(np.round(array / high * 255), 0, 255).astype(np.uint8)[..., None]
    elif mode in ("LA", "La", "RGBA", "RGBa", "PA"):
        if mode in ("La", "RGBa"):
            image = image.convert("RGBA" if mode == "RGBa" else "LA")
        array = np.asarray(image).astype(np.float64)
        alpha = array[..., -1:] / 255
        array = np.round(array[..., :-1] * alpha + 255 * (1 - alpha)).astype(np.uint8)
    elif mode in _GREY_MODES:
        array = np.asarray(image.convert("L"))[..., None]
    else:
        array = np.asarray(image.convert("RGB"))
    if array.ndim == 2:
        array = array[..., None]
    if array.shape[-1] not in (1, 3):
        raise ImageReadError(f"{name}: unexpected {array.shape[-1]} channels after decoding mode {mode}")
    return torch.from_numpy(array.transpose(2, 0, 1).copy())


def read_image(path: str | os.PathLike, *, max_pixels: int = DEFAULT_MAX_PIXELS, name: str | None = None) -> torch.Tensor:
    """Read an image file to uint8 ``(c, H, W)`` (see the module's decoding rule)."""
    name = name or str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ImageReadError(f"{name}: cannot read file ({exc.strerror or type(exc).__name__})") from None
    return decode_image(data, name, max_pixels=max_pixels)


def encode_png(image: torch.Tensor) -> bytes:
    """PNG bytes of a uint8 ``(c, H, W)`` image, ``c`` 1 (L) or 3 (RGB)."""
    Image, _ = _pil()
    if image.dtype != torch.uint8 or image.dim() != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"expected a uint8 (1|3, H, W) image, got {image.dtype} {tuple(image.shape)}")
    array = image.permute(1, 2, 0).contiguous().numpy()
    pil = Image.fromarray(array[..., 0], mode="L") if image.shape[0] == 1 else Image.fromarray(array, mode="RGB")
    buffer = io.BytesIO()
    pil.save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def public_mode() -> int:
    """File mode of a published file: 0o666 less the process's umask (temporary files start at 0o600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def write_png(path: str | os.PathLike, image: torch.Tensor) -> str:
    """Write ``image`` as PNG atomically (mode from the umask); returns the sha256 of the bytes written."""
    data = encode_png(image)
    with atomic_write(path, mode=public_mode()) as tmp:
        Path(tmp).write_bytes(data)
    return sha256_bytes(data)


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
        Image, _ = _pil()
        path = self.check_path(item)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(path) as image:
                    width, height = image.size
                    if image.format not in _FORMATS or width * height > self.max_pixels:
                        raise ImageReadError("")  # the full read gives the detailed message
                    orientation = image.getexif().get(0x0112, 1)
                    grey = image.mode in _GREY_MODES
                    if image.mode == "P":
                        return tuple(self.read(item).shape)  # type: ignore[return-value]
        except Exception:
            return tuple(self.read(item).shape)  # raises the detailed error, or decodes what Pillow can
        if orientation in (5, 6, 7, 8):
            width, height = height, width
        return (1 if grey else 3, height, width)

    def source_sha256(self, item: SourceItem) -> str:
        if self._arrays is not None:
            assert item.index is not None
            return sha256_bytes(self._arrays[item.index].contiguous().numpy().tobytes())
        return sha256_file(self.check_path(item))


def _safe_rel(text: str, where: str) -> str:
    if not text or "\x00" in text:
        raise ManifestError(f"{where}: empty or invalid path")
    rel = PurePosixPath(text.replace("\\", "/"))
    if rel.is_absolute() or ".." in rel.parts or (rel.parts and ":" in rel.parts[0]):
        raise ManifestError(f"{where}: path {text!r} escapes the dataset root; use a path relative to the list file")
    return rel.as_posix()


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
                if file.startswith(".") or not file.lower().endswith(IMAGE_EXTENSIONS):
                    continue
                path = Path(folder) / file
                items.append(SourceItem(rel=path.relative_to(root).as_posix(), label=label, path=path))
    items.sort(key=lambda item: item.rel)
    if not items:
        raise DatasetError(f"{root}: no images ({', '.join(IMAGE_EXTENSIONS)}) under the class subfolders")
    return ImageSource(f"folder:{root}", items, classes, root=root, max_pixels=max_pixels)


def _parse_label(value: object, where: str) -> int | str:
    if isinstance(value, bool) or value is None or not isinstance(value, (int, float, str)):
        raise ManifestError(f"{where}: missing or invalid label {value!r}")
    if isinstance(value, float) and not value.is_integer():
        raise ManifestError(f"{where}: invalid label {value!r}; use a class index or a class name")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if value.is_integer():
            return int(value)
        raise ManifestError(f"{where}: label {value!r} is not a whole number or a class name")
    if not isinstance(value, str):
        raise ManifestError(f"{where}: invalid label {value!r}; expected a class index or name")
    text = value.strip()
    if not text:
        raise ManifestError(f"{where}: empty label")
    return int(text) if (text.lstrip("-").isascii() and text.lstrip("-").isdigit()) else text


def _list_source(path: Path, root: Path | None, max_pixels: int) -> ImageSource:
    base = (root or path.parent).resolve()
    rows: list[tuple[str, int | str, str]] = []
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read the image list ({exc})") from None
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            where = f"{path.name} line {number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ManifestError(f"{where}: not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict) or "path" not in row or "label" not in row:
                raise ManifestError(f"{where}: expected an object with 'path' and 'label'")
            rows.append((_safe_rel(str(row["path"]), where), _parse_label(row["label"], where), where))
    else:
        reader = csv.reader(io.StringIO(text))
        for number, row in enumerate(reader, 1):
            if not row or all(not cell.strip() for cell in row):
                continue
            where = f"{path.name} row {number}"
            if number == 1 and [c.strip().lower() for c in row[:2]] == ["path", "label"]:
                continue
            if len(row) < 2:
                raise ManifestError(f"{where}: expected 'path,label', got {row!r}")
            rows.append((_safe_rel(row[0].strip(), where), _parse_label(row[1], where), where))
    if not rows:
        raise DatasetError(f"{path}: the image list is empty")
    named = sorted({label for _, label, _ in rows if isinstance(label, str)})
    if named and any(isinstance(label, int) for _, label, _ in rows):
        raise ManifestError(f"{path}: labels mix class names and numbers; use one or the other")
    if named:
        classes = named
        index = {name: i for i, name in enumerate(classes)}
    else:
        top = max(int(label) for _, label, _ in rows)
        bad = next(((where, label) for _, label, where in rows if int(label) < 0), None)
        if bad:
            raise ManifestError(f"{bad[0]}: negative label {bad[1]}")
        if top >= MAX_CLASSES:
            where = next(where for _, label, where in rows if int(label) == top)
            raise ManifestError(f"{where}: label {top} is out of range (at most {MAX_CLASSES - 1}); labels are class "
                                "indices 0..C-1 or class names")
        classes = [str(i) for i in range(top + 1)]
        index = {}
    items, seen = [], {}
    for rel, label, where in rows:
        if rel in seen:
            raise ManifestError(f"{where}: duplicate path {rel!r} (first at {seen[rel]})")
        seen[rel] = where
        number = index[label] if isinstance(label, str) else int(label)
        items.append(SourceItem(rel=rel, label=number, path=base / rel))
    items.sort(key=lambda item: item.rel)
    return ImageSource(f"list:{path}", items, classes, root=base, max_pixels=max_pixels)


def _fashion_mnist_source(split: str) -> ImageSource:
    from .fmnist import CLASSES, load_fashion_mnist

    images, labels = load_fashion_mnist(split)
    width = len(str(images.shape[0] - 1))
    items = [
        SourceItem(rel=f"{split}/{CLASSES[int(label)]}/{index:0{width}d}.png", label=int(label), index=index)
        for index, label in enumerate(labels.tolist())
    ]
    items.sort(key=lambda item: item.rel)
    return ImageSource(f"fashion-mnist:{split}", items, list(CLASSES), root=None, arrays=images)


def open_source(spec: str | os.PathLike, *, root: str | os.PathLike | None = None,
                max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageSource:
    """List a dataset: ``fashion-mnist`` (or ``fashion-mnist:test``), a class-subfolder tree, or a CSV/JSONL
    file of ``(path, label)`` rows (paths relative to the list's folder, or to ``root``).

    Labels are class indices, or class names (mapped to indices in sorted order). Folder classes are the
    sorted subfolder names.
    """
    if max_pixels < 1:
        raise DatasetError(f"max_pixels must be >= 1, got {max_pixels}")
    text = str(spec)
    if text in ("fashion-mnist", "fashion-mnist:train", "fashion-mnist:test"):
        return _fashion_mnist_source(text.partition(":")[2] or "train")
    path = Path(text)
    if path.is_dir():
        return _folder_source(path.resolve(), max_pixels)
    if path.is_file():
        if path.suffix.lower() not in (".csv", ".jsonl", ".ndjson"):
            raise DatasetError(f"{path}: a list must be .csv or .jsonl (got {path.suffix!r})")
        return _list_source(path, Path(root) if root else None, max_pixels)
    raise DatasetError(f"{text}: no such folder or list file; give a class-subfolder tree, a CSV/JSONL list "
                       "or 'fashion-mnist'")

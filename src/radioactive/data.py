"""Decoding and encoding one image: the one reader every command and the API use.

One decoding rule for every file, so that the marker, the saved PNG, the manifest, training and detection
agree:

- EXIF orientation is applied;
- 16-bit images are scaled to 8 bits (``round(v / 257)``);
- an alpha channel (RGBA, LA, palette transparency) is composited onto white;
- images without colour (L, LA, 1, I;16, I, F and grey palettes) stay one-channel grey; every other image
  becomes RGB. The marker adapts channels itself (grey repeated to RGB, RGB averaged to grey), so a grey
  dataset is never published as colour and a colour one never loses its colour.

Images keep their own size. The reader refuses (with :class:`ImageReadError` naming the file) zero-byte,
truncated, corrupt, animated or unsupported files (TIFF among them) and images above ``max_pixels``
(decompression bombs). Listing datasets is :mod:`radioactive.sources`'s job.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from ._io import atomic_write, sha256_bytes
from .errors import ImageReadError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "read_image",
    "image_shape",
    "decode_image",
    "encode_png",
    "write_png",
    "public_mode",
]

_FORMATS = {"PNG", "JPEG", "MPO", "WEBP", "BMP", "DIB"}
DEFAULT_MAX_PIXELS = 64_000_000
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


def image_shape(path: str | os.PathLike, *, max_pixels: int = DEFAULT_MAX_PIXELS,
                name: str | None = None) -> tuple[int, int, int]:
    """``(c, H, W)`` that :func:`read_image` returns, from the header alone when it suffices (EXIF rotation
    included); raises :class:`ImageReadError` like :func:`read_image`."""
    Image, _ = _pil()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                if image.format not in _FORMATS or width * height > max_pixels or image.mode == "P":
                    raise ImageReadError("")  # the full read gives the detailed message (or the palette's colours)
                orientation = image.getexif().get(0x0112, 1)
                grey = image.mode in _GREY_MODES
    except Exception:
        return tuple(read_image(path, max_pixels=max_pixels, name=name).shape)  # type: ignore[return-value]
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    return (1 if grey else 3, height, width)

"""Differentiable random augmentations applied to images while they are marked (kornia ops).

Marking optimises an image so that the marker's features move along a carrier *after* a fresh random
augmentation at every step, so the shift survives the trainer's own augmentations and, with the ``jpeg``,
``blur`` and ``resize`` options, re-encoding of the published files. Every augmentation here is a kornia
(or plain torch) op that back-propagates to the pixels.

Randomness is local and explicit: an augmentation consumes a tensor of uniform numbers ``(N, k)`` (one row
per image, ``k = num_uniforms``) drawn on CPU by the caller, or draws it from the ``torch.Generator`` passed
in. A seed therefore gives the same augmentations on every device, each image's augmentations can come from
its own stream (independent of the batch it is in), and the global RNG is never touched.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .errors import ConfigError

__all__ = ["AUGMENTATIONS", "AugmentParams", "Augmentation", "build_augmentation"]


@dataclass(frozen=True)
class AugmentParams:
    """Ranges of the random augmentations (each drawn uniformly, per image unless said otherwise).

    Attributes:
        crop_scale: area of the random crop as a fraction of the image.
        crop_ratio: aspect ratio range of the crop (drawn log-uniformly).
        jpeg_quality: JPEG quality range (differentiable JPEG, kornia).
        blur_sigma: Gaussian blur sigma range, in pixels of the image at that point.
        resize_scale: down-scaling factor range of ``resize`` (one factor per batch: shapes must agree).
    """

    crop_scale: tuple[float, float] = (0.5, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    jpeg_quality: tuple[float, float] = (50.0, 95.0)
    blur_sigma: tuple[float, float] = (0.1, 1.0)
    resize_scale: tuple[float, float] = (0.5, 1.0)

    def __post_init__(self) -> None:
        for name, low_bound, high_bound in (
            ("crop_scale", 0.0, 1.0), ("crop_ratio", 0.0, math.inf), ("jpeg_quality", 1.0, 100.0),
            ("blur_sigma", 0.0, math.inf), ("resize_scale", 0.0, 1.0),
        ):
            value = tuple(float(v) for v in getattr(self, name))
            if len(value) != 2 or not (low_bound <= value[0] <= value[1] <= high_bound) or value[1] <= 0:
                raise ConfigError(f"{name} must be a range (low, high) with {low_bound} <= low <= high <= {high_bound}, "
                                  f"got {getattr(self, name)!r}")
            object.__setattr__(self, name, value)


def _scale(u: torch.Tensor, low: float, high: float) -> torch.Tensor:
    return low + (high - low) * u.to(torch.float64)


def _crop_boxes(u: torch.Tensor, height: int, width: int, params: AugmentParams, flip: bool) -> torch.Tensor:
    """``(N, 4, 2)`` corner boxes (x, y) of random resized crops from uniforms ``u`` ``(N, 5)``; flipped crops
    list their corners mirrored, so a horizontal flip costs nothing extra."""
    area = _scale(u[:, 0], *params.crop_scale) * height * width
    ratio = _scale(u[:, 1], math.log(params.crop_ratio[0]), math.log(params.crop_ratio[1])).exp()
    crop_w = (area * ratio).sqrt().clamp(1.0, width)
    crop_h = (area / ratio).sqrt().clamp(1.0, height)
    x0 = u[:, 2].to(torch.float64) * (width - crop_w)
    y0 = u[:, 3].to(torch.float64) * (height - crop_h)
    x1, y1 = x0 + crop_w - 1, y0 + crop_h - 1
    mirrored = (u[:, 4] < 0.5) if flip else torch.zeros(u.shape[0], dtype=torch.bool)
    left = torch.where(mirrored, x1, x0)
    right = torch.where(mirrored, x0, x1)
    boxes = torch.stack([torch.stack([left, y0], 1), torch.stack([right, y0], 1),
                         torch.stack([right, y1], 1), torch.stack([left, y1], 1)], 1)  # (N, 4, 2)
    return boxes.float()


def _crop(x: torch.Tensor, u: torch.Tensor, size: tuple[int, int], params: AugmentParams, flip: bool) -> torch.Tensor:
    from kornia.geometry.transform import crop_and_resize

    boxes = _crop_boxes(u, x.shape[-2], x.shape[-1], params, flip).to(x.device)
    return crop_and_resize(x, boxes, size, mode="bilinear", align_corners=True)


def _flip(x: torch.Tensor, u: torch.Tensor, _params: AugmentParams) -> torch.Tensor:
    mirrored = (u[:, 0] < 0.5).to(x.device).view(-1, 1, 1, 1)
    return torch.where(mirrored, x.flip(-1), x)


def _jpeg(x: torch.Tensor, u: torch.Tensor, params: AugmentParams) -> torch.Tensor:
    from kornia.enhance import jpeg_codec_differentiable

    quality = _scale(u[:, 0], *params.jpeg_quality).to(x.device, x.dtype)
    if x.shape[1] == 3:
        return jpeg_codec_differentiable(x.clamp(0, 1), quality)
    grey = jpeg_codec_differentiable(x.clamp(0, 1).mean(1, keepdim=True).expand(-1, 3, -1, -1), quality)
    return grey.mean(1, keepdim=True).expand(-1, x.shape[1], -1, -1)


def _blur(x: torch.Tensor, u: torch.Tensor, params: AugmentParams) -> torch.Tensor:
    from kornia.filters import gaussian_blur2d

    sigma = _scale(u[:, 0], *params.blur_sigma).to(x.device, x.dtype)
    radius = max(1, math.ceil(2 * params.blur_sigma[1]))
    radius = min(radius, (min(x.shape[-2:]) - 1) // 2) or 1
    return gaussian_blur2d(x, (2 * radius + 1, 2 * radius + 1), torch.stack([sigma, sigma], 1), border_type="reflect")


def _resize(x: torch.Tensor, u: torch.Tensor, params: AugmentParams) -> torch.Tensor:
    from kornia.geometry.transform import resize

    # One factor per batch (the first image's draw): a batch must keep one shape.
    scale = float(_scale(u[:1, 0], *params.resize_scale))
    height, width = x.shape[-2:]
    small = (max(1, round(height * scale)), max(1, round(width * scale)))
    if small == (height, width):
        return x
    return resize(resize(x, small, interpolation="bilinear", antialias=True), (height, width), interpolation="bilinear")


# name -> (uniforms per image, op(x, uniforms, params)); "crop" also sets the output size (Augmentation).
AUGMENTATIONS: dict[str, tuple[int, Callable[[torch.Tensor, torch.Tensor, AugmentParams], torch.Tensor] | None]] = {
    "crop": (5, None),
    "flip": (1, _flip),
    "jpeg": (1, _jpeg),
    "blur": (1, _blur),
    "resize": (1, _resize),
}


class Augmentation:
    """A random differentiable pipeline ending at the marker's input size.

    Args:
        names: ops applied in order, from :data:`AUGMENTATIONS` (``crop``, ``flip``, ``jpeg``, ``blur``,
            ``resize``); empty means a plain resize. A ``flip`` right after ``crop`` is folded into it.
        output_size: ``(H, W)`` the marker takes.
        params: ranges of the random parameters.

    Examples:
        >>> aug = Augmentation(("crop", "flip"), (16, 16))
        >>> aug(torch.rand(4, 1, 28, 28), torch.Generator().manual_seed(0)).shape
        torch.Size([4, 1, 16, 16])
    """

    def __init__(self, names: Sequence[str], output_size: tuple[int, int], params: AugmentParams | None = None):
        names = tuple(names)
        unknown = [name for name in names if name not in AUGMENTATIONS]
        if unknown:
            raise ConfigError(f"unknown augmentation {unknown[0]!r}; choose from {sorted(AUGMENTATIONS)}")
        if len(set(names)) != len(names):
            raise ConfigError(f"augmentation listed twice in {list(names)}")
        self.names = names
        self.output_size = (int(output_size[0]), int(output_size[1]))
        self.params = params or AugmentParams()

    def __repr__(self) -> str:
        return f"Augmentation({list(self.names)}, output_size={self.output_size})"

    @property
    def num_uniforms(self) -> int:
        """How many uniform numbers one image consumes per call."""
        return sum(AUGMENTATIONS[name][0] for name in self.names)

    def draw(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """Uniforms ``(n, num_uniforms)`` float64 on CPU for one call."""
        return torch.rand(n, self.num_uniforms, generator=generator, dtype=torch.float64)

    def __call__(self, x: torch.Tensor, randomness: torch.Generator | torch.Tensor) -> torch.Tensor:
        """Augment ``x`` ``(N, c, H, W)`` in [0, 1]; returns ``(N, c, *output_size)``.

        ``randomness`` is a generator or uniforms ``(N, num_uniforms)`` in [0, 1) (see :meth:`draw`).
        """
        uniforms = self.draw(x.shape[0], randomness) if isinstance(randomness, torch.Generator) else randomness
        if uniforms.shape != (x.shape[0], self.num_uniforms):
            raise ValueError(f"expected uniforms of shape {(x.shape[0], self.num_uniforms)}, got {tuple(uniforms.shape)}")
        uniforms = uniforms.cpu()
        column = 0
        sized = False
        for index, name in enumerate(self.names):
            width, op = AUGMENTATIONS[name]
            u = uniforms[:, column:column + width]
            column += width
            if name == "crop":
                fold_flip = index + 1 < len(self.names) and self.names[index + 1] == "flip"
                x = _crop(x, u, self.output_size, self.params, fold_flip)
                sized = True
            elif name == "flip" and index > 0 and self.names[index - 1] == "crop":
                continue  # folded into the crop's corner order
            else:
                assert op is not None
                x = op(x, u, self.params)
        if not sized and tuple(x.shape[-2:]) != self.output_size:
            x = resize_to(x, self.output_size)
        return x


def resize_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Deterministic bilinear resize of ``(N, c, H, W)`` to ``size`` (identity when already that size)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)


def build_augmentation(names: Sequence[str] | str, output_size: tuple[int, int],
                       params: AugmentParams | None = None) -> Augmentation:
    """An :class:`Augmentation` from names or a comma-separated string (``"crop,flip,jpeg"``)."""
    if isinstance(names, str):
        names = [part.strip() for part in names.split(",") if part.strip() and part.strip() != "none"]
    return Augmentation(names, output_size, params)

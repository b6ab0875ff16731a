"""Batches as the trainer sees them: 8-bit or float images to [0, 1] floats, its random crop and flip, and
a content fingerprint of a dataset."""

from __future__ import annotations

import hashlib

import torch
import torch.nn.functional as F


def as_float(images: torch.Tensor) -> torch.Tensor:
    """``(N, c, H, W)`` float images in [0, 1] (uint8 divided by 255)."""
    if images.dtype == torch.uint8:
        return images.float().div_(255)
    return images.float()


def augment_batch(
    images: torch.Tensor, *, padding: int, flip: bool, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Random crop (zero padding ``padding``, same size out) and horizontal flip, per image. ``(N, c, H, W)``."""
    num, channels, height, width = images.shape
    device = images.device
    out = images
    if padding > 0:
        padded = F.pad(images, (padding, padding, padding, padding))
        off_y = torch.randint(0, 2 * padding + 1, (num,), generator=generator).to(device)
        off_x = torch.randint(0, 2 * padding + 1, (num,), generator=generator).to(device)
        rows = off_y[:, None] + torch.arange(height, device=device)  # (N, H)
        cols = off_x[:, None] + torch.arange(width, device=device)  # (N, W)
        batch_index = torch.arange(num, device=device)[:, None, None, None]
        chan_index = torch.arange(channels, device=device)[None, :, None, None]
        out = padded[batch_index, chan_index, rows[:, None, :, None], cols[:, None, None, :]]
    if flip:
        mask = (torch.rand(num, generator=generator) < 0.5).to(device)
        out = torch.where(mask[:, None, None, None], out.flip(-1), out)
    return out


def dataset_fingerprint(images: torch.Tensor, labels: torch.Tensor) -> str:
    """16 hex characters naming a dataset by content (pixels as 8-bit, labels, shapes)."""
    digest = hashlib.sha256()
    pixels = images if images.dtype == torch.uint8 else (images.float().clamp(0, 1) * 255).round().to(torch.uint8)
    digest.update(str(tuple(pixels.shape)).encode())
    digest.update(pixels.detach().cpu().contiguous().numpy().tobytes())
    digest.update(labels.detach().cpu().to(torch.int64).contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]

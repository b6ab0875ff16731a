"""Helpers shared by the detectors: image batches, resizing, class mapping, p-value conversions."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import stats
from ..errors import ConfigError, DatasetError, KeyMismatchError

ClassMap = Mapping[int, int] | Sequence[tuple[int, int]] | None


def as_float_images(images: torch.Tensor) -> torch.Tensor:
    """``(N, c, H, W)`` uint8 or float images as float32 in [0, 1]."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor (N, c, H, W), got {type(images).__name__}")
    if images.dim() != 4:
        raise DatasetError(f"images must have shape (N, c, H, W), got {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        return images.float() / 255.0
    if not images.dtype.is_floating_point:
        raise DatasetError(f"images must be uint8 or floating point in [0, 1], got {images.dtype}")
    return images.float()


def iter_batches(
    source: torch.Tensor | tuple[torch.Tensor, ...] | Iterable, batch_size: int
) -> Iterable[torch.Tensor]:
    """Float [0, 1] image batches from a tensor, an ``(images, labels)`` tuple, or an iterable of either."""
    if isinstance(source, tuple | list) and source and isinstance(source[0], torch.Tensor) and source[0].dim() == 4:
        source = source[0]
    if isinstance(source, torch.Tensor):
        for start in range(0, source.shape[0], batch_size):
            yield as_float_images(source[start : start + batch_size])
        return
    for item in source:
        batch = item[0] if isinstance(item, tuple | list) else item
        if batch.dim() == 3:
            batch = batch.unsqueeze(0)
        yield as_float_images(batch)


def resize(images: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
    if size is None or tuple(images.shape[-2:]) == tuple(size):
        return images
    return F.interpolate(images, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)


def model_device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    if param is None:
        param = next(model.buffers(), None)
    return param.device if param is not None else torch.device("cpu")


def resolve_class_map(num_key_classes: int, num_outputs: int, class_map: ClassMap) -> list[tuple[int, int]]:
    """Pairs (key class, suspect output index) to test; every key class by default."""
    if class_map is None:
        if num_outputs != num_key_classes:
            raise KeyMismatchError(
                f"the key has {num_key_classes} classes but the suspect's head has {num_outputs} outputs; use the "
                "key made for this dataset, or map the classes the suspect shares with it: "
                "class_map={key_class: output_index} (command line: --class-map 0:0,1:5,...)"
            )
        return [(k, k) for k in range(num_key_classes)]
    pairs = list(class_map.items()) if isinstance(class_map, Mapping) else [tuple(p) for p in class_map]
    if not pairs:
        raise ConfigError("class_map is empty; map at least one key class to a suspect output")
    seen_k, seen_o = set(), set()
    for key_class, output in pairs:
        if not 0 <= int(key_class) < num_key_classes:
            raise KeyMismatchError(f"class_map names key class {key_class}, but the key has classes 0..{num_key_classes - 1}")
        if not 0 <= int(output) < num_outputs:
            raise KeyMismatchError(f"class_map names output {output}, but the suspect has outputs 0..{num_outputs - 1}")
        if key_class in seen_k or output in seen_o:
            raise ConfigError(f"class_map maps a class or an output twice: {pairs}; map each key class to one "
                              "output of its own")
        seen_k.add(key_class)
        seen_o.add(output)
    return sorted((int(k), int(o)) for k, o in pairs)


def parse_class_map(text: str | None) -> list[tuple[int, int]] | None:
    """``"0:0,2:1"`` -> [(0, 0), (2, 1)] (key class : suspect output)."""
    if not text:
        return None
    pairs = []
    for item in text.split(","):
        try:
            key_class, output = item.split(":")
            pairs.append((int(key_class), int(output)))
        except ValueError:
            raise ConfigError(f"bad class map entry {item!r}; write key_class:output pairs, e.g. 0:0,2:1") from None
    return pairs


def z_of(log_p: float) -> float:
    return float(stats.z_from_log_p(log_p))


def log10(log_p: float | np.ndarray) -> float:
    return float(log_p) / stats.LOG10 if np.ndim(log_p) == 0 else log_p / stats.LOG10


def finite_or_inf(value: float) -> float:
    return value if math.isfinite(value) else (-math.inf if value < 0 else math.inf)

"""The marking network: a classifier with its spec, its feature/head split and its identity for keys."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import ConfigError
from .key import MarkerInfo
from .nets import FeatureSplit, NetSpec, build_from_spec, load_checkpoint, split_head, state_dict_sha256

__all__ = ["Marker", "IMAGENET_MEAN", "IMAGENET_STD", "adapt_channels", "classifier_rows", "marker_channels"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class Marker:
    """A frozen marking network. ``model`` takes [0, 1] images of ``spec.input_size`` (Normalize inside).

    ``features(x)`` returns the input of the final linear layer, ``(N, d)``. ``classes``: the names of its
    classifier's rows, when known (its checkpoint's ``classes``, or Fashion-MNIST's for a marker trained on it).
    """

    model: nn.Module
    spec: NetSpec
    split: FeatureSplit
    info: MarkerInfo
    classes: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.classes is not None:
            self.classes = tuple(str(name) for name in self.classes)

    @classmethod
    def from_model(cls, model: nn.Module, spec: NetSpec, *, head: str | None = None,
                   classes: Sequence[str] | None = None) -> Marker:
        """Wrap a model that takes [0, 1] images (e.g. from :func:`radioactive.nets.build_from_spec`)."""
        model.eval()
        for param in model.parameters():
            param.requires_grad_(False)
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        example = torch.rand(2, len(spec.mean) if spec.source != "builtin" else spec.in_channels, *spec.input_size,
                             generator=torch.Generator().manual_seed(0)).to(device)
        split = split_head(model, example, head=head or spec.head or None)
        info = MarkerInfo(spec=spec, weights_sha256=state_dict_sha256(model), feature_dim=split.feature_dim,
                          head=split.head_name)
        return cls(model=model, spec=spec, split=split, info=info, classes=classes)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, *, spec: NetSpec | None = None, head: str | None = None) -> Marker:
        model, spec, extra = load_checkpoint(Path(path), spec)
        return cls.from_model(model, spec, head=head, classes=_recorded_classes(extra))

    @classmethod
    def from_torchvision(
        cls, arch: str = "resnet18", *, num_classes: int = 1000, weights: str | os.PathLike | None = None,
        input_size: int = 224,
    ) -> Marker:
        """A torchvision architecture with ImageNet preprocessing; ``weights`` is a local file (safetensors or
        state dict). Without it the network is randomly initialised (fine for speed tests, not for marking)."""
        spec = NetSpec(arch=arch, num_classes=num_classes, in_channels=3, input_size=(input_size, input_size),
                       mean=IMAGENET_MEAN, std=IMAGENET_STD, source="torchvision")
        if weights is not None:
            model, spec, _ = load_checkpoint(weights, spec)
        else:
            model = build_from_spec(spec)
        return cls.from_model(model, spec)

    def to(self, device: torch.device | str) -> Marker:
        self.model.to(device)
        return self

    @property
    def device(self) -> torch.device:
        param = next(self.model.parameters(), None)
        return param.device if param is not None else torch.device("cpu")

    @property
    def feature_dim(self) -> int:
        return self.split.feature_dim

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Features ``(N, d)`` of [0, 1] images ``(N, c, H, W)`` already at the marker's input size."""
        return self.split.features(images)


def marker_channels(marker: Any) -> int:
    """The channels the marker's network takes."""
    spec = marker.spec
    return spec.in_channels if spec.source == "builtin" else len(spec.mean)


def adapt_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """Images ``(N, c, H, W)`` with ``channels`` channels: grey repeated, colour averaged."""
    if x.shape[1] == channels:
        return x
    if x.shape[1] == 1:
        return x.expand(-1, channels, -1, -1)
    if channels == 1:
        return x.mean(1, keepdim=True)
    raise ConfigError(f"images have {x.shape[1]} channels but the marker takes {channels}")


def _recorded_classes(extra: dict[str, Any]) -> tuple[str, ...] | None:
    """The class names a checkpoint records: its ``classes``, else Fashion-MNIST's for a marker trained on it."""
    if extra.get("classes"):
        return tuple(str(name) for name in extra["classes"])
    if extra.get("dataset") == "fashion-mnist":
        from .fmnist import CLASSES

        return CLASSES
    return None


def _name_key(name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", name.casefold())


def classifier_rows(marker: Any, classes: Sequence[str] | None = None) -> torch.Tensor:
    """The marker's classifier rows, unit length, ``(C, d)``, row ``k`` that of the dataset's class ``k``.

    With ``classes`` (the dataset's names, index -> name) and a marker that names its classes, rows are matched
    by name (case, spaces and punctuation ignored: ``Ankle boot`` is ``ankle-boot``); otherwise (either side
    unnamed, or a published folder's ``"0"``, ``"1"``, ...) row ``k`` is the marker's row ``k``.

    Raises:
        ConfigError: a dataset class the marker does not name.
    """
    rows = marker.split.weight()
    rows = rows / rows.norm(dim=1, keepdim=True).clamp_min(1e-12)  # (C, d)
    names = getattr(marker, "classes", None)
    if not classes or not names or all(str(name).isdigit() for name in classes):
        return rows
    index = {_name_key(name): i for i, name in enumerate(names)}
    missing = [name for name in classes if _name_key(name) not in index]
    if missing:
        raise ConfigError(f"lambda_class pushes against the marker's classifier row of each image's class, but the "
                          f"dataset's classes {missing} are not among the marker's {list(names)}; name the classes "
                          "as the marker does, or set lambda_class to 0")
    order = [index[_name_key(name)] for name in classes] + list(range(len(classes), rows.shape[0]))
    return rows[torch.tensor(order[:rows.shape[0]])]

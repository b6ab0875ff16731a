"""The marking network: a classifier with its spec, its feature/head split and its identity for keys."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .key import MarkerInfo
from .nets import FeatureSplit, NetSpec, build_from_spec, load_checkpoint, split_head, state_dict_sha256

__all__ = ["Marker", "IMAGENET_MEAN", "IMAGENET_STD"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class Marker:
    """A frozen marking network. ``model`` takes [0, 1] images of ``spec.input_size`` (Normalize inside).

    ``features(x)`` returns the input of the final linear layer, ``(N, d)``.
    """

    model: nn.Module
    spec: NetSpec
    split: FeatureSplit
    info: MarkerInfo

    @classmethod
    def from_model(cls, model: nn.Module, spec: NetSpec, *, head: str | None = None) -> Marker:
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
        return cls(model=model, spec=spec, split=split, info=info)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, *, spec: NetSpec | None = None, head: str | None = None) -> Marker:
        model, spec, _ = load_checkpoint(Path(path), spec)
        return cls.from_model(model, spec, head=head)

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

"""The sealed suite's architectures: torchvision's own model classes, sized for 28 x 28 grey images.

Written the way a third party adapts library models to a small grey-scale data set: the torchvision class is
built with smaller widths or depths where the ImageNet size would not train on a CPU, its stem is swapped for
a one-channel one, and a standardisation step in front makes the saved weights the whole model. Nothing here
imports ``radioactive``. Every network takes float images in [0, 1] of shape ``(N, 1, 28, 28)`` and ends in
torchvision's own final ``nn.Linear`` (``classifier``, ``classifier.1``, ``fc`` or ``heads.head``), which the
white-box test must find by itself.

Families, none of which the open suite (``heldout/archs.py``) or the marker's ``cnn`` belongs to:

- ``densenet``: ``torchvision.models.DenseNet`` (dense connectivity, BN-ReLU-conv, transitions), growth 12,
  blocks (3, 3, 3), 3 x 3 stem then 2 x 2 max-pooling;
- ``efficientnet_b0``: ``torchvision.models.efficientnet_b0`` (MBConv, squeeze-excitation, SiLU, stochastic
  depth), full B0 widths and depths, one-channel stem at stride 2;
- ``regnet``: ``torchvision.models.regnet_y_400mf`` (RegNetY: grouped convolutions, squeeze-excitation),
  one-channel stem at stride 2;
- ``vit``: ``torchvision.models.VisionTransformer`` (patch 4, 4 layers, 4 heads, width 96): attention only.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torchvision
from torch import nn

MEAN, STD = 0.2860, 0.3530  # Fashion-MNIST training pixels


class Standardized(nn.Module):
    """``net((x - MEAN) / STD)``: the whole model in one state dict."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - MEAN) / STD)


def densenet(num_classes: int = 10) -> nn.Module:
    net = torchvision.models.DenseNet(growth_rate=12, block_config=(3, 3, 3), num_init_features=24, bn_size=4,
                                      num_classes=num_classes)
    net.features.conv0 = nn.Conv2d(1, 24, kernel_size=3, stride=1, padding=1, bias=False)
    net.features.pool0 = nn.MaxPool2d(kernel_size=2, stride=2)
    return Standardized(net)


def efficientnet_b0(num_classes: int = 10) -> nn.Module:
    net = torchvision.models.efficientnet_b0(num_classes=num_classes, dropout=0.2)
    stem = net.features[0][0]
    net.features[0][0] = nn.Conv2d(1, stem.out_channels, kernel_size=3, stride=2, padding=1, bias=False)
    return Standardized(net)


def regnet(num_classes: int = 10) -> nn.Module:
    net = torchvision.models.regnet_y_400mf(num_classes=num_classes)
    stem = net.stem[0]
    net.stem[0] = nn.Conv2d(1, stem.out_channels, kernel_size=3, stride=2, padding=1, bias=False)
    return Standardized(net)


def vit(num_classes: int = 10) -> nn.Module:
    net = torchvision.models.VisionTransformer(image_size=28, patch_size=4, num_layers=4, num_heads=4,
                                               hidden_dim=96, mlp_dim=192, num_classes=num_classes)
    net.conv_proj = nn.Conv2d(1, 96, kernel_size=4, stride=4)
    return Standardized(net)


ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "densenet": densenet,
    "efficientnet_b0": efficientnet_b0,
    "regnet": regnet,
    "vit": vit,
}
FAMILIES = {"densenet": "dense", "efficientnet_b0": "mobile + squeeze-excitation", "regnet": "grouped + SE",
            "vit": "transformer"}


def build(arch: str, num_classes: int = 10) -> nn.Module:
    """A fresh network of architecture ``arch`` (seed the global generator first for a fixed initialisation)."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose from {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[arch](num_classes=num_classes)

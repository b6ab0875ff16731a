"""The held-out suite's architectures: four families the marker's plain ``cnn`` does not belong to.

Written the way a third party would write its own small networks for 28 x 28 grey images and 10 classes;
nothing here imports ``radioactive``. Every network takes float images in [0, 1] of shape ``(N, 1, 28, 28)``
(it standardises them itself, so the saved weights are the whole model) and ends in an ``nn.Linear``
attribute named ``head``: the classifier whose rows the white-box test reads.

Families (multiply-accumulates per image next to the marker's ``cnn``, about 22 M):

- ``vgg`` (21.7 M): plain convolutions, GroupNorm and GELU, no batch norm, a hidden fully connected layer
  (256) before the head;
- ``preact_resnet`` (20.2 M): pre-activation residual network (BN -> ReLU -> conv inside each block);
- ``mobilenet`` (10.6 M): MobileNetV2-style inverted residuals, depthwise convolutions, linear bottlenecks;
- ``convmixer`` (7.8 M): ConvMixer (patch embedding, then depthwise spatial and pointwise channel mixing).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

MEAN, STD = 0.2860, 0.3530  # Fashion-MNIST training pixels


class Standardize(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - MEAN) / STD


# -- plain convolutional -------------------------------------------------------------------------------
class VGG(nn.Module):
    """Conv3x3-GroupNorm-GELU stacks (24 | pool | 48 x3 | pool | 96 x2), then flatten -> 256 -> head."""

    def __init__(self, num_classes: int = 10, widths: tuple = (24, 24, "M", 48, 48, 48, "M", 96, 96),
                 hidden: int = 256, dropout: float = 0.3):
        super().__init__()
        layers: list[nn.Module] = [Standardize()]
        cin, size = 1, 28
        for item in widths:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
                size //= 2
                continue
            layers += [nn.Conv2d(cin, item, 3, padding=1), nn.GroupNorm(8, item), nn.GELU()]
            cin = item
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(cin * size * size, hidden), nn.GELU(),
                                        nn.Dropout(dropout))
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.classifier(self.features(x)))


# -- residual ------------------------------------------------------------------------------------------
class PreActBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.shortcut = (nn.Conv2d(cin, cout, 1, stride=stride, bias=False)
                         if stride != 1 or cin != cout else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(x))
        skip = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(torch.relu(self.bn2(out)))
        return out + skip


class PreActResNet(nn.Module):
    """Stem conv, three stages of two pre-activation blocks (widths 16, 32, 64), BN-ReLU, pool, head."""

    def __init__(self, num_classes: int = 10, width: int = 16, blocks: tuple[int, ...] = (2, 2, 2)):
        super().__init__()
        self.stem = nn.Sequential(Standardize(), nn.Conv2d(1, width, 3, padding=1, bias=False))
        stages: list[nn.Module] = []
        cin = width
        for index, count in enumerate(blocks):
            cout = width * 2**index
            for block in range(count):
                stages.append(PreActBlock(cin, cout, stride=2 if index > 0 and block == 0 else 1))
                cin = cout
        self.stages = nn.Sequential(*stages)
        self.final = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.final(self.stages(self.stem(x))))


# -- depthwise / mobile --------------------------------------------------------------------------------
class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6()]
        layers += [nn.Conv2d(hidden, hidden, 3, stride=stride, padding=1, groups=hidden, bias=False),
                   nn.BatchNorm2d(hidden), nn.ReLU6(),
                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]  # linear bottleneck
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.residual else out


class MobileNet(nn.Module):
    """MobileNetV2 layout for 28 x 28: (expansion, channels, repeats, stride) stages, 1x1 conv to 256, head."""

    SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 2, 1))

    def __init__(self, num_classes: int = 10, last: int = 256, dropout: float = 0.2):
        super().__init__()
        layers: list[nn.Module] = [Standardize(), nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16),
                                   nn.ReLU6()]
        cin = 16
        for expand, cout, repeats, stride in self.SETTINGS:
            for index in range(repeats):
                layers.append(InvertedResidual(cin, cout, stride if index == 0 else 1, expand))
                cin = cout
        layers += [nn.Conv2d(cin, last, 1, bias=False), nn.BatchNorm2d(last), nn.ReLU6(),
                   nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout)]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(last, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


# -- mixer ------------------------------------------------------------------------------------------------
class Residual(nn.Module):
    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.inner(x)


class ConvMixer(nn.Module):
    """ConvMixer-128/8 with 4 x 4 patches (7 x 7 tokens) and 5 x 5 depthwise mixing."""

    def __init__(self, num_classes: int = 10, dim: int = 128, depth: int = 8, patch: int = 4, kernel: int = 5):
        super().__init__()
        layers: list[nn.Module] = [Standardize(), nn.Conv2d(1, dim, patch, stride=patch), nn.GELU(),
                                   nn.BatchNorm2d(dim)]
        for _ in range(depth):
            layers += [
                Residual(nn.Sequential(nn.Conv2d(dim, dim, kernel, groups=dim, padding=kernel // 2), nn.GELU(),
                                       nn.BatchNorm2d(dim))),
                nn.Conv2d(dim, dim, 1), nn.GELU(), nn.BatchNorm2d(dim),
            ]
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "vgg": VGG,
    "preact_resnet": PreActResNet,
    "mobilenet": MobileNet,
    "convmixer": ConvMixer,
}
FAMILIES = {"vgg": "plain convolutional", "preact_resnet": "residual", "mobilenet": "depthwise/mobile",
            "convmixer": "mixer"}


def build(arch: str, num_classes: int = 10) -> nn.Module:
    """A fresh network by name; ``ValueError`` naming the valid ones otherwise."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose from {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[arch](num_classes=num_classes)

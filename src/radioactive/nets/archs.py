"""Built-in CPU-scale architectures, torchvision/timm networks by name, and :class:`NetSpec`, the recipe
that rebuilds a network (architecture, classes, input format, normalisation).

Images given to a network built by :func:`build_from_spec` are in [0, 1]: its first layer is
:class:`Normalize`.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, MissingDependencyError
from .user import USER_SOURCE, build_user_model, is_user_arch

# ---------------------------------------------------------------------------------------------------------
# Built-in architectures (any input size thanks to adaptive pooling; features = input of `fc`).


def _conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class SmallCNN(nn.Module):
    """Plain CNN: three conv stages, global average pooling, then ``fc``. Features: ``feature_dim``."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 32, feature_dim: int = 128):
        super().__init__()
        self.body = nn.Sequential(
            _conv_bn(in_channels, width),
            _conv_bn(width, width),
            nn.MaxPool2d(2),
            _conv_bn(width, 2 * width),
            _conv_bn(2 * width, 2 * width),
            nn.MaxPool2d(2),
            _conv_bn(2 * width, feature_dim),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.fc = nn.Linear(feature_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x))


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class NarrowResNet(nn.Module):
    """A narrow ResNet (three stages of basic blocks, widths w, 2w, 4w); features: ``4 * width``."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 16, blocks: int = 1):
        super().__init__()
        self.stem = _conv_bn(in_channels, width)
        layers: list[nn.Module] = []
        cin = width
        for stage, cout in enumerate((width, 2 * width, 4 * width)):
            for index in range(blocks):
                layers.append(_BasicBlock(cin, cout, stride=2 if stage > 0 and index == 0 else 1))
                cin = cout
        self.layers = nn.Sequential(*layers)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.layers(self.stem(x))))


class MLP(nn.Module):
    """Two hidden layers on flattened pixels (needs a fixed input size: ``n`` for ``n x n``, or ``(H, W)``)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, input_size: int | Sequence[int] = 28,
                 hidden: int = 256):
        super().__init__()
        height, width = (input_size, input_size) if isinstance(input_size, int) else input_size
        self.body = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_channels * height * width, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
        )
        self.fc = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x))


ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "cnn": SmallCNN,
    "resnet_narrow": NarrowResNet,
    "mlp": MLP,
}


class Normalize(nn.Module):
    """(x - mean) / std per channel, with grey images repeated to the model's channel count."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = self.mean.shape[1]
        if x.shape[1] != channels:
            if x.shape[1] == 1:
                x = x.expand(-1, channels, -1, -1)
            elif channels == 1:
                x = x.mean(dim=1, keepdim=True)
            else:
                raise ConfigError(
                    f"images have {x.shape[1]} channels but the model expects {channels}; give 1- or "
                    f"{channels}-channel images"
                )
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)


def parse_arch(arch: str) -> tuple[str, str]:
    """``(source, name)`` of an architecture string: ``torchvision:<name>`` / ``timm:<name>`` / ``builtin:<name>``,
    a built-in name (``cnn``, ``resnet_narrow``, ``mlp``), the user's ``module:callable`` or ``file.py:callable``
    (source ``python``, name the whole string; see :mod:`radioactive.nets.user`), else a bare torchvision name."""
    if is_user_arch(arch):
        return USER_SOURCE, arch
    if ":" in arch:
        source, name = arch.split(":", 1)
        return source, name
    return ("builtin" if arch in ARCHITECTURES else "torchvision"), arch


SOURCES = ("builtin", "torchvision", "timm", USER_SOURCE)


@dataclass(frozen=True)
class NetSpec:
    """How to rebuild a network: architecture name and arguments, classes, input format, preprocessing.

    ``source`` is ``"builtin"``, ``"torchvision"``, ``"timm"`` or ``"python"`` (the user's own code: ``arch`` is
    ``module:callable``; building runs it, see :mod:`radioactive.nets.user`). Images given to the built model are in
    [0, 1]; the model built by :func:`build_from_spec` starts with :class:`Normalize` (``mean``/``std``).
    """

    arch: str
    num_classes: int
    in_channels: int = 1
    input_size: tuple[int, int] = (28, 28)
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.5,)
    source: str = "builtin"
    kwargs: dict[str, Any] = field(default_factory=dict)
    head: str = ""

    def __post_init__(self) -> None:
        if self.num_classes < 2:
            raise ConfigError(f"num_classes must be >= 2, got {self.num_classes}")
        if self.source not in SOURCES:
            raise ConfigError(f"unknown model source {self.source!r}; choose from {list(SOURCES)}")
        if len(self.mean) != len(self.std):
            raise ConfigError(
                f"mean and std need one value per channel each, got {len(self.mean)} and {len(self.std)} values"
            )
        object.__setattr__(self, "input_size", tuple(int(v) for v in self.input_size))
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["input_size"] = list(self.input_size)
        out["mean"] = list(self.mean)
        out["std"] = list(self.std)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NetSpec:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown network spec fields {sorted(unknown)}; valid: {sorted(known)}")
        return cls(**data)


def build_model(
    arch: str, num_classes: int, *, in_channels: int = 1, source: str | None = None, **kwargs: Any
) -> nn.Module:
    """Build an untrained classifier (no normalisation layer) by name.

    Built-in names: ``cnn``, ``resnet_narrow``, ``mlp``. Otherwise ``torchvision:<name>`` / ``timm:<name>``,
    the user's ``module:callable`` (imports and runs that code: :func:`radioactive.nets.user.build_user_model`)
    or a bare torchvision name. Weights are never downloaded here; load them with :func:`load_checkpoint`.
    """
    if source is None:
        source, arch = parse_arch(arch)
    if source == USER_SOURCE:
        return build_user_model(arch, num_classes, in_channels=in_channels, **kwargs)
    if source == "builtin":
        if arch not in ARCHITECTURES:
            raise ConfigError(f"unknown architecture {arch!r}; choose from {sorted(ARCHITECTURES)}")
        return ARCHITECTURES[arch](num_classes=num_classes, in_channels=in_channels, **kwargs)
    if source == "torchvision":
        import torchvision

        names = torchvision.models.list_models()
        if arch not in names:
            raise ConfigError(f"unknown architecture {arch!r}: neither built in ({', '.join(sorted(ARCHITECTURES))}) "
                              "nor a torchvision model; see torchvision.models.list_models() for the names, "
                              "write timm:<name> for a timm model, or module:callable for your own code")
        model = torchvision.models.get_model(arch, weights=None, num_classes=num_classes, **kwargs)
        if in_channels != 3:
            warnings.warn(
                f"{arch} takes 3-channel input; {in_channels}-channel images are adapted by the Normalize layer",
                stacklevel=2,
            )
        return model
    if source == "timm":
        try:
            import timm
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise MissingDependencyError(f"architecture timm:{arch} needs timm, which is not installed; run: pip "
                                         "install 'radioactive[timm]'") from exc
        return timm.create_model(arch, pretrained=False, num_classes=num_classes, in_chans=in_channels, **kwargs)
    raise ConfigError(f"unknown model source {source!r}; choose from {list(SOURCES)}")


def build_from_spec(spec: NetSpec) -> nn.Sequential:
    """Normalize followed by the classifier; the classifier is ``model[1]`` and takes [0, 1] images.

    A built-in architecture with a fixed input size (``mlp``) gets the spec's ``input_size`` unless its
    ``kwargs`` give one."""
    channels = spec.in_channels if spec.source in ("builtin", USER_SOURCE) else len(spec.mean)
    kwargs = dict(spec.kwargs)
    if (spec.source == "builtin" and spec.arch in ARCHITECTURES and "input_size" not in kwargs
            and "input_size" in inspect.signature(ARCHITECTURES[spec.arch]).parameters):
        kwargs["input_size"] = spec.input_size
    net = build_model(spec.arch, spec.num_classes, in_channels=channels, source=spec.source, **kwargs)
    return nn.Sequential(Normalize(spec.mean, spec.std), net)


def make_spec(
    arch: str, num_classes: int, images: torch.Tensor, *, kwargs: dict[str, Any] | None = None
) -> NetSpec:
    """A :class:`NetSpec` for training ``arch`` on ``images`` ``(N, c, H, W)``: their size, channel count, and
    per-channel mean/std (measured on up to 10k images). ``arch`` is a built-in name, ``torchvision:<name>``,
    ``timm:<name>``, the user's ``module:callable`` or a bare torchvision name; torchvision and timm networks get
    3 channels (grey is repeated), the others the images' channel count."""
    source, name = parse_arch(arch)
    sample = images[: min(len(images), 10_000)]
    sample = sample.float().div_(255) if sample.dtype == torch.uint8 else sample.float()
    mean = sample.mean(dim=(0, 2, 3)).tolist()
    std = sample.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist()
    channels = images.shape[1]
    own_channels = source in ("builtin", USER_SOURCE)
    if not own_channels and channels == 1:
        mean, std = mean * 3, std * 3
    return NetSpec(
        arch=name, num_classes=num_classes, in_channels=channels if own_channels else 3,
        input_size=(images.shape[2], images.shape[3]), mean=tuple(round(v, 4) for v in mean),
        std=tuple(round(v, 4) for v in std), source=source, kwargs=dict(kwargs or {}),
    )

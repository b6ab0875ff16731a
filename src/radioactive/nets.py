"""Classifiers as *features + final linear head*: built-in CPU-scale architectures, torchvision/timm by
name, head resolution, and safe loading and saving of checkpoints (safetensors with a JSON spec).

A model here is any ``nn.Module`` mapping images to logits. ``split_head`` finds its final linear layer
(an explicit name, timm's ``get_classifier()``, else the last ``nn.Linear`` run in a dry forward pass),
captures that layer's input with a forward pre-hook, and checks that ``head(features)`` reproduces the
logits, so every detector works on any architecture.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import warnings
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._io import atomic_write
from .errors import HeadResolutionError, ModelLoadError

__all__ = [
    "ARCHITECTURES",
    "NetSpec",
    "Normalize",
    "build_model",
    "build_from_spec",
    "split_head",
    "FeatureSplit",
    "state_dict_sha256",
    "save_checkpoint",
    "load_checkpoint",
    "load_state_dict_file",
    "load_suspect",
    "ExportedModel",
]

_PREFIXES = ("module.", "model.", "_orig_mod.")


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
    """Two hidden layers on flattened pixels (needs a fixed input size)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, input_size: int = 28, hidden: int = 256):
        super().__init__()
        self.body = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_channels * input_size * input_size, hidden),
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
                raise ValueError(f"images have {x.shape[1]} channels but the model expects {channels}")
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)


@dataclass(frozen=True)
class NetSpec:
    """How to rebuild a network: architecture name and arguments, classes, input format, preprocessing.

    ``source`` is ``"builtin"``, ``"torchvision"`` or ``"timm"``. Images given to the built model are in
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
            raise ValueError(f"num_classes must be >= 2, got {self.num_classes}")
        if self.source not in ("builtin", "torchvision", "timm"):
            raise ValueError(f"unknown model source {self.source!r}; choose from ['builtin', 'torchvision', 'timm']")
        if len(self.mean) != len(self.std):
            raise ValueError("mean and std must have the same length")
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
            raise ValueError(f"unknown network spec fields {sorted(unknown)}")
        return cls(**data)


def build_model(
    arch: str, num_classes: int, *, in_channels: int = 1, source: str | None = None, **kwargs: Any
) -> nn.Module:
    """Build an untrained classifier (no normalisation layer) by name.

    Built-in names: ``cnn``, ``resnet_narrow``, ``mlp``. Otherwise ``torchvision:<name>`` / ``timm:<name>``
    or a bare torchvision name. Weights are never downloaded here; load them with :func:`load_checkpoint`.
    """
    if source is None:
        if ":" in arch:
            source, arch = arch.split(":", 1)
        elif arch in ARCHITECTURES:
            source = "builtin"
        else:
            source = "torchvision"
    if source == "builtin":
        if arch not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {arch!r}; choose from {sorted(ARCHITECTURES)}")
        return ARCHITECTURES[arch](num_classes=num_classes, in_channels=in_channels, **kwargs)
    if source == "torchvision":
        import torchvision

        names = torchvision.models.list_models()
        if arch not in names:
            raise ValueError(f"unknown torchvision architecture {arch!r}; see torchvision.models.list_models()")
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
            raise ImportError("timm architectures need timm: pip install 'radioactive[timm]'") from exc
        return timm.create_model(arch, pretrained=False, num_classes=num_classes, in_chans=in_channels, **kwargs)
    raise ValueError(f"unknown model source {source!r}; choose from ['builtin', 'torchvision', 'timm']")


def build_from_spec(spec: NetSpec) -> nn.Sequential:
    """Normalize followed by the classifier; the classifier is ``model[1]`` and takes [0, 1] images."""
    channels = spec.in_channels if spec.source == "builtin" else len(spec.mean)
    net = build_model(spec.arch, spec.num_classes, in_channels=channels, source=spec.source, **spec.kwargs)
    return nn.Sequential(Normalize(spec.mean, spec.std), net)


# ---------------------------------------------------------------------------------------------------------
# Head resolution.


@dataclass
class FeatureSplit:
    """A classifier split into ``features(x) -> (N, d)`` and its final linear layer ``head``.

    ``head_name`` is the module's dotted name in ``model``. Calling ``features`` runs the whole model and
    captures the head's input (so it works for any topology), in the model's current mode.
    """

    model: nn.Module
    head: nn.Linear
    head_name: str

    @property
    def feature_dim(self) -> int:
        return self.head.in_features

    @property
    def num_classes(self) -> int:
        return self.head.out_features

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        captured: list[torch.Tensor] = []

        def hook(_module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            captured.append(inputs[0])

        handle = self.head.register_forward_pre_hook(hook)
        try:
            logits = self.model(x)
        finally:
            handle.remove()
        if not captured:
            raise HeadResolutionError(f"the head {self.head_name!r} did not run in the forward pass; pass head=")
        feats = captured[-1]
        return feats.reshape(-1, feats.shape[-1]) if feats.dim() > 2 else feats, logits

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features_and_logits(x)[0]

    def weight(self) -> torch.Tensor:
        """Head weights ``(C, d)`` as float64 on CPU."""
        return self.head.weight.detach().to("cpu", torch.float64)

    def bias(self) -> torch.Tensor | None:
        return None if self.head.bias is None else self.head.bias.detach().to("cpu", torch.float64)


def _named(model: nn.Module, target: nn.Module) -> str:
    for name, module in model.named_modules():
        if module is target:
            return name
    return "<unnamed>"


def split_head(
    model: nn.Module,
    example: torch.Tensor,
    *,
    head: str | None = None,
    atol: float = 1e-4,
) -> FeatureSplit:
    """Find ``model``'s final linear layer and check that it maps the captured features to the logits.

    Args:
        model: any classifier ``(N, ...) -> (N, C)``.
        example: a small batch of valid inputs (used for the dry forward pass and the check).
        head: dotted module name of the final linear layer, to override the automatic search.
        atol: tolerance (relative to the logits' scale) of the reproduction check.

    Raises:
        HeadResolutionError: no linear head, a wrong ``head`` name, or a head that does not produce the
            logits (e.g. a layer after it); the message says to pass ``head=``.
    """
    modules = dict(model.named_modules())
    if head is not None:
        if head not in modules:
            linear = [name for name, mod in modules.items() if isinstance(mod, nn.Linear)]
            raise HeadResolutionError(f"no module named {head!r} in the model; its linear layers are {linear}")
        layer = modules[head]
        if not isinstance(layer, nn.Linear):
            raise HeadResolutionError(f"module {head!r} is a {type(layer).__name__}, not nn.Linear; pass head=")
        name = head
    else:
        layer = None
        getter = getattr(model, "get_classifier", None)
        if callable(getter):
            candidate = getter()
            if isinstance(candidate, nn.Linear):
                layer = candidate
        if layer is None:
            order: list[nn.Linear] = []
            hooks = [
                mod.register_forward_pre_hook(lambda m, _inp: order.append(m))
                for mod in modules.values()
                if isinstance(mod, nn.Linear)
            ]
            was_training = model.training
            model.eval()
            try:
                with torch.no_grad():
                    model(example)
            finally:
                for hook in hooks:
                    hook.remove()
                model.train(was_training)
            if not order:
                raise HeadResolutionError("the model runs no nn.Linear layer; pass head= with its classifier's name")
            layer = order[-1]
        name = _named(model, layer)
    split = FeatureSplit(model=model, head=layer, head_name=name)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            feats, logits = split.features_and_logits(example)
            if logits.dim() != 2:
                raise HeadResolutionError(f"the model returns shape {tuple(logits.shape)}, expected (N, classes)")
            again = layer(feats)
    finally:
        model.train(was_training)
    scale = logits.abs().max().clamp_min(1.0)
    if again.shape != logits.shape or not torch.allclose(again, logits, atol=atol * float(scale), rtol=1e-3):
        raise HeadResolutionError(
            f"the layer {name!r} does not reproduce the model's logits (something runs after it); "
            "pass head= with the name of the final linear layer"
        )
    return split


# ---------------------------------------------------------------------------------------------------------
# Hashing, saving and safe loading.


def state_dict_sha256(model_or_state: nn.Module | dict[str, torch.Tensor]) -> str:
    """A hash of a model's weights (names, dtypes, shapes and values), independent of file format."""
    state = model_or_state.state_dict() if isinstance(model_or_state, nn.Module) else model_or_state
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().to("cpu").contiguous()
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def save_checkpoint(model: nn.Module, path: str | os.PathLike, spec: NetSpec, extra: dict[str, Any] | None = None) -> str:
    """Write ``model``'s weights to a safetensors file whose header carries ``spec`` and ``extra`` as JSON.

    Returns the weights' sha256 (:func:`state_dict_sha256`). Written atomically.
    """
    from safetensors.torch import save_file

    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    digest = state_dict_sha256(state)
    metadata = {
        "radioactive.spec": json.dumps(spec.to_dict()),
        "radioactive.extra": json.dumps(extra or {}, default=str),
        "radioactive.weights_sha256": digest,
    }
    with atomic_write(path) as tmp:
        save_file(state, str(tmp), metadata=metadata)
    return digest


def _strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    changed = True
    while changed:
        changed = False
        for prefix in _PREFIXES:
            if state and all(k.startswith(prefix) for k in state):
                state = {k[len(prefix):]: v for k, v in state.items()}
                changed = True
    return state


def load_state_dict_file(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read weights without executing code: safetensors, or a ``torch.save`` state dict via
    ``torch.load(weights_only=True)``. Returns (state dict, safetensors header metadata or {})."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"model file {str(path)!r} does not exist")
    with open(path, "rb") as handle:
        head = handle.read(8)
    if path.suffix == ".safetensors" or (len(head) == 8 and int.from_bytes(head, "little") < 100_000_000 and not zipfile.is_zipfile(path)):
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = dict(handle.metadata() or {})
                state = {k: handle.get_tensor(k) for k in handle.keys()}
        except Exception as exc:
            if path.suffix == ".safetensors":
                raise ModelLoadError(f"{str(path)!r} is not a valid safetensors file: {exc}") from exc
        else:
            return _strip_prefixes(state), metadata
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelLoadError(
            f"{str(path)!r} cannot be loaded safely (only safetensors files and plain state dicts are accepted; "
            f"pickled code is refused): {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from exc
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelLoadError(f"{str(path)!r} does not hold a state dict of tensors")
    return _strip_prefixes(dict(obj)), {}


def load_checkpoint(path: str | os.PathLike, spec: NetSpec | None = None) -> tuple[nn.Sequential, NetSpec, dict[str, Any]]:
    """Load a checkpoint written by :func:`save_checkpoint` (or weights plus an explicit ``spec``).

    Returns (model with its Normalize layer, in eval mode; spec; extra metadata).
    """
    state, metadata = load_state_dict_file(path)
    if spec is None:
        if "radioactive.spec" not in metadata:
            raise ModelLoadError(
                f"{str(path)!r} carries no architecture spec; give the architecture (e.g. --arch resnet18)"
            )
        spec = NetSpec.from_dict(json.loads(metadata["radioactive.spec"]))
    extra = json.loads(metadata.get("radioactive.extra", "{}"))
    model = build_from_spec(spec)
    target = model.state_dict()
    if not any(k.startswith("0.") or k.startswith("1.") for k in state):
        state = {f"1.{k}": v for k, v in state.items()}
        state.update({k: v for k, v in target.items() if k.startswith("0.")})
    _check_state(path, state, target)
    model.load_state_dict(state)
    model.eval()
    return model, spec, extra


def _check_state(path: str | os.PathLike, state: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> None:
    missing = sorted(set(target) - set(state))
    unexpected = sorted(set(state) - set(target))
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} tensors (e.g. {missing[:3]})")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} tensors (e.g. {unexpected[:3]})")
    for name in sorted(set(state) & set(target)):
        got, want = state[name], target[name]
        if got.shape != want.shape:
            problems.append(f"{name}: shape {tuple(got.shape)} but the architecture needs {tuple(want.shape)}")
        elif got.dtype.is_floating_point != want.dtype.is_floating_point:
            problems.append(f"{name}: dtype {got.dtype} but the architecture needs {want.dtype}")
        if len(problems) > 6:
            break
    if problems:
        raise ModelLoadError(
            f"weights in {str(path)!r} do not fit the architecture: " + "; ".join(problems)
            + ". Check the architecture name and number of classes."
        )


@contextlib.contextmanager
def _force_weights_only() -> Iterator[None]:
    # torch.export.load falls back to torch.load(weights_only=False) for some members; this makes torch refuse.
    previous = os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD")
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("TORCH_FORCE_WEIGHTS_ONLY_LOAD", None)
        else:
            os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = previous


def _refuse_pickled_objects(path: Path) -> None:
    """Raise :class:`ModelLoadError` if a torch.export archive holds anything torch would unpickle as code:
    custom or opaque objects (read with plain ``pickle``) or nested ``torch.save`` files that are not
    weights-only."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelLoadError(f"{str(path)!r} is not a torch.export archive (not a readable zip file)") from exc
    with archive:
        for info in archive.infolist():
            base = info.filename.rsplit("/", 1)[-1]
            if "constants/" in info.filename and base.startswith(("custom_obj_", "opaque_obj_")):
                raise ModelLoadError(
                    f"{str(path)!r} holds pickled objects ({info.filename}); pickled code is refused, only "
                    "tensors are accepted in a suspect archive"
                )
            with archive.open(info) as member:
                magic = member.read(2)
            if magic == b"PK":
                try:
                    torch.load(io.BytesIO(archive.read(info)), map_location="cpu", weights_only=True)
                except Exception as exc:
                    raise ModelLoadError(
                        f"{str(path)!r} member {info.filename} is not weights-only ({type(exc).__name__}); "
                        "pickled code is refused"
                    ) from None


class ExportedModel(nn.Module):
    """A loaded ``torch.export`` program as a module: its graph is frozen, so ``train()``/``eval()`` only set
    the flag (the exported module itself refuses them). It has no ``nn.Linear`` submodules: white-box tests
    need the weights with an architecture instead; black-box tests work as is."""

    def __init__(self, program_module: nn.Module):
        super().__init__()
        self.program = program_module

    def train(self, mode: bool = True) -> ExportedModel:
        self.training = bool(mode)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.program(x)


def _is_torchscript(path: Path) -> bool:
    """A TorchScript archive is a zip whose members include compiled TorchScript under ``code/`` and a
    ``constants.pkl``; its loader accepts only tensors and TorchScript types (no Python pickle payloads)."""
    if not path.is_file() or not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    return any("/code/" in name for name in names) and any(name.endswith("constants.pkl") for name in names)


def load_suspect(
    path: str | os.PathLike, *, arch: str | None = None, num_classes: int | None = None, spec: NetSpec | None = None
) -> nn.Module:
    """Load an untrusted suspect model without executing code from the file.

    Accepts a radioactive checkpoint, safetensors or a ``weights_only`` state dict with ``arch`` (builtin,
    ``torchvision:``/``timm:`` name) and ``num_classes``, a ``torch.export`` archive (``.pt2``), or a TorchScript archive (``torch.jit.save``). The last two are
    frozen graphs without ``nn.Linear`` modules: black-box tests only.
    """
    path = Path(path)
    if _is_torchscript(path):
        try:
            scripted = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:
            raise ModelLoadError(f"{str(path)!r} is not a loadable TorchScript archive: {exc}") from exc
        return ExportedModel(scripted)
    if path.suffix == ".pt2":
        _refuse_pickled_objects(path)
        try:
            with _force_weights_only():
                program = torch.export.load(str(path))
        except Exception as exc:
            raise ModelLoadError(f"{str(path)!r} is not a loadable torch.export archive: {exc}") from exc
        return ExportedModel(program.module())
    if spec is None and arch is not None:
        if num_classes is None:
            raise ModelLoadError("give the number of classes together with the architecture")
        source, name = (arch.split(":", 1) if ":" in arch else (("builtin" if arch in ARCHITECTURES else "torchvision"), arch))
        if source == "builtin":
            spec = NetSpec(arch=name, num_classes=num_classes, source=source)
        else:
            spec = NetSpec(
                arch=name, num_classes=num_classes, in_channels=3, input_size=(224, 224),
                mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), source=source,
            )
    model, _, _ = load_checkpoint(path, spec)
    return model

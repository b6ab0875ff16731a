"""Weights on disk: a format-independent weight hash, checkpoints (safetensors with a JSON spec in the
header), and loading of untrusted files without executing code from them (state dicts, ``torch.export``
and TorchScript archives).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._io import atomic_write
from ..errors import ModelLoadError
from .archs import NetSpec, build_from_spec, parse_arch
from .user import USER_SOURCE

_PREFIXES = ("module.", "model.", "_orig_mod.")


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
        problem = "does not exist (that path is a folder)" if path.is_dir() else "does not exist"
        raise ModelLoadError(f"model file {str(path)!r} {problem}; give the path of a weights file (a safetensors "
                             "checkpoint or a torch.save state dict)")
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
                raise ModelLoadError(f"{str(path)!r} is not a valid safetensors file ({exc}); it is truncated or not "
                                     "weights: give a checkpoint written by radioactive or a safetensors file") from exc
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
        raise ModelLoadError(f"{str(path)!r} does not hold a state dict of tensors (name -> tensor); save the "
                             "model's state_dict() (safetensors preferred), not the model object")
    return _strip_prefixes(dict(obj)), {}


def load_checkpoint(path: str | os.PathLike, spec: NetSpec | None = None, *, user_arch: str | None = None
                    ) -> tuple[nn.Sequential, NetSpec, dict[str, Any]]:
    """Load a checkpoint written by :func:`save_checkpoint` (or weights plus an explicit ``spec``).

    A file is never trusted to name code: a recorded spec whose architecture is the user's own code (source
    ``python``, ``module:callable``) is used only when ``user_arch`` names the same architecture (the caller's
    own ``--arch``); otherwise :class:`ModelLoadError`.

    Returns (model with its Normalize layer, in eval mode; spec; extra metadata).
    """
    state, metadata = load_state_dict_file(path)
    if spec is None:
        spec = recorded_spec(metadata)
        if spec is None:
            raise ModelLoadError(
                f"{str(path)!r} carries no architecture spec; give the architecture (e.g. --arch resnet18)"
            )
        if spec.source == USER_SOURCE and spec.arch != user_arch:
            raise ModelLoadError(
                f"{str(path)!r} records its architecture as the user code {spec.arch!r}; radioactive never runs code "
                f"a weights file names: to run that code yourself, pass --arch {spec.arch} (API: user_arch=)"
            )
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


def recorded_spec(metadata: dict[str, str]) -> NetSpec | None:
    """The :class:`NetSpec` a checkpoint's header records (None when it records none)."""
    if "radioactive.spec" not in metadata:
        return None
    return NetSpec.from_dict(json.loads(metadata["radioactive.spec"]))


def _header_spec(path: Path) -> NetSpec | None:
    """The spec in a safetensors file's header, read without its tensors (None: none, or not safetensors)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return recorded_spec(dict(handle.metadata() or {}))
    except Exception:
        return None


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


def is_torchscript(path: Path) -> bool:
    """A TorchScript archive is a zip whose members include compiled TorchScript under ``code/`` and a
    ``constants.pkl``; its loader accepts only tensors and TorchScript types (no Python pickle payloads)."""
    if not path.is_file() or not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    return any("/code/" in name for name in names) and any(name.endswith("constants.pkl") for name in names)


def load_suspect(
    path: str | os.PathLike, *, arch: str | None = None, num_classes: int | None = None, spec: NetSpec | None = None,
    in_channels: int = 1,
) -> nn.Module:
    """Load an untrusted suspect model without executing code from the file.

    Accepts a radioactive checkpoint, safetensors or a ``weights_only`` state dict with ``arch`` (builtin,
    ``torchvision:``/``timm:`` name, or the caller's own ``module:callable``) and ``num_classes``, a
    ``torch.export`` archive (``.pt2``), or a TorchScript archive (``torch.jit.save``). The last two are
    frozen graphs without ``nn.Linear`` modules: black-box tests only.

    ``arch="module:callable"`` imports and runs the caller's code (:mod:`radioactive.nets.user`), never code
    named by the file: the network is ``callable(num_classes=num_classes, in_channels=in_channels)`` and gets
    the images as given, in [0, 1] (no normalisation added), unless the file is a checkpoint ``radioactive
    train --arch`` wrote with that same ``module:callable``, whose recorded spec (normalisation included) is
    used. ``in_channels``: channels of the images the test gives (1 for grey).
    """
    path = Path(path)
    if is_torchscript(path):
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
            raise ModelLoadError(f"architecture {arch!r} given without the number of classes; give both "
                                 "(--arch NAME --num-classes N)")
        source, name = parse_arch(arch)
        if source == USER_SOURCE:
            recorded = _header_spec(path)
            if recorded is not None and recorded.source == USER_SOURCE and recorded.arch == name:
                return load_checkpoint(path, recorded)[0]
            identity = (0.0,) * in_channels, (1.0,) * in_channels
            spec = NetSpec(arch=name, num_classes=num_classes, in_channels=in_channels, mean=identity[0],
                           std=identity[1], source=source)
        elif source == "builtin":
            spec = NetSpec(arch=name, num_classes=num_classes, source=source)
        else:
            spec = NetSpec(
                arch=name, num_classes=num_classes, in_channels=3, input_size=(224, 224),
                mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), source=source,
            )
    model, _, _ = load_checkpoint(path, spec)
    return model

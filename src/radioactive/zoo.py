"""The marker zoo: the shipped Fashion-MNIST marking network, its training, and the one place that decides
which marking network and which device a command uses.

The committed marker ships inside the package (``radioactive/markers/fmnist-cnn.safetensors``, found with
:mod:`importlib.resources`), so a plain ``pip install`` loads the same weights as a source checkout and keys
made for it keep matching. :func:`resolve_marker` honours the marker a key records (by weight hash).

Examples:
    >>> from radioactive.zoo import default_marker_path, resolve_device
    >>> default_marker_path().name
    'fmnist-cnn.safetensors'
    >>> resolve_device("cpu")
    device(type='cpu')
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .errors import ConfigError, KeyMismatchError, ModelLoadError
from .nets import ARCHITECTURES, NetSpec, load_state_dict_file, save_checkpoint, state_dict_sha256
from .train import TrainRecipe, TrainResult, dataset_fingerprint, evaluate, fit

if TYPE_CHECKING:
    from .key import Key
    from .marker import Marker

__all__ = [
    "shipped_model",
    "DEFAULT_MARKER_NAME",
    "FMNIST_SPEC",
    "MARKER_RECIPE",
    "default_marker_path",
    "default_marker_sha256",
    "default_marker",
    "train_fmnist_marker",
    "load_marker",
    "resolve_marker",
    "resolve_device",
]

log = logging.getLogger(__name__)

FMNIST_MEAN = (0.2860,)
FMNIST_STD = (0.3530,)
FMNIST_SPEC = NetSpec("cnn", 10, in_channels=1, input_size=(28, 28), mean=FMNIST_MEAN, std=FMNIST_STD)
MARKER_RECIPE = TrainRecipe(epochs=5)
DEFAULT_MARKER_NAME = "fmnist-cnn.safetensors"
# What `--marker` / `path=` may say to mean the shipped marker.
DEFAULT_MARKER_ALIAS = "default"
_CACHE = "~/.cache/radioactive/markers"


def default_marker_path() -> Path:
    """The shipped marker checkpoint inside the installed package (``radioactive/markers/``).

    Package data lies on disk for wheel and editable installs; from a zipped install it is copied once to
    ``~/.cache/radioactive/markers`` so that a real path can be returned.
    """
    return _package_file("markers", DEFAULT_MARKER_NAME)


def _package_file(folder: str, name: str) -> Path:
    """The path of package data ``radioactive/FOLDER/NAME``: on disk for wheel and editable installs, copied once
    to ``~/.cache/radioactive/shipped`` from a zipped install."""
    resource = resources.files("radioactive").joinpath(folder, name)
    if isinstance(resource, Path):
        return resource
    target = Path(_CACHE).expanduser() / "shipped" / name
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(resource.read_bytes())
    return target


def shipped_model(name: str) -> Path | None:
    """A clean model shipped with the package (``radioactive/references/NAME``), or None.

    The demo's clean reference models are shipped under the name its experiment cache would give them (a hash
    of architecture, recipe, seed and training data), so they are used only where they are exactly what would
    otherwise be trained: the auditor's clean models, independent of every key.
    """
    if not resources.files("radioactive").joinpath("references", name).is_file():
        return None
    return _package_file("references", name)


# Reference banks shipped with the package (``radioactive references`` run on the data set's clean owner split):
# ``--reference-model NAME`` takes one by name.
SHIPPED_BANKS = {"fashion-mnist": "bank-fashion-mnist"}


def shipped_bank(name: str) -> Path:
    """The folder of the reference bank shipped for data set ``name`` (``radioactive/references/bank-NAME``).

    Raises:
        ConfigError: no bank is shipped under that name.
    """
    folder = SHIPPED_BANKS.get(name)
    root = resources.files("radioactive").joinpath("references")
    if folder is None or not root.joinpath(folder).is_dir():
        raise ConfigError(f"no reference bank is shipped for {name!r}; shipped: {sorted(SHIPPED_BANKS)}; make "
                          "one with 'radioactive references --data ORIGINALS --out refs/'")
    paths = [_package_file(f"references/{folder}", entry.name) for entry in root.joinpath(folder).iterdir()
             if entry.name.endswith((".safetensors", ".json"))]
    return paths[0].parent


def _checkpoint_sha256(path: Path) -> str:
    """The weights hash a checkpoint's header records (computed from the weights when it records none)."""
    state, metadata = load_state_dict_file(path)
    return metadata.get("radioactive.weights_sha256") or state_dict_sha256(state)


def default_marker_sha256() -> str | None:
    """Weights sha256 of the shipped marker, or None when the package data is missing."""
    path = default_marker_path()
    return _checkpoint_sha256(path) if path.is_file() else None


def default_marker(cache_dir: str | os.PathLike | None = None, *, train_if_missing: bool = True) -> Marker:
    """The Fashion-MNIST marking network: the shipped checkpoint (package data).

    Only when the package data is missing (a stripped install): a marker cached in ``cache_dir`` (default
    ``~/.cache/radioactive/markers``), else, with ``train_if_missing``, one trained there (a few CPU
    minutes). Such a marker has other weights than the shipped one, so keys made for the shipped marker
    do not match it.

    Raises:
        ModelLoadError: no shipped or cached marker and ``train_if_missing`` is False.
    """
    from .marker import Marker

    cache = Path(cache_dir if cache_dir is not None else _CACHE).expanduser()
    candidates = [default_marker_path(), cache / DEFAULT_MARKER_NAME]
    for path in candidates:
        if path.is_file():
            log.info("marking network: %s", path)
            return Marker.from_checkpoint(path)
    if not train_if_missing:
        raise ModelLoadError(
            f"no marking network found (looked for {[str(c) for c in candidates]}); reinstall radioactive (it "
            f"ships {DEFAULT_MARKER_NAME}) or train one: radioactive train-marker --data fashion-mnist --out "
            f"{candidates[-1]}"
        )
    target = cache / DEFAULT_MARKER_NAME
    log.warning("the shipped marking network is missing; training one on Fashion-MNIST (a few minutes) into %s; "
                "keys made for the shipped marker will not match it", target)
    train_fmnist_marker(target)
    return Marker.from_checkpoint(target)


def train_fmnist_marker(
    out: str | os.PathLike,
    *,
    arch: str = "cnn",
    recipe: TrainRecipe | None = None,
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
    data: str = "fashion-mnist",
) -> TrainResult:
    """Train the marking network on the owner's clean Fashion-MNIST (the 55k ``owner`` split of
    :func:`radioactive.fmnist.fashion_mnist_splits`), or on the ``owner`` split of ``data`` =
    ``fashion-mnist-pairs`` / ``fashion-mnist-pairs10`` (:mod:`radioactive.fmnist_pairs`: 28 x 56, 100 or 10
    classes), and save it with :func:`radioactive.nets.save_checkpoint`.

    The checkpoint's ``extra`` records the data set and its class names, the recipe, seed, dataset fingerprint,
    held-out (``val_accuracy``) and test accuracy. ``recipe`` defaults to :data:`MARKER_RECIPE`, without flips for
    the pairs (a flip swaps their halves).

    Raises:
        ConfigError: ``arch`` is not a built-in architecture, or ``data`` not a named source (checked before any
            data is read).
    """
    from .fmnist import CLASSES, fashion_mnist_splits
    from .fmnist_pairs import PAIR_SOURCES, fashion_mnist_pairs_splits, pair_classes, warn_flips

    if arch not in ARCHITECTURES:
        raise ConfigError(f"unknown architecture {arch!r} for the marking network; choose from {sorted(ARCHITECTURES)}")
    if data != "fashion-mnist" and data not in PAIR_SOURCES:
        raise ConfigError(f"unknown data {data!r} for the marking network; choose from "
                          f"{['fashion-mnist', *PAIR_SOURCES]}")
    if data == "fashion-mnist":
        recipe = recipe or MARKER_RECIPE
        splits, spec, classes = fashion_mnist_splits(), replace(FMNIST_SPEC, arch=arch), list(CLASSES)
    else:
        warn_flips(data, recipe is not None and recipe.flip)
        recipe = recipe or replace(MARKER_RECIPE, flip=False)
        splits, classes = fashion_mnist_pairs_splits(data), pair_classes(PAIR_SOURCES[data])
        spec = replace(FMNIST_SPEC, arch=arch, num_classes=len(classes), input_size=(28, 56))
    train_images, train_labels = splits["owner"]
    model_device = torch.device(device) if device is not None else torch.device("cpu")
    result = fit(spec, train_images, train_labels, recipe=recipe, seed=seed, test=splits["test"],
                 device=model_device, progress=progress)
    result.metrics["val_accuracy"] = evaluate(result.model, *splits["holdout"])["accuracy"]
    extra = {
        "kind": "marker",
        "dataset": data,
        "split": "owner (55k of 60k; 5k held out, permutation seed 0)" if data == "fashion-mnist" else
                 f"owner ({len(train_labels)} pairs of the 55k owner images; 5k held out, permutation seed 0)",
        "dataset_fingerprint": dataset_fingerprint(train_images, train_labels),
        "recipe": recipe.to_dict(),
        "seed": seed,
        "test_accuracy": result.metrics["test_accuracy"],
        "val_accuracy": result.metrics["val_accuracy"],
        "wall_time_s": result.metrics["wall_time_s"],
        "command": f"radioactive train-marker --data {data} --arch {arch} --epochs {recipe.epochs} --seed {seed}",
    }
    if data != "fashion-mnist":
        extra["classes"] = classes
    result.model.to("cpu")
    save_checkpoint(result.model, out, result.spec or spec, extra)
    return result


def load_marker(text: str, weights: str | os.PathLike | None = None, *, input_size: int = 224) -> Marker:
    """A :class:`Marker` from ``default`` (the shipped marker), a checkpoint path, or ``torchvision:<arch>``
    (``weights``: a local weights file; ``input_size``: its square input size)."""
    from .marker import Marker

    if text.startswith("torchvision:"):
        return Marker.from_torchvision(text.split(":", 1)[1], weights=weights, input_size=input_size)
    if weights:
        raise ConfigError(f"marker weights ({str(weights)!r}) apply to torchvision:<arch> markers only, not {text!r}")
    if text == DEFAULT_MARKER_ALIAS:
        return default_marker(train_if_missing=False)
    return Marker.from_checkpoint(text)


def resolve_marker(
    key: Key | None = None, path: str | os.PathLike | None = None, *, weights: str | os.PathLike | None = None
) -> Marker:
    """The marking network to use with ``key``.

    In order: ``path`` (a checkpoint, ``torchvision:<arch>`` with ``weights``, or ``default``); else, when
    the key's marker has the shipped marker's weights hash, the shipped marker; else the marker the key's
    metadata records (``marker_source``, and ``marker_weights`` unless ``weights`` is given; written by
    ``radioactive keygen``) when it can be loaded; without a key, the shipped marker.

    Raises:
        KeyMismatchError: the marker found is not the one the key was made for, or the key's marker is not
            available here; the message names the needed marker (architecture, weights sha256) and says how
            to pass it.
    """
    if path is not None:
        size = key.marker.spec.input_size[0] if key is not None else 224
        marker = load_marker(str(path), weights, input_size=size)
        if key is not None:
            key.check_marker(marker.info)
        return marker
    if key is None:
        return default_marker(train_if_missing=False)
    want = key.marker.weights_sha256
    if want == default_marker_sha256():
        return default_marker(train_if_missing=False)
    source = key.metadata.get("marker_source")
    recorded_weights = weights or key.metadata.get("marker_weights")
    available = source is not None and (
        source.startswith("torchvision:") or source == DEFAULT_MARKER_ALIAS or Path(source).is_file()
    )
    if available:
        try:
            marker = load_marker(source, recorded_weights, input_size=key.marker.spec.input_size[0])
        except (ModelLoadError, ConfigError) as exc:
            log.warning("the key's recorded marker %s cannot be loaded: %s", source, exc)
        else:
            key.check_marker(marker.info)
            return marker
    raise KeyMismatchError(
        f"this key (fingerprint {key.fingerprint}) was made for marking network {key.marker.spec.arch!r} with "
        f"weights sha256 {want}, which is neither the marker shipped with radioactive nor available at the "
        f"path the key records ({source!r}); pass that network's checkpoint (--marker PATH on the command "
        "line, path= in the API)"
    )


def resolve_device(name: str | torch.device) -> torch.device:
    """``auto`` -> ``cuda`` when available, else ``cpu``; any other name as torch spells it (``cuda:1``).

    Raises:
        ConfigError: an unknown device name, or CUDA asked for on a machine without it.
    """
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for, but CUDA is not available here; use --device cpu or auto")
    return device

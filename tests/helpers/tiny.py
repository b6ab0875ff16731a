"""Tiny builders the tests share: net specs, seeded markers and checkpoints, carriers planted into a classifier,
and a small mixed PNG/JPEG class tree. Every builder seeds what it draws, so a test gets the same objects as
when it built them itself."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from radioactive.key import Key
from radioactive.mark import MarkConfig
from radioactive.marker import Marker
from radioactive.nets import NetSpec, build_from_spec, save_checkpoint

TREE_CLASSES = ("ant", "bee", "cow")
TINY_CNN = {"width": 4, "feature_dim": 8}  # tiny_spec's default ``cnn`` options, for configs naming an arch


def tiny_spec(num_classes: int, size: int = 28, *, width: int = 4, feature_dim: int = 8, channels: int = 1,
              **options) -> NetSpec:
    """The built-in ``cnn`` at toy width: ``channels`` x ``size`` x ``size`` inputs, ``feature_dim`` features.
    ``options`` go to :class:`NetSpec` (``mean``, ``std``, ...)."""
    return NetSpec("cnn", num_classes, in_channels=channels, input_size=(size, size),
                   kwargs={"width": width, "feature_dim": feature_dim}, **options)


BLACKBOX_SPEC = tiny_spec(4, 12)  # the black-box tests' marker (tests/detect/conftest.py), as tiny_probes
QUICK_MARK = MarkConfig(steps=2, eval_draws=0)  # two optimisation steps: marks fast enough for unit tests


def tiny_model(spec: NetSpec, *, seed: int = 0) -> torch.nn.Module:
    """``build_from_spec(spec)`` right after ``torch.manual_seed(seed)`` (the global generator stays advanced,
    as in a test that seeds and builds inline)."""
    torch.manual_seed(seed)
    return build_from_spec(spec)


def tiny_marker(spec: NetSpec, *, seed: int = 0) -> Marker:
    """A marker over a freshly initialised ``spec`` (see :func:`tiny_model`)."""
    return Marker.from_model(tiny_model(spec, seed=seed), spec)


def save_tiny_marker(path: Path, spec: NetSpec, *, seed: int = 0) -> Path:
    """A freshly initialised ``spec`` (see :func:`tiny_model`) saved as a marker checkpoint at ``path``."""
    save_checkpoint(tiny_model(spec, seed=seed).eval(), path, spec)
    return path


def plant_carriers(layer: torch.nn.Linear, key: Key, beta: float) -> None:
    """Add ``beta`` times the key's carriers to the classifier rows of ``layer`` in place: the weights a
    model trained on marked data moves towards (a positive control)."""
    with torch.no_grad():
        layer.weight += beta * key.carriers.to(layer.weight.dtype)


def quadrant_images(num: int, generator: torch.Generator, *, brightness: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Four learnable classes: uint8 (N, 1, 16, 16) noise in [0, 0.3] plus ``brightness`` on a 6 x 6 square in
    the label's quadrant; labels ``arange(num) % 4``. Draws from ``generator``."""
    labels = torch.arange(num) % 4
    images = torch.rand(num, 1, 16, 16, generator=generator) * 0.3
    for i, label in enumerate(labels.tolist()):
        row, col = divmod(label, 2)
        images[i, 0, 1 + 8 * row : 7 + 8 * row, 1 + 8 * col : 7 + 8 * col] += brightness
    return (images.clamp(0, 1) * 255).round().to(torch.uint8), labels


def write_class_tree(root: Path, *, per_class: int, seed: int, classes: tuple[str, ...] = TREE_CLASSES) -> Path:
    """``root/<class>/NNN.png`` (``per_class`` random 16 x 16 grey PNGs per class) plus one random 18 x 20 RGB
    ``photo.jpg`` per class (another size and mode), drawn from ``numpy.random.default_rng(seed)``."""
    rng = np.random.default_rng(seed)
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(root / name / f"{i:03d}.png")
        Image.fromarray(rng.integers(0, 256, (18, 20, 3), dtype=np.uint8)).save(root / name / "photo.jpg", quality=95)
    return root


def tiny_probes(*, count: int = 24, classes: int = 4, size: int = 12, seed: int = 1):
    """``count`` seeded random uint8 ``1 x size x size`` probes with labels ``arange(count) % classes``."""
    from radioactive.detect import Probes

    gen = torch.Generator().manual_seed(seed)
    return Probes(torch.randint(0, 256, (count, 1, size, size), generator=gen, dtype=torch.uint8),
                  torch.arange(count) % classes)


def no_grad_predictor(model: torch.nn.Module):
    """``x -> model(x)`` without gradients (a black-box suspect)."""

    def predict(x):
        with torch.no_grad():
            return model(x)

    return predict


def tiny_predictor(spec: NetSpec, *, seed: int):
    """A black-box suspect: a freshly initialised ``spec`` (see :func:`tiny_model`) in eval mode."""
    return no_grad_predictor(tiny_model(spec, seed=seed).eval())


def memorised_shift(marker: Marker, probes):
    """``x -> (feature shift, index of the nearest clean probe)``: the marker-feature shift of each image from
    the clean probe it was made from (a suspect that memorised the clean probes)."""
    clean = probes.images.float() / 255
    with torch.no_grad():
        clean_feats = marker.features(clean).double()

    def shift(x):
        with torch.no_grad():
            nearest = torch.cdist(x.flatten(1), clean.flatten(1)).argmin(1)
            return marker.features(x).double() - clean_feats[nearest], nearest

    return shift


def carrier_reader(marker: Marker, key: Key, probes, *, scale: float, num_classes: int):
    """A suspect that memorised the clean probes and their labels and scores each image's own class by its
    feature shift along that class's true carrier (times ``scale``): with ``scale`` > 0 it ranks the true set
    first in every class, with ``scale`` < 0 last."""
    shift_of = memorised_shift(marker, probes)

    def predict(x):
        shift, nearest = shift_of(x)
        label = probes.labels[nearest]
        logits = torch.zeros(len(x), num_classes, dtype=torch.float64)
        logits[torch.arange(len(x)), label] = (shift * key.carriers[label]).sum(1) * scale
        return logits

    return predict

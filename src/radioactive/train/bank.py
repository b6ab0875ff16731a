"""A bank of clean reference models: several architectures and recipes trained on the owner's originals.

Difference in differences and matched references (:mod:`radioactive.detect.matched`) need clean models that
respond to carriers the way a suspect does. The owner holds the originals, so the owner can train them; a bank
of varied architectures and recipes lets the matched fit find the combination that resembles a suspect of
unknown make. Every member is trained on clean images only, so it is independent of every key.

On disk (``OUT/``): one safetensors checkpoint per member (``<name>-<hash>.safetensors``, the hash naming what
it depends on: architecture, recipe, seed and the training images' fingerprint) and ``bank.json``, the index,
rewritten atomically after each member. A rerun skips the members whose checkpoint is there: an interrupted
bank resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .._io import atomic_write_json, versions
from ..errors import ConfigError
from .batches import dataset_fingerprint
from .loop import fit
from .recipe import TrainRecipe

__all__ = ["BankMember", "DEFAULT_BANK", "bank_paths", "train_bank"]

log = logging.getLogger(__name__)
INDEX = "bank.json"


@dataclass(frozen=True)
class BankMember:
    """One reference of the bank: a name, an architecture (as ``radioactive train --arch``), recipe fields on
    top of :class:`TrainRecipe`'s defaults, and a training seed."""

    name: str
    arch: str
    recipe: dict[str, Any] = field(default_factory=dict)
    seed: int = 0

    def train_recipe(self, epochs: int | None) -> TrainRecipe:
        return TrainRecipe.from_dict({**self.recipe, **({"epochs": epochs} if epochs else {}), "mode": "scratch"})

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "arch": self.arch, "recipe": dict(self.recipe), "seed": self.seed}


# Three architectures (plain convolutional, residual, fully connected) and three recipes (SGD with a cosine
# schedule; a step schedule with label smoothing; no augmentation): models that respond to carriers in
# different ways, so that a matched fit has something to choose from.
DEFAULT_BANK: tuple[BankMember, ...] = (
    BankMember("cnn-cosine", "cnn", {}, seed=7001),
    BankMember("resnet_narrow-cosine", "resnet_narrow", {}, seed=7002),
    BankMember("mlp-cosine", "mlp", {}, seed=7003),
    BankMember("cnn-step-ls", "cnn", {"schedule": "step", "lr": 0.1, "label_smoothing": 0.1}, seed=7004),
    BankMember("resnet_narrow-noaug", "resnet_narrow", {"crop_padding": 0, "flip": False}, seed=7005),
)


def _member_file(member: BankMember, recipe: TrainRecipe, fingerprint: str) -> str:
    """``<name>-<12 hex digits>.safetensors``: the digits hash what the member depends on (canonical JSON)."""
    what = {"arch": member.arch, "recipe": recipe.to_dict(), "seed": member.seed, "data": fingerprint}
    ident = hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return f"{member.name}-{ident}.safetensors"


def bank_paths(folder: str | os.PathLike) -> list[Path]:
    """The checkpoints of a bank folder, in the order of its ``bank.json`` (or every ``*.safetensors``, sorted,
    for a folder of references made otherwise).

    Raises:
        ConfigError: the folder holds no checkpoint.
    """
    folder = Path(folder)
    index = folder / INDEX
    if index.is_file():
        entries = json.loads(index.read_text()).get("members", [])
        paths = [folder / e["file"] for e in entries if (folder / e["file"]).is_file()]
    else:
        paths = sorted(folder.glob("*.safetensors"))
    if not paths:
        raise ConfigError(f"{str(folder)!r} holds no reference checkpoint (*.safetensors); make a bank with "
                          f"'radioactive references --data ORIGINALS --out {folder}'")
    return paths


def train_bank(
    images: torch.Tensor,
    labels: torch.Tensor,
    out: str | os.PathLike,
    *,
    members: Sequence[BankMember] = DEFAULT_BANK,
    epochs: int | None = None,
    test: tuple[torch.Tensor, torch.Tensor] | None = None,
    device: torch.device | str | None = None,
    num_classes: int | None = None,
    source: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[Path]:
    """Train (or resume) a bank of clean reference models into ``out``.

    Args:
        images: the owner's clean originals, uint8 or float [0, 1] ``(N, c, H, W)`` (never the published copy).
        labels: ``(N,)`` class indices.
        out: the bank folder (created).
        members: what to train (default :data:`DEFAULT_BANK`).
        epochs: epochs for every member (default: each recipe's, :class:`TrainRecipe`'s 5).
        test: optional ``(images, labels)`` scored after each member's training.
        device: where to train.
        num_classes: default ``labels.max() + 1``.
        source: what the images are (e.g. the folder), recorded with every member.
        progress: called with a line of text before and after each member.

    Returns:
        the members' checkpoint paths, in order.
    """
    from ..nets import load_checkpoint, make_spec, save_checkpoint

    if not members:
        raise ConfigError("a bank needs at least one member")
    names = [m.name for m in members]
    if len(set(names)) != len(names):
        raise ConfigError(f"bank member names must be unique, got {names}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    say = progress or log.info
    num_classes = num_classes or int(labels.max()) + 1
    fingerprint = dataset_fingerprint(images, labels)
    entries, paths = [], []
    for number, member in enumerate(members, 1):
        recipe = member.train_recipe(epochs)
        path = out / _member_file(member, recipe, fingerprint)
        if path.is_file():
            _, _, extra = load_checkpoint(path)
            say(f"[{number}/{len(members)}] {member.name}: done earlier ({path.name}), skipped")
        else:
            say(f"[{number}/{len(members)}] {member.name}: training {member.arch} on {len(labels):,} clean images, "
                f"{recipe.epochs} epochs")
            start = time.perf_counter()
            spec = make_spec(member.arch, num_classes, images)
            result = fit(spec, images, labels, recipe=recipe, seed=member.seed, test=test, device=device,
                         num_classes=num_classes,
                         progress=lambda r, m=member, total=recipe.epochs: say(
                             f"    {m.name} epoch {r['epoch']}/{total}: loss {r['loss']:.4f} ({r['seconds']:.0f} s)"))
            extra = {"kind": "reference", "bank_member": member.to_dict(), "recipe": recipe.to_dict(),
                     "seed": member.seed, "dataset_fingerprint": fingerprint, "data": source,
                     "metrics": {k: v for k, v in result.metrics.items() if k != "history"}}
            save_checkpoint(result.model.to("cpu"), path, result.spec or spec, extra)
            accuracy = result.metrics.get("test_accuracy")
            shown = f", test accuracy {accuracy:.4f}" if accuracy is not None else ""
            say(f"[{number}/{len(members)}] {member.name}: saved {path.name} ({time.perf_counter() - start:.0f} s{shown})")
        paths.append(path)
        entries.append({**member.to_dict(), "file": path.name, "recipe_resolved": recipe.to_dict(),
                         "test_accuracy": (extra.get("metrics") or {}).get("test_accuracy")})
        atomic_write_json(out / INDEX, {"kind": "reference bank", "data": source, "dataset_fingerprint": fingerprint,
                                        "images": len(labels), "classes": num_classes, "members": entries,
                                        "complete": len(entries) == len(members), "versions": versions()})
    return paths

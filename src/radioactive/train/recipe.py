"""The trainer's recipe (what it trains, for how long, with which optimiser settings, schedule and
augmentation) and what training returns."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn

from ..errors import ConfigError
from ..nets import NetSpec

MODES = ("scratch", "finetune", "linear_probe", "distill")
SCHEDULES = ("cosine", "step", "constant")
PRECISIONS = ("float32", "bfloat16")


@dataclass(frozen=True)
class TrainRecipe:
    """How the simulated trainer trains.

    Attributes:
        mode: ``scratch`` (fresh weights), ``finetune`` (all weights of a given network), ``linear_probe``
            (a fresh head on frozen features of a given network), ``distill`` (a student fitted to a
            teacher's softened outputs on the given images; labels unused except for accuracy).
        epochs, batch_size, lr, momentum, weight_decay, nesterov: SGD settings (global batch size).
        schedule: ``cosine`` (to 0 over all steps, after ``warmup_epochs`` of linear warm-up), ``step``
            (times ``gamma`` every ``step_epochs``) or ``constant``.
        crop_padding: random crop of the original size from the image padded by this many pixels (0: off).
        flip: random horizontal flip.
        label_smoothing: cross-entropy label smoothing.
        temperature, distill_weight: distillation temperature and weight of the soft loss (1 - weight goes
            to the hard-label loss).
        precision: ``float32``, or ``bfloat16`` (mixed precision: the forward passes under
            ``torch.autocast`` in bfloat16, weights, loss and optimiser in float32; what many trainers run
            on GPUs; on CPUs with bfloat16 instructions 1.6x the float32 rate for the built-in cnn,
            benchmarks/results/train_precision.json).
    """

    mode: str = "scratch"
    epochs: int = 5
    batch_size: int = 128
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = True
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    step_epochs: int = 2
    gamma: float = 0.1
    crop_padding: int = 2
    flip: bool = True
    label_smoothing: float = 0.0
    temperature: float = 4.0
    distill_weight: float = 1.0
    precision: str = "float32"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"unknown training mode {self.mode!r}; choose from {list(MODES)}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"unknown schedule {self.schedule!r}; choose from {list(SCHEDULES)}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {self.precision!r}; choose from {list(PRECISIONS)}")
        if self.epochs < 0 or self.batch_size < 1:
            raise ConfigError(f"epochs must be >= 0 and batch_size >= 1, got {self.epochs} and {self.batch_size}")
        if self.lr <= 0 or not 0 <= self.momentum < 1 or self.weight_decay < 0:
            raise ConfigError(
                f"need lr > 0, 0 <= momentum < 1, weight_decay >= 0; got {self.lr}, {self.momentum}, {self.weight_decay}"
            )
        if self.crop_padding < 0 or self.temperature <= 0 or not 0 <= self.distill_weight <= 1:
            raise ConfigError("need crop_padding >= 0, temperature > 0 and 0 <= distill_weight <= 1")

    def to_dict(self) -> dict[str, Any]:
        """The fields; ``precision`` only when not ``float32``, so that every recipe written before it existed
        keeps its dict, and with it the run ids and cache names that hash it."""
        out = asdict(self)
        if out["precision"] == "float32":
            del out["precision"]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainRecipe:
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"unknown recipe fields {sorted(unknown)}; valid: {sorted(cls.__dataclass_fields__)}")
        return cls(**data)


@dataclass
class TrainResult:
    """A trained model (in eval mode, taking [0, 1] images), its spec when known, and metrics.

    ``metrics`` holds ``epochs``, ``steps``, ``train_loss`` (last epoch), ``history`` (per-epoch loss and
    wall time), ``test_accuracy`` (when a test set was given), ``wall_time_s`` and ``seconds_per_epoch``.
    """

    model: nn.Module
    spec: NetSpec | None
    recipe: TrainRecipe
    metrics: dict[str, Any] = field(default_factory=dict)


def lr_factor(recipe: TrainRecipe, step: int, total: int, steps_per_epoch: int) -> float:
    """Learning-rate multiplier at ``step`` of ``total``: linear warm-up, then the recipe's schedule."""
    warmup = int(recipe.warmup_epochs * steps_per_epoch)
    if step < warmup:
        return (step + 1) / warmup
    if recipe.schedule == "constant":
        return 1.0
    if recipe.schedule == "step":
        return recipe.gamma ** (step // max(1, recipe.step_epochs * steps_per_epoch))
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * progress))

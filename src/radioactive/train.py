"""Simulating the trainer: a standard supervised recipe on whatever images it is given.

The trainer knows nothing about keys: it trains from scratch, fine-tunes a given network, fits a linear
probe on frozen features, or distils a teacher, with SGD + momentum, a cosine or step schedule, random crop
(with padding) and horizontal flip. Images are ``(N, c, H, W)`` uint8 or float in [0, 1]; models take [0, 1]
images (:func:`radioactive.nets.build_from_spec` puts the normalisation inside). Under ``torchrun`` (an
initialised process group) the model is wrapped in DistributedDataParallel and each rank trains on its
shard of every epoch's permutation.

Examples:
    >>> import torch
    >>> from radioactive.nets import NetSpec
    >>> from radioactive.train import TrainRecipe, fit
    >>> images = torch.randint(0, 256, (64, 1, 16, 16), dtype=torch.uint8)
    >>> labels = torch.arange(64) % 2
    >>> result = fit(NetSpec("cnn", 2, input_size=(16, 16), kwargs={"width": 4, "feature_dim": 8}),
    ...              images, labels, recipe=TrainRecipe(epochs=1, batch_size=32), seed=0)
    >>> result.metrics["epochs"]
    1
"""

from __future__ import annotations

import copy
import hashlib
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ConfigError
from .nets import NetSpec, build_from_spec, split_head

if TYPE_CHECKING:
    from .marker import Marker

__all__ = [
    "MODES",
    "SCHEDULES",
    "TrainRecipe",
    "TrainResult",
    "fit",
    "train_classifier",
    "evaluate",
    "augment_batch",
    "dataset_fingerprint",
    "fashion_mnist_splits",
    "make_spec",
    "FMNIST_SPEC",
    "train_fmnist_marker",
    "default_marker",
]

log = logging.getLogger(__name__)

MODES = ("scratch", "finetune", "linear_probe", "distill")
SCHEDULES = ("cosine", "step", "constant")


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

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"unknown training mode {self.mode!r}; choose from {list(MODES)}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"unknown schedule {self.schedule!r}; choose from {list(SCHEDULES)}")
        if self.epochs < 0 or self.batch_size < 1:
            raise ConfigError(f"epochs must be >= 0 and batch_size >= 1, got {self.epochs} and {self.batch_size}")
        if self.lr <= 0 or not 0 <= self.momentum < 1 or self.weight_decay < 0:
            raise ConfigError(
                f"need lr > 0, 0 <= momentum < 1, weight_decay >= 0; got {self.lr}, {self.momentum}, {self.weight_decay}"
            )
        if self.crop_padding < 0 or self.temperature <= 0 or not 0 <= self.distill_weight <= 1:
            raise ConfigError("need crop_padding >= 0, temperature > 0 and 0 <= distill_weight <= 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

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


# ---------------------------------------------------------------------------------------------------------
# Data helpers.


def _as_float(images: torch.Tensor) -> torch.Tensor:
    if images.dtype == torch.uint8:
        return images.float().div_(255)
    return images.float()


def augment_batch(
    images: torch.Tensor, *, padding: int, flip: bool, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Random crop (zero padding ``padding``, same size out) and horizontal flip, per image. ``(N, c, H, W)``."""
    num, channels, height, width = images.shape
    device = images.device
    out = images
    if padding > 0:
        padded = F.pad(images, (padding, padding, padding, padding))
        off_y = torch.randint(0, 2 * padding + 1, (num,), generator=generator).to(device)
        off_x = torch.randint(0, 2 * padding + 1, (num,), generator=generator).to(device)
        rows = off_y[:, None] + torch.arange(height, device=device)  # (N, H)
        cols = off_x[:, None] + torch.arange(width, device=device)  # (N, W)
        batch_index = torch.arange(num, device=device)[:, None, None, None]
        chan_index = torch.arange(channels, device=device)[None, :, None, None]
        out = padded[batch_index, chan_index, rows[:, None, :, None], cols[:, None, None, :]]
    if flip:
        mask = (torch.rand(num, generator=generator) < 0.5).to(device)
        out = torch.where(mask[:, None, None, None], out.flip(-1), out)
    return out


def dataset_fingerprint(images: torch.Tensor, labels: torch.Tensor) -> str:
    """16 hex characters naming a dataset by content (pixels as 8-bit, labels, shapes)."""
    digest = hashlib.sha256()
    pixels = images if images.dtype == torch.uint8 else (images.float().clamp(0, 1) * 255).round().to(torch.uint8)
    digest.update(str(tuple(pixels.shape)).encode())
    digest.update(pixels.detach().cpu().contiguous().numpy().tobytes())
    digest.update(labels.detach().cpu().to(torch.int64).contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def fashion_mnist_splits(
    *, validation: int = 5000, seed: int = 0, root: str | None = None
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Fashion-MNIST as the owner holds it: ``train`` (60k - ``validation``), ``val`` (held out, never
    published: reference and probe images for the tests) and ``test`` (10k), uint8 ``(N, 1, 28, 28)``.

    The split is a seeded permutation (``seed`` 0 by default, the one every tool here uses).
    """
    from .fmnist import load_fashion_mnist

    images, labels = load_fashion_mnist("train", root)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    val_idx, train_idx = order[:validation].sort().values, order[validation:].sort().values
    test_images, test_labels = load_fashion_mnist("test", root)
    return {
        "train": (images[train_idx], labels[train_idx]),
        "val": (images[val_idx], labels[val_idx]),
        "test": (test_images, test_labels),
    }


def make_spec(
    arch: str, num_classes: int, images: torch.Tensor, *, kwargs: dict[str, Any] | None = None
) -> NetSpec:
    """A :class:`NetSpec` for training ``arch`` on ``images`` ``(N, c, H, W)``: their size, channel count, and
    per-channel mean/std (measured on up to 10k images). ``arch`` is a built-in name, ``torchvision:<name>``,
    ``timm:<name>`` or a bare torchvision name; non-built-in networks get 3 channels (grey is repeated)."""
    from .nets import ARCHITECTURES

    if ":" in arch:
        source, name = arch.split(":", 1)
    else:
        source, name = ("builtin" if arch in ARCHITECTURES else "torchvision"), arch
    sample = _as_float(images[: min(len(images), 10_000)])
    mean = sample.mean(dim=(0, 2, 3)).tolist()
    std = sample.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist()
    channels = images.shape[1]
    if source != "builtin" and channels == 1:
        mean, std = mean * 3, std * 3
    return NetSpec(
        arch=name, num_classes=num_classes, in_channels=channels if source == "builtin" else 3,
        input_size=(images.shape[2], images.shape[3]), mean=tuple(round(v, 4) for v in mean),
        std=tuple(round(v, 4) for v in std), source=source, kwargs=dict(kwargs or {}),
    )


# ---------------------------------------------------------------------------------------------------------
# Distributed helpers.


def _dist() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _model_device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


# ---------------------------------------------------------------------------------------------------------
# Evaluation.


@torch.no_grad()
def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, batch_size: int = 512) -> dict[str, float]:
    """Accuracy and mean cross-entropy of ``model`` on [0, 1] (or uint8) images; restores the model's mode.

    Under an initialised process group each rank scores its shard and the counts are summed.
    """
    rank, world = _dist()
    device = _model_device(model)
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.float64)
    loss_sum = torch.zeros((), dtype=torch.float64)
    index = torch.arange(rank, len(labels), world)
    try:
        for start in range(0, len(index), batch_size):
            idx = index[start : start + batch_size]
            x = _as_float(images[idx].to(device)).contiguous(memory_format=torch.channels_last)
            y = labels[idx].to(device)
            logits = model(x)
            correct += (logits.argmax(1) == y).sum().double().cpu()
            loss_sum += F.cross_entropy(logits.float(), y, reduction="sum").double().cpu()
    finally:
        model.train(was_training)
    totals = torch.stack([correct, loss_sum, torch.tensor(float(len(index)), dtype=torch.float64)])
    if world > 1:
        torch.distributed.all_reduce(totals)
    count = max(float(totals[2]), 1.0)
    return {"accuracy": float(totals[0]) / count, "loss": float(totals[1]) / count}


# ---------------------------------------------------------------------------------------------------------
# Training.


def _replace_head(model: nn.Module, head_name: str, num_classes: int) -> nn.Linear:
    old = model.get_submodule(head_name)
    new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None).to(old.weight.device, old.weight.dtype)
    parent_name, _, child = head_name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)
    return new


def _lr_factor(recipe: TrainRecipe, step: int, total: int, steps_per_epoch: int) -> float:
    warmup = int(recipe.warmup_epochs * steps_per_epoch)
    if step < warmup:
        return (step + 1) / warmup
    if recipe.schedule == "constant":
        return 1.0
    if recipe.schedule == "step":
        return recipe.gamma ** (step // max(1, recipe.step_epochs * steps_per_epoch))
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def fit(
    spec_or_model: NetSpec | nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    recipe: TrainRecipe = TrainRecipe(),
    seed: int = 0,
    test: tuple[torch.Tensor, torch.Tensor] | None = None,
    teacher: nn.Module | None = None,
    device: torch.device | str | None = None,
    num_classes: int | None = None,
    head: str | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train a classifier on ``images`` ``(N, c, H, W)`` and ``labels`` ``(N,)`` the way a trainer would.

    Args:
        spec_or_model: a :class:`NetSpec` (fresh weights: ``scratch`` and the student of ``distill``) or a
            model taking [0, 1] images (``finetune``, ``linear_probe``; a copy is trained, the original is
            untouched). A model given with ``scratch`` is trained as it is (pass freshly built weights).
        images: uint8 or float [0, 1] images, kept on their device; batches go to the model's device.
        labels: int64 class indices.
        recipe: the :class:`TrainRecipe`.
        seed: seeds weight initialisation, data order and augmentation (the global RNG is left untouched).
        test: optional ``(images, labels)`` scored after training (``test_accuracy`` in the metrics).
        teacher: the teacher model for ``mode="distill"`` (taking [0, 1] images).
        device: where to train; default: the given model's device (CPU for a spec).
        num_classes: number of classes (default: the spec's, else ``labels.max() + 1``); for ``finetune`` and
            ``linear_probe`` a head with another output count is replaced by a fresh one.
        head: dotted name of the final linear layer when it cannot be found automatically.
        progress: called after every epoch with a dict (``epoch``, ``loss``, ``lr``, ``seconds``).

    Returns:
        :class:`TrainResult` with the model in eval mode (unwrapped from DDP).

    Raises:
        ConfigError: inconsistent mode and inputs (no teacher for ``distill``, a spec for ``linear_probe``).
        ValueError: images and labels of different lengths, labels out of range.
    """
    if images.dim() != 4 or labels.dim() != 1 or len(images) != len(labels):
        raise ValueError(
            f"expected images (N, c, H, W) and labels (N,), got {tuple(images.shape)} and {tuple(labels.shape)}"
        )
    if len(labels) == 0:
        raise ValueError("no training images")
    mode = recipe.mode
    if mode == "distill" and teacher is None:
        raise ConfigError("mode 'distill' needs a teacher model (teacher=)")
    if mode in ("finetune", "linear_probe") and isinstance(spec_or_model, NetSpec):
        raise ConfigError(f"mode {mode!r} needs a trained network to start from, not an architecture spec")
    labels = labels.to(torch.int64)
    spec = spec_or_model if isinstance(spec_or_model, NetSpec) else None
    if num_classes is None:
        num_classes = spec.num_classes if spec is not None else int(labels.max()) + 1
    if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes}), got [{int(labels.min())}, {int(labels.max())}]")

    rank, world = _dist()
    gen = torch.Generator().manual_seed(int(seed))
    fork_devices: list[int] = []
    if device is not None and torch.device(device).type == "cuda":
        fork_devices = [torch.device(device).index or 0]
    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(int(seed))
        if spec is not None:
            model = build_from_spec(spec)
        else:
            model = copy.deepcopy(spec_or_model)
        if device is None:
            device = _model_device(model)
        device = torch.device(device)
        model.to(device)
        # Channels-last convolutions run several times faster on CPU (oneDNN) and use tensor cores on GPU.
        model.to(memory_format=torch.channels_last)
        example = _as_float(images[:2].to(device))
        if mode in ("finetune", "linear_probe"):
            split = split_head(model, example, head=head)
            head_layer = split.head
            if mode == "linear_probe" or head_layer.out_features != num_classes:
                head_layer = _replace_head(model, split.head_name, num_classes)
        else:
            head_layer = None
        # A given network may come frozen (e.g. a Marker's); the trainer decides what it trains.
        for param in model.parameters():
            param.requires_grad_(mode != "linear_probe")
        if mode == "linear_probe":
            for param in head_layer.parameters():
                param.requires_grad_(True)
        params = [p for p in model.parameters() if p.requires_grad]
        if teacher is not None:
            teacher.eval()
            teacher_device = _model_device(teacher)

        train_model: nn.Module = model
        if world > 1:
            train_model = nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None
            )
        decay, no_decay = [], []
        for param in params:
            (no_decay if param.dim() <= 1 else decay).append(param)
        optimizer = torch.optim.SGD(
            [{"params": decay, "weight_decay": recipe.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.nesterov and recipe.momentum > 0,
        )
        local_batch = max(1, recipe.batch_size // world)
        steps_per_epoch = math.ceil(len(labels) / (local_batch * world))
        total_steps = steps_per_epoch * recipe.epochs
        history: list[dict[str, float]] = []
        step = 0
        start_time = time.perf_counter()
        for epoch in range(recipe.epochs):
            epoch_start = time.perf_counter()
            order = torch.randperm(len(labels), generator=gen)
            # Every rank draws the same permutation and takes its slice; pad so all ranks run the same steps.
            needed = steps_per_epoch * local_batch * world
            if needed > len(order):
                order = torch.cat([order, order[: needed - len(order)]])
            train_model.train()
            if mode == "linear_probe":
                model.eval()  # frozen backbone: batch-norm statistics stay as they are
            loss_sum, count = 0.0, 0
            for batch in range(steps_per_epoch):
                lo = (batch * world + rank) * local_batch
                idx = order[lo : lo + local_batch]
                aug_gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + step * 7919 + rank)
                x = _as_float(images[idx].to(device, non_blocking=True))
                x = augment_batch(x, padding=recipe.crop_padding, flip=recipe.flip, generator=aug_gen)
                x = x.contiguous(memory_format=torch.channels_last)
                y = labels[idx].to(device, non_blocking=True)
                for group in optimizer.param_groups:
                    group["lr"] = recipe.lr * _lr_factor(recipe, step, total_steps, steps_per_epoch)
                logits = train_model(x)
                if mode == "distill":
                    with torch.no_grad():
                        soft = teacher(x.to(teacher_device)).to(device).float()
                    temp = recipe.temperature
                    loss = F.kl_div(
                        F.log_softmax(logits.float() / temp, dim=1), F.log_softmax(soft / temp, dim=1),
                        reduction="batchmean", log_target=True,
                    ) * temp**2 * recipe.distill_weight
                    if recipe.distill_weight < 1:
                        loss = loss + (1 - recipe.distill_weight) * F.cross_entropy(logits.float(), y)
                else:
                    loss = F.cross_entropy(logits.float(), y, label_smoothing=recipe.label_smoothing)
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"training diverged at epoch {epoch + 1}, step {step} (loss {float(loss)}); lower the learning rate"
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                loss_sum += float(loss.detach()) * len(idx)
                count += len(idx)
                step += 1
            record = {
                "epoch": epoch + 1,
                "loss": loss_sum / max(count, 1),
                "lr": optimizer.param_groups[0]["lr"],
                "seconds": time.perf_counter() - epoch_start,
            }
            history.append(record)
            log.debug("epoch %d: loss %.4f (%.1f s)", epoch + 1, record["loss"], record["seconds"])
            if progress is not None:
                progress(dict(record))
    model.eval()
    wall = time.perf_counter() - start_time if recipe.epochs else 0.0
    metrics: dict[str, Any] = {
        "epochs": recipe.epochs,
        "steps": step,
        "train_images": len(labels),
        "world_size": world,
        "train_loss": history[-1]["loss"] if history else None,
        "history": history,
        "wall_time_s": wall,
        "seconds_per_epoch": wall / recipe.epochs if recipe.epochs else 0.0,
    }
    if test is not None:
        scores = evaluate(model, *test)
        metrics["test_accuracy"] = scores["accuracy"]
        metrics["test_loss"] = scores["loss"]
    if spec is not None and spec.num_classes != num_classes:
        spec = replace(spec, num_classes=num_classes)
    return TrainResult(model=model, spec=spec, recipe=recipe, metrics=metrics)


def train_classifier(
    spec_or_model: NetSpec | nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    recipe: TrainRecipe = TrainRecipe(),
    seed: int = 0,
    **kwargs: Any,
) -> nn.Module:
    """:func:`fit` returning only the trained model (eval mode, [0, 1] inputs). Same arguments."""
    return fit(spec_or_model, images, labels, recipe=recipe, seed=seed, **kwargs).model


# ---------------------------------------------------------------------------------------------------------
# The built-in Fashion-MNIST marking network.

FMNIST_MEAN = (0.2860,)
FMNIST_STD = (0.3530,)
FMNIST_SPEC = NetSpec("cnn", 10, in_channels=1, input_size=(28, 28), mean=FMNIST_MEAN, std=FMNIST_STD)
MARKER_RECIPE = TrainRecipe(epochs=5)
DEFAULT_MARKER_NAME = "fmnist-cnn.safetensors"


def train_fmnist_marker(
    out: str | os.PathLike,
    *,
    arch: str = "cnn",
    recipe: TrainRecipe = MARKER_RECIPE,
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train the marking network on the owner's clean Fashion-MNIST (the 55k ``train`` split of
    :func:`fashion_mnist_splits`) and save it with :func:`radioactive.nets.save_checkpoint`.

    The checkpoint's ``extra`` records the recipe, seed, dataset fingerprint, validation and test accuracy.
    """
    from .nets import save_checkpoint

    splits = fashion_mnist_splits()
    spec = replace(FMNIST_SPEC, arch=arch)
    train_images, train_labels = splits["train"]
    model_device = torch.device(device) if device is not None else torch.device("cpu")
    result = fit(spec, train_images, train_labels, recipe=recipe, seed=seed, test=splits["test"],
                 device=model_device, progress=progress)
    result.metrics["val_accuracy"] = evaluate(result.model, *splits["val"])["accuracy"]
    extra = {
        "kind": "marker",
        "dataset": "fashion-mnist",
        "split": "train (55k of 60k; 5k held out, permutation seed 0)",
        "dataset_fingerprint": dataset_fingerprint(train_images, train_labels),
        "recipe": recipe.to_dict(),
        "seed": seed,
        "test_accuracy": result.metrics["test_accuracy"],
        "val_accuracy": result.metrics["val_accuracy"],
        "wall_time_s": result.metrics["wall_time_s"],
        "command": f"radioactive train-marker --data fashion-mnist --arch {arch} --epochs {recipe.epochs} --seed {seed}",
    }
    result.model.to("cpu")
    save_checkpoint(result.model, out, result.spec or spec, extra)
    return result


def _repo_markers() -> Path:
    return Path(__file__).resolve().parents[2] / "markers"


def default_marker(cache_dir: str | os.PathLike | None = None, *, train_if_missing: bool = True) -> Marker:
    """The Fashion-MNIST marking network: loaded if present, else trained (a few CPU minutes) and cached.

    Looks in ``cache_dir`` when given; otherwise in the source tree's ``markers/`` folder (the committed
    checkpoint), then ``~/.cache/radioactive/markers``. A freshly trained marker is written to ``cache_dir``
    (default ``~/.cache/radioactive/markers``).
    """
    from .marker import Marker

    if cache_dir is not None:
        candidates = [Path(cache_dir) / DEFAULT_MARKER_NAME]
    else:
        cache_dir = Path("~/.cache/radioactive/markers").expanduser()
        candidates = [_repo_markers() / DEFAULT_MARKER_NAME, Path(cache_dir) / DEFAULT_MARKER_NAME]
    for path in candidates:
        if path.is_file():
            log.info("marking network: %s", path)
            return Marker.from_checkpoint(path)
    if not train_if_missing:
        raise FileNotFoundError(
            f"no cached marking network in {[str(c) for c in candidates]}; run: radioactive train-marker "
            f"--data fashion-mnist --out {candidates[-1]}"
        )
    target = Path(cache_dir) / DEFAULT_MARKER_NAME
    log.info("no cached marking network; training one on Fashion-MNIST (a few minutes), saved to %s", target)
    train_fmnist_marker(target)
    return Marker.from_checkpoint(target)

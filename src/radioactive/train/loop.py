"""The training loop (:func:`fit`), and evaluation; both shard over ranks under ``torchrun``."""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..distributed import rank_world
from ..errors import ConfigError, DatasetError, TrainingDivergedError
from ..nets import NetSpec, build_from_spec, split_head
from .batches import as_float, augment_batch
from .recipe import TrainRecipe, TrainResult, lr_factor

log = logging.getLogger(__name__)


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
    rank, world = rank_world()
    device = _model_device(model)
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.float64)
    loss_sum = torch.zeros((), dtype=torch.float64)
    index = torch.arange(rank, len(labels), world)
    try:
        for start in range(0, len(index), batch_size):
            idx = index[start : start + batch_size]
            x = as_float(images[idx].to(device)).contiguous(memory_format=torch.channels_last)
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
        DatasetError: images and labels of different lengths, no images, labels out of range.
        TrainingDivergedError: a non-finite loss (learning rate too high).
    """
    if images.dim() != 4 or labels.dim() != 1 or len(images) != len(labels):
        raise DatasetError(
            f"expected images (N, c, H, W) and labels (N,), got {tuple(images.shape)} and {tuple(labels.shape)}"
        )
    if len(labels) == 0:
        raise DatasetError("no training images: the dataset given is empty; give a dataset with images")
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
        raise DatasetError(f"labels must lie in [0, {num_classes}), got [{int(labels.min())}, {int(labels.max())}]; "
                           "give num_classes covering every label")

    rank, world = rank_world()
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
        example = as_float(images[:2].to(device))
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

        bfloat16 = recipe.precision == "bfloat16"

        def autocast(where: torch.device):  # mixed precision: forward passes only (recipe.precision)
            return torch.autocast(device_type=where.type, dtype=torch.bfloat16, enabled=bfloat16)

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
                x = as_float(images[idx].to(device, non_blocking=True))
                x = augment_batch(x, padding=recipe.crop_padding, flip=recipe.flip, generator=aug_gen)
                x = x.contiguous(memory_format=torch.channels_last)
                y = labels[idx].to(device, non_blocking=True)
                for group in optimizer.param_groups:
                    group["lr"] = recipe.lr * lr_factor(recipe, step, total_steps, steps_per_epoch)
                with autocast(device):
                    logits = train_model(x)
                if mode == "distill":
                    with torch.no_grad(), autocast(teacher_device):
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
                    raise TrainingDivergedError(
                        f"training diverged at epoch {epoch + 1}, step {step} (loss {float(loss)}); lower the learning rate (--lr)"
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
    spec_or_model: NetSpec | nn.Module, images: torch.Tensor, labels: torch.Tensor, **options: Any
) -> nn.Module:
    """:func:`fit` returning only the trained model (eval mode, [0, 1] inputs). Same arguments."""
    return fit(spec_or_model, images, labels, **options).model

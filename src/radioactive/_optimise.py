"""The marking optimisation's inner parts (private to :mod:`radioactive.mark`): the marker's features
through a private, batch-norm-fused copy, the projected Adam loop, the 8-bit fix-up and the evaluation.

The caller's marker is never touched: the features run on a deep copy (eval mode, frozen, channels-last),
cached per marker model and rebuilt whenever what it was built from changes (the weights' hash, their
device and dtype, the head).

The step loop never waits for the device: nothing in it reads a tensor's value on the host, and on an
accelerator the augmentations' random parameters are turned into device tensors before the loop
(:func:`radioactive._device.step_augmentations`). On CPU the loop runs as it always has (same bytes).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import math
import weakref
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import torch
from torch import nn

from ._device import StepAugment, autocast_for
from .augment import Augmentation, resize_to
from .nets import FeatureSplit

Features = Callable[[torch.Tensor], torch.Tensor]


class StepSettings(Protocol):
    """What :func:`optimise` reads of a :class:`radioactive.mark.MarkConfig`."""

    steps: int
    lr: float
    lambda_ft: float
    lambda_img: float
    lambda_class: float
    round_every: int
    precision: str


# marker model -> (signature it was built for, feature function of a private copy). Weak: a marker that is
# dropped frees its copy.
_FEATURES: weakref.WeakKeyDictionary[nn.Module, tuple[tuple[Any, ...], Features]] = weakref.WeakKeyDictionary()


def feature_function(marker: Any, channels: int, weights_sha256: str) -> Features:
    """Features ``(N, d)`` of ``marker`` for [0, 1] images with ``channels`` channels, computed on a private
    copy with batch norms folded into the convolutions (eval-mode maths, fewer passes over memory) when that
    copy reproduces the plain one, else on the plain copy.

    ``weights_sha256`` is the marker's *current* weight hash: together with the device, dtype and head name
    it keys the cache, so in-place changes of the weights (or a move to another device) build a new copy.
    """
    model = marker.model
    param = next(model.parameters(), None)
    signature = (weights_sha256, getattr(param, "device", None), getattr(param, "dtype", None),
                 marker.split.head_name)
    cached = _FEATURES.get(model)
    if cached is not None and cached[0] == signature:
        return cached[1]
    features = _private_features(marker, channels)
    if features is None:  # no private copy: the marker itself (not cached, it would keep the model alive)
        return marker.split.features
    _FEATURES[model] = (signature, features)
    return features


def _frozen_copy(model: nn.Module) -> nn.Module:
    """A deep copy in eval mode, without gradients, in channels-last memory format (same maths, faster
    convolutions on CPU, and the layout tensor cores take on GPUs)."""
    twin = copy.deepcopy(model).eval()
    for param in twin.parameters():
        param.requires_grad_(False)
    return twin.to(memory_format=torch.channels_last)


def _private_features(marker: Any, channels: int) -> Features | None:
    head_name = marker.split.head_name
    try:
        plain = _frozen_copy(marker.model)
    except Exception:  # a model that cannot be copied runs as it is (mark() freezes it meanwhile)
        return None
    head = dict(plain.named_modules()).get(head_name)
    if not isinstance(head, nn.Linear):
        return None
    reference = FeatureSplit(model=plain, head=head, head_name=head_name)
    try:
        from torch.fx.experimental.optimization import fuse

        fused = copy.deepcopy(plain)
        if isinstance(fused, nn.Sequential):  # e.g. Normalize (data-dependent) + network
            for name, child in list(fused.named_children()):
                with contextlib.suppress(Exception):
                    setattr(fused, name, fuse(child, inplace=True))
        else:
            fused = fuse(fused, inplace=True)
        fused.to(memory_format=torch.channels_last)
        fused_head = dict(fused.named_modules()).get(head_name)
        if isinstance(fused_head, nn.Linear):
            split = FeatureSplit(model=fused, head=fused_head, head_name=head_name)
            param = next(plain.parameters())
            probe = torch.rand(2, channels, *marker.spec.input_size, generator=torch.Generator().manual_seed(0))
            probe = probe.to(param.device, param.dtype)
            with torch.no_grad():
                want, got = reference.features(probe), split.features(probe)
            if torch.allclose(want, got, rtol=1e-3, atol=1e-4 * float(want.abs().max().clamp_min(1))):
                return split.features
    except Exception:  # untraceable models keep the plain copy
        pass
    return reference.features


@contextlib.contextmanager
def frozen(model: nn.Module):
    """Eval mode and no weight gradients for the duration; both restored afterwards."""
    was_training = {module: module.training for module in model.modules()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    model.eval()
    for param in trainable:
        param.requires_grad_(False)
    try:
        yield
    finally:
        for module, mode in was_training.items():
            module.training = mode
        for param in trainable:
            param.requires_grad_(True)


def finish(x0_int: torch.Tensor, delta: torch.Tensor, eps_int: int, max_sq: torch.Tensor) -> torch.Tensor:
    """Round to 8 bits within the box and the L-inf radius, then shrink the integer perturbation of any
    image whose squared error exceeds ``max_sq`` (per image, in 8-bit units) until it meets it."""
    target = torch.round((x0_int + delta * 255).clamp(0, 255))
    d_int = (target - x0_int).clamp(-eps_int, eps_int)  # (B, c, H, W) integral
    sq = d_int.pow(2).flatten(1).sum(1)
    over = sq > max_sq
    if bool(over.any()):
        scale = (max_sq / sq.clamp_min(1)).sqrt().view(-1, 1, 1, 1)
        shrunk = torch.round(d_int * scale)
        again = shrunk.pow(2).flatten(1).sum(1) > max_sq
        # Truncation toward zero can only shrink every value, so it always meets the bound.
        shrunk = torch.where(again.view(-1, 1, 1, 1), torch.trunc(d_int * scale), shrunk)
        d_int = torch.where(over.view(-1, 1, 1, 1), shrunk, d_int)
    return x0_int + d_int


def optimise(
    features: Features, augment: StepAugment, x0: torch.Tensor, u: torch.Tensor, config: StepSettings,
    eps_int: int, max_sq_int: torch.Tensor, input_size: tuple[int, int], avoid: torch.Tensor | None = None,
) -> torch.Tensor:
    """The perturbation ``(B, c, H, W)`` after ``config.steps`` projected Adam steps on the marking loss.

    Every tensor stays on ``x0``'s device and nothing in the loop reads a value back to the host, so on an
    accelerator the steps are queued without waiting. The marking network runs in ``config.precision``
    (bf16: autocast, its features cast back); the image, the loss, Adam and the projection stay in
    ``x0``'s dtype.
    """
    precision = getattr(config, "precision", "fp32")
    with torch.no_grad():
        start = resize_to(x0, input_size)
        with autocast_for(precision, x0.device):
            clean = features(start).to(x0.dtype)  # (B, d)
    eps = eps_int / 255
    # Leave room for the rounding noise so the final fix-up rarely has to shrink anything.
    radius = (max_sq_int.sqrt() / 255 * 0.97).view(-1, 1, 1, 1)
    delta = torch.zeros_like(x0)
    moment1 = torch.zeros_like(x0)
    moment2 = torch.zeros_like(x0)
    beta1, beta2 = 0.9, 0.999
    for step in range(config.steps):
        delta.requires_grad_(True)
        view = augment(x0 + delta, step)  # the image side stays in x0's dtype
        with autocast_for(precision, x0.device):
            feats = features(view)
        shifted = feats.to(x0.dtype) - clean  # (B, d)
        loss = -(shifted * u).sum() + config.lambda_ft * shifted.norm(dim=1).sum()
        if config.lambda_img:
            loss = loss + config.lambda_img * delta.pow(2).sum()
        if avoid is not None:
            loss = loss + config.lambda_class * (shifted * avoid).sum()
        (grad,) = torch.autograd.grad(loss, delta)
        with torch.no_grad():
            delta = delta.detach()
            lr = config.lr * 0.5 * (1 + math.cos(math.pi * step / config.steps))
            moment1.mul_(beta1).add_(grad, alpha=1 - beta1)
            moment2.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            correction1 = 1 - beta1 ** (step + 1)
            correction2 = 1 - beta2 ** (step + 1)
            denom = (moment2 / correction2).sqrt_().add_(1e-12)
            delta.addcdiv_(moment1, denom, value=-lr / correction1)
            if config.round_every and (step + 1) % config.round_every == 0 and step + 1 < config.steps:
                delta = torch.round((x0 + delta) * 255) / 255 - x0
            delta = _project(delta, x0, eps, radius)
    return delta.detach()


def _project(delta: torch.Tensor, x0: torch.Tensor, eps: float, radius: torch.Tensor) -> torch.Tensor:
    delta = delta.clamp(-eps, eps)
    delta = (x0 + delta).clamp(0, 1) - x0
    norm = delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    return delta * (radius / norm.clamp_min(1e-12)).clamp(max=1.0)


@torch.no_grad()
def evaluate_shift(
    features: Features, augmentation: Augmentation, x0: torch.Tensor,
    marked: torch.Tensor, u: torch.Tensor, uniforms: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Shift along the carrier and cosine with it, under fresh augmentations shared by both versions."""
    count = x0.shape[0]
    shift = torch.zeros(count, dtype=torch.float64, device=x0.device)
    cosine = torch.zeros_like(shift)
    if uniforms.shape[0] == 0:
        return shift, cosine
    changed = (marked != x0).flatten(1).any(1)
    if not bool(changed.any()):
        return shift, cosine
    for draw in uniforms:
        both = augmentation(torch.cat([marked[changed], x0[changed]]), torch.cat([draw[changed.cpu()]] * 2))
        feats = features(both).double()
        diff = feats[: int(changed.sum())] - feats[int(changed.sum()):]  # (n, d)
        along = (diff * u[changed].double()).sum(1)
        shift[changed] += along
        cosine[changed] += along / diff.norm(dim=1).clamp_min(1e-12)
    return shift / uniforms.shape[0], cosine / uniforms.shape[0]


def psnr(marked: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """PSNR in dB ``(N,)`` float64 of [0, 1] images ``(N, c, H, W)`` (peak 1; ``inf`` where identical)."""
    mse = (marked.double() - original.double()).pow(2).flatten(1).mean(1)
    return torch.where(mse > 0, -10 * torch.log10(mse.clamp_min(1e-300)), torch.full_like(mse, math.inf))


def image_seeds(seed: int, ids: Sequence[str | int]) -> list[int]:
    """One 63-bit seed per image, derived from a run seed and each image's identity."""
    out = []
    for ident in ids:
        digest = hashlib.sha256(f"{int(seed)}\x00{ident}".encode()).digest()
        out.append(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))
    return out

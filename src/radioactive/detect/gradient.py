"""White-box test through input gradients ("perturbation-aware alignment"), exact under H0.

The paper's white-box test aligns the suspect's feature space to the marker's by least squares on clean
images, then maps the suspect's classifier rows. That alignment only sees how the two networks co-vary on
natural images, not how the suspect responds to the small pixel perturbations that marking produces; from
scratch, with another architecture and few classes, it finds nothing (docs/research.md).

This test asks the suspect directly. A mark of class ``k`` moves an image along ``delta ~ J_phi(x)^T u_k``
(the pixel direction that raises the marker's features along the carrier). A suspect trained on marked
images learns to raise its class-``k`` score along such directions. For clean reference images ``x`` and
each class ``k``, with ``s_k`` the suspect's centred logit (``logit_k`` minus the mean logit):

    g_k = sum_x  J_phi(x) grad_x s_k(x)        (a vector of the marker's feature space, R^d)

i.e. how the suspect's class-``k`` score changes when the marker's features move along each direction of
R^d, measured through the pixels (in the infinitesimal limit, this is the least-squares alignment fitted on
perturbations instead of on clean images, applied to the suspect's centred classifier row). The statistic
is ``cos(g_k, u_k)``. Under H0 the suspect, the marker and the clean reference images are independent of
the key, so ``g_k`` is independent of the uniformly random carrier ``u_k`` and the cosine has exactly the
null law of the first coordinate of a uniform unit vector (dimension ``key.null_dim``; class-neutral keys are
scored in their subspace), whatever ``g_k`` is. Classes have independent carriers: Fisher's combination is
exact. Never use marked images as reference: they would make ``g_k`` depend on the key.

Computation: one backward pass of the suspect per class and batch, and one Jacobian-vector product of the
marker (double backward) per class and batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import torch
from torch import nn

from ..errors import ConfigError, DatasetError
from ..key import Key
from ..marker import Marker
from ..nets import state_dict_sha256
from .common import ClassMap, as_float_images, model_device, resize, resolve_class_map
from .null import with_null_trials
from .verdict import DEFAULT_ALPHA, Verdict
from .white_box import WhiteboxParts, verdict_from_parts

__all__ = ["gradient_rows", "gradient_whitebox", "SCORES", "IMAGE_SETS"]

SCORES = ("centred", "logprob")
IMAGE_SETS = ("own", "all")


def _score(logits: torch.Tensor, output: int, score: str) -> torch.Tensor:
    if score == "centred":
        return logits[:, output] - logits.mean(dim=1)
    return torch.log_softmax(logits, dim=1)[:, output]


def gradient_rows(
    model: nn.Module,
    marker: Marker,
    images: torch.Tensor,
    labels: torch.Tensor | None,
    pairs: Sequence[tuple[int, int]],
    *,
    score: str = "centred",
    images_for: str = "own",
    normalize: bool = True,
    batch_size: int = 128,
    input_size: tuple[int, int] | None = None,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, dict[str, int]]:
    """``g_k`` for each ``(key class, suspect output)`` pair: ``(C', d)`` float64 (key-independent).

    Args:
        images: clean reference images ``(N, c, H, W)``, uint8 or float in [0, 1], at the marker's input size.
        labels: their classes (needed for ``images_for="own"``).
        score: ``centred`` (logit minus mean logit: linear in the suspect's features) or ``logprob``.
        images_for: ``own`` (class ``k`` uses the reference images of class ``k``: where marks were learned)
            or ``all`` (every reference image).
        normalize: each image contributes a unit vector (no image dominates by its gradient norm).
    """
    if score not in SCORES:
        raise ConfigError(f"unknown score {score!r}; choose from {list(SCORES)}")
    if images_for not in IMAGE_SETS:
        raise ConfigError(f"unknown image set {images_for!r}; choose from {list(IMAGE_SETS)}")
    images = as_float_images(images)
    if images_for == "own":
        if labels is None:
            raise DatasetError("images_for='own' needs the reference images' labels")
        labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1).cpu()
        if labels.shape[0] != images.shape[0]:
            raise DatasetError(f"{images.shape[0]} reference images but {labels.shape[0]} labels")
    device = model_device(model)
    was_training = model.training
    model.eval()
    dim = marker.feature_dim
    sums = torch.zeros(len(pairs), dim, dtype=torch.float64)
    counts = [0] * len(pairs)
    try:
        for start in range(0, images.shape[0], batch_size):
            batch = images[start : start + batch_size]
            batch_labels = labels[start : start + batch_size] if images_for == "own" else None
            x = resize(batch, marker.spec.input_size).to(marker.device).requires_grad_(True)
            feats = marker.features(x)
            probe = torch.zeros_like(feats, requires_grad=True)
            (vjp,) = torch.autograd.grad(feats, x, probe, create_graph=True)  # J_phi^T probe, linear in probe
            xs = batch.to(device).requires_grad_(True)
            to_suspect = resize(xs, input_size)
            if transform is not None:
                to_suspect = transform(to_suspect)
            logits = model(to_suspect)
            if logits.dim() != 2:
                raise ConfigError(f"the suspect must return (N, classes) scores, got shape {tuple(logits.shape)}")
            for row, (_, output) in enumerate(pairs):
                if batch_labels is not None:
                    keep = batch_labels == pairs[row][0]
                    if not bool(keep.any()):
                        continue
                else:
                    keep = torch.ones(batch.shape[0], dtype=torch.bool)
                (grad,) = torch.autograd.grad(_score(logits, output, score).sum(), xs, retain_graph=True)
                grad = grad.to(marker.device)
                if input_size is not None and tuple(grad.shape[-2:]) != tuple(marker.spec.input_size):
                    raise ConfigError("gradient alignment needs the suspect and the marker at the same input size")
                (jvp,) = torch.autograd.grad(vjp, probe, grad, retain_graph=True)  # J_phi grad, (B, d)
                jvp = jvp.detach().to("cpu", torch.float64)[keep.cpu()]
                if normalize:
                    jvp = jvp / jvp.norm(dim=1, keepdim=True).clamp_min(1e-300)
                sums[row] += jvp.sum(dim=0)
                counts[row] += int(jvp.shape[0])
    finally:
        model.train(was_training)
    if min(counts) == 0:
        missing = [pairs[r][0] for r, c in enumerate(counts) if c == 0]
        raise DatasetError(f"no reference images of classes {missing}")
    return sums, {"reference": int(images.shape[0]), "min_per_class": int(min(counts))}


def gradient_whitebox(
    model: nn.Module,
    key: Key,
    reference: tuple[torch.Tensor, torch.Tensor] | torch.Tensor,
    *,
    marker: Marker,
    score: str = "centred",
    images_for: str = "own",
    normalize: bool = True,
    class_map: ClassMap = None,
    alpha: float = DEFAULT_ALPHA,
    batch_size: int = 128,
    input_size: tuple[int, int] | None = None,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    marked: Sequence[bool] | torch.Tensor | None = None,
    null_trials: int = 0,
    null_seed: int | None = None,
) -> Verdict:
    """Test whether ``model`` learned to raise class ``k`` along the key's carrier ``u_k`` (input gradients).

    Args:
        model: the suspect (any differentiable classifier taking [0, 1] images).
        key: the secret key.
        reference: clean held-out images never published, ``(images, labels)`` (labels needed for
            ``images_for="own"``) or an image tensor (with ``images_for="all"``).
        marker: the marking network the key belongs to.
        score, images_for, normalize: see :func:`gradient_rows`.
        marked: per reference image, whether it is marked: any marked image is refused (calibration).
        null_trials: also score this many fresh random keys (only the carriers change: free).

    Returns:
        a :class:`Verdict`, test ``"whitebox-gradient"``; per-class cosines and exact p-values.
    """
    key.check_marker(marker.info)
    if marked is not None and bool(torch.as_tensor(marked, dtype=torch.bool).any()):
        raise DatasetError("the gradient test needs clean reference images: marked ones make it depend on the key")
    if isinstance(reference, tuple | list):
        images, labels = reference[0], reference[1]
    else:
        images, labels = reference, None
    with torch.no_grad():
        probe = as_float_images(images[:2]).to(model_device(model))
        probe = resize(probe, input_size)
        if transform is not None:
            probe = transform(probe)
        outputs = model.eval()(probe).shape[1]
    pairs = resolve_class_map(key.num_classes, outputs, class_map)
    rows, counts = gradient_rows(model, marker, images, labels, pairs, score=score, images_for=images_for,
                                 normalize=normalize, batch_size=batch_size, input_size=input_size,
                                 transform=transform)
    parts = WhiteboxParts(
        rows=rows,
        pairs=tuple(pairs),
        alignment={"method": "input-gradient", "score": score, "images": images_for, "normalize": normalize},
        counts={"classes": len(pairs), **counts},
        model_sha256=state_dict_sha256(model),
    )
    verdict = replace(verdict_from_parts(parts, key, alpha=alpha), test="whitebox-gradient")
    return with_null_trials(verdict, key, null_trials, null_seed,
                            lambda other: verdict_from_parts(parts, other, alpha=alpha).log10_p)


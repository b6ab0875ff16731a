"""White-box test: align the suspect's features to the marker's, map its classifier rows into the marker's
space, and test each row's cosine with its carrier against the exact null of a uniform direction.

Under H0 the suspect's rows are independent of the random carriers, so each cosine has the law of the
first coordinate of a uniform unit vector in the carriers' space (dimension ``key.null_dim``), whatever the
alignment, as long as the alignment is computed without the carriers (from clean reference images).
"""

from __future__ import annotations

import contextlib
import logging
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import stats
from .._progress import Progress
from ..errors import ConfigError, DatasetError, HeadResolutionError
from ..key import Key
from ..marker import Marker
from ..nets import split_head, state_dict_sha256
from .common import ClassMap, iter_batches, log10, model_device, resize, resolve_class_map, z_of
from .null import with_null_trials
from .settings import ALIGNMENTS, WhiteboxSettings, check_choice
from .verdict import DEFAULT_ALPHA, ClassScore, Verdict

__all__ = ["align", "whitebox", "WhiteboxParts", "prepare", "prepare_options", "score_parts", "score_rows",
           "verdict_from_parts"]

log = logging.getLogger(__name__)


def align(marker_features: torch.Tensor, suspect_features: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Least squares without intercept, in float64: M = argmin ||F_m M - F_s|| (the minimum-norm solution).

    Where it runs: features on one accelerator stay there for the O(N d^2) part, a float64 QR ``F_m = Q R``,
    and only the small system ``R M = Q^T F_s`` (``d x d'``) is solved on the host with the rank-revealing
    ``gelsd``; since ``Q`` has orthonormal columns both have the same minimum-norm solution, and nothing of
    size N crosses to the host. Anything else (CPU features, or two devices) is solved on the host with
    ``gelsd`` directly, as it always was (``benchmarks/results/whitebox.json`` times both ways on CPU).

    Args:
        marker_features: ``(N, d)``.
        suspect_features: ``(N, d')``.

    Returns:
        ``M`` ``(d, d')`` float64 on CPU and the R^2 of the fit (1 - residual / centred total sum of squares).
    """
    f_m = marker_features.detach().to(torch.float64)
    f_s = suspect_features.detach().to(torch.float64)
    if f_m.shape[0] != f_s.shape[0]:
        raise DatasetError(f"feature rows differ: {f_m.shape[0]} marker vs {f_s.shape[0]} suspect; give both networks' "
                           "features of the same images")
    if f_m.device == f_s.device and f_m.device.type != "cpu":
        mapping = lstsq_reduced(f_m, f_s)
        return mapping, r_squared(f_m @ mapping.to(f_m.device), f_s)
    f_m, f_s = f_m.cpu(), f_s.cpu()
    mapping = torch.linalg.lstsq(f_m, f_s, driver="gelsd").solution  # (d, d')
    return mapping, r_squared(f_m @ mapping, f_s)


def lstsq_reduced(f_m: torch.Tensor, f_s: torch.Tensor) -> torch.Tensor:
    """The minimum-norm least-squares ``M`` ``(d, d')`` (float64, CPU) of ``f_m M = f_s`` through a QR of
    ``f_m`` where the features are, then ``gelsd`` on the host for ``R M = Q^T f_s``."""
    if f_m.shape[0] <= f_m.shape[1]:  # not tall: nothing to reduce
        return torch.linalg.lstsq(f_m.cpu(), f_s.cpu(), driver="gelsd").solution
    q, r = torch.linalg.qr(f_m)  # (N, d), (d, d)
    return torch.linalg.lstsq(r.cpu(), (q.T @ f_s).cpu(), driver="gelsd").solution


def r_squared(predicted: torch.Tensor, target: torch.Tensor) -> float:
    target = target.to(torch.float64)
    total = float(((target - target.mean(dim=0)) ** 2).sum())
    residual = float(((target - predicted.to(target.device, torch.float64)) ** 2).sum())
    return 1.0 - residual / total if total > 0 else (1.0 if residual == 0 else -math.inf)


@dataclass(frozen=True)
class WhiteboxParts:
    """Everything the white-box test computes before it looks at the carriers (reusable across keys)."""

    rows: torch.Tensor  # (C', d) suspect classifier rows mapped into the marker's space, float64
    pairs: tuple[tuple[int, int], ...]  # (key class, suspect output)
    alignment: dict[str, Any]
    counts: dict[str, int]
    model_sha256: str | None


def score_rows(rows: torch.Tensor, carriers: torch.Tensor, basis: torch.Tensor | None) -> tuple[np.ndarray, int]:
    """Per-row cosine between aligned rows ``(C', d)`` and carriers ``(C', d)``, in the carriers' space.

    Returns the cosines ``(C',)`` and the dimension of the null (d, or the basis rank for class-neutral keys).
    """
    rows = rows.to(torch.float64)
    carriers = carriers.to(torch.float64)
    if basis is not None:
        rows, carriers = rows @ basis, carriers @ basis  # (C', r)
    norms = rows.norm(dim=1) * carriers.norm(dim=1)
    cosines = torch.where(norms > 0, (rows * carriers).sum(dim=1) / norms.clamp_min(1e-300), torch.zeros_like(norms))
    return cosines.clamp(-1.0, 1.0).numpy(), int(rows.shape[1])


def _split(model: nn.Module, example: torch.Tensor, head: str | None):
    from ..nets import ExportedModel

    if isinstance(model, ExportedModel):
        raise HeadResolutionError(
            "a torch.export archive has no layers to read the classifier from; for the white-box test give the "
            "weights with their architecture (--arch NAME --model weights.safetensors), or run the black-box test"
        )
    return split_head(model, example, head=head)


@contextlib.contextmanager
def _channels_last(model: nn.Module, example: torch.Tensor):
    """On CPU and CUDA, run ``model``'s convolutions in channels-last layout (about 2x faster on CPU, the
    layout tensor cores take on GPUs), restoring the layout afterwards. Parameters are converted in place
    (same objects, same values). Used only when the model gives the same outputs on ``example`` both ways (a
    model that calls ``.view`` on conv outputs would fail)."""
    use = model_device(model).type in ("cpu", "cuda") and any(p.dim() == 4 for p in model.parameters())
    if use:
        try:
            with torch.no_grad():
                before = model(example)
                model.to(memory_format=torch.channels_last)
                after = model(example)
            use = before.shape == after.shape and torch.allclose(before, after, rtol=1e-4, atol=1e-4)
        except Exception:  # noqa: BLE001 - any failure means: keep the default layout
            use = False
        if not use:
            model.to(memory_format=torch.contiguous_format)
    try:
        yield
    finally:
        if use:
            model.to(memory_format=torch.contiguous_format)


def _features(
    marker: Marker,
    model: nn.Module,
    reference: Any,
    head: str | None,
    batch_size: int,
    input_size: tuple[int, int] | None,
    transform: Callable[[torch.Tensor], torch.Tensor] | None,
) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """Both networks' features ``(N, d)``, ``(N, d')`` float64 of the reference images, batch by batch on each
    network's device. They stay there when both networks share one accelerator (see :func:`align`), else
    they are gathered on the host."""
    marker_feats, suspect_feats = [], []
    split = None
    device = model_device(model)
    total = _reference_count(reference)
    log.info("reference alignment: features of %s clean reference images through the marker and the suspect",
             "the" if total is None else total)
    progress = Progress(log, total, "reference features", "img")
    # Features stay on a shared accelerator (no host round trip per batch); otherwise on the host, as before.
    keep = device if device == marker.device and device.type != "cpu" else torch.device("cpu")
    was_training = model.training
    model.eval()
    try:
        with contextlib.ExitStack() as stack, torch.no_grad():
            for batch in iter_batches(reference, batch_size):
                to_marker = resize(batch, marker.spec.input_size).to(marker.device)
                to_suspect = resize(batch, input_size).to(device)
                if transform is not None:
                    to_suspect = transform(to_suspect)
                if split is None:
                    split = _split(model, to_suspect[: min(8, len(to_suspect))], head)
                    stack.enter_context(_channels_last(marker.model, to_marker[:8]))
                    stack.enter_context(_channels_last(model, to_suspect[:8]))
                marker_feats.append(marker.features(to_marker).to(keep, torch.float64))
                suspect_feats.append(split.features(to_suspect).to(keep, torch.float64))
                progress.update(len(batch))
    finally:
        progress.close()
        model.train(was_training)
    if split is None:
        raise DatasetError("the reference set is empty; the white-box test needs clean held-out images")
    return torch.cat(marker_feats), torch.cat(suspect_feats), split


def _reference_count(reference: Any) -> int | None:
    """How many images :func:`iter_batches` will yield from ``reference`` (None: not known in advance)."""
    if isinstance(reference, tuple | list) and reference and isinstance(reference[0], torch.Tensor) \
            and reference[0].dim() == 4:
        reference = reference[0]
    if isinstance(reference, torch.Tensor):
        return int(reference.shape[0])
    dataset = getattr(reference, "dataset", None)  # a DataLoader
    try:
        return len(dataset) if dataset is not None else None
    except TypeError:
        return None


def prepare(
    model: nn.Module,
    key: Key,
    reference: Any,
    *,
    marker: Marker,
    head: str | None = None,
    batch_size: int = 256,
    alignment: str = "auto",
    class_map: ClassMap = None,
    marked: Sequence[bool] | torch.Tensor | None = None,
    allow_marked: bool = False,
    input_size: tuple[int, int] | None = None,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    hash_model: bool = True,
) -> WhiteboxParts:
    """The key-independent part of :func:`whitebox` (features, alignment, mapped rows)."""
    check_choice("alignment", alignment, ALIGNMENTS)
    key.check_marker(marker.info)
    if marked is not None:
        flags = torch.as_tensor(marked, dtype=torch.bool)
        if bool(flags.any()):
            message = (
                f"{int(flags.sum())} of {flags.numel()} reference images are marked (per the manifest); the white-box "
                "test needs clean held-out images, since marked ones make the alignment depend on the carriers"
            )
            if not allow_marked:
                raise DatasetError(message + "; remove them or pass allow_marked=True (--allow-marked-reference)")
            warnings.warn(message + "; the p-value may not be calibrated", stacklevel=3)
    f_m, f_s, split = _features(marker, model, reference, head, batch_size, input_size, transform)
    num_ref, dim, suspect_dim = f_m.shape[0], f_m.shape[1], f_s.shape[1]
    if num_ref < max(dim, suspect_dim):
        warnings.warn(
            f"only {num_ref} reference images for {dim}-dim marker and {suspect_dim}-dim suspect features; the "
            "alignment is underdetermined (use at least as many clean reference images as feature dimensions)",
            stacklevel=3,
        )
    mapping, r2 = align(f_m, f_s)
    r2_identity = float("nan")
    if dim == suspect_dim:
        r2_identity = r_squared(f_m, f_s)
    if alignment == "identity":
        if dim != suspect_dim:
            raise ConfigError(
                f"identity alignment needs equal feature dims, but the marker has {dim} and the suspect {suspect_dim}"
            )
        method, reason = "identity", "requested"
    elif alignment == "auto" and dim == suspect_dim and r2_identity >= 0.9 and r2_identity >= r2 - 0.02:
        method, reason = "identity", "the suspect shares the marker's feature space (identity fits as well as least squares)"
    else:
        method, reason = "lstsq", "requested" if alignment == "lstsq" else "feature spaces differ"
    log.info("alignment: %s (%s); R^2 least squares %.4f, identity %.4f", method, reason, r2, r2_identity)
    pairs = resolve_class_map(key.num_classes, split.num_classes, class_map)
    weight = split.weight()[[o for _, o in pairs]]  # (C', d')
    rows = weight if method == "identity" else weight @ mapping.T  # (C', d)
    return WhiteboxParts(
        rows=rows,
        pairs=tuple(pairs),
        alignment={
            "method": method,
            "reason": reason,
            "r2": r2 if method == "lstsq" else r2_identity,
            "r2_lstsq": r2,
            "r2_identity": r2_identity,
            "marker_dim": dim,
            "suspect_dim": suspect_dim,
            "head": split.head_name,
        },
        counts={"classes": len(pairs), "reference": num_ref},
        model_sha256=state_dict_sha256(model) if hash_model else None,
    )


def verdict_from_parts(parts: WhiteboxParts, key: Key, *, alpha: float = DEFAULT_ALPHA) -> Verdict:
    """Score prepared rows against ``key``'s carriers."""
    classes = [k for k, _ in parts.pairs]
    cosines, null_dim = score_rows(parts.rows, key.carriers[classes], key.basis)
    log_ps = np.asarray(stats.cosine_log_sf(cosines, null_dim), dtype=np.float64)
    combined = stats.fisher_log_sf(log_ps)
    scores = tuple(
        ClassScore(index=k, log10_p=log10(lp), z=z_of(lp), cosine=float(c), output=o)
        for (k, o), c, lp in zip(parts.pairs, cosines, log_ps)
    )
    return Verdict(
        test="whitebox",
        log10_p=log10(combined),
        alpha=alpha,
        classes=scores,
        z=z_of(combined),
        key_fingerprint=key.fingerprint,
        model_sha256=parts.model_sha256,
        counts=dict(parts.counts),
        alignment=dict(parts.alignment),
        details={
            "null": "first coordinate of a uniform unit vector",
            "null_dim": null_dim,
            "carrier_space": key.space,
            "combination": "fisher",
            "mean_cosine": float(np.mean(cosines)),
            "mean_cosine_z": float(np.sum(cosines) * math.sqrt(null_dim) / math.sqrt(len(cosines))),
        },
    )


def whitebox(
    model: nn.Module,
    key: Key,
    reference: Any,
    *,
    marker: Marker,
    settings: WhiteboxSettings | None = None,
    marked: Sequence[bool] | torch.Tensor | None = None,
) -> Verdict:
    """Test whether ``model``'s classifier is aligned with the key's carriers.

    Args:
        model: the suspect, any classifier taking [0, 1] images (see ``settings.input_size``/``transform``).
        key: the secret key.
        reference: clean held-out images never published: a tensor ``(N, c, H, W)`` (uint8 or float in
            [0, 1]), an ``(images, labels)`` tuple, or an iterable of batches.
        marker: the marking network the key belongs to.
        settings: :class:`WhiteboxSettings` (head, alignment, class map, null trials, ...); default
            ``WhiteboxSettings()``.
        marked: per reference image, whether a manifest says it is marked (refused unless
            ``settings.allow_marked``).

    Returns:
        a :class:`Verdict` with per-class cosines and p-values; test ``"whitebox"``.

    Examples:
        >>> verdict = whitebox(suspect, key, reference, marker=marker,
        ...                    settings=WhiteboxSettings(null_trials=100, null_seed=0))  # doctest: +SKIP
    """
    settings = settings if settings is not None else WhiteboxSettings()
    parts = prepare(model, key, reference, marker=marker, marked=marked, **prepare_options(settings))
    return score_parts(parts, key, settings)


def prepare_options(settings: WhiteboxSettings) -> dict[str, Any]:
    """The options of :func:`prepare` that ``settings`` gives (the first step of :func:`whitebox`)."""
    return {"head": settings.head, "batch_size": settings.batch_size, "alignment": settings.alignment,
            "class_map": settings.class_map, "allow_marked": settings.allow_marked,
            "input_size": settings.input_size, "transform": settings.transform}


def score_parts(parts: WhiteboxParts, key: Key, settings: WhiteboxSettings) -> Verdict:
    """The last step of :func:`whitebox`: ``key`` scored on prepared ``parts``, with ``settings``' alpha and
    null trials (:func:`radioactive.detect.keys.whitebox_keys` scores several keys on one preparation)."""
    verdict = verdict_from_parts(parts, key, alpha=settings.alpha)
    return with_null_trials(verdict, key, settings.null_trials, settings.null_seed,
                            lambda other: verdict_from_parts(parts, other, alpha=settings.alpha).log10_p)

"""What the suspect says about each marked version of the probes: per-class means of each statistic.

:func:`collect` marks the probes with the true and K control carrier sets (:mod:`.probes`), queries the
suspect (and optionally one or several reference models) on every version and keeps, per class and
version, the mean of every statistic. The combinations (:mod:`.combine`) turn these :class:`Observations` into p-values; one
collection serves every statistic and combination.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from .._progress import Progress
from ..errors import ConfigError, DatasetError, EndpointError
from ..key import Key
from ..marker import Marker
from .common import ClassMap, model_device, resize, resolve_class_map
from .matched import DEFAULT_RIDGE, matched_residuals
from .probes import Probes, cross_targets, marked_versions
from .settings import OUTPUTS, PROBE_MODES, STATISTICS, check_choice

__all__ = [
    "Observations",
    "Predict",
    "STATISTICS",
    "collect",
    "model_predictor",
    "output_scores",
    "per_image_statistics",
    "reference_predictors",
    "statistic_values",
]

Predict = Callable[[torch.Tensor], Any]

log = logging.getLogger(__name__)


def model_predictor(model: nn.Module, *, input_size: tuple[int, int] | None = None,
                    device: torch.device | str | None = None) -> Predict:
    """``predict`` for a local model: float [0, 1] images ``(B, c, H, W)`` resized to ``input_size`` (when
    given), run on ``device`` (default: the model's) without gradients -> float32 CPU scores ``(B, C)``."""
    target = torch.device(device) if device is not None else model_device(model)

    def predict(images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model(resize(images, input_size).to(target)).float().cpu()

    return predict


def output_scores(predict: Predict, images_u8: torch.Tensor, batch_size: int, output: str, *,
                  progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, str]:
    """Run ``predict`` on ``(N, c, H, W)`` uint8 images (as float [0, 1]) in batches (``progress`` is called
    with the number of images answered after each batch).

    Returns:
        ``(values, kind)``: log-probabilities ``(N, classes)`` (kind ``logits`` or ``probs``) or predicted
        labels ``(N,)`` int64 (kind ``labels``); ``output="auto"`` infers the kind from the values.
    """
    check_choice("output kind", output, OUTPUTS)
    chunks = []
    for start in range(0, images_u8.shape[0], batch_size):
        batch = images_u8[start : start + batch_size].float() / 255.0
        raw = predict(batch)
        if isinstance(raw, torch.Tensor):
            raw = raw.detach().to("cpu", torch.float64).numpy()
        arr = np.asarray(raw, dtype=np.float64)
        if arr.shape[0] != batch.shape[0] or arr.ndim not in (1, 2):
            raise EndpointError(
                f"the model returned shape {arr.shape} for {batch.shape[0]} images; expected (N, classes) scores or (N,) labels"
            )
        if not np.all(np.isfinite(arr)):
            raise EndpointError("the model returned NaN or infinite scores")
        chunks.append(arr)
        if progress is not None:
            progress(batch.shape[0])
    arr = np.concatenate(chunks)
    kind = output
    if kind == "auto":
        if arr.ndim == 1:
            kind = "labels"
        elif np.all(arr >= 0) and np.allclose(arr.sum(axis=1), 1.0, atol=1e-3):
            kind = "probs"
        else:
            kind = "logits"
    if kind == "labels":
        if arr.ndim != 1 and arr.shape[1] != 1:
            arr = arr.argmax(axis=1)
        labels = arr.reshape(-1)
        if not np.all(labels == np.round(labels)):
            raise EndpointError("label outputs must be integers")
        return labels.astype(np.int64), "labels"
    if arr.ndim != 2:
        raise EndpointError(f"{kind} outputs must be (N, classes), got shape {arr.shape}")
    if kind == "probs":
        return np.log(np.clip(arr, 1e-300, None)), "probs"
    shifted = arr - arr.max(axis=1, keepdims=True)  # logits
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True)), "logits"


def per_image_statistics(values: np.ndarray, kind: str, targets: np.ndarray) -> dict[str, np.ndarray]:
    """Per-image statistics (larger = the model likes the image's version more)."""
    if kind == "labels":
        return {"label": (values == targets).astype(np.float64)}
    rows = np.arange(len(targets))
    true_lp = values[rows, targets]
    others = values.copy()
    others[rows, targets] = -np.inf
    return {
        "loss": true_lp,  # minus the cross-entropy
        "prob": np.exp(true_lp),
        "margin": true_lp - others.max(axis=1),
        "label": (values.argmax(axis=1) == targets).astype(np.float64),
    }


@dataclass(frozen=True, eq=False)
class Observations:
    """Per-class means of each statistic on each version: ``suspect[stat]`` ``(K + 1, C')`` (row 0: the true
    carriers), and the same for each reference model given (``references``, in the order given; empty: none).
    ``reference`` is what difference in differences subtracts: the references' mean, per class and version."""

    pairs: tuple[tuple[int, int], ...]
    counts: np.ndarray  # (C',) probes per tested class
    suspect: dict[str, np.ndarray]
    references: tuple[dict[str, np.ndarray], ...]
    output_kind: str
    source: str
    num_probes: int
    key_fingerprint: str
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "references", tuple(self.references or ()))

    @property
    def num_controls(self) -> int:
        return next(iter(self.suspect.values())).shape[0] - 1

    @property
    def reference(self) -> dict[str, np.ndarray] | None:
        """The references' combined response: per statistic their mean ``(K + 1, C')`` (None: no reference).

        The same symmetric function of every version's values, so with references independent of the key the
        K + 1 differences stay exchangeable; one reference is returned as recorded."""
        if not self.references:
            return None
        if len(self.references) == 1:
            return self.references[0]
        shared = set.intersection(*(set(r) for r in self.references))
        return {name: np.mean([r[name] for r in self.references], axis=0)
                for name in self.references[0] if name in shared}


def reference_predictors(reference: Predict | Sequence[Predict] | None) -> tuple[Predict, ...]:
    """The reference models as a tuple of predict functions: None (or an empty sequence) -> none, one callable
    -> one, a sequence of callables -> those, in order.

    Raises:
        ConfigError: anything else.
    """
    if reference is None:
        return ()
    if callable(reference):
        return (reference,)
    if isinstance(reference, Sequence) and not isinstance(reference, str | bytes):
        refs = tuple(reference)
        bad = [i for i, r in enumerate(refs) if not callable(r)]
        if not bad:
            return refs
        raise ConfigError(f"reference models must be predict callables; items {bad} of reference are not")
    raise ConfigError(f"reference must be None, a predict callable or a sequence of them, got {type(reference).__name__}")


def _tested_classes(
    labels: np.ndarray, key: Key, values: np.ndarray, kind: str, class_map: ClassMap
) -> tuple[list[tuple[int, int]], np.ndarray, np.ndarray, np.ndarray]:
    """From the suspect's first answer: the (key class, output) pairs tested, probes per pair ``(C',)``, each
    probe's target output ``(N,)`` and whether it belongs to a tested class ``(N,)``."""
    outputs = key.num_classes if kind == "labels" else values.shape[1]
    if kind == "labels" and class_map is None and values.max() >= key.num_classes:
        outputs = int(values.max()) + 1
    pairs = resolve_class_map(key.num_classes, outputs, class_map)
    mapping = dict(pairs)
    keep = np.isin(labels, list(mapping))
    if not keep.any():
        raise DatasetError("no probe image belongs to a tested class")
    counts = np.array([int((labels == k).sum()) for k, _ in pairs])
    if (counts == 0).any():
        missing = [k for (k, _), n in zip(pairs, counts) if n == 0]
        warnings.warn(f"no probe images of classes {missing}; they are left out", stacklevel=3)
        pairs = [p for p, n in zip(pairs, counts) if n > 0]
        counts = counts[counts > 0]
    targets = np.array([mapping.get(int(y), 0) for y in labels])
    return pairs, counts, targets, keep


def collect(
    predict: Predict,
    key: Key,
    probes: Probes,
    *,
    marker: Marker,
    num_controls: int = 9,
    reference: Predict | Sequence[Predict] | None = None,
    config: Any = None,
    seed: int = 0,
    class_map: ClassMap = None,
    output: str = "auto",
    batch_size: int = 256,
    cache_dir: str | os.PathLike | None = None,
    mark_batch_size: int | None = None,
    probe_mode: str = "same",
) -> Observations:
    """Mark the probes with the true and control carriers and record every statistic per class and version.

    ``probe_mode="same"`` (default): each probe is marked along its own class's carrier and read in its own
    class's score. ``probe_mode="cross"`` (fresh probes only, never published): each probe is marked along the
    carrier of *another* class c (:func:`radioactive.detect.probes.cross_targets`: every class gets about N / C
    probes, evenly from every other class) and read in class c's score: ``margin`` is the log-probability of c
    minus the largest other (logit_c minus the largest other logit), ``loss`` is log p_c (minus the
    cross-entropy with target c), ``prob`` is p_c and ``label`` whether c is predicted. Class c's statistic
    then depends on u_c's version only, as in same-class mode, and the targets depend on no carrier: the key's
    version and the K control versions are made the same way (same images, targets, settings and augmentation
    streams, only the carrier sets differ), so under H0 the K + 1 values of each class stay exchangeable,
    independently across classes, and the stratified permutation test (and rank, and difference in
    differences with references independent of the key) stays exact.

    Args:
        predict: the suspect, images ``(B, c, H, W)`` float in [0, 1] -> scores ``(B, C)`` or labels ``(B,)``.
        key: the secret key.
        probes: the probe images (fresh, or published with their originals).
        marker: the marking network the key belongs to.
        num_controls: K, the number of control carrier sets.
        reference: a clean model's predict function (difference in differences), a sequence of them (their
            mean response is subtracted; each must be independent of the key), or None.
        config: the :class:`radioactive.MarkConfig` the versions are marked with (default ``MarkConfig()``).
        seed: the marking run's seed (per-image augmentation streams: :func:`radioactive.mark.image_seeds`).
        class_map: ``{key class: suspect output}`` (see :class:`radioactive.detect.BlackboxSettings`).
        output: what ``predict`` returns: ``auto``, ``logits``, ``probs`` or ``labels``.
        batch_size: images per query.
        cache_dir: owner-only cache of marked versions; None: no cache.
        mark_batch_size: images per marking batch (default: :func:`radioactive.mark`'s).
        probe_mode: ``same`` or ``cross`` (above).

    Returns:
        :class:`Observations` with ``(K + 1, C')`` per-class means of every statistic (row 0: true carriers).
    """
    references = reference_predictors(reference)
    if num_controls < 1:
        raise ConfigError(f"num_controls must be >= 1, got {num_controls}")
    check_choice("output kind", output, OUTPUTS)
    check_choice("probe mode", probe_mode, PROBE_MODES)
    key.check_marker(marker.info)
    labels = probes.labels.numpy()
    if len(labels) == 0:
        raise DatasetError("no probe images")
    if labels.min() < 0 or labels.max() >= key.num_classes:
        raise DatasetError(f"probe labels must lie in [0, {key.num_classes}), got [{labels.min()}, {labels.max()}]")
    aims = None
    if probe_mode == "cross":
        if probes.published is not None:
            raise ConfigError("cross-class probes must be fresh: published images were marked towards their own "
                              "classes (use probe_mode='same' with published probes)")
        aims = cross_targets(probes.labels, key.num_classes)
        labels = aims.numpy()  # each probe is read in the score of the class it was marked towards
    suspect_rows: dict[str, list[np.ndarray]] = {}
    reference_rows: list[dict[str, list[np.ndarray]]] = [{} for _ in references]
    pairs = None
    kind = output
    queries = _announce_queries(predict, len(references), num_controls + 1, len(labels), batch_size)
    versions = marked_versions(marker, key, probes, num_controls=num_controls, config=config, seed=seed,
                               cache_dir=cache_dir, batch_size=mark_batch_size, targets=aims)
    with queries:
        for _, images in versions:
            for position, (target, rows) in enumerate(((predict, suspect_rows), *zip(references, reference_rows))):
                values, got_kind = output_scores(target, images, batch_size, "auto" if position else output,
                                                 progress=queries.update)
                if position == 0:  # the suspect
                    kind = got_kind
                    if pairs is None:
                        pairs, counts, targets, keep = _tested_classes(labels, key, values, got_kind, class_map)
                per_image = per_image_statistics(values, got_kind, targets)
                for name, vals in per_image.items():
                    means = np.array([vals[labels == k].mean() for k, _ in pairs])
                    rows.setdefault(name, []).append(means)
    return Observations(
        pairs=tuple(pairs),
        counts=counts,
        suspect={name: np.stack(v) for name, v in suspect_rows.items()},
        references=tuple({name: np.stack(v) for name, v in rows.items()} for rows in reference_rows),
        output_kind=kind,
        source=probes.source,
        num_probes=int(keep.sum()),
        key_fingerprint=key.fingerprint,
        extra={"probe_mode": probe_mode} if probe_mode != "same" else {},
    )


def _announce_queries(predict: Predict, references: int, versions: int, count: int, batch_size: int) -> Progress:
    """Say (INFO) how many images the suspect (an endpoint: how many requests) and the references will be asked
    about, and return the progress of those queries."""
    per_version = count * (1 + references)
    what = "the suspect" + (f" and {references} reference model{'s' if references > 1 else ''}" if references else "")
    # An endpoint (radioactive.endpoint.Endpoint, a layer above) says its URL and its batch size per request.
    if isinstance(getattr(predict, "url", None), str) and isinstance(getattr(predict, "batch_size", None), int):
        batches = [min(batch_size, count - start) for start in range(0, count, batch_size)]
        requests = versions * sum(math.ceil(size / predict.batch_size) for size in batches)
        what += f" (the suspect: {requests} requests to {predict.url})"
    log.info("querying %s on %d versions x %d probe images (%d images), as each version is marked", what, versions,
             count, versions * per_version)
    return Progress(log, versions * per_version, "queries", "img")


def statistic_values(obs: Observations, statistic: str, difference: bool | None, *, reference_fit: str = "mean",
                     ridge: float = DEFAULT_RIDGE) -> tuple[bool, np.ndarray]:
    """The per-class statistic of every version, ``(K + 1, C')`` (row 0: the true carriers), minus the
    reference models' response when ``difference`` (default: whenever a reference was recorded): their mean
    (``reference_fit="mean"``), or the suspect's leave-one-out prediction from every reference
    (``matched`` / ``matched-class``: :func:`radioactive.detect.matched.matched_residuals`)."""
    if statistic not in obs.suspect:
        raise ConfigError(f"the model returns labels only; the statistic must be 'label', not {statistic!r}")
    difference = obs.reference is not None if difference is None else difference
    values = obs.suspect[statistic]
    if difference:
        if obs.reference is None:
            raise ConfigError("difference in differences needs a reference model")
        if statistic not in obs.reference:
            raise ConfigError(f"a reference model returns labels only; the statistic must be 'label', not {statistic!r}")
        if reference_fit == "mean":
            values = values - obs.reference[statistic]
        else:
            bank = np.stack([r[statistic] for r in obs.references])
            values = matched_residuals(values, bank, fit=reference_fit, ridge=ridge)
    return difference, values

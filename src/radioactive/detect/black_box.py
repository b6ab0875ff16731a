"""Black-box test at the level of carriers (METHOD.md): exact under H0 whatever the model.

The same probe images are marked with the key's carriers and with K control carrier sets drawn like the
key (never published). Per class, a statistic of the suspect's outputs on each version is computed. Under H0
the suspect is independent of all K + 1 carrier sets, which are i.i.d., and every version is produced by the
same function of its carriers; so the K + 1 per-class statistics are exchangeable and the rank of the true
set is uniform: ``p_k = rank / (K + 1)`` exactly. Classes use disjoint probes and independent carriers, so
their p-values are independent and Fisher's combination is valid (conservative for discrete ranks).

Per-image comparisons (true-carrier vs control version of each image, or marked vs clean) treat one random
carrier as hundreds of independent draws and are *not* calibrated; they are deliberately not offered.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import stats
from .._io import atomic_write
from ..errors import ConfigError, DatasetError, EndpointError
from ..key import Key
from ..marker import Marker
from ._common import ClassMap, as_float_images, log10, resolve_class_map, z_of
from .verdict import ClassScore, Verdict
from .white_box import null_seeds, null_trial_summary, random_key

__all__ = [
    "Probes",
    "Observations",
    "STATISTICS",
    "COMBINATIONS",
    "blackbox",
    "collect",
    "verdict_from_observations",
    "marked_versions",
]

log = logging.getLogger(__name__)

STATISTICS = ("margin", "prob", "loss", "label")
COMBINATIONS = ("rank", "t", "perm")
Predict = Callable[[torch.Tensor], Any]


@dataclass(frozen=True, eq=False)
class Probes:
    """Probe images for the black-box test.

    Attributes:
        images: ``(N, c, H, W)`` clean images (uint8 or float in [0, 1]) at the marker's input size.
        labels: ``(N,)`` their classes (key classes).
        published: optional ``(N, c, H, W)`` marked versions of ``images`` as published (marked with the key
            and the *same* marking settings as given to the test); then the test asks whether the suspect
            prefers the published versions over control-marked twins. Without it, the probes are fresh
            clean images the owner never published, marked with the key here.
        ids: optional identity of each probe in the marking run that produced the published versions
            (``radioactive.mark.image_seeds(seed, ids)`` gives its augmentation stream: the row position in a
            :func:`radioactive.mark` call, or the relative path for ``radioactive mark``). Every version is then
            marked with the same streams as the published one, so the true and control versions differ only by
            their carriers (exchangeability). Default: ``0 .. N - 1``.
    """

    images: torch.Tensor
    labels: torch.Tensor
    published: torch.Tensor | None = None
    ids: tuple[str | int, ...] | None = None

    def __post_init__(self) -> None:
        images = as_float_images(self.images)
        object.__setattr__(self, "images", (images * 255).round().clamp(0, 255).to(torch.uint8))
        labels = torch.as_tensor(self.labels, dtype=torch.long).reshape(-1).cpu()
        object.__setattr__(self, "labels", labels)
        if labels.shape[0] != images.shape[0]:
            raise DatasetError(f"{images.shape[0]} probe images but {labels.shape[0]} labels")
        if self.published is not None:
            published = as_float_images(self.published)
            if published.shape != images.shape:
                raise DatasetError(f"published images {tuple(published.shape)} do not match the probes {tuple(images.shape)}")
            object.__setattr__(self, "published", (published * 255).round().clamp(0, 255).to(torch.uint8))
        if self.ids is not None:
            ids = tuple(int(i) if isinstance(i, int | np.integer) else str(i) for i in
                        (self.ids.tolist() if isinstance(self.ids, torch.Tensor | np.ndarray) else self.ids))
            if len(ids) != labels.shape[0]:
                raise DatasetError(f"{labels.shape[0]} probe images but {len(ids)} ids")
            object.__setattr__(self, "ids", ids)

    def seed_ids(self) -> Sequence[str | int]:
        """What :func:`radioactive.mark.image_seeds` derives each probe's augmentation stream from."""
        return self.ids if self.ids is not None else range(len(self))

    @property
    def source(self) -> str:
        return "published" if self.published is not None else "fresh"

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def fingerprint(self) -> str:
        """16 hex characters naming the clean probe images and labels."""
        digest = hashlib.sha256()
        digest.update(str(tuple(self.images.shape)).encode())
        digest.update(self.images.contiguous().numpy().tobytes())
        digest.update(self.labels.numpy().tobytes())
        if self.ids is not None:
            digest.update(json.dumps(list(self.ids)).encode())
        return digest.hexdigest()[:16]


def _config_fingerprint(config: Any, seed: int, marker: Marker) -> str:
    material = {"config": config.to_dict(), "seed": int(seed), "marker": marker.info.weights_sha256}
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _cache_dir(path: str | os.PathLike) -> Path:
    folder = Path(path).expanduser()
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        os.chmod(folder, 0o700)
    except PermissionError:  # pragma: no cover - a folder someone else owns
        warnings.warn(f"cannot make cache folder {str(folder)!r} owner-only", stacklevel=3)
    return folder


def marked_versions(
    marker: Marker,
    key: Key,
    probes: Probes,
    *,
    num_controls: int,
    config: Any = None,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
    batch_size: int | None = None,
    max_images_per_call: int = 4096,
):
    """Yield ``(index, images uint8 (N, c, H, W))`` for the true version (0) and control sets 1..K.

    Control sets (and fresh probes marked with the key) are read from ``cache_dir`` when present and written
    there otherwise (safetensors, mode 0600, in an owner-only folder), keyed by the key's fingerprint, the
    probes' hash, the marking settings and seed.
    """
    from ..mark import MarkConfig, image_seeds, mark

    config = config if config is not None else MarkConfig()
    folder = _cache_dir(cache_dir) if cache_dir is not None else None
    probe_fp = probes.fingerprint()
    config_fp = _config_fingerprint(config, seed, marker)
    count = len(probes)
    # Every version uses the same per-image augmentation streams, so versions differ only by their carriers.
    seeds = image_seeds(seed, probes.seed_ids())
    per_call = max(1, max_images_per_call // max(count, 1))

    def flush(group: list[int]):
        if not group:
            return
        carriers = torch.cat([key.carriers if j == 0 else key.control_carriers(j - 1) for j in group])
        labels = torch.cat([probes.labels + position * key.num_classes for position in range(len(group))])
        result = mark(marker, probes.images.repeat(len(group), 1, 1, 1), labels, carriers, config,
                      seed=seeds * len(group), batch_size=batch_size)
        marked = (result.images.detach().cpu() * 255).round().clamp(0, 255).to(torch.uint8)
        for position, j in enumerate(group):
            images = marked[position * count : (position + 1) * count]
            if folder is not None:
                _write_cache(folder / f"{key.fingerprint}-{probe_fp}-{config_fp}-{j}.safetensors", images,
                             probe_fp, key, config_fp, j)
            yield j, images
        group.clear()

    pending: list[int] = []
    for index in range(num_controls + 1):
        if index == 0 and probes.published is not None:
            yield 0, probes.published
            continue
        path = folder / f"{key.fingerprint}-{probe_fp}-{config_fp}-{index}.safetensors" if folder else None
        images = _read_cache(path, probes, key, config_fp, index) if path is not None else None
        if images is not None:
            yield from flush(pending)
            yield index, images
        else:
            pending.append(index)
            if len(pending) >= per_call:
                yield from flush(pending)
    yield from flush(pending)


def _write_cache(path: Path, images: torch.Tensor, probe_fp: str, key: Key, config_fp: str, index: int) -> None:
    from safetensors.torch import save_file

    meta = {"key": key.fingerprint, "probes": probe_fp, "config": config_fp, "version": str(index)}
    with atomic_write(path, mode=0o600) as tmp:
        save_file({"images": images.contiguous()}, str(tmp), metadata=meta)


def _read_cache(path: Path, probes: Probes, key: Key, config_fp: str, index: int) -> torch.Tensor | None:
    from safetensors import safe_open

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = dict(handle.metadata() or {})
            images = handle.get_tensor("images")
    except Exception:
        log.warning("ignoring unreadable cache file %s", path)
        return None
    expected = {"key": key.fingerprint, "probes": probes.fingerprint(), "config": config_fp, "version": str(index)}
    if any(meta.get(k) != v for k, v in expected.items()) or images.shape != probes.images.shape or images.dtype != torch.uint8:
        log.warning("ignoring stale cache file %s", path)
        return None
    return images


def _scores(predict: Predict, images_u8: torch.Tensor, batch_size: int, output: str) -> tuple[np.ndarray, str]:
    """Run ``predict`` on float [0, 1] images in batches; returns (log-probabilities or labels, kind)."""
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
    if kind == "logits":
        shifted = arr - arr.max(axis=1, keepdims=True)
        return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True)), "logits"
    raise ConfigError(f"unknown output kind {output!r}; choose from ['auto', 'logits', 'probs', 'labels']")


def _per_image(values: np.ndarray, kind: str, targets: np.ndarray) -> dict[str, np.ndarray]:
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
    carriers), and the same for the reference model when one was given."""

    pairs: tuple[tuple[int, int], ...]
    counts: np.ndarray  # (C',) probes per tested class
    suspect: dict[str, np.ndarray]
    reference: dict[str, np.ndarray] | None
    output_kind: str
    source: str
    num_probes: int
    key_fingerprint: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_controls(self) -> int:
        return next(iter(self.suspect.values())).shape[0] - 1


def collect(
    predict: Predict,
    key: Key,
    probes: Probes,
    *,
    marker: Marker,
    num_controls: int = 9,
    reference: Predict | None = None,
    config: Any = None,
    seed: int = 0,
    class_map: ClassMap = None,
    output: str = "auto",
    batch_size: int = 256,
    cache_dir: str | os.PathLike | None = None,
    mark_batch_size: int | None = None,
) -> Observations:
    """Mark the probes with the true and control carriers and record every statistic per class and version."""
    if num_controls < 1:
        raise ConfigError(f"num_controls must be >= 1, got {num_controls}")
    key.check_marker(marker.info)
    labels = probes.labels.numpy()
    if len(labels) == 0:
        raise DatasetError("no probe images")
    if labels.min() < 0 or labels.max() >= key.num_classes:
        raise DatasetError(f"probe labels must lie in [0, {key.num_classes}), got [{labels.min()}, {labels.max()}]")
    suspect_rows: dict[str, list[np.ndarray]] = {}
    reference_rows: dict[str, list[np.ndarray]] = {}
    pairs = None
    kind = output
    for _, images in marked_versions(marker, key, probes, num_controls=num_controls, config=config, seed=seed,
                                     cache_dir=cache_dir, batch_size=mark_batch_size):
        for target, rows in ((predict, suspect_rows), (reference, reference_rows)):
            if target is None:
                continue
            values, got_kind = _scores(target, images, batch_size, output if target is predict else "auto")
            if target is predict:
                kind = got_kind
                if pairs is None:
                    outputs = key.num_classes if got_kind == "labels" else values.shape[1]
                    if got_kind == "labels" and class_map is None and values.max() >= key.num_classes:
                        outputs = int(values.max()) + 1
                    pairs = resolve_class_map(key.num_classes, outputs, class_map)
                    mapping = dict(pairs)
                    keep = np.isin(labels, list(mapping))
                    if not keep.any():
                        raise DatasetError("no probe image belongs to a tested class")
                    counts = np.array([int((labels == k).sum()) for k, _ in pairs])
                    if (counts == 0).any():
                        missing = [k for (k, _), n in zip(pairs, counts) if n == 0]
                        warnings.warn(f"no probe images of classes {missing}; they are left out", stacklevel=2)
                        pairs = [p for p, n in zip(pairs, counts) if n > 0]
                        counts = counts[counts > 0]
                    targets = np.array([mapping.get(int(y), 0) for y in labels])
            per_image = _per_image(values, got_kind, targets)
            for name, vals in per_image.items():
                means = np.array([vals[labels == k].mean() for k, _ in pairs])
                rows.setdefault(name, []).append(means)
    return Observations(
        pairs=tuple(pairs),
        counts=counts,
        suspect={name: np.stack(v) for name, v in suspect_rows.items()},
        reference={name: np.stack(v) for name, v in reference_rows.items()} if reference is not None else None,
        output_kind=kind,
        source=probes.source,
        num_probes=int(keep.sum()),
        key_fingerprint=key.fingerprint,
    )


def statistic_values(obs: Observations, statistic: str, difference: bool | None) -> tuple[bool, np.ndarray]:
    """The per-class statistic of every version, ``(K + 1, C')`` (row 0: the true carriers), minus the
    reference model's when ``difference`` (default: whenever a reference was recorded)."""
    if statistic not in obs.suspect:
        raise ConfigError(f"the model returns labels only; the statistic must be 'label', not {statistic!r}")
    difference = obs.reference is not None if difference is None else difference
    values = obs.suspect[statistic]
    if difference:
        if obs.reference is None:
            raise ConfigError("difference in differences needs a reference model")
        values = values - obs.reference[statistic]
    return difference, values


def verdict_from_observations(
    obs: Observations,
    *,
    statistic: str = "margin",
    combine: str = "rank",
    difference: bool | None = None,
    alpha: float = 0.05,
    model_id: str | None = None,
) -> Verdict:
    """One test on recorded observations.

    Args:
        statistic: ``margin`` (true-class log-probability minus the best other), ``prob`` (true-class
            probability), ``loss`` (minus the cross-entropy) or ``label`` (accuracy of predicted labels).
        combine: ``rank`` (exact rank p-value per class, Fisher across classes) or ``t`` (per class, the
            true set's statistic against the controls' mean and spread, Student's t with K - 1 degrees of
            freedom; Stouffer across classes). ``rank`` is exact; ``t`` reaches smaller p-values and its
            calibration is measured by ``benchmarks/bench_calibration.py``.
            ``perm``: exact stratified permutation test of the sum of per-class standardised values
            (:mod:`radioactive.detect.exact`): exact like ``rank``, smallest p-value (K + 1)^-C instead of
            Fisher-on-ranks' cap (about 5e-6 for 10 classes and K = 20).
        difference: subtract the reference model's statistic (difference in differences); default: when a
            reference model was given.
    """
    if statistic not in STATISTICS:
        raise ConfigError(f"unknown statistic {statistic!r}; choose from {list(STATISTICS)}")
    if combine not in COMBINATIONS:
        raise ConfigError(f"unknown combination {combine!r}; choose from {list(COMBINATIONS)}")
    if combine == "perm":  # exact stratified permutation test (radioactive.detect.exact)
        from .exact import exact_verdict

        return exact_verdict(obs, statistic=statistic, difference=difference, alpha=alpha, model_id=model_id)
    difference, values = statistic_values(obs, statistic, difference)
    true_value, controls = values[0], values[1:].T  # (C',), (C', K)
    details: dict[str, Any] = {
        "statistic": statistic,
        "combination": "fisher on exact ranks" if combine == "rank" else "stouffer on control t statistics",
        "difference_in_differences": bool(difference),
        "probe_source": obs.source,
        "output_kind": obs.output_kind,
    }
    if combine == "rank":
        log_ps = stats.rank_log_p(true_value, controls)
        combined = stats.fisher_log_sf(log_ps)
        details["best_possible_log10_p"] = stats.fisher_log_sf(
            np.full(len(log_ps), -math.log(obs.num_controls + 1))) / stats.LOG10
    else:
        if obs.num_controls < 3:
            raise ConfigError(f"the t combination needs at least 3 control sets, got {obs.num_controls}")
        spread_floor = None
        if statistic == "label":
            # Accuracies move in steps of 1/n; a zero spread among few controls must not give t = infinity.
            spread_floor = 0.5 / obs.counts
        t, dof = stats.control_t_statistic(true_value, controls, floor=spread_floor)
        log_ps = np.asarray(stats.t_log_sf(t, dof), dtype=np.float64)
        combined = stats.stouffer_log_sf(stats.z_from_log_p(log_ps))
        details["t"] = t.tolist()
        details["dof"] = dof
    scores = tuple(
        ClassScore(index=k, log10_p=log10(lp), z=z_of(lp), statistic=float(tv), controls=tuple(float(c) for c in ctrl),
                   count=int(n), output=o)
        for (k, o), lp, tv, ctrl, n in zip(obs.pairs, log_ps, true_value, controls, obs.counts)
    )
    test = f"blackbox-{combine}" + ("-did" if difference else "")
    return Verdict(
        test=test,
        log10_p=log10(combined),
        alpha=alpha,
        classes=scores,
        z=z_of(combined),
        key_fingerprint=obs.key_fingerprint,
        model_sha256=model_id,
        counts={"classes": len(obs.pairs), "probes": obs.num_probes, "controls": obs.num_controls},
        details=details,
    )


def blackbox(
    predict: Predict,
    key: Key,
    probes: Probes,
    *,
    marker: Marker,
    num_controls: int = 9,
    statistic: str = "margin",
    combine: str = "rank",
    reference: Predict | None = None,
    config: Any = None,
    seed: int = 0,
    class_map: ClassMap = None,
    output: str = "auto",
    alpha: float = 0.05,
    batch_size: int = 256,
    cache_dir: str | os.PathLike | None = None,
    model_id: str | None = None,
    null_trials: int = 0,
    null_seed: int | None = None,
) -> Verdict:
    """Test whether the model behind ``predict`` learned the key's carriers, from its outputs only.

    Args:
        predict: images ``(B, c, H, W)`` float in [0, 1] -> scores ``(B, C)`` (logits or probabilities) or
            predicted labels ``(B,)``; a Python callable or a :class:`radioactive.endpoint.Endpoint`.
        key: the secret key.
        probes: :class:`Probes` (fresh clean images, or published marked images with their originals).
        marker: the marking network the key belongs to.
        num_controls: K, the number of control carrier sets (the rank test's resolution is 1 / (K + 1)).
        statistic: see :func:`verdict_from_observations`.
        combine: ``rank`` (exact) or ``t``.
        reference: predict function of a clean model trained by the auditor (difference in differences).
        config: :class:`radioactive.MarkConfig` used to mark the probes (for published probes: the settings
            the published images were marked with).
        seed: marking seed, the same for every version (required for exchangeability).
        class_map: ``{key class: suspect output}`` for a suspect with other outputs.
        output: ``auto``, ``logits``, ``probs`` or ``labels``.
        cache_dir: where marked control sets are cached (owner-only); None: no cache.
        model_id: identifier of the suspect recorded in the verdict (e.g. its URL or file hash).
        null_trials: rerun the same test with this many fresh random keys against the same model (each costs
            K + 1 markings of the probes) and report where the real key's p-value falls.

    Returns:
        a :class:`Verdict`; its test is ``blackbox-rank`` / ``blackbox-t`` (``-did`` with a reference model).
    """
    kwargs = dict(marker=marker, num_controls=num_controls, reference=reference, config=config, seed=seed,
                  class_map=class_map, output=output, batch_size=batch_size, cache_dir=cache_dir)
    obs = collect(predict, key, probes, **kwargs)
    verdict = verdict_from_observations(obs, statistic=statistic, combine=combine, alpha=alpha, model_id=model_id)
    if null_trials > 0:
        if probes.published is not None:
            raise ConfigError("null trials need fresh probes: published images carry the real key only")
        seeds = null_seeds(null_trials, null_seed)
        null = []
        for s in seeds:
            other = collect(predict, random_key(key, s), probes, **kwargs)
            null.append(verdict_from_observations(other, statistic=statistic, combine=combine, alpha=alpha).log10_p)
        verdict = verdict.with_null_trials(null_trial_summary(verdict.log10_p, null, seeds, alpha))
    return verdict


def format_choices(values: Sequence[str]) -> str:
    return ", ".join(values)

"""Probe images for the black-box test and their K + 1 marked versions (true carriers, then K controls).

Every version is marked by the same function of its carriers (same marking settings, same per-image
augmentation streams), which is what makes the K + 1 versions exchangeable under H0. Control sets are cached
on disk (owner-only) because they are the expensive part and do not depend on the suspect.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._io import atomic_write
from .._progress import Progress, duration
from ..errors import ConfigError, DatasetError
from ..key import Key
from ..marker import Marker
from .common import as_float_images

__all__ = ["PROBE_BUDGET", "Probes", "cross_targets", "default_per_class", "first_per_class", "marked_versions"]

log = logging.getLogger(__name__)


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


PROBE_BUDGET = 1000  # fresh probes in all when the auditor sets no count
MIN_PER_CLASS = 10


def default_per_class(num_classes: int) -> int:
    """Probes per class when the auditor gives no count: ``PROBE_BUDGET`` probes spread evenly over the classes,
    never fewer than ``MIN_PER_CLASS`` per class.

    That is 100 per class at C = 10 and 10 at C = 100: the configurations the Fashion-MNIST grid and the
    composite grids (configs/composite-*.toml) measured, 1,000 probes each. A black-box audit sends
    (K + 1) x probes queries, so a count that grew with C (100 per class: 100,000 probes at C = 1,000) would
    cost an API audit 2.1 million queries; at C > 100 the floor gives 10 C.

    Examples:
        >>> [default_per_class(c) for c in (2, 10, 47, 100, 1000)]
        [500, 100, 22, 10, 10]
    """
    if num_classes < 1:
        raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
    return max(MIN_PER_CLASS, math.ceil(PROBE_BUDGET / num_classes))


def first_per_class(labels: torch.Tensor, per_class: int | None, *, num_classes: int) -> torch.Tensor:
    """Indices of the first ``per_class`` images (all when None) of each class ``0 .. num_classes - 1``,
    class by class, each class in the given order; images of other classes are left out."""
    labels = torch.as_tensor(labels).reshape(-1)
    if per_class is not None and per_class < 1:
        raise ConfigError(f"probes per class must be >= 1, got {per_class}")
    return torch.cat([torch.nonzero(labels == k).flatten()[:per_class] for k in range(num_classes)])


def cross_targets(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """The class each probe is marked towards in cross-class mode (``collect(..., probe_mode="cross")``):
    never its own, always one of the classes the probes hold. With those classes ``k_0 < ... < k_{m-1}``, the
    j-th probe (in the given order) of class ``k_a`` goes to ``k_{(a + 1 + j mod (m - 1)) mod m}`` (with every
    class present: ``(y + 1 + j mod (C - 1)) mod C``), so each class receives about N / m probes, drawn evenly
    from every other class, and the classes tested are those of same-class mode.

    A fixed function of the labels and their order: it depends on no carrier set, which is what keeps the
    K + 1 marked versions exchangeable.

    Returns:
        ``(N,)`` int64 target classes.

    Raises:
        DatasetError: labels outside ``[0, num_classes)``, or fewer than two classes among them.

    Examples:
        >>> cross_targets(torch.tensor([0, 0, 0, 1, 2]), 3).tolist()
        [1, 2, 1, 2, 0]
    """
    labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1).cpu()
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise DatasetError(f"probe labels must lie in [0, {num_classes}), got [{int(labels.min())}, {int(labels.max())}]")
    classes = labels.unique()  # sorted
    if len(classes) < 2:
        raise DatasetError(f"cross-class probes need probe images of at least 2 classes, got classes {classes.tolist()}")
    targets = torch.empty_like(labels)
    for a, k in enumerate(classes.tolist()):
        where = torch.nonzero(labels == k).flatten()
        targets[where] = classes[(a + 1 + torch.arange(len(where)) % (len(classes) - 1)) % len(classes)]
    return targets


def _config_fingerprint(config: Any, seed: int, marker: Marker, targets: torch.Tensor | None = None) -> str:
    material = {"config": config.to_dict(), "seed": int(seed), "marker": marker.info.weights_sha256}
    if targets is not None:  # cross-class probes: another marking of the same images (same-class ids unchanged)
        material["targets"] = hashlib.sha256(targets.numpy().astype("<i8").tobytes()).hexdigest()
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
    targets: torch.Tensor | None = None,
) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield ``(index, images uint8 (N, c, H, W))`` for the true version (0) and control sets 1..K.

    Control sets (and fresh probes marked with the key) are read from ``cache_dir`` when present and written
    there otherwise (safetensors, mode 0600, in an owner-only folder), keyed by the key's fingerprint, the
    probes' hash, the marking settings and seed (and ``targets``, when given).

    ``targets`` ``(N,)``: the class whose carrier each probe moves along (default: its label), the same in
    every version (e.g. :func:`cross_targets`); fresh probes only.

    Progress goes to this module's logger at INFO: before any marking, how many probe images and carrier sets
    are to be marked, an estimate of the time (timed on a few images first) and where the result is cached;
    then a progress bar on a terminal (else a line now and then), and the time it took.
    """
    from ..mark import MarkConfig, image_seeds, mark

    config = config if config is not None else MarkConfig()
    if targets is not None:
        targets = torch.as_tensor(targets, dtype=torch.long).reshape(-1).cpu()
        if probes.published is not None:
            raise ConfigError("published probes were marked towards their own classes; cross-class targets need "
                              "fresh probes")
        if targets.shape != probes.labels.shape:
            raise DatasetError(f"{len(probes)} probes but {targets.shape[0]} targets")
    folder = _cache_dir(cache_dir) if cache_dir is not None else None
    probe_fp = probes.fingerprint()
    config_fp = _config_fingerprint(config, seed, marker, targets)
    count = len(probes)
    # Every version uses the same per-image augmentation streams, so versions differ only by their carriers.
    seeds = image_seeds(seed, probes.seed_ids())
    per_call = max(1, max_images_per_call // max(count, 1))

    def path_of(index: int) -> Path | None:
        return folder / f"{key.fingerprint}-{probe_fp}-{config_fp}-{index}.safetensors" if folder else None

    first = 1 if probes.published is not None else 0
    to_mark = [j for j in range(first, num_controls + 1) if path_of(j) is None or not path_of(j).is_file()]
    progress = _announce(marker, key, probes, config, seed, batch_size, targets, to_mark, num_controls + 1 - first,
                         folder)

    def flush(group: list[int]):
        if not group:
            return
        carriers = torch.cat([key.carriers if j == 0 else key.control_carriers(j - 1) for j in group])
        labels = torch.cat([probes.labels + position * key.num_classes for position in range(len(group))])
        aims = None if targets is None else torch.cat([targets + position * key.num_classes
                                                       for position in range(len(group))])
        result = mark(marker, probes.images.repeat(len(group), 1, 1, 1), labels, carriers, config,
                      seed=seeds * len(group), batch_size=batch_size, targets=aims,
                      progress=progress.update if progress is not None else None)
        marked = (result.images.detach().cpu() * 255).round().clamp(0, 255).to(torch.uint8)
        for position, j in enumerate(group):
            images = marked[position * count : (position + 1) * count]
            if folder is not None:
                _write_cache(folder / f"{key.fingerprint}-{probe_fp}-{config_fp}-{j}.safetensors", images,
                             probe_fp, key, config_fp, j)
            yield j, images
        group.clear()

    pending: list[int] = []
    try:
        for index in range(num_controls + 1):
            if index == 0 and probes.published is not None:
                yield 0, probes.published
                continue
            path = path_of(index)
            images = _read_cache(path, probes, key, config_fp, index) if path is not None else None
            if images is not None:
                yield from flush(pending)
                yield index, images
            else:
                pending.append(index)
                if len(pending) >= per_call:
                    yield from flush(pending)
        yield from flush(pending)
    finally:
        if progress is not None:
            progress.close()
            if progress.done:
                log.info("marked %d probe images in %s", progress.done, duration(time.monotonic() - progress.start))


def _announce(marker: Marker, key: Key, probes: Probes, config: Any, seed: int, batch_size: int | None,
              targets: torch.Tensor | None, to_mark: list[int], versions: int, folder: Path | None) -> Progress | None:
    """Say what :func:`marked_versions` is about to do (INFO) and return the progress of its marking (None
    when nothing is to be marked)."""
    count = len(probes)
    where = f"cached in {folder} for the next audit" if folder is not None else "not cached (no cache folder)"
    if not to_mark:
        if folder is not None:
            log.info("the %d marked versions of the %d probe images are read from the cache in %s", versions, count,
                     folder)
        return None
    total = count * len(to_mark)
    if log.isEnabledFor(logging.INFO):
        estimate = _estimate_seconds(marker, key, probes, config, seed, batch_size, targets, total)
        cached = f", {versions - len(to_mark)} of {versions} sets read from the cache" if len(to_mark) < versions else ""
        log.info("marking %d probe images x %d carrier sets (%d images, %d steps each; about %s)%s; %s", count,
                 len(to_mark), total, config.steps, duration(estimate), cached, where)
    return Progress(log, total, "marking probes", "img")


def _estimate_seconds(marker: Marker, key: Key, probes: Probes, config: Any, seed: int, batch_size: int | None,
                      targets: torch.Tensor | None, total: int) -> float:
    """Seconds to mark ``total`` probe images, from two timed markings (1 and 3 steps) of a few of them: a
    fixed cost per image plus a cost per step, measured with the batch the work will use (at most 64 images)."""
    from ..mark import choose_batch_size, image_seeds, mark

    if config.steps == 0 or config.epsilon == 0:
        return 0.0
    size = min(len(probes), 64, batch_size or choose_batch_size(marker, probes.images.shape[1:], config))
    aims = None if targets is None else targets[:size]
    timings = []
    for steps in (1, 3):
        start = time.perf_counter()
        mark(marker, probes.images[:size], probes.labels[:size], key.carriers, replace(config, steps=steps),
             seed=image_seeds(seed, range(size)), batch_size=size, targets=aims)
        timings.append(time.perf_counter() - start)
    per_step = max(0.0, (timings[1] - timings[0]) / 2) / size
    fixed = max(0.0, timings[0] / size - per_step)
    return total * (fixed + config.steps * per_step)


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

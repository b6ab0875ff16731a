"""Black-box probes from a published folder (the output of ``radioactive mark``) and the settings it records.

The test compares the published (key-marked) version of each image with control-marked twins of its
original. The K + 1 versions are exchangeable only when the twins are marked exactly like the published
images were: the same :class:`radioactive.MarkConfig`, the same run seed and the same per-image ids (the
augmentation streams derive from both). All three come from the folder itself: ``mark.json`` records the
settings and the seed, ``manifest.jsonl`` the ids and which images were marked. Unmarked copies in the folder
are left out (their "true" version would not be marked at all).

:func:`marking_settings` also serves fresh probes (``detect --marked-with OUT/mark.json``): they and their
control sets are then marked with the settings, seed and key of the run that marked the training data.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError, DatasetError, KeyMismatchError
from ..key import Key
from ..manifest import RECORD_NAME, read_manifest_rows, read_mark_record
from ..mark import MarkConfig
from ..sources import LabelledImages
from .probes import Probes, first_per_class

__all__ = ["marking_settings", "published_probes", "recorded_source"]


def _recorded(record: dict[str, Any], field: str, folder: str | os.PathLike) -> Any:
    settings = record.get("settings")
    if not isinstance(settings, dict) or field not in settings:
        name = "settings" if not isinstance(settings, dict) else f"settings.{field}"
        raise ConfigError(
            f"{os.fspath(folder)}/mark.json has no {name!r}; probes and control twins must be marked with the "
            "settings the data was marked with, so the test needs them: point --published (or --marked-with) at a "
            "folder written by 'radioactive mark'"
        )
    return settings[field]


def _shown(value: Any) -> str:
    """A setting as a command line writes it (augmentations comma-separated)."""
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value) or "none"
    return repr(value) if isinstance(value, str) else str(value)


def marking_settings(folder: str | os.PathLike, *, key: Key | None = None, steps: int | None = None,
                     seed: int | None = None, given: Mapping[str, tuple[str, Any]] | None = None
                     ) -> tuple[MarkConfig, int]:
    """The marking settings and run seed recorded in ``folder``'s ``mark.json``.

    Args:
        folder: the output folder of ``radioactive mark`` (or :func:`radioactive.publish.mark_dataset`), or the
            path of its ``mark.json``.
        key: when given, the key the folder must have been marked with.
        steps, seed: values the caller asked for (command line ``--steps``, ``--mark-seed``); each must
            agree with the record.
        given: ``{MarkConfig field: (flag, value)}``: more values the caller asked for (command line flags such
            as ``{"lr": ("--lr", 0.02)}``); each must equal the record's.

    Returns:
        ``(MarkConfig, seed)``.

    Raises:
        DatasetError: ``mark.json`` is missing or unreadable.
        ConfigError: naming the field, when the record lacks ``settings.config`` or ``settings.seed``, or
            naming the flag and both values when a value asked for contradicts it.
        KeyMismatchError: the folder was marked with another key.
    """
    path = Path(folder)
    if path.name != RECORD_NAME or path.is_dir():
        path = path / RECORD_NAME
    folder = path.parent
    if not path.is_file():
        raise ConfigError(
            f"{path} does not exist, so the settings the data was marked with (settings.config, settings.seed) are "
            "unknown; give the output folder of 'radioactive mark' (or its mark.json), which records them there"
        )
    record = read_mark_record(path)
    raw_config = _recorded(record, "config", folder)
    recorded_seed = _recorded(record, "seed", folder)
    where = os.fspath(path)
    if not isinstance(raw_config, dict):
        raise ConfigError(f"{where}: settings.config must be the marking settings (an object), got {raw_config!r}")
    if isinstance(recorded_seed, bool) or not isinstance(recorded_seed, int):
        raise ConfigError(f"{where}: settings.seed must be an integer, got {recorded_seed!r}")
    config = MarkConfig.from_record(raw_config)  # a field missing from an older record: that version's default
    asked = dict(given or {})
    if steps is not None:
        asked.setdefault("steps", ("--steps", steps))
    for field, (flag, value) in asked.items():
        recorded = getattr(config, field)
        if (tuple(value) if isinstance(value, list | tuple) else value) != recorded:
            raise ConfigError(f"{flag} {_shown(value)} contradicts settings.config.{field} = {_shown(recorded)} in "
                              f"{where}; probes and control sets must be marked like the data was: drop {flag}")
    if seed is not None and seed != recorded_seed:
        raise ConfigError(f"--mark-seed {seed} contradicts settings.seed = {recorded_seed} in {where}; probes and "
                          "control sets must be marked like the data was: drop --mark-seed")
    fingerprint = record["settings"].get("key_fingerprint")
    if key is not None and fingerprint is not None and fingerprint != key.fingerprint:
        raise KeyMismatchError(f"{where} says the data was marked with key {fingerprint}, not with this key "
                               f"({key.fingerprint}); test it with the key it was marked with")
    return config, recorded_seed


def recorded_source(folder: str | os.PathLike) -> str | None:
    """The dataset spec ``folder`` was marked from (``fashion-mnist:owner``, a folder or a list), if recorded."""
    try:
        source = read_mark_record(folder).get("settings", {}).get("source")
    except DatasetError:
        return None
    if not isinstance(source, str):
        return None
    for prefix in ("folder:", "list:"):  # ImageSource.description of a folder or a list
        if source.startswith(prefix):
            return source[len(prefix):]
    return source


def published_probes(folder: str | os.PathLike, published: LabelledImages, originals: LabelledImages, *,
                     num_classes: int, per_class: int | None = None) -> Probes:
    """Probes pairing the marked images of a published folder with their originals.

    Args:
        folder: the output folder of ``radioactive mark`` (its manifest says which images are marked).
        published: ``load_labelled(folder)``: ids are the source ids the marking run used.
        originals: the dataset that was marked (``load_labelled`` of the source), ids as the marking run's.
        num_classes: the key's classes.
        per_class: at most this many probes per class (the first ones in id order); None: all.

    Raises:
        DatasetError: no marked image, or an original that is missing or differs in label or size.
        ConfigError: the folder was marked with twins (secret streams and directions the control twins
            cannot share): test it with the twins test, or with fresh probes.
    """
    if (Path(folder) / RECORD_NAME).is_file() and read_mark_record(folder).get("settings", {}).get("twins"):
        raise ConfigError(f"{os.fspath(folder)} was marked with twins ('radioactive mark --twins'): its images follow "
                          "secret directions and streams that control-marked twins cannot share, so the carrier-level "
                          "test cannot use them as probes; run the twins test (detect --twins SIDECAR) or use fresh "
                          "--probes with --marked-with")
    marked_ids = {str(row["source"]) for row in read_manifest_rows(folder) if row.get("marked") and not row.get("bad")}
    rows = [i for i, ident in enumerate(published.ids) if ident in marked_ids]
    if not rows:
        raise DatasetError(f"{os.fspath(folder)} holds no marked image (per its manifest.jsonl); nothing to test")
    where = {ident: i for i, ident in enumerate(originals.ids)}
    missing = [published.ids[i] for i in rows if published.ids[i] not in where]
    if missing:
        raise DatasetError(
            f"the probes ({len(originals)} images) do not hold the originals of {len(missing)} published images, e.g. "
            f"{missing[0]!r}; give as --probes the dataset {os.fspath(folder)} was marked from "
            f"(its mark.json records {recorded_source(folder)!r})"
        )
    pub_rows = torch.tensor(rows, dtype=torch.long)
    orig_rows = torch.tensor([where[published.ids[i]] for i in rows], dtype=torch.long)
    labels = published.labels[pub_rows]
    differ = torch.nonzero(originals.labels[orig_rows] != labels).flatten()
    if len(differ):
        ident = published.ids[rows[int(differ[0])]]
        raise DatasetError(f"{ident!r}: label {int(labels[differ[0]])} in the published folder but "
                           f"{int(originals.labels[orig_rows[differ[0]]])} in the probes; give the dataset that was marked")
    if published.images.shape[1:] != originals.images.shape[1:]:
        raise DatasetError(f"published images are {tuple(published.images.shape[1:])} but the originals "
                           f"{tuple(originals.images.shape[1:])}; give the dataset that was marked, unresized")
    picks = first_per_class(labels, per_class, num_classes=num_classes)
    return Probes(originals.images[orig_rows[picks]], labels[picks], published=published.images[pub_rows[picks]],
                  ids=[published.ids[rows[i]] for i in picks.tolist()])

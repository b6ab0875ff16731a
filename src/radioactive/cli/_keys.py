"""``radioactive detect`` with several keys (``--key A --key B``, or ``--key DIR``): which owners' keys does one
suspect carry? Each key is tested exactly as alone; the decisions use Holm's step-down across the keys
(:mod:`radioactive.detect.keys`). With one key, ``detect`` runs as it always did.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError, KeyFileError, KeyMismatchError

__all__ = ["KEY_SUFFIXES", "detect_several", "key_paths", "load_keys"]

log = logging.getLogger(__name__)
KEY_SUFFIXES = (".key", ".safetensors")  # what a key folder's key files are named (keygen --out FILE)


def key_paths(given: str | Sequence[str]) -> list[str]:
    """The key files ``--key`` names: each file as given, and each folder's key files (``*.key``,
    ``*.safetensors``; hidden files skipped) sorted by name."""
    paths: list[str] = []
    for item in [given] if isinstance(given, str) else list(given):
        folder = Path(item)
        if not folder.is_dir():
            paths.append(item)
            continue
        found = sorted(p for p in folder.iterdir()
                       if p.suffix in KEY_SUFFIXES and not p.name.startswith(".") and p.is_file())
        if not found:
            raise KeyFileError(f"key folder {item!r} holds no key files ({', '.join('*' + s for s in KEY_SUFFIXES)}); "
                               "give the key files themselves, or the folder 'radioactive keygen --out' wrote them in")
        paths += [str(p) for p in found]
    return paths


def load_keys(paths: Sequence[str], args: argparse.Namespace, device: Any) -> tuple[list[Any], list[Any]]:
    """(keys, the marker of each) of the key files ``paths``; each marker is resolved (``--marker``, else the
    one the key records) once per marking network and moved to ``device``. Errors name the file."""
    from ..key import Key
    from ..zoo import resolve_marker

    keys, markers, seen, loaded = [], [], {}, {}
    for path in paths:
        key = Key.load(path)
        if key.fingerprint in seen:
            raise ConfigError(f"key files {seen[key.fingerprint]!r} and {path!r} hold the same key "
                              f"({key.fingerprint}); give each key once")
        seen[key.fingerprint] = path
        network = key.marker.weights_sha256
        if network not in loaded:
            try:
                loaded[network] = resolve_marker(key, args.marker, weights=args.marker_weights)
            except KeyMismatchError as exc:
                raise KeyMismatchError(f"key file {path!r}: {exc}") from None
            loaded[network].to(device)
        log.info("key %s: %s", key.fingerprint, path)
        keys.append(key)
        markers.append(loaded[network])
    return keys, markers


def detect_several(args: argparse.Namespace, paths: Sequence[str], *, blackbox: Callable[..., Any],
                   whitebox_inputs: Callable[..., Any]) -> int:
    """``detect`` with the keys ``paths``: one verdict per key, Holm's decisions, the table, JSON and report.

    ``blackbox(args, key, marker, device, class_map)`` is ``detect``'s single-key black-box verdict and
    ``whitebox_inputs(...)`` (same arguments) its white-box (suspect, reference images, settings, marked flags).
    """
    from .. import report_keys
    from ..detect.common import parse_class_map
    from ..detect.keys import detect_keys, whitebox_keys
    from ..zoo import resolve_device

    for flag, value in (("--twins", args.twins), ("--published", args.published),
                        ("--marked-with", getattr(args, "marked_with", None))):
        if value:
            raise ConfigError(f"{flag} belongs to the marking run of one key, but {len(paths)} keys were given; "
                              "run detect once per key with it (for --marked-with: or give all keys the marking "
                              "flags --steps, --lr, ... instead)")
    device = resolve_device(args.device)
    keys, markers = load_keys(paths, args, device)
    class_map = parse_class_map(args.class_map)
    if args.black_box:
        marker_of = {key.fingerprint: marker for key, marker in zip(keys, markers)}
        family = detect_keys(keys, lambda key: blackbox(args, key, marker_of[key.fingerprint], device, class_map),
                             alpha=args.alpha)
    else:
        model, images, settings, marked = whitebox_inputs(args, keys[0], markers[0], device, class_map)
        family = whitebox_keys(model, keys, images, marker=markers, settings=settings, marked=marked)
    print(family.summary())
    if args.json_out:
        report_keys.write_family_json(family, args.json_out, command=vars(args))
        log.info("verdicts written to %s", args.json_out)
    if args.report:
        page = report_keys.write_family_report(family, args.report, command=vars(args))
        log.info("report written to %s", page)
    return 0

"""The paired-twin options: ``radioactive mark --twins`` (make the twins, publish one per secret coin, write the
owner-only sidecar) and ``radioactive detect --twins SIDECAR --published DST`` (the secret-coin test).

The sidecar holds the secret the twins and coins derive from; it is written before any image is marked,
never overwritten and never put in the published folder. A rerun of the same ``mark --twins`` command resumes
with the sidecar the folder's ``mark.json`` names (by fingerprint).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from ..errors import ConfigError, KeyFileError, OutputExistsError

__all__ = ["add_detect_twins_args", "add_mark_twins_args", "describe_secret", "detect_twins", "mark_twin_secret",
           "secret_path"]


def add_mark_twins_args(parser: argparse.ArgumentParser) -> None:
    from ..twins import DEFAULT_SPREAD

    group = parser.add_argument_group("paired twins (for the secret-coin test, 'radioactive detect --twins')")
    group.add_argument("--twins", action="store_true",
                       help="make two marked twins of every selected image (both carry the key's carrier; they differ "
                       "by a secret direction) and publish the one a secret fair coin names; the secret goes to an "
                       "owner-only sidecar (--twins-secret)")
    group.add_argument("--twins-secret", default=None, metavar="PATH",
                       help="where --twins writes its sidecar (default: next to the key, KEYDIR/<DST name>.twins.json); "
                       "an existing sidecar is never overwritten")
    group.add_argument("--twin-spread", type=float, default=DEFAULT_SPREAD,
                       help=f"spread a of the twin directions (u +/- a v)/sqrt(1 + a^2) (default {DEFAULT_SPREAD})")


def secret_path(args: argparse.Namespace) -> Path:
    """The sidecar's path: --twins-secret, else ``<key's folder>/<DST name>.twins.json``."""
    if args.twins_secret:
        return Path(args.twins_secret)
    return Path(args.key).resolve().parent / f"{Path(args.out).resolve().name}.twins.json"


def _recorded_fingerprint(out: Path) -> str | None:
    from ..manifest import RECORD_NAME, read_mark_record

    if not (out / RECORD_NAME).is_file():
        return None
    twins = read_mark_record(out).get("settings", {}).get("twins")
    return twins.get("fingerprint") if isinstance(twins, dict) else None


def _secret_on_rank0(args: argparse.Namespace, source: Any, key: Any, classes: list[int] | None) -> Any:
    from ..twins import TwinSecret, twin_secret_for

    path = secret_path(args)
    out = Path(args.out)
    if path.resolve().is_relative_to(out.resolve()):
        raise ConfigError(f"--twins-secret {path} lies inside the published folder {out}; the sidecar is secret: "
                          "keep it next to the key, outside what you publish")
    recorded = _recorded_fingerprint(out)
    if path.exists():
        secret = TwinSecret.load(path)
        if recorded is None or recorded != secret.fingerprint:
            raise OutputExistsError(f"twin secret {str(path)!r} already exists; sidecars are never overwritten (its "
                                    "coins are the only record of which twins were published): give another "
                                    "--twins-secret PATH")
        secret.check_key(key)
        return secret  # a rerun of the run that wrote it: resume
    if recorded is not None:
        raise KeyFileError(f"{out} was marked with twin secret {recorded}, but its sidecar {str(path)!r} does not exist; "
                           "give its path with --twins-secret to resume")
    secret = twin_secret_for(source, key, fraction=args.fraction, classes=classes, seed=args.seed,
                             spread=args.twin_spread)
    secret.save(path)  # before any image is published
    return secret


def mark_twin_secret(args: argparse.Namespace, source: Any, key: Any, classes: list[int] | None) -> Any:
    """The :class:`radioactive.twins.TwinSecret` of ``mark --twins`` on every rank (rank 0 makes or resumes it),
    or None without --twins."""
    from .. import distributed

    if not args.twins:
        if args.twins_secret:
            raise ConfigError("--twins-secret needs --twins")
        return None
    secret, error = None, None
    if distributed.rank_world()[0] == 0:
        try:
            secret = _secret_on_rank0(args, source, key, classes)
        except Exception as exc:  # every rank stops with it
            error = exc
    distributed.agree(error)
    return distributed.broadcast(secret)


def add_detect_twins_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("paired-twin secret-coin test")
    group.add_argument("--twins", default=None, metavar="SIDECAR",
                       help="run the twins test with this sidecar (from 'radioactive mark --twins'): does the suspect "
                       "prefer the published twin of each image? Needs --published DST, --model or --endpoint, and "
                       "the dataset DST was marked from (--probes; default: the one its mark.json records); uses "
                       "--statistic and --output")
    group.add_argument("--twin-views", type=int, default=None,
                       help="fixed augmented views averaged per twin (default: 8 for --statistic label, else 1)")
    group.add_argument("--twin-limit", type=int, default=None, help="test only the first N published pairs")
    group.add_argument("--tie-seed", type=int, default=0,
                       help="seed of the public bits that break ties (any value keeps the test exact; recorded)")


def _suspect(args: argparse.Namespace, key: Any, device: Any) -> tuple[Any, str]:
    from ..detect.observations import model_predictor
    from ..nets import load_suspect, state_dict_sha256

    if args.endpoint:
        from ..endpoint import Endpoint

        predict = Endpoint(args.endpoint, timeout=args.endpoint_timeout, retries=args.endpoint_retries,
                           max_rate=args.endpoint_rate, max_response_bytes=args.endpoint_max_bytes,
                           batch_size=min(args.batch_size, 64), output=args.output)
        return predict, args.endpoint
    if not args.model:
        raise ConfigError("the twins test needs --endpoint URL or --model FILE")
    model = load_suspect(args.model, arch=args.arch, num_classes=args.num_classes or key.num_classes).to(device).eval()
    size = (args.input_size, args.input_size) if args.input_size else None
    return model_predictor(model, input_size=size, device=device), state_dict_sha256(model)


def detect_twins(args: argparse.Namespace, key: Any, marker: Any, device: Any) -> Any:
    """The verdict of ``detect --twins SIDECAR --published DST``."""
    from ..detect.published import recorded_source
    from ..detect.twins import published_pairs, twins_test
    from ..sources import load_labelled
    from ..twins import TwinSecret

    if not args.published:
        raise ConfigError("--twins needs --published DST: the folder 'radioactive mark --twins' published the twins in")
    if args.report:
        raise ConfigError("--report draws the carrier-level tests' plots; for the twins test use --json")
    for flag, value in (("--twin-views", args.twin_views), ("--twin-limit", args.twin_limit)):
        if value is not None and value < 1:
            raise ConfigError(f"{flag} must be >= 1, got {value}")
    secret = TwinSecret.load(args.twins)
    secret.check_key(key)
    source = args.probes or recorded_source(args.published)
    if source is None:
        raise ConfigError(f"give --probes: the dataset {args.published} was marked from (its mark.json records none)")
    predict, model_id = _suspect(args, key, device)
    pairs = published_pairs(args.published, secret, key=key, marker=marker, originals=load_labelled(source),
                            limit=args.twin_limit)
    return twins_test(predict, pairs, statistic=args.statistic, views=args.twin_views, output=args.output,
                      alpha=args.alpha, tie_seed=args.tie_seed, batch_size=args.batch_size, model_id=model_id)


def describe_secret(secret: Any, args: argparse.Namespace) -> str:
    """The line ``mark --twins`` prints about its sidecar (path and fingerprint, never its content)."""
    return (f"twin secret {os.fspath(secret_path(args))} (fingerprint {secret.fingerprint}, {len(secret.coins)} pairs, "
            "owner-only): keep it with the key; 'radioactive detect --twins' needs it. The shift and cosine above are "
            "the published twins', along each twin's own direction")

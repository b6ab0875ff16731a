"""``radioactive keygen``: draw a secret key (one random carrier per class) for a marking network."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..errors import ConfigError

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "keygen",
        help="draw a secret key (random carriers) for a marking network",
        description="Draw one random unit carrier per class in the marking network's feature space and write "
        "the key (safetensors, mode 0600). The key records the network's identity (architecture, weight "
        "hash, input size, mean/std) and where it was loaded from; 'radioactive mark' refuses any other network.",
    )
    parser.add_argument("--marker", default="default",
                        help="marking network: 'default' (the Fashion-MNIST marker shipped with radioactive; the "
                        "default), a checkpoint from 'radioactive train-marker', or torchvision:<arch> (with "
                        "--marker-weights)")
    parser.add_argument("--marker-weights", help="local weights file for a torchvision:<arch> marker")
    parser.add_argument("--out", required=True, help="key file to write (.safetensors); never overwritten")
    parser.add_argument("--seed", type=int, default=None, help="makes the key reproducible (default: random)")
    parser.add_argument("--space", choices=["full", "neutral"], default="full",
                        help="full: uniform on the sphere (paper); neutral: orthogonal to the marker's "
                        "classifier rows (class-neutral carriers)")
    parser.set_defaults(func=run)


def marker_source(text: str, weights: str | None) -> dict[str, str]:
    """What to record in the key so that 'radioactive mark' finds the marker again (the shipped marker is
    found by its weight hash; a path is recorded absolute)."""
    from ..zoo import DEFAULT_MARKER_ALIAS

    if text.startswith("torchvision:"):
        out = {"marker_source": text}
        if weights:
            out["marker_weights"] = str(Path(weights).resolve())
        return out
    if text == DEFAULT_MARKER_ALIAS:
        return {"marker_source": DEFAULT_MARKER_ALIAS}
    return {"marker_source": str(Path(text).resolve())}


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from ..key import Key
    from ..zoo import resolve_marker

    out = Path(args.out)
    if out.exists():
        raise ConfigError(f"key file {str(out)!r} already exists; keys are never overwritten: give another --out")
    marker = resolve_marker(path=args.marker, weights=args.marker_weights)
    head = marker.split.weight() if args.space == "neutral" else None
    key = Key.generate(marker.info, seed=args.seed, space=args.space, head_weight=head)
    key = replace(key, metadata=marker_source(args.marker, args.marker_weights))
    key.save(out)
    print(f"key {key.fingerprint}: {key.num_classes} carriers in {key.null_dim}-dim space ({args.space}) of "
          f"{marker.spec.arch} (weights {marker.info.weights_sha256[:16]}); written to {out} (mode 0600). "
          "Keep it secret.")
    return 0

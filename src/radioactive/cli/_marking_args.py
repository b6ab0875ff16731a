"""The image-changing options of ``radioactive mark``, defined once for the two subcommands that mark images.

``mark`` marks the published data with them; ``detect --black-box`` marks its fresh probes and the K control
sets with them, so that the probes carry the same mark as the training images. The flags have the same names
in both (``--steps``, ``--lr``, ``--epsilon``, ``--min-psnr``, ``--lambda-ft``, ``--lambda-img``,
``--augment``). In ``detect`` they default to the record ``--marked-with OUT/mark.json`` names (or, with
``--published``, the folder's own record), else to :class:`radioactive.MarkConfig`'s defaults; a flag that
contradicts a record is refused.

``detect`` also takes two deliberate departures from the data's marking, for fresh probes only (the test stays
exact under H0 either way, since every version is marked the same way; only power changes): ``--probe-min-psnr``
and ``--probe-steps`` mark the probes and control sets more (or less) strongly than the data, and
``--probe-mode cross`` marks each probe along another class's carrier. The verdict records both.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any

from ..errors import ConfigError

__all__ = ["MARKING_FLAGS", "PROBE_FLAGS", "ProbeMarking", "add_marking_args", "mark_config", "marking_flags",
           "probe_marking"]

# MarkConfig field -> the flag that sets it, in --help order.
MARKING_FLAGS = {
    "steps": "--steps",
    "lr": "--lr",
    "epsilon": "--epsilon",
    "min_psnr": "--min-psnr",
    "lambda_ft": "--lambda-ft",
    "lambda_img": "--lambda-img",
    "augment": "--augment",
}

# MarkConfig field -> the detect flag that marks the probes otherwise than the data (stronger probes).
PROBE_FLAGS = {"min_psnr": "--probe-min-psnr", "steps": "--probe-steps"}


def _pixel_value(text: str) -> float:
    """``0.04`` or ``10/255``."""
    try:
        return float(Fraction(text)) if "/" in text else float(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"expected a number like 0.04 or 10/255, got {text!r}") from None


def add_marking_args(parser: argparse.ArgumentParser, *, for_probes: bool = False) -> None:
    """Add the marking options as a group of ``parser``.

    ``for_probes=False`` (``mark``): each defaults to :class:`radioactive.MarkConfig`'s value.
    ``for_probes=True`` (``detect``): each defaults to None (= what the marking record says, else
    MarkConfig's), ``--marked-with`` is added, and ``--mark-steps`` stays as the older name of ``--steps``.
    """
    from ..mark import MarkConfig

    defaults = MarkConfig()
    if for_probes:
        group = parser.add_argument_group(
            "how the probes are marked",
            "Fresh probes and the K control sets must be marked like the data was: pass the marking run's "
            "record (--marked-with OUT/mark.json) or the same options 'radioactive mark' was given. Without "
            "either, they are marked with the library defaults (those of 'radioactive mark'), which may differ "
            "from how the data was marked (the verdict then says so). A flag left at None takes the record's "
            "value, else the library default.",
        )
        group.add_argument("--marked-with", default=None, metavar="MARK_JSON",
                           help="mark.json of the 'radioactive mark' run that marked the data (or its output folder): "
                           "the probes and control sets are marked with its settings, seed and key; a marking flag "
                           "that contradicts it is refused")
        group.add_argument("--mark-seed", type=int, default=None,
                           help="seed of the marking run ('radioactive mark --seed'): the probes' augmentation "
                           "streams; None: the record's, else 0")
        from ..detect.settings import PROBE_MODES

        group.add_argument("--probe-mode", default="same", choices=PROBE_MODES,
                           help="same: each probe is marked along its own class's carrier; cross: fresh probes are "
                           "marked along another class's carrier and read in that class's score (exact too)")
        group.add_argument("--probe-min-psnr", type=float, default=None, metavar="DB",
                           help="DELIBERATELY mark the probes and control sets with this PSNR floor instead of the "
                           "data's (e.g. 35 or 30: stronger probes); recorded in the verdict's details.marking; "
                           "fresh probes only")
        group.add_argument("--probe-steps", type=int, default=None, metavar="N",
                           help="DELIBERATELY mark the probes and control sets with this many steps instead of the "
                           "data's; recorded like --probe-min-psnr")
    else:
        group = parser.add_argument_group("marking settings")

    def add(flags: list[str], help_text: str, value: Any, shown: str, **options: Any) -> None:
        # detect's formatter appends "(default: None)": there, None means the record's value, else MarkConfig's.
        group.add_argument(*flags, default=None if for_probes else value,
                           help=help_text if for_probes else f"{help_text} (default {shown})", **options)

    add(["--steps", "--mark-steps"] if for_probes else ["--steps"], "optimisation steps", defaults.steps,
        str(defaults.steps), type=int, dest="steps")
    add(["--lr"], "step size", defaults.lr, str(defaults.lr), type=float)
    add(["--epsilon"], "L-infinity radius, e.g. 10/255", defaults.epsilon, f"{defaults.epsilon:.4f}",
        type=_pixel_value)
    add(["--min-psnr"], "PSNR floor in dB every marked image meets", defaults.min_psnr, str(defaults.min_psnr),
        type=float)
    add(["--lambda-ft"], "weight of the feature-shift norm", defaults.lambda_ft, str(defaults.lambda_ft), type=float)
    add(["--lambda-img"], "weight of the squared pixel distance", defaults.lambda_img, str(defaults.lambda_img),
        type=float)
    add(["--augment"], "differentiable augmentations while marking, in order: crop, flip, jpeg, blur, resize, or "
        "none", ",".join(defaults.augment), ",".join(defaults.augment))


def _augment_names(text: str) -> tuple[str, ...]:
    from ..augment import build_augmentation

    return tuple(build_augmentation(text, (8, 8)).names)


def marking_flags(args: argparse.Namespace) -> dict[str, tuple[str, Any]]:
    """``{MarkConfig field: (flag, value)}`` for every marking flag given (not None) on the command line."""
    given = {}
    for field, flag in MARKING_FLAGS.items():
        value = getattr(args, field, None)
        if value is not None:
            given[field] = (flag, _augment_names(value) if field == "augment" else value)
    return given


def mark_config(args: argparse.Namespace) -> Any:
    """The :class:`radioactive.MarkConfig` of ``mark``'s command line."""
    from ..mark import MarkConfig

    return MarkConfig(**{field: value for field, (_, value) in marking_flags(args).items()})


@dataclass(frozen=True)
class ProbeMarking:
    """How ``detect`` marks its probes: settings, run seed, where they come from, and whether the probes are
    seeded by their ids in the dataset (as ``radioactive mark`` seeds each image) or by their position."""

    config: Any
    seed: int
    origin: str | None
    source_ids: bool
    data_config: Any = None  # how the data was marked, when the probes are deliberately marked otherwise


def probe_marking(args: argparse.Namespace, key: Any) -> ProbeMarking:
    """The marking of ``detect``'s probes: from ``--published``'s or ``--marked-with``'s ``mark.json`` (checked
    against the flags and the key), else from the flags, else MarkConfig's defaults and seed 0.

    With a record or any marking flag, fresh probes take their ids in the probe dataset as ``radioactive mark``
    takes the ids of the images it marks, so a probe is marked exactly as ``mark`` would have marked it.
    ``--probe-min-psnr`` / ``--probe-steps`` then replace those settings for the probes only (``data_config``
    keeps the data's), a deliberate choice the verdict records; refused with ``--published``.
    """
    if getattr(args, "probe_mode", "same") != "same" and args.published:
        raise ConfigError(f"--probe-mode {args.probe_mode} with --published {args.published}: the published images "
                          "were marked along their own classes' carriers; cross-class probes must be fresh (--probes): "
                          "drop --probe-mode or --published")
    given = marking_flags(args)
    stronger = {field: (flag, getattr(args, flag[2:].replace("-", "_"), None)) for field, flag in PROBE_FLAGS.items()}
    stronger = {field: pair for field, pair in stronger.items() if pair[1] is not None}
    if stronger and args.published:
        flag, value = next(iter(stronger.values()))
        raise ConfigError(f"{flag} {value} with --published {args.published}: the published images are the probes and "
                          "their control twins must be marked exactly like them; probes marked otherwise than the "
                          f"data need fresh probes (--probes, with --marked-with): drop {flag} or --published")
    marking = _data_marking(args, key, given)
    if not stronger:
        return marking
    config = replace(marking.config, **{field: value for field, (_, value) in stronger.items()})
    return replace(marking, config=config, data_config=marking.config)


def _data_marking(args: argparse.Namespace, key: Any, given: dict[str, tuple[str, Any]]) -> ProbeMarking:
    """How the data was marked (and so the probes, unless --probe-* flags say otherwise)."""
    from ..detect.published import marking_settings
    from ..mark import MarkConfig

    record = getattr(args, "marked_with", None)
    if record and args.published:
        raise ConfigError(f"--marked-with {record} and --published {args.published} both name a marking record; "
                          "--published already marks the twins with its folder's mark.json: drop --marked-with")
    if args.published or record:
        folder = args.published or record
        config, seed = marking_settings(folder, key=key, seed=args.mark_seed, given=given)
        return ProbeMarking(config, seed, _record_path(folder), source_ids=True)
    config = MarkConfig(**{field: value for field, (_, value) in given.items()})
    stated = bool(given) or args.mark_seed is not None
    return ProbeMarking(config, args.mark_seed or 0, "command line" if stated else None, source_ids=stated)


def _record_path(folder: str | os.PathLike) -> str:
    from ..manifest import RECORD_NAME

    path = os.fspath(folder)
    return path if os.path.basename(path) == RECORD_NAME else os.path.join(path, RECORD_NAME)

"""``radioactive detect``: white-box or black-box test of a suspect model against a key."""

from __future__ import annotations

import argparse
import logging
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from ..detect.settings import ALIGNMENTS, COMBINATIONS, OUTPUTS, REFERENCE_FITS, STATISTICS
from ..detect.verdict import DEFAULT_ALPHA
from ..errors import ConfigError, DatasetError, ModelLoadError
from ._marking_args import add_marking_args, probe_marking
from ._twins import add_detect_twins_args, detect_twins

log = logging.getLogger(__name__)
HELD_OUT = "fashion-mnist:holdout"


def held_out_default(key: Any) -> str:
    """The built-in held-out split that matches the key's marking network: ``fashion-mnist:holdout`` for a
    28 x 28 marker, the pairs' holdout for a 28 x 56 one (100 or 10 classes); any other marker needs the user's
    own clean images, named by --reference / --probes."""
    size = tuple(key.marker.spec.input_size or ())
    if size == (28, 28) and key.num_classes == 10:
        return HELD_OUT
    if size == (28, 56) and key.num_classes in (10, 100):
        return ("fashion-mnist-pairs" if key.num_classes == 100 else "fashion-mnist-pairs10") + ":holdout"
    raise ConfigError(f"this key's marker takes {size[0] if size else '?'} x {size[1] if len(size) > 1 else '?'} "
                      f"images of {key.num_classes} classes, which no built-in data set matches: give your own clean "
                      "held-out images with --reference (white-box) or --probes (black-box)")


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "detect",
        help="test whether a model was trained on data marked with a key",
        description=(
            "White-box test (default; needs the model's weights) or black-box test (--black-box; needs only its "
            "outputs). Prints a verdict: the p-value of H0 'the suspect was not trained on data marked with this key'."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--key", required=True, action="append",
                        help="key file (from radioactive keygen); repeat it, or give a folder of key files (*.key, "
                             "*.safetensors, sorted by name), to test several keys: one p-value per key and Holm's "
                             "step-down across them at --alpha (family-wise)")
    parser.add_argument("--marker", default=None,
                        help="marking network the key was made with (default: the one the key records)")
    parser.add_argument("--marker-weights", default=None, help="local weights file for a torchvision:<arch> marker")
    parser.add_argument("--model", default=None,
                        help="suspect: a radioactive checkpoint, weights (safetensors / state dict, with --arch), a TorchScript archive or a .pt2 "
                             "torch.export archive; for --black-box, optional when --endpoint is given")
    parser.add_argument("--arch", default=None, help="architecture of --model weights: cnn, resnet_narrow, mlp, "
                        "torchvision:<name>, timm:<name>, or your own package.module:callable / path/file.py:callable "
                        "(imports and RUNS that code of yours, never code from the model file: it is called as "
                        "callable(num_classes=N, in_channels=C) and gets [0, 1] images; see the README)")
    parser.add_argument("--num-classes", type=int, default=None, help="outputs of the suspect (default: the key's)")
    parser.add_argument("--head", default=None, help="dotted name of the suspect's final linear layer")
    parser.add_argument("--input-size", type=int, default=None, help="resize images to this size for the suspect")
    parser.add_argument("--reference", default=None,
                        help="clean held-out images never published: fashion-mnist:SPLIT (holdout, test), "
                             "fashion-mnist-pairs[10]:holdout, a class-subfolder tree or a CSV/JSONL list "
                             f"(default: the built-in holdout matching the key's marker, {HELD_OUT} for the shipped one)")
    parser.add_argument("--reference-limit", type=int, default=None, help="use at most this many reference images")
    parser.add_argument("--allow-marked-reference", action="store_true",
                        help="proceed (with a warning) when the reference folder holds marked images")
    parser.add_argument("--alignment", default="auto", choices=ALIGNMENTS)
    parser.add_argument("--class-map", default=None, help="key_class:output pairs, e.g. 0:0,2:1 (subset of classes)")
    parser.add_argument("--alpha", type=float, default=DEFAULT_ALPHA,
                        help="significance level of the decision (1e-3: 'strong' evidence; the verdict also states "
                             "the evidence level: none, weak, strong, very strong)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps ...")
    parser.add_argument("--null-trials", type=int, default=0,
                        help="also run the test with N fresh random keys and report where the real key's p falls")
    parser.add_argument("--null-seed", type=int, default=None)
    parser.add_argument("--json", dest="json_out", default=None, help="write the verdict as JSON here")
    parser.add_argument("--report", default=None, help="write an HTML report with plots into this folder")
    black = parser.add_argument_group("black-box test")
    black.add_argument("--black-box", action="store_true", help="run the black-box test (outputs only)")
    black.add_argument("--endpoint", default=None, help="URL of an HTTP endpoint returning JSON scores")
    black.add_argument("--endpoint-timeout", type=float, default=30.0)
    black.add_argument("--endpoint-retries", type=int, default=3)
    black.add_argument("--endpoint-rate", type=float, default=None, help="max requests per second")
    black.add_argument("--endpoint-max-bytes", type=int, default=16 << 20)
    black.add_argument("--output", default="auto", choices=OUTPUTS, help="what the suspect returns")
    black.add_argument("--probes", default=None,
                       help="fresh clean probe images never published (default: the built-in holdout matching the "
                            f"key's marker, {HELD_OUT} for the shipped one); with --published: the "
                            "dataset that was marked (default: the source its mark.json records)")
    black.add_argument("--published", default=None,
                       help="output folder of 'radioactive mark': tests its marked images against control-marked twins "
                            "of their originals (--probes), marked with the settings and seed its mark.json records")
    black.add_argument("--probes-per-class", type=int, default=None,
                       help="fresh probes per class (default: 1,000 probes spread over the classes, at least 10 "
                            "per class: 100 at 10 classes, 10 at 100); with --published: published images per class")
    black.add_argument("--controls", type=int, default=20, help="K control carrier sets")
    black.add_argument("--statistic", default="margin", choices=STATISTICS)
    black.add_argument("--combine", default="perm", choices=COMBINATIONS,
                       help="perm (default; the strongest exact test measured): exact stratified permutation test of "
                            "the summed standardised statistics; rank: exact rank p-values + Fisher; t: control t "
                            "statistics + Stouffer")
    black.add_argument("--reference-model", action="append", default=None, metavar="FILE_OR_BANK",
                       help="clean model trained by the auditor (difference in differences), or a bank folder made "
                            "by 'radioactive references' (every model in it), or 'fashion-mnist' (the shipped bank); "
                            "repeat it for several (each must be independent of the key)")
    black.add_argument("--reference-fit", default="matched", choices=REFERENCE_FITS,
                       help="how the references enter: matched (default: subtract the suspect's leave-one-out "
                            "prediction from every reference; exact), matched-class (weights per class) or mean "
                            "(subtract their mean response: plain difference in differences)")
    black.add_argument("--reference-arch", action="append", default=None, metavar="ARCH",
                       help="architecture of --reference-model weights: once for all of them, or once per "
                            "--reference-model, in the same order (names as --arch, your module:callable included)")
    black.add_argument("--cache-dir", default="~/.cache/radioactive/controls",
                       help="owner-only cache of marked control sets ('' to disable)")
    add_marking_args(parser, for_probes=True)
    add_detect_twins_args(parser)
    parser.set_defaults(func=run)


def _load_model(path: str, arch: str | None, num_classes: int, device: torch.device, marker: Any = None
                ) -> torch.nn.Module:
    from ..mark import marker_channels
    from ..nets import load_suspect

    channels = marker_channels(marker) if marker is not None else 1  # what a user --arch module:callable gets
    try:
        model = load_suspect(path, arch=arch, num_classes=num_classes, in_channels=channels)
    except ModelLoadError as exc:
        if "carries no architecture spec" in str(exc):
            raise ModelLoadError(f"{exc} (or pass a .pt2 torch.export or TorchScript archive)") from None
        raise
    return model.to(device).eval()


def _probes(args: argparse.Namespace, key: Any) -> Any:
    """Published probes (the marked images of --published with their originals), or fresh ones (--probes)."""
    from ..detect.probes import Probes, default_per_class, first_per_class
    from ..sources import load_labelled

    if args.probes_per_class is None:  # resolved here, so the report's command records the count used
        args.probes_per_class = default_per_class(key.num_classes)
    if args.published:
        from ..detect.published import published_probes, recorded_source

        source = args.probes or recorded_source(args.published)
        if source is None:
            raise ConfigError(f"give --probes: the dataset {args.published} was marked from (its mark.json records none)")
        return published_probes(args.published, load_labelled(args.published), load_labelled(source),
                                num_classes=key.num_classes, per_class=args.probes_per_class)
    fresh = load_labelled(args.probes or held_out_default(key))
    if fresh.marked:
        raise DatasetError(f"--probes {args.probes} is the output of 'radioactive mark' (its images may be marked), "
                           "but fresh probes must never have been published; to test published images pass that "
                           "folder as --published")
    picks = first_per_class(fresh.labels, args.probes_per_class, num_classes=key.num_classes)
    # Marked like the data: each probe's augmentation stream from its id, as 'radioactive mark' seeds an image.
    ids = [fresh.ids[i] for i in picks.tolist()] if probe_marking(args, key).source_ids else None
    return Probes(fresh.images[picks], fresh.labels[picks], ids=ids)


def _reference_archs(args: argparse.Namespace) -> list[str | None]:
    """The architecture of each --reference-model: none given, one for all, or one per model."""
    models, archs = args.reference_model or [], args.reference_arch or []
    if archs and not models:
        raise ConfigError("--reference-arch needs --reference-model (the weights it describes)")
    if len(archs) > 1 and len(archs) != len(models):
        raise ConfigError(f"{len(archs)} --reference-arch for {len(models)} --reference-model; give one "
                          "--reference-arch for all of them, or one per --reference-model in the same order")
    return list(archs) if len(archs) > 1 else [archs[0] if archs else None] * len(models)


def _reference_files(given: list[str], archs: list[str | None]) -> list[tuple[str, str | None]]:
    """Each --reference-model as (file, arch): a bank folder (or a shipped bank's name) stands for every
    checkpoint in it."""
    from ..train.bank import bank_paths
    from ..zoo import SHIPPED_BANKS, shipped_bank

    out = []
    for path, arch in zip(given, archs):
        if path in SHIPPED_BANKS and not Path(path).exists():
            out += [(str(member), arch) for member in bank_paths(shipped_bank(path))]
        elif Path(path).is_dir():
            out += [(str(member), arch) for member in bank_paths(path)]
        else:
            out.append((path, arch))
    return out


def _blackbox(args: argparse.Namespace, key: Any, marker: Any, device: torch.device, class_map: Any):
    from ..detect import BlackboxSettings, blackbox
    from ..detect.observations import model_predictor
    from ..nets import state_dict_sha256

    marking = probe_marking(args, key)
    settings = BlackboxSettings(  # checked before any model or image is loaded
        num_controls=args.controls, statistic=args.statistic, combine=args.combine,
        reference_fit=args.reference_fit, mark=marking.config,
        seed=marking.seed, mark_origin=marking.origin, data_mark=marking.data_config, probe_mode=args.probe_mode,
        class_map=class_map, output=args.output, alpha=args.alpha, batch_size=args.batch_size,
        cache_dir=args.cache_dir or None, null_trials=args.null_trials, null_seed=args.null_seed,
    )
    reference_archs = _reference_archs(args)
    num_classes = args.num_classes or key.num_classes
    size = (args.input_size, args.input_size) if args.input_size else None
    if args.endpoint:
        from ..endpoint import Endpoint

        predict = Endpoint(args.endpoint, timeout=args.endpoint_timeout, retries=args.endpoint_retries,
                           max_rate=args.endpoint_rate, max_response_bytes=args.endpoint_max_bytes,
                           batch_size=min(args.batch_size, 64), output=args.output)
        model_id = args.endpoint
    elif args.model:
        model = _load_model(args.model, args.arch, num_classes, device, marker)
        predict = model_predictor(model, input_size=size, device=device)
        model_id = state_dict_sha256(model)
    else:
        raise ConfigError("the black-box test needs --endpoint URL or --model FILE")
    reference = [model_predictor(_load_model(path, arch, num_classes, device, marker), input_size=size, device=device)
                 for path, arch in _reference_files(args.reference_model or [], reference_archs)]
    return blackbox(predict, key, _probes(args, key), marker=marker, settings=replace(settings, model_id=model_id),
                    reference=reference)


def _whitebox_inputs(args: argparse.Namespace, key: Any, marker: Any, device: torch.device, class_map: Any):
    """(suspect, reference images, settings, marked flags) of the white-box test: the same for every key."""
    from ..detect import WhiteboxSettings
    from ..sources import load_labelled

    if not args.model:
        raise ConfigError("the white-box test needs --model (weights); use --black-box with --endpoint otherwise")
    settings = WhiteboxSettings(
        head=args.head, batch_size=args.batch_size, alignment=args.alignment, class_map=class_map, alpha=args.alpha,
        allow_marked=args.allow_marked_reference, input_size=args.input_size, null_trials=args.null_trials,
        null_seed=args.null_seed,
    )
    model = _load_model(args.model, args.arch, args.num_classes or key.num_classes, device, marker)
    reference = load_labelled(args.reference or held_out_default(key), limit=args.reference_limit)
    # Only the images the marking changed: a published folder is mostly unchanged copies.
    marked = reference.marked_flags
    if marked is None:
        marked = torch.zeros(len(reference), dtype=torch.bool)
    return model, reference.images, settings, marked


def _whitebox(args: argparse.Namespace, key: Any, marker: Any, device: torch.device, class_map: Any):
    from ..detect import whitebox

    model, images, settings, marked = _whitebox_inputs(args, key, marker, device, class_map)
    return whitebox(model, key, images, marker=marker, settings=settings, marked=marked)


def run(args: argparse.Namespace) -> int:
    from .. import report
    from ..detect.common import parse_class_map
    from ..key import Key
    from ..zoo import resolve_device, resolve_marker
    from ._keys import detect_several, key_paths

    paths = key_paths(args.key)
    if len(paths) > 1:
        return detect_several(args, paths, blackbox=_blackbox, whitebox_inputs=_whitebox_inputs)
    args.key = paths[0]  # one key: the command, and what its JSON records, as before
    key = Key.load(args.key)
    marker = resolve_marker(key, args.marker, weights=args.marker_weights)
    device = resolve_device(args.device)
    marker.to(device)
    class_map = parse_class_map(args.class_map)
    if args.twins:
        verdict = detect_twins(args, key, marker, device)
    else:
        verdict = (_blackbox if args.black_box else _whitebox)(args, key, marker, device, class_map)
    print(verdict.summary())
    if args.json_out:
        report.write_json(verdict, args.json_out, command=vars(args))
        log.info("verdict written to %s", args.json_out)
    if args.report:
        page = report.write_report(verdict, args.report, command=vars(args))
        log.info("report written to %s", page)
    return 0 if not math.isnan(verdict.log10_p) else 1

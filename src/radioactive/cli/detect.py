"""``radioactive detect``: white-box or black-box test of a suspect model against a key."""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError, DatasetError, ModelLoadError

log = logging.getLogger(__name__)
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}


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
    parser.add_argument("--key", required=True, help="key file (from radioactive keygen)")
    parser.add_argument("--marker", default=None,
                        help="marking-network checkpoint the key was made with (default: the built-in Fashion-MNIST marker)")
    parser.add_argument("--model", default=None,
                        help="suspect: a radioactive checkpoint, weights (safetensors / state dict, with --arch), a TorchScript archive or a .pt2 "
                             "torch.export archive; for --black-box, optional when --endpoint is given")
    parser.add_argument("--arch", default=None, help="architecture of --model weights: cnn, resnet_narrow, mlp, "
                        "torchvision:<name> or timm:<name>")
    parser.add_argument("--num-classes", type=int, default=None, help="outputs of the suspect (default: the key's)")
    parser.add_argument("--head", default=None, help="dotted name of the suspect's final linear layer")
    parser.add_argument("--input-size", type=int, default=None, help="resize images to this size for the suspect")
    parser.add_argument("--reference", default="fashion-mnist:val",
                        help="clean held-out images never published: fashion-mnist:SPLIT (val, test, train) or an image folder")
    parser.add_argument("--reference-limit", type=int, default=None, help="use at most this many reference images")
    parser.add_argument("--allow-marked-reference", action="store_true",
                        help="proceed (with a warning) when the reference folder holds marked images")
    parser.add_argument("--alignment", default="auto", choices=["auto", "lstsq", "identity"])
    parser.add_argument("--class-map", default=None, help="key_class:output pairs, e.g. 0:0,2:1 (subset of classes)")
    parser.add_argument("--alpha", type=float, default=0.05, help="significance level of the decision")
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
    black.add_argument("--output", default="auto", choices=["auto", "logits", "probs", "labels"],
                       help="what the suspect returns")
    black.add_argument("--probes", default="fashion-mnist:val", help="fresh clean probe images never published "
                       "(fashion-mnist:SPLIT or an image folder)")
    black.add_argument("--published", default=None,
                       help="folder of the published marked versions of the --probes folder (same relative paths, any "
                            "image suffix): tests the published images against control-marked twins of the originals "
                            "(they must have been marked with the same settings: --mark-steps, --mark-seed)")
    black.add_argument("--probes-per-class", type=int, default=100)
    black.add_argument("--controls", type=int, default=20, help="K control carrier sets")
    black.add_argument("--statistic", default="margin", choices=["margin", "prob", "loss", "label"])
    black.add_argument("--combine", default="rank", choices=["rank", "t"],
                       help="rank: exact rank p-values + Fisher; t: control t statistics + Stouffer")
    black.add_argument("--reference-model", default=None,
                       help="clean model trained by the auditor (difference in differences)")
    black.add_argument("--reference-arch", default=None, help="architecture of --reference-model weights")
    black.add_argument("--mark-steps", type=int, default=None, help="marking steps for probes (default: MarkConfig's)")
    black.add_argument("--mark-seed", type=int, default=0)
    black.add_argument("--cache-dir", default="~/.cache/radioactive/controls",
                       help="owner-only cache of marked control sets ('' to disable)")
    parser.set_defaults(func=run)


def _device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    return torch.device(name)


def _image_files(folder: Path) -> list[Path]:
    """The image files of a folder tree, in the order ``load_images`` reads them."""
    return sorted((p for p in folder.rglob("*") if p.suffix.lower() in _IMAGE_SUFFIXES),
                  key=lambda p: p.relative_to(folder).with_suffix("").as_posix())


def load_images(source: str, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """``(images uint8 (N, c, H, W), labels (N,), marked)`` from ``fashion-mnist:SPLIT`` or an image folder.

    ``marked`` is True when the folder holds a marking manifest (its images are marked outputs).
    """
    if source.startswith("fashion-mnist"):
        split = source.split(":", 1)[1] if ":" in source else "val"
        if split in ("val", "train"):
            from ..train import fashion_mnist_splits

            images, labels = fashion_mnist_splits()[split]
        elif split == "test":
            from ..fmnist import load_fashion_mnist

            images, labels = load_fashion_mnist("test")
        else:
            raise DatasetError(f"unknown Fashion-MNIST split {split!r}; choose from ['val', 'test', 'train']")
        return (images[:limit], labels[:limit], False) if limit else (images, labels, False)
    folder = Path(source).expanduser()
    if not folder.is_dir():
        raise DatasetError(f"{source!r} is neither fashion-mnist:SPLIT nor an image folder")
    from PIL import Image

    marked = (folder / "manifest.jsonl").is_file()
    files = _image_files(folder)
    if limit:
        files = files[:limit]
    if not files:
        raise DatasetError(f"no images in {source!r}")
    classes = sorted({p.parent.relative_to(folder).as_posix() for p in files})
    index = {name: i for i, name in enumerate(classes)}
    tensors, labels = [], []
    for path in files:
        with Image.open(path) as image:
            array = torch.from_numpy(__import__("numpy").asarray(image.convert("L" if image.mode in ("L", "I", "1") else "RGB")).copy())
        tensors.append(array.unsqueeze(0) if array.dim() == 2 else array.permute(2, 0, 1))
        labels.append(index[path.parent.relative_to(folder).as_posix()])
    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) != 1:
        raise DatasetError(f"images in {source!r} have different sizes {sorted(shapes)[:3]}; resize them first")
    return torch.stack(tensors), torch.tensor(labels), marked


def _load_model(path: str, arch: str | None, num_classes: int) -> torch.nn.Module:
    from pathlib import Path

    from ..nets import _is_torchscript, load_checkpoint, load_suspect

    if path.endswith(".pt2") or arch is not None or _is_torchscript(Path(path)):
        return load_suspect(path, arch=arch, num_classes=num_classes)
    try:
        model, _, _ = load_checkpoint(path)
    except ModelLoadError as exc:
        if "carries no architecture spec" in str(exc):
            raise ModelLoadError(f"{exc} (or pass a .pt2 torch.export or TorchScript archive)") from None
        raise
    return model


def _marker(path: str | None):
    from ..marker import Marker

    if path:
        return Marker.from_checkpoint(path)
    from ..train import default_marker

    return default_marker(train_if_missing=False)


def _predictor(model: torch.nn.Module, device: torch.device, input_size: int | None):
    from ..detect._common import resize

    size = (input_size, input_size) if input_size else None

    def predict(images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model(resize(images, size).to(device)).float().cpu()

    return predict


def run(args: argparse.Namespace) -> int:
    from .. import report
    from ..detect import Probes, blackbox, whitebox
    from ..detect._common import parse_class_map
    from ..key import Key

    key = Key.load(args.key)
    marker = _marker(args.marker)
    key.check_marker(marker.info)
    device = _device(args.device)
    marker.to(device)
    class_map = parse_class_map(args.class_map)
    num_classes = args.num_classes or key.num_classes
    if not 0 < args.alpha < 1:
        raise ConfigError(f"--alpha must be in (0, 1), got {args.alpha}")
    if args.black_box:
        if args.endpoint:
            from ..endpoint import Endpoint

            predict = Endpoint(args.endpoint, timeout=args.endpoint_timeout, retries=args.endpoint_retries,
                               max_rate=args.endpoint_rate, max_response_bytes=args.endpoint_max_bytes,
                               batch_size=min(args.batch_size, 64), output=args.output)
            model_id = args.endpoint
        elif args.model:
            model = _load_model(args.model, args.arch, num_classes).to(device).eval()
            predict = _predictor(model, device, args.input_size)
            from ..nets import state_dict_sha256

            model_id = state_dict_sha256(model)
        else:
            raise ConfigError("the black-box test needs --endpoint URL or --model FILE")
        reference = None
        if args.reference_model:
            ref_model = _load_model(args.reference_model, args.reference_arch, num_classes).to(device).eval()
            reference = _predictor(ref_model, device, args.input_size)
        images, labels, _ = load_images(args.probes)
        picks = torch.cat([torch.nonzero(labels == k).flatten()[: args.probes_per_class] for k in range(key.num_classes)])
        published = None
        if args.published:
            published, published_labels, _ = load_images(args.published)
            if published.shape != images.shape or not torch.equal(published_labels, labels):
                raise DatasetError(
                    f"--published {args.published!r} does not mirror --probes {args.probes!r}: expected the same "
                    f"relative paths and sizes ({tuple(images.shape)}), got {tuple(published.shape)}"
                )
            published = published[picks]
        ids = None
        if published is not None and not args.probes.startswith("fashion-mnist"):
            # `radioactive mark` derives each image's augmentation stream from its relative path: the control
            # twins must be marked with the same streams as the published versions.
            folder = Path(args.probes).expanduser()
            rels = [f.relative_to(folder).as_posix() for f in _image_files(folder)]
            ids = [rels[i] for i in picks.tolist()]
        probes = Probes(images[picks], labels[picks], published=published, ids=ids)
        from ..mark import MarkConfig

        config = MarkConfig() if args.mark_steps is None else MarkConfig(steps=args.mark_steps)
        verdict = blackbox(
            predict, key, probes, marker=marker, num_controls=args.controls, statistic=args.statistic,
            combine=args.combine, reference=reference, config=config, seed=args.mark_seed, class_map=class_map,
            output=args.output, alpha=args.alpha, batch_size=args.batch_size, cache_dir=args.cache_dir or None,
            model_id=model_id, null_trials=args.null_trials, null_seed=args.null_seed,
        )
    else:
        if not args.model:
            raise ConfigError("the white-box test needs --model (weights); use --black-box with --endpoint otherwise")
        model = _load_model(args.model, args.arch, num_classes).to(device).eval()
        images, _, marked = load_images(args.reference, args.reference_limit)
        size = (args.input_size, args.input_size) if args.input_size else None
        verdict = whitebox(
            model, key, images, marker=marker, head=args.head, batch_size=args.batch_size, alignment=args.alignment,
            class_map=class_map, alpha=args.alpha, marked=torch.full((len(images),), marked),
            allow_marked=args.allow_marked_reference, input_size=size, null_trials=args.null_trials,
            null_seed=args.null_seed,
        )
    print(verdict.summary())
    if args.json_out:
        report.write_json(verdict, args.json_out, command=vars(args))
        log.info("verdict written to %s", args.json_out)
    if args.report:
        page = report.write_report(verdict, args.report, command=vars(args))
        log.info("report written to %s", page)
    return 0 if not math.isnan(verdict.log10_p) else 1

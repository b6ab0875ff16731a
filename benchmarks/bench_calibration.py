"""Calibration of every detection test on classifiers trained on clean Fashion-MNIST (H0 is true).

White-box: >= 1,000 random keys (full and class-neutral carriers) against each clean model; the p-values
must pass a KS uniformity test (p > 0.01) and the false-positive rate at alpha = 0.05 must lie in its
binomial 99 % interval. Black-box: every variant (statistic x rank/t x with/without a reference model) over
>= 100 random keys through ``collect`` + ``verdict_from_observations`` (exactly what ``blackbox`` runs); the
empirical P(p <= a) must not exceed the binomial 99 % upper bound for a in {0.01, 0.05, 0.1}.

Run (heavy, ~20 min on 2 cores):
    flock /tmp/radioactive-heavy.lock .venv/bin/python benchmarks/bench_calibration.py
Writes benchmarks/results/calibration.json. Models and the marker are cached in benchmarks/cache/.

At 100 classes (issue 27), the white-box test on clean models of ``fashion-mnist-pairs`` with the shipped
100-class marker; ``--models`` takes clean checkpoints (e.g. the composite-100 grid's 0 % suspects), else clean
models are trained here without flips (a flip changes a composite's label):
    flock /tmp/radioactive-heavy.lock .venv/bin/python benchmarks/bench_calibration.py --data fashion-mnist-pairs \
        --skip-black --white-keys 2000 --reference-images 2000 --out benchmarks/results/calibration-pairs100.json
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy import stats as sps

from radioactive import stats
from radioactive._io import atomic_write_json, versions
from radioactive.detect import Probes
from radioactive.detect.combine import COMBINATIONS, verdict_from_observations
from radioactive.detect.observations import STATISTICS, collect
from radioactive.detect.probes import first_per_class
from radioactive.detect.white_box import prepare, verdict_from_parts
from radioactive.key import Key
from radioactive.marker import Marker
from radioactive.nets import load_checkpoint, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "benchmarks" / "cache"
RESULTS = ROOT / "benchmarks" / "results"
log = logging.getLogger("bench_calibration")

# Clean suspects: (name, arch, seed, epochs). Different seeds from the marker (seed 0).
CLEAN_MODELS = (("cnn", "cnn", 1, 1), ("resnet_narrow", "resnet_narrow", 2, 1), ("mlp", "mlp", 3, 2))


PAIRS_MARKER = ROOT / "src" / "radioactive" / "markers" / "fmnist-pairs-cnn.safetensors"


def get_marker(data: str = "fashion-mnist") -> Marker:
    """The built-in marker of ``data``: the one shipped with the package (for Fashion-MNIST, else one trained
    here, cached)."""
    from radioactive.zoo import default_marker

    if data == "fashion-mnist":
        return default_marker(cache_dir=CACHE)
    if not PAIRS_MARKER.is_file():
        raise SystemExit(f"{PAIRS_MARKER} is missing: radioactive train-marker --data {data} --out {PAIRS_MARKER}")
    return Marker.from_checkpoint(PAIRS_MARKER)


def get_splits(data: str) -> dict:
    if data == "fashion-mnist":
        from radioactive.fmnist import fashion_mnist_splits

        return fashion_mnist_splits()
    from radioactive.fmnist_pairs import fashion_mnist_pairs_splits

    return fashion_mnist_pairs_splits(data)


def clean_model(name: str, arch: str, seed: int, epochs: int, splits, data: str = "fashion-mnist") -> torch.nn.Module:
    """A classifier trained on the clean owner split of ``data`` (without flips for the pairs), cached."""
    from dataclasses import replace

    from radioactive.train import TrainRecipe, evaluate, fit
    from radioactive.zoo import FMNIST_SPEC

    tag = "" if data == "fashion-mnist" else f"{data}-"
    path = CACHE / f"clean-{tag}{name}-s{seed}-e{epochs}.safetensors"
    if not path.is_file():
        spec, recipe = replace(FMNIST_SPEC, arch=arch), TrainRecipe(epochs=epochs)
        if data != "fashion-mnist":
            classes = int(splits["owner"][1].max()) + 1
            spec = replace(spec, num_classes=classes, input_size=tuple(splits["owner"][0].shape[-2:]))
            recipe = replace(recipe, flip=False)
        start = time.perf_counter()
        result = fit(spec, *splits["owner"], recipe=recipe, seed=seed)
        accuracy = evaluate(result.model, *splits["test"])["accuracy"]
        save_checkpoint(result.model.to("cpu"), path, spec, {"kind": "clean", "data": data, "epochs": epochs,
                                                             "seed": seed, "flip": recipe.flip,
                                                             "test_accuracy": accuracy,
                                                             "train_seconds": time.perf_counter() - start})
        log.info("trained %s: test accuracy %.3f in %.0f s", name, accuracy, time.perf_counter() - start)
    model, _, extra = load_checkpoint(path)
    model.extra = extra  # type: ignore[attr-defined]
    return model


def fpr_check(log10_ps: np.ndarray, alphas=(0.01, 0.05, 0.1)) -> dict:
    count = len(log10_ps)
    out = {"n": count}
    for alpha in alphas:
        hits = int((log10_ps <= math.log10(alpha) + 1e-12).sum())
        low, high = stats.binomial_interval(count, alpha, 0.99)
        out[f"fpr@{alpha}"] = hits / count
        out[f"hits@{alpha}"] = hits
        out[f"upper99@{alpha}"] = high
        out[f"ok@{alpha}"] = hits <= high
    out["ks_pvalue"] = float(sps.kstest(10.0 ** log10_ps, "uniform").pvalue)
    out["min_log10_p"] = float(log10_ps.min())
    return out


def whitebox_calibration(marker, models, reference, keys: int) -> dict:
    head_weight = marker.split.weight()
    results = {}
    for name, model in models.items():
        start = time.perf_counter()
        parts = prepare(model, Key.generate(marker.info, seed=0), reference, marker=marker)
        prep = time.perf_counter() - start
        for space in ("full", "neutral"):
            start = time.perf_counter()
            log10_ps = np.array([
                verdict_from_parts(parts, Key.generate(marker.info, seed=1_000_000 + i, space=space,
                                                       head_weight=head_weight)).log10_p
                for i in range(keys)
            ])
            check = fpr_check(log10_ps, alphas=(0.05,))
            check["ks_ok"] = check["ks_pvalue"] > 0.01
            check["alignment"] = parts.alignment
            check["seconds_features_and_alignment"] = prep
            check["seconds_scoring"] = time.perf_counter() - start
            results[f"{name}/{space}"] = check
            log.info("white-box %s/%s: KS p %.3f, FPR@0.05 %.4f (upper %d/%d) %s", name, space, check["ks_pvalue"],
                     check["fpr@0.05"], check["upper99@0.05"], keys, parts.alignment["method"])
    return results


def balanced_probes(images: torch.Tensor, labels: torch.Tensor, per_class: int) -> Probes:
    index = first_per_class(labels, per_class, num_classes=10)
    return Probes(images[index], labels[index])


def blackbox_calibration(marker, suspects, reference_model, probes, keys: int, controls: int, config) -> dict:
    from radioactive.train import evaluate  # noqa: F401  (models are in eval mode already)

    def predictor(model):
        def predict(x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return model(x)
        return predict

    reference = predictor(reference_model)
    log10_ps: dict[str, list[float]] = {}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="radioactive-calib-") as cache_dir:
        for i in range(keys):
            key = Key.generate(marker.info, seed=2_000_000 + i)
            for name, model in suspects.items():
                # The second suspect reads the control sets the first one cached: the repeated-audit path.
                obs = collect(predictor(model), key, probes, marker=marker, num_controls=controls, reference=reference,
                              config=config, seed=i, cache_dir=cache_dir)
                for statistic in STATISTICS:
                    for combine in COMBINATIONS:
                        for difference in (False, True):
                            verdict = verdict_from_observations(obs, statistic=statistic, combine=combine,
                                                                difference=difference)
                            log10_ps.setdefault(f"{name}/{statistic}/{verdict.test}", []).append(verdict.log10_p)
            for path in Path(cache_dir).glob(f"{key.fingerprint}-*"):
                path.unlink()
            if (i + 1) % 10 == 0:
                log.info("black-box: %d/%d keys, %.0f s", i + 1, keys, time.perf_counter() - start)
    results = {name: fpr_check(np.array(values)) for name, values in log10_ps.items()}
    for check in results.values():
        check["ok"] = all(check[f"ok@{a}"] for a in (0.01, 0.05, 0.1))
    results["_seconds"] = time.perf_counter() - start
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--white-keys", type=int, default=2000)
    parser.add_argument("--black-keys", type=int, default=100)
    parser.add_argument("--probes-per-class", type=int, default=10)
    parser.add_argument("--controls", type=int, default=9)
    parser.add_argument("--mark-steps", type=int, default=2)
    parser.add_argument("--reference-images", type=int, default=5000)
    parser.add_argument("--out", default=str(RESULTS / "calibration.json"))
    parser.add_argument("--skip-black", action="store_true")
    parser.add_argument("--data", default="fashion-mnist",
                        choices=["fashion-mnist", "fashion-mnist-pairs", "fashion-mnist-pairs10"],
                        help="the data set, its shipped marker and its clean models")
    parser.add_argument("--models", nargs="+", default=[],
                        help="clean checkpoints to calibrate on instead of training CLEAN_MODELS (white-box only)")
    args = parser.parse_args(argv)
    if args.data != "fashion-mnist" and not args.skip_black:
        parser.error("--data other than fashion-mnist calibrates the white-box test only: add --skip-black")
    if args.models and not args.skip_black:
        parser.error("--models calibrates the white-box test only: add --skip-black")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(2)
    from radioactive._io import sha256_file
    from radioactive.mark import MarkConfig

    start = time.perf_counter()
    splits = get_splits(args.data)
    marker = get_marker(args.data)
    if args.models:
        models = {}
        for file in args.models:
            if not Path(file).is_file():
                parser.error(f"--models: no such checkpoint {file}")
            model, _, extra = load_checkpoint(file)
            model.extra = {**extra, "path": str(file), "sha256": sha256_file(file)}  # type: ignore[attr-defined]
            models[Path(file).stem] = model
    else:
        models = {name: clean_model(name, arch, seed, epochs, splits, args.data)
                  for name, arch, seed, epochs in CLEAN_MODELS}
    models["marker_itself"] = marker.model
    setup_seconds = time.perf_counter() - start
    val_images, val_labels = splits["holdout"]
    reference = val_images[: args.reference_images]
    out = {
        "benchmark": "calibration",
        "command": "flock /tmp/radioactive-heavy.lock .venv/bin/python benchmarks/bench_calibration.py " + " ".join(argv or sys.argv[1:]),
        "settings": vars(args),
        "models": {name: getattr(model, "extra", {"kind": "marker"}) for name, model in models.items()},
        "marker_sha256": marker.info.weights_sha256,
        "versions": versions(),
        "setup_seconds": setup_seconds,
    }
    t0 = time.perf_counter()
    out["whitebox"] = whitebox_calibration(marker, models, reference, args.white_keys)
    out["whitebox_seconds"] = time.perf_counter() - t0
    out["whitebox_ok"] = all(v["ks_ok"] and v["ok@0.05"] for v in out["whitebox"].values())
    if not args.skip_black:
        probes = balanced_probes(*splits["test"], args.probes_per_class)
        config = MarkConfig(steps=args.mark_steps, eval_draws=0)
        suspects = {"cnn": models["cnn"], "resnet_narrow": models["resnet_narrow"]}
        out["blackbox_setup"] = {"probes": len(probes), "controls": args.controls, "keys": args.black_keys,
                                 "mark_config": config.to_dict(), "suspects": list(suspects), "reference_model": "mlp",
                                 "probe_source": "fresh (Fashion-MNIST test images, never used for training)"}
        out["blackbox"] = blackbox_calibration(marker, suspects, models["mlp"], probes, args.black_keys,
                                               args.controls, config)
        out["blackbox_ok"] = all(v["ok"] for k, v in out["blackbox"].items() if not k.startswith("_"))
    out["total_seconds"] = time.perf_counter() - start
    atomic_write_json(args.out, out)
    print(json.dumps({k: out[k] for k in out if k.endswith("_ok") or k.endswith("seconds")}, indent=1))
    return 0 if out["whitebox_ok"] and out.get("blackbox_ok", True) else 1


if __name__ == "__main__":
    sys.exit(main())

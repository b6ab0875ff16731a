"""White-box detection: speed over 10,000 reference images, and positive control (b).

1. Speed: ``whitebox`` over the 10,000 Fashion-MNIST test images with the built-in marker (28x28 CNN, d = 128)
   against a CNN suspect, with 2 CPU threads (acceptance: < 30 s); and the alignment's least squares alone,
   both ways ``align`` knows (gelsd on the host; a QR where the features are, then gelsd on the small system,
   what it does on an accelerator), on these features and on 50,000 x 512 synthetic ones.
2. Positive control (b): a linear classifier trained on the marker's frozen features, on Fashion-MNIST images
   of which 100 % (and 10 %) are marked at the default quality (``MarkConfig()``), then the white-box test
   (acceptance: log10 p <= -5 at 100 %). The training set is a balanced subset (``--train-images``) since
   marking at the default quality costs about a CPU-second per few images.

Run (heavy):
    flock /tmp/radioactive-heavy.lock .venv/bin/python benchmarks/bench_whitebox.py
Writes benchmarks/results/whitebox.json (``--skip-positive`` keeps the positive control of the file it
replaces, marked as carried over: the control takes about 20 minutes and does not depend on the speed).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_calibration import CACHE, RESULTS, get_marker  # noqa: E402

from radioactive._io import atomic_write_json, versions  # noqa: E402
from radioactive.detect import WhiteboxSettings, whitebox  # noqa: E402
from radioactive.key import Key  # noqa: E402

log = logging.getLogger("bench_whitebox")


def speed(marker, key, images, suspect, repeats: int) -> dict:
    timings, verdict = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        verdict = whitebox(suspect, key, images, marker=marker, settings=WhiteboxSettings(batch_size=1000))
        timings.append(time.perf_counter() - start)
    return {"reference_images": len(images), "seconds": timings, "best_seconds": min(timings),
            "threads": torch.get_num_threads(), "alignment": verdict.alignment, "log10_p": verdict.log10_p,
            "ok": min(timings) < 30.0}


def lstsq_timing(marker, suspect, images) -> dict:
    """Seconds of the least squares alone, on the benchmark's own features and on synthetic 50,000 x 512
    ones (a ResNet's width), host gelsd against the QR route (on CPU here; the GPU check times it there)."""
    from radioactive.detect.white_box import _features, lstsq_reduced

    f_m, f_s, _ = _features(marker, suspect, images, None, 1000, None, None)
    gen = torch.Generator().manual_seed(0)
    wide = torch.randn(50_000, 512, generator=gen, dtype=torch.float64).relu()
    cases = {"features_10000x128": (f_m, f_s),
             "synthetic_50000x512": (wide, wide @ torch.randn(512, 512, generator=gen, dtype=torch.float64))}
    out = {}
    for name, (a, b) in cases.items():
        row = {}
        for way, solve in (("host_gelsd", lambda a, b: torch.linalg.lstsq(a, b, driver="gelsd").solution),
                           ("qr_then_gelsd", lstsq_reduced)):
            best = float("inf")
            for _ in range(2):
                start = time.perf_counter()
                solve(a, b)
                best = min(best, time.perf_counter() - start)
            row[way] = best
        out[name] = row
    return out


def marked_training_set(marker, key, images, labels, cache: Path):
    from safetensors.torch import load_file, save_file

    from radioactive.mark import MarkConfig, mark

    config = MarkConfig()
    path = cache / f"posb-{key.fingerprint}-{len(images)}.safetensors"
    if path.is_file():
        data = load_file(str(path))
        return data["images"], json.loads(path.with_suffix(".json").read_text())
    start = time.perf_counter()
    result = mark(marker, images, labels, key, config, seed=0)
    seconds = time.perf_counter() - start
    marked = (result.images * 255).round().to(torch.uint8)
    save_file({"images": marked}, str(path))
    info = {"mark_seconds": seconds, "config": config.to_dict(), **result.to_dict()}
    path.with_suffix(".json").write_text(json.dumps(info))
    return marked, info


def logistic_regression_head(marker, images, labels, weight_decay: float = 1e-4):
    """A linear classifier fitted to convergence (L-BFGS, float64) on the marker's frozen features of
    ``images``, installed as the head of a copy of the marker: the paper's frozen-features setting."""
    import copy

    with torch.no_grad():
        feats = torch.cat([marker.features(images[i : i + 1000].float() / 255).double()
                           for i in range(0, len(images), 1000)])
    weight = torch.zeros(10, feats.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(10, dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([weight, bias], max_iter=500, line_search_fn="strong_wolfe")

    def closure():
        optimiser.zero_grad()
        loss = torch.nn.functional.cross_entropy(feats @ weight.T + bias, labels) + weight_decay * weight.pow(2).sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    model = copy.deepcopy(marker.model)
    head = model.get_submodule(marker.split.head_name)
    with torch.no_grad():
        head.weight.copy_(weight.detach().float())
        head.bias.copy_(bias.detach().float())
    return model.eval()


def positive_control(marker, key, splits, train_images: int, epochs: int) -> dict:
    from radioactive.train import TrainRecipe, evaluate, fit

    images, labels = splits["owner"]
    per_class = train_images // 10
    index = torch.cat([torch.nonzero(labels == k).flatten()[:per_class] for k in range(10)])
    images, labels = images[index], labels[index]
    marked, mark_info = marked_training_set(marker, key, images, labels, CACHE)
    reference = splits["holdout"][0]
    out = {"train_images": len(images), "marking": mark_info, "epochs": epochs, "fractions": {}}
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    for fraction in (1.0, 0.1, 0.0):
        chosen = order[: int(round(fraction * len(images)))]
        mixed = images.clone()
        mixed[chosen] = marked[chosen]
        for trainer in ("logistic_regression", "sgd_linear_probe"):
            start = time.perf_counter()
            if trainer == "sgd_linear_probe":
                model = fit(marker.model, mixed, labels, recipe=TrainRecipe(mode="linear_probe", epochs=epochs, lr=0.1),
                            seed=1).model
            else:
                model = logistic_regression_head(marker, mixed, labels)
            train_seconds = time.perf_counter() - start
            verdict = whitebox(model, key, reference, marker=marker)
            out["fractions"].setdefault(trainer, {})[str(fraction)] = {
                "log10_p": verdict.log10_p,
                "alignment": verdict.alignment["method"],
                "mean_cosine": verdict.details["mean_cosine"],
                "cosines": [c.cosine for c in verdict.classes],
                "test_accuracy": evaluate(model, *splits["test"])["accuracy"],
                "train_seconds": train_seconds,
            }
            log.info("positive control (b), %s, %.0f%% marked: log10 p %.2f (mean cosine %.3f)", trainer,
                     100 * fraction, verdict.log10_p, verdict.details["mean_cosine"])
    out["ok"] = min(v["1.0"]["log10_p"] for v in out["fractions"].values()) <= -5
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train-images", type=int, default=3000)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--skip-positive", action="store_true")
    parser.add_argument("--out", default=str(RESULTS / "whitebox.json"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(2)
    from radioactive.fmnist import fashion_mnist_splits, load_fashion_mnist
    from radioactive.nets import load_checkpoint

    start = time.perf_counter()
    marker = get_marker()
    key = Key.generate(marker.info, seed=424242)
    test_images, _ = load_fashion_mnist("test")
    clean = sorted(CACHE.glob("clean-cnn-*.safetensors"))
    if clean:
        suspect, _, _ = load_checkpoint(clean[0])
        suspect_name = clean[0].name
    else:
        from radioactive.nets import build_from_spec

        suspect, suspect_name = build_from_spec(marker.spec).eval(), "untrained cnn (same cost)"
    out = {"benchmark": "whitebox", "versions": versions(), "marker_sha256": marker.info.weights_sha256,
           "command": "flock /tmp/radioactive-heavy.lock .venv/bin/python benchmarks/bench_whitebox.py "
           + " ".join(argv or sys.argv[1:])}
    out["speed"] = speed(marker, key, test_images, suspect, args.repeats)
    out["speed"]["suspect"] = suspect_name
    log.info("white-box over %d images: best %.2f s", len(test_images), out["speed"]["best_seconds"])
    out["lstsq_seconds"] = lstsq_timing(marker, suspect, test_images)
    log.info("least squares: %s", out["lstsq_seconds"])
    if not args.skip_positive:
        out["positive_control_b"] = positive_control(marker, key, fashion_mnist_splits(), args.train_images, args.epochs)
    elif Path(args.out).is_file():
        earlier = json.loads(Path(args.out).read_text())
        if "positive_control_b" in earlier:
            out["positive_control_b"] = {**earlier["positive_control_b"],
                                         "carried_over_from": earlier["positive_control_b"].get("carried_over_from")
                                         or earlier.get("command", "an earlier run")}
    out["total_seconds"] = time.perf_counter() - start
    atomic_write_json(args.out, out)
    print(json.dumps({"speed_best_s": out["speed"]["best_seconds"],
                      "positive_b": {t: {k: v["log10_p"] for k, v in f.items()}
                                     for t, f in out.get("positive_control_b", {}).get("fractions", {}).items()},
                      "total_s": out["total_seconds"]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

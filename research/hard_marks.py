"""Hard marks: does pushing marked images' features against their class (MarkConfig.lambda_class) make a
trainer learn the carrier more than in proportion to the fraction marked?

Fast proxy: a logistic regression fitted to convergence on the marker's frozen features (the paper's
frozen-features setting; identity alignment), 3,000 balanced training images of which 10 % / 20 % are
marked, white-box test on 2,000 held-out images; several keys. Reports the marking's PSNR, cosine with the
carrier and how hard the marked images became for the marker (its accuracy and mean logit margin on them).

Usage (heavy): cd research && flock /tmp/radioactive-heavy.lock ../.venv/bin/python hard_marks.py
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent / "benchmarks"))

from bench_whitebox import logistic_regression_head  # noqa: E402

from radioactive._io import atomic_write_json, versions  # noqa: E402
from radioactive.detect import whitebox  # noqa: E402
from radioactive.key import Key  # noqa: E402
from radioactive.mark import MarkConfig, mark  # noqa: E402
from radioactive.train import default_marker, evaluate, fashion_mnist_splits  # noqa: E402


def margins(model, images, labels):
    with torch.no_grad():
        logits = model(images.float() / 255)
    true = logits.gather(1, labels[:, None]).squeeze(1)
    other = logits.scatter(1, labels[:, None], float("-inf")).max(1).values
    return float((logits.argmax(1) == labels).float().mean()), float((true - other).mean())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lambdas", default="0,1,3")
    ap.add_argument("--keys", type=int, default=3)
    ap.add_argument("--train-images", type=int, default=3000)
    ap.add_argument("--name", default="hard-marks")
    args = ap.parse_args()
    t0 = time.time()
    marker = default_marker()
    splits = fashion_mnist_splits(validation=5000)
    images, labels = splits["train"]
    per_class = args.train_images // 10
    index = torch.cat([torch.nonzero(labels == k).flatten()[:per_class] for k in range(10)])
    images, labels = images[index], labels[index]
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    top = order[: int(round(0.2 * len(images)))]
    reference = splits["val"][0][:2000]
    out = {"name": args.name, "train_images": len(images), "keys": args.keys, "rows": [], "versions": versions()}
    clean_acc, clean_margin = margins(marker.model.eval(), images[top], labels[top])
    out["marker_on_clean_subset"] = {"accuracy": clean_acc, "margin": clean_margin}
    for lam in [float(v) for v in args.lambdas.split(",")]:
        config = MarkConfig(steps=30, lr=0.02, lambda_class=lam)
        for key_seed in range(args.keys):
            key = Key.generate(marker.info, seed=5000 + key_seed)
            result = mark(marker, images[top], labels[top], key, config, seed=key_seed)
            marked = (result.images * 255).round().to(torch.uint8)
            acc, margin = margins(marker.model.eval(), marked, labels[top])
            row = {"lambda_class": lam, "key_seed": key_seed, "psnr_min": float(result.psnr.min()),
                   "carrier_cosine": float(result.cosine.mean()), "carrier_shift": float(result.shift.mean()),
                   "marker_accuracy_on_marked": acc, "marker_margin_on_marked": margin, "fractions": {}}
            for fraction in (0.1, 0.2):
                chosen = top[: int(round(fraction * len(images)))]
                mixed = images.clone()
                mixed[chosen] = marked[: len(chosen)]
                model = logistic_regression_head(marker, mixed, labels)
                verdict = whitebox(model, key, reference, marker=marker)
                row["fractions"][str(fraction)] = {
                    "log10_p": verdict.log10_p, "mean_cosine": verdict.details["mean_cosine"],
                    "test_accuracy": evaluate(model, *splits["test"])["accuracy"]}
            print(json.dumps(row), flush=True)
            out["rows"].append(row)
    out["seconds"] = time.time() - t0
    atomic_write_json(ROOT / "results" / f"{args.name}.json", out)


if __name__ == "__main__":
    main()

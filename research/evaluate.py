"""Evaluate every test variant on cached suspects; writes research/results/<name>.json.

Usage (under the heavy lock):
    python research/evaluate.py --name main --space full --cfg default --probes 1000 --controls 20 \
        --suspects 0:0,0:1,0:2,0.01:0,...   (fraction:seed)
"""

from __future__ import annotations

import argparse
import json
import math
import time

import common
import numpy as np
import torch

from radioactive.detect.black_box import (
    Observations,
    Probes,
    _per_image,
    _scores,
    marked_versions,
    verdict_from_observations,
)
from radioactive.detect.exact import exact_verdict
from radioactive.detect.gradient import gradient_rows
from radioactive.detect.white_box import WhiteboxParts, prepare, verdict_from_parts

ARCH = "resnet_narrow"


def predictor(model):
    def predict(x):
        with torch.no_grad():
            return model(x)

    return predict


def balanced(images, labels, per_class, offset=0):
    idx = torch.cat([torch.nonzero(labels == k).flatten()[offset : offset + per_class] for k in range(10)])
    return images[idx], labels[idx]


def versions(m, key, probes, controls, cfg):
    out = {}
    for j, imgs in marked_versions(m, key, probes, num_controls=controls, config=common.mark_config(cfg), seed=0,
                                   cache_dir=common.CACHE / "probes"):
        out[j] = imgs
    return [out[j] for j in range(controls + 1)]


def stats_on(model, vers, labels):
    """{stat: (K+1, C) per-class means}."""
    labels_np = labels.numpy()
    rows = {}
    for imgs in vers:
        values, kind = _scores(predictor(model), imgs, 500, "logits")
        for name, vals in _per_image(values, kind, labels_np).items():
            rows.setdefault(name, []).append(np.array([vals[labels_np == k].mean() for k in range(10)]))
    return {k: np.stack(v) for k, v in rows.items()}


def obs(sus, ref, labels, source, key):
    counts = np.array([int((labels == k).sum()) for k in range(10)])
    return Observations(pairs=tuple((k, k) for k in range(10)), counts=counts, suspect=sus, reference=ref,
                        output_kind="logits", source=source, num_probes=int(len(labels)),
                        key_fingerprint=key.fingerprint)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", required=True)
    ap.add_argument("--space", default="full")
    ap.add_argument("--cfg", default="default")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--probes", type=int, default=100, help="fresh probes per class")
    ap.add_argument("--published", type=int, default=55, help="published probes per class (from the 1 % set)")
    ap.add_argument("--controls", type=int, default=20)
    ap.add_argument("--suspects", required=True)
    ap.add_argument("--refs", default="resnet_narrow:100,cnn:100")
    args = ap.parse_args()
    t0 = time.time()
    m = common.marker()
    key = common.key(args.space, m)
    sp = common.splits()
    val_images, val_labels = sp["val"]
    ref_images, ref_labels = val_images[:2000], val_labels[:2000]
    probe_images, probe_labels = balanced(val_images[2000:], val_labels[2000:], args.probes)
    fresh = Probes(probe_images, probe_labels)
    fresh_versions = versions(m, key, fresh, args.controls, args.cfg)
    print(f"fresh versions ready {time.time() - t0:.0f}s", flush=True)
    data = common.marked_train(args.space, args.cfg)
    train_images, train_labels = sp["train"]
    n_small = len(common.subset_indices(0.01))
    pub_idx = data["idx"][:n_small]
    pub_labels = train_labels[pub_idx]
    keep = torch.cat([torch.nonzero(pub_labels == k).flatten()[: args.published] for k in range(10)])
    pub = Probes(train_images[pub_idx[keep]], pub_labels[keep], published=data["images"][:n_small][keep])
    pub_versions = versions(m, key, pub, args.controls, args.cfg)
    print(f"published versions ready {time.time() - t0:.0f}s", flush=True)

    refs = {}
    for spec in args.refs.split(","):
        arch, seed = spec.split(":")
        model, _ = common.suspect(arch, 0.0, int(seed), epochs=args.epochs)
        refs[arch] = {"fresh": stats_on(model, fresh_versions, probe_labels),
                      "published": stats_on(model, pub_versions, pub.labels)}
    results = []
    for item in args.suspects.split(","):
        frac, seed = item.split(":")
        frac, seed = float(frac), int(seed)
        model, metrics = common.suspect(ARCH, frac, seed, args.space, args.cfg, epochs=args.epochs)
        rec = {"fraction": frac, "seed": seed, "arch": ARCH, "space": args.space, "cfg": args.cfg,
               "epochs": args.epochs, "test_accuracy": metrics.get("test_accuracy"), "tests": {}}
        if frac > 0:
            n = len(common.subset_indices(frac))
            rec["psnr_min"] = float(data["psnr"][:n].min())
            rec["psnr_mean"] = float(data["psnr"][:n].mean())
        parts = prepare(model, key, ref_images, marker=m, hash_model=False)
        rec["tests"]["whitebox"] = verdict_from_parts(parts, key).log10_p
        pairs = tuple((k, k) for k in range(10))
        for score, images_for in (("centred", "own"), ("centred", "all"), ("logprob", "own")):
            if True:
                rows, _ = gradient_rows(model, m, ref_images[:1000], ref_labels[:1000], pairs, score=score,
                                        images_for=images_for)
                gp = WhiteboxParts(rows=rows, pairs=pairs, alignment={}, counts={}, model_sha256=None)
                v = verdict_from_parts(gp, key)
                rec["tests"][f"grad-{score}-{images_for}"] = v.log10_p
                rec["tests"][f"grad-{score}-{images_for}-meancos"] = v.details["mean_cosine"]
        for source, vers, labels in (("fresh", fresh_versions, probe_labels), ("published", pub_versions, pub.labels)):
            sus = stats_on(model, vers, labels)
            for ref_name in [None, *refs]:
                ref = refs[ref_name][source] if ref_name else None
                o = obs(sus, ref, labels.numpy(), source, key)
                for stat in ("margin", "prob", "loss"):
                    for combine in ("rank", "t"):
                        v = verdict_from_observations(o, statistic=stat, combine=combine, difference=ref is not None)
                        rec["tests"][f"bb-{source}-{stat}-{combine}-{ref_name or 'noref'}"] = v.log10_p
                    v = exact_verdict(o, statistic=stat, difference=ref is not None)
                    if stat == "margin":
                        vals = sus[stat] - (ref[stat] if ref is not None else 0.0)
                        rec.setdefault("diag", {})[f"{source}-{ref_name or 'noref'}"] = {
                            "true_minus_control_mean": (vals[0] - vals[1:].mean(0)).round(4).tolist(),
                            "control_sd": vals[1:].std(0, ddof=1).round(4).tolist()}
                    rec["tests"][f"bb-{source}-{stat}-perm-{ref_name or 'noref'}"] = v.log10_p
        results.append(rec)
        main_keys = ["whitebox", "grad-centred-own", "grad-centred-all", "grad-logprob-own",
                     "bb-fresh-margin-t-resnet_narrow", "bb-fresh-margin-perm-resnet_narrow",
                     "bb-fresh-margin-rank-resnet_narrow", "bb-published-margin-t-resnet_narrow",
                     "bb-published-margin-perm-resnet_narrow", "bb-published-margin-perm-noref"]
        print(json.dumps({k: rec[k] for k in ("fraction", "seed", "test_accuracy")}),
              {k: round(rec["tests"][k], 2) for k in main_keys}, f"{time.time() - t0:.0f}s", flush=True)
        out = common.RESULTS / f"{args.name}.json"
        out.write_text(json.dumps({"args": vars(args), "results": results}, indent=1, default=float))
    print("done", time.time() - t0)
    _ = math


if __name__ == "__main__":
    main()

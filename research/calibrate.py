"""Calibration of the new/optional tests on clean suspects (never trained on marks).

1. Gradient white-box: key-independent rows per clean model, scored against many random keys.
2. Black-box t / rank (difference in differences): every one of the K + 1 marked carrier sets of the probe
   cache plays the 'true' key in turn (the others are its controls); clean suspects vs the clean reference.
   Under H0 all sets are exchangeable, so each rotation is a valid null draw (draws are dependent; the
   estimate of the false-positive rate is unbiased).
"""

from __future__ import annotations

import argparse
import json

import common
import numpy as np
import torch
from evaluate import balanced, obs, stats_on, versions
from scipy.stats import kstest

from radioactive.detect.black_box import Probes, verdict_from_observations
from radioactive.detect.exact import exact_verdict
from radioactive.detect.gradient import gradient_rows, null_log10_ps


def fpr(log10_ps):
    ps = 10.0 ** np.asarray(log10_ps)
    return {f"P(p<={a})": float((ps <= a).mean()) for a in (0.01, 0.05, 0.1)} | {
        "n": int(len(ps)), "ks_p": float(kstest(ps, "uniform").pvalue), "min_log10_p": float(np.min(log10_ps))}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--keys", type=int, default=2000)
    ap.add_argument("--space", default="full")
    ap.add_argument("--probes", type=int, default=50)
    ap.add_argument("--controls", type=int, default=20)
    ap.add_argument("--cfg", default="s30")
    ap.add_argument("--epochs", type=int, default=3)
    args = ap.parse_args()
    m = common.marker()
    key = common.key(args.space, m)
    sp = common.splits()
    val_images, val_labels = sp["val"]
    ref_images, ref_labels = val_images[:2000], val_labels[:2000]
    pairs = tuple((k, k) for k in range(10))
    out = {"args": vars(args), "gradient": {}, "blackbox": {}}
    probe_images, probe_labels = balanced(val_images[2000:], val_labels[2000:], args.probes)
    vers = versions(m, key, Probes(probe_images, probe_labels), args.controls, args.cfg)
    ref_model, _ = common.suspect("resnet_narrow", 0.0, 100, epochs=args.epochs)
    ref_stats = stats_on(ref_model, vers, probe_labels)
    pooled = {}
    for seed in [int(s) for s in args.seeds.split(",")]:
        model, _ = common.suspect("resnet_narrow", 0.0, seed, epochs=args.epochs)
        for score, images_for in (("centred", "own"), ("centred", "all"), ("logprob", "own")):
            rows, _ = gradient_rows(model, m, ref_images, ref_labels, pairs, score=score, images_for=images_for)
            lp = null_log10_ps(rows, key, pairs, args.keys, seed=seed)
            out["gradient"][f"s{seed}-{score}-{images_for}"] = fpr(lp)
        sus = stats_on(model, vers, probe_labels)
        k1 = args.controls + 1
        for stat in ("margin", "prob"):
            for combine in ("t", "rank", "perm"):
                for did in (True, False):
                    name = f"{stat}-{combine}-{'did' if did else 'noref'}"
                    lps = []
                    for i in range(k1):
                        order = [i] + [j for j in range(k1) if j != i]
                        s2 = {k: v[order] for k, v in sus.items()}
                        r2 = {k: v[order] for k, v in ref_stats.items()} if did else None
                        o = obs(s2, r2, probe_labels.numpy(), "fresh", key)
                        if combine == "perm":
                            v = exact_verdict(o, statistic=stat, difference=did)
                        else:
                            v = verdict_from_observations(o, statistic=stat, combine=combine, difference=did)
                        lps.append(v.log10_p)
                    pooled.setdefault(name, []).extend(lps)
        print(seed, {k: v for k, v in out["gradient"].items() if k.startswith(f"s{seed}")}, flush=True)
    out["blackbox"] = {k: fpr(v) | {"log10_ps": [round(x, 3) for x in v]} for k, v in pooled.items()}
    for k, v in out["blackbox"].items():
        print(k, {a: b for a, b in v.items() if a != "log10_ps"})
    (common.RESULTS / f"calibration-{args.space}.json").write_text(json.dumps(out, indent=1))
    _ = torch


if __name__ == "__main__":
    main()

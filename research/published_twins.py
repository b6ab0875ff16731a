"""Published probes with control-marked twins, at scale: every image of the 1 % marked subset is a probe.

The suspect trained on x + delta(u_true); the test compares its outputs on those published images with
K control versions x + delta(u_j) marked with the *same* augmentation streams (Probes.ids = each image's
position in the marking call), so under H0 the K + 1 versions are exchangeable and rank/perm are exact.

Usage (under the heavy lock): python research/published_twins.py --controls 20 --suspects 0.05:0,0.0:0
"""

from __future__ import annotations

import argparse
import json
import time

import common
import torch
from evaluate import obs, stats_on

from radioactive._io import atomic_write_json
from radioactive.detect.black_box import Probes, marked_versions, verdict_from_observations

ARCH = "resnet_narrow"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", default="published-twins")
    ap.add_argument("--cfg", default="s30")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--controls", type=int, default=20)
    ap.add_argument("--per-class", type=int, default=55)
    ap.add_argument("--suspects", default="0.05:0,0.0:0")
    ap.add_argument("--ref", default="resnet_narrow:100")
    args = ap.parse_args()
    t0 = time.time()
    m = common.marker()
    key = common.key("full", m)
    data = common.marked_train("full", args.cfg)
    train_images, train_labels = common.splits()["train"]
    n_small = len(common.subset_indices(0.01))
    idx = data["idx"][:n_small]
    labels = train_labels[idx]
    keep = torch.cat([torch.nonzero(labels == k).flatten()[: args.per_class] for k in range(10)])
    probes = Probes(train_images[idx[keep]], labels[keep], published=data["images"][:n_small][keep],
                    ids=keep.tolist())
    versions = {}
    for j, imgs in marked_versions(m, key, Probes(probes.images, probes.labels, ids=probes.ids),
                                   num_controls=args.controls, config=common.mark_config(args.cfg), seed=0,
                                   cache_dir=common.CACHE / "probes"):
        versions[j] = imgs
    remarked = versions[0]
    same = (remarked == probes.published).all(dim=(1, 2, 3)).float().mean().item()
    maxdiff = (remarked.int() - probes.published.int()).abs().max().item()
    print(f"versions ready {time.time() - t0:.0f}s; re-marked true version equals published: {same:.3f} "
          f"(max pixel diff {maxdiff})", flush=True)
    out = {"name": args.name, "probes": len(probes), "controls": args.controls, "remark_identical": same,
           "remark_max_pixel_diff": maxdiff, "suspects": []}
    ref_arch, ref_seed = args.ref.split(":")
    ref_model, _ = common.suspect(ref_arch, 0.0, int(ref_seed), epochs=args.epochs)
    for source, true_version in (("remarked", remarked), ("published", probes.published)):
        vers = [true_version] + [versions[j] for j in range(1, args.controls + 1)]
        ref_stats = stats_on(ref_model, vers, probes.labels)
        for item in args.suspects.split(","):
            frac, seed = item.split(":")
            model, metrics = common.suspect(ARCH, float(frac), int(seed), "full", args.cfg, epochs=args.epochs)
            sus = stats_on(model, vers, probes.labels)
            rec = {"source": source, "fraction": float(frac), "seed": int(seed), "tests": {}}
            for ref in (None, ref_stats):
                o = obs(sus, ref, probes.labels.numpy(), "published", key)
                for stat in ("margin", "loss", "prob"):
                    for combine in ("rank", "t", "perm"):
                        v = verdict_from_observations(o, statistic=stat, combine=combine, difference=ref is not None)
                        rec["tests"][f"{stat}-{combine}-{'did' if ref is not None else 'noref'}"] = round(v.log10_p, 3)
            print(source, item, json.dumps(rec["tests"]), flush=True)
            out["suspects"].append(rec)
    out["seconds"] = time.time() - t0
    atomic_write_json(common.ROOT / "results" / f"{args.name}.json", out)


if __name__ == "__main__":
    main()

"""Two owners, one suspect: which keys does a model carry? (issue 12, item 2)

Owners A and B draw independent keys and mark disjoint subsets of the Fashion-MNIST owner split: in one seeded
permutation per class (the grid's selection for grid seed s), A marks the first 5 % and B the next 10 %. A's key,
marking seed and selection are the grid's for seed s (``Context.key(s)``); B's key and marking seed are the grid's
for seed s + 1000 (never a grid seed). Four suspects per seed are trained from scratch with the grid's recipe
(``configs/fashion-mnist.toml`` ``[train]``; ``--arch``, default ``resnet_narrow``; training seed
``derive_seed("training", s)``, the same for the four) on the owner split where these images are marked:

  both      A's and B's marked images          A-only   A's marked, B's clean
  B-only    B's marked, A's clean              neither  every image clean

For each suspect and each key: the white-box p-value (``radioactive.detect.whitebox_keys``: one alignment on the
grid's 2,000 reference images, each key scored as ``whitebox`` scores it) and the strongest black-box p-value
(``margin`` statistic, exact stratified permutation test, difference in differences against the grid's clean
reference model, K = 20 control sets, the grid's 500 fresh probes marked with ``[mark]`` and the owner's marking
seed; ``radioactive.detect.blackbox`` per key); then Holm's step-down across the two keys at ``--alpha`` (default
1e-3), per test. Plus, per suspect, ``--random-keys`` (default 20) random keys drawn like the owners' and never
used, scored by the white-box test on the same alignment: their p-values should be uniform (the summary pools
them: Kolmogorov-Smirnov p and the fraction at or below 0.05 and alpha).

Marked subsets, suspects, the reference model and the probes' control markings are cached under ``--workdir``
(``cache/``, as the experiment runner caches them); each suspect's record is written to ``--workdir/records/`` as
soon as it is done, so an interrupted run resumes there. Writes ``benchmarks/results/two_owners.json`` (config,
seeds, key fingerprints, versions, per-suspect records and the summary).

Heavy run (about 50-60 min on 2 cores, estimated, not measured: per seed, marking 8,250 owner images x 30 steps
at ~1,400 image-steps/s ~3 min, four 3-epoch resnet_narrow suspects ~75 s each ~5 min, the probes' 21 versions
x 500 probes x 30 steps for each of the two keys ~7.5 min, queries and white-box ~1 min; once: the clean cnn
reference model, ~1-2 min):
    flock /tmp/radioactive-heavy.lock nice -n 10 .venv/bin/python benchmarks/bench_two_owners.py --seeds 0 1 2
Smoke check (synthetic 16 x 16 data, a random tiny marker, one seed; a few seconds; writes under --workdir):
    .venv/bin/python benchmarks/bench_two_owners.py --smoke --workdir /tmp/two-owners-smoke
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from radioactive._io import atomic_write_json, versions
from radioactive.detect import (
    BlackboxSettings,
    KeyFamily,
    Probes,
    WhiteboxSettings,
    blackbox,
    detect_keys,
    whitebox_keys,
)
from radioactive.detect.null import null_seeds
from radioactive.detect.observations import model_predictor
from radioactive.detect.verdict import DEFAULT_ALPHA
from radioactive.experiment import (
    Context,
    ExperimentConfig,
    ModelSetting,
    derive_seed,
    load_config,
    replace_config,
)
from radioactive.experiment.identity import content_hash
from radioactive.key import random_key

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("bench_two_owners")
OWNERS = ("A", "B")
FRACTIONS = {"A": 0.05, "B": 0.10}  # the default; --fractions A B
OWNER_B_OFFSET = 1_000  # owner B's grid seed is s + 1000: its own key and marking seed
SUSPECTS = {"both": ("A", "B"), "A-only": ("A",), "B-only": ("B",), "neither": ()}
TESTS = ("whitebox", "blackbox")


# -- pure pieces -----------------------------------------------------------------------------------------
def owner_seeds(seed: int) -> dict[str, int]:
    """The grid seed whose key and marking seed each owner uses."""
    return {"A": seed, "B": seed + OWNER_B_OFFSET}


def disjoint_rest(first: torch.Tensor, wider: torch.Tensor) -> torch.Tensor:
    """The sorted indices of ``wider`` not in ``first`` (``first`` must lie inside ``wider``)."""
    inside = torch.isin(wider, first)
    if int(inside.sum()) != len(first):
        raise ValueError("the first subset is not inside the wider one")
    return wider[~inside].sort().values


def published_images(images: torch.Tensor, marked: dict[str, tuple[torch.Tensor, torch.Tensor]],
                     owners: tuple[str, ...]) -> torch.Tensor:
    """The owner split as a suspect's trainer sees it: ``owners``' marked images in place, the rest clean."""
    out = images.clone()
    for owner in owners:
        indices, versions_ = marked[owner]
        if len(indices):
            out[indices] = versions_
    return out


def family_row(family: KeyFamily, owners: tuple[str, ...] = OWNERS) -> dict[str, Any]:
    """Per owner: log10 p, Holm-adjusted log10 p and the decision; and the verdicts (fingerprints only)."""
    return {"test": family.verdicts[0].test,
            "log10_p": {o: v.log10_p for o, v in zip(owners, family.verdicts)},
            "holm_log10_p": dict(zip(owners, family.holm_log10_p)),
            "detected": dict(zip(owners, family.detected)),
            "verdicts": {o: v.to_dict() for o, v in zip(owners, family.verdicts)}}


def summarise(rows: list[dict[str, Any]], alpha: float) -> dict[str, Any]:
    """Per suspect kind and test: how often Holm detected each key, how often the decisions were exactly right
    (the keys of the owners whose data the suspect saw, no other), the median log10 p per key; and the pooled
    white-box p-values of the random keys against the uniform law."""
    from scipy import stats

    out: dict[str, Any] = {"alpha": alpha, "suspects": {}}
    for kind, owners in SUSPECTS.items():
        mine = [r for r in rows if r["suspect"] == kind]
        if not mine:
            continue
        out["suspects"][kind] = {"runs": len(mine), "trained_on": list(owners), **{test: {
            "detected": {o: sum(r[test]["detected"][o] for r in mine) for o in OWNERS},
            "correct": sum(all(r[test]["detected"][o] == (o in owners) for o in OWNERS) for r in mine),
            "median_log10_p": {o: statistics.median(r[test]["log10_p"][o] for r in mine) for o in OWNERS},
        } for test in TESTS}}
    log10_ps = np.array([p for r in rows for p in r["random_keys"]["log10_p"]], dtype=np.float64)
    if len(log10_ps):
        ps = 10.0 ** log10_ps
        out["random_keys"] = {"count": len(ps), "ks_uniform_p": float(stats.kstest(ps, "uniform").pvalue),
                              "fraction_at_most_0.05": float((ps <= 0.05).mean()),
                              "fraction_at_most_alpha": float((ps <= alpha).mean()),
                              "min_log10_p": float(log10_ps.min())}
    return out


def table(summary: dict[str, Any]) -> str:
    """The summary as a Markdown table: per suspect and test, median log10 p and Holm detections per key."""
    lines = ["| suspect | test | key A: median log10 p (detected) | key B: median log10 p (detected) | right |",
             "|---|---|---|---|---|"]
    for kind, entry in summary["suspects"].items():
        for test in TESTS:
            cell = entry[test]
            keys = " | ".join(f"{cell['median_log10_p'][o]:.2f} ({cell['detected'][o]}/{entry['runs']})" for o in OWNERS)
            lines.append(f"| {kind} | {test} | {keys} | {cell['correct']}/{entry['runs']} |")
    return "\n".join(lines)


# -- the experiment machinery ----------------------------------------------------------------------------
def make_config(args: argparse.Namespace) -> ExperimentConfig:
    """The grid's configuration with one model setting (``--arch``) and the black-box test as perm + DiD."""
    base = load_config(args.config, {"device": args.device})
    kwargs = {"width": 4, "feature_dim": 8} if args.smoke else {}
    detect = dataclasses.replace(base.detect, tests=("whitebox", "blackbox"), statistic="margin", combine="perm",
                                 blackbox_variants=(), alpha=args.alpha, reference_model=True)
    changes: dict[str, Any] = {}
    if args.smoke:
        changes = {"mark": {"steps": 2, "eval_draws": 0}, "train": {"epochs": 1, "batch_size": 32, "lr": 0.05},
                   "holdout": 40}
        detect = dataclasses.replace(detect, reference_images=20, probes=16, num_controls=3)
    return replace_config(base, name="two-owners", fractions=(args.fractions["A"], args.fractions["A"] + args.fractions["B"]),
                          seeds=tuple(args.seeds), models=(ModelSetting(mode="scratch", arch=args.arch, kwargs=kwargs),),
                          detect=detect, **changes)


def smoke_inputs() -> tuple[Any, dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """A random tiny cnn marker (4 classes, 16 x 16 grey) and learnable synthetic splits (a bright square in
    the label's quadrant over noise): owner 400, holdout 40, test 40 images."""
    from radioactive.marker import Marker
    from radioactive.nets import NetSpec, build_from_spec

    spec = NetSpec("cnn", 4, in_channels=1, input_size=(16, 16), kwargs={"width": 4, "feature_dim": 8})
    with torch.random.fork_rng():
        torch.manual_seed(0)
        marker = Marker.from_model(build_from_spec(spec), spec)
    gen = torch.Generator().manual_seed(0)
    data = {}
    for name, count in (("owner", 400), ("holdout", 40), ("test", 40)):
        labels = torch.arange(count) % 4
        images = torch.rand(count, 1, 16, 16, generator=gen) * 0.3
        for i, label in enumerate(labels.tolist()):
            row, col = divmod(label, 2)
            images[i, 0, 1 + 8 * row: 7 + 8 * row, 1 + 8 * col: 7 + 8 * col] += 0.6
        data[name] = ((images.clamp(0, 1) * 255).round().to(torch.uint8), labels)
    return marker, data


def owner_marks(context: Context, seed: int, fractions: dict[str, float]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """(indices into the owner split, marked uint8 images) of each owner at ``seed``: disjoint, cached."""
    seeds = owner_seeds(seed)
    first = context.selection(seed, fractions["A"])
    rest = disjoint_rest(first, context.selection(seed, fractions["A"] + fractions["B"]))
    out = {}
    for owner, indices in (("A", first), ("B", rest)):
        marked, _ = context.marked_plain(seeds[owner], indices)  # marks with context.key(seeds[owner])
        out[owner] = (indices, marked)
    return out


def suspect(context: Context, seed: int, kind: str, marks: dict[str, tuple[torch.Tensor, torch.Tensor]],
            described: dict[str, Any]) -> tuple[torch.nn.Module, float | None]:
    """The suspect ``kind`` at ``seed``, trained as the grid trains (cached): (model, test accuracy)."""
    from radioactive.nets import load_checkpoint, save_checkpoint
    from radioactive.train import fit

    path = context.cache / "two-owners" / f"suspect-{content_hash(described)}.safetensors"
    if path.is_file():
        model, _, extra = load_checkpoint(path)
        return model.to(context.device).eval(), extra.get("test_accuracy")
    images, labels = context.data["owner"]
    setting = context.config.models[0]
    start_point, _ = context.start_point(setting)
    log.info("training %s suspect %s at seed %d", setting.arch, kind, seed)
    result = fit(start_point, published_images(images, marks, SUSPECTS[kind]), labels,
                 recipe=context.config.recipe(setting), seed=derive_seed("training", seed),
                 test=context.data["test"], device=context.device, num_classes=context.num_classes)
    accuracy = result.metrics.get("test_accuracy")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(result.model.to("cpu"), path, result.spec, {"kind": "suspect", "suspect": kind, "seed": seed,
                                                                "test_accuracy": accuracy})
    return result.model.to(context.device).eval(), accuracy


def detect(context: Context, model: torch.nn.Module, seed: int, kind: str, random_keys: int) -> dict[str, Any]:
    """Both keys' white-box and black-box p-values with Holm's decisions, and the random keys' white-box ones."""
    config, alpha = context.config, context.config.detect.alpha
    seeds = owner_seeds(seed)
    keys = {owner: context.key(seeds[owner]) for owner in OWNERS}
    key_seeds = null_seeds(random_keys, int(content_hash({"random_keys": seed, "suspect": kind}), 16))
    randoms = [random_key(keys["A"], s) for s in key_seeds]
    start = time.perf_counter()
    wide = whitebox_keys(model, [keys["A"], keys["B"], *randoms], context.reference_images()[0],
                         marker=context.marker, settings=WhiteboxSettings(alpha=alpha))
    white = KeyFamily(wide.verdicts[:2], alpha=alpha)
    white_seconds = time.perf_counter() - start
    probes = Probes(*context.probes())
    reference = [model_predictor(m) for m in context.reference_models()]
    predict = model_predictor(model)
    owner_of = {keys[owner].fingerprint: owner for owner in OWNERS}
    settings = {owner: BlackboxSettings(
        num_controls=config.detect.num_controls, statistic="margin", combine="perm", reference_fit="mean",
        mark=config.mark_config(),
        seed=derive_seed("marking", seeds[owner]), mark_origin="the configuration's [mark], the owner's marking seed",
        cache_dir=context.cache / "probes", alpha=alpha) for owner in OWNERS}
    black = detect_keys([keys["A"], keys["B"]], lambda key: blackbox(
        predict, key, probes, marker=context.marker, settings=settings[owner_of[key.fingerprint]],
        reference=reference), alpha=alpha)
    return {"whitebox": family_row(white), "blackbox": family_row(black),
            "random_keys": {"count": len(randoms), "seeds": key_seeds,
                            "log10_p": [v.log10_p for v in wide.verdicts[2:]]},
            "seconds": {"whitebox": white_seconds, "blackbox": time.perf_counter() - start - white_seconds}}


def run(args: argparse.Namespace) -> dict[str, Any]:
    config = make_config(args)
    marker, data = smoke_inputs() if args.smoke else (None, None)
    workdir = Path(args.workdir)
    context = Context(config, workdir, marker=marker, data=data)
    setting = config.models[0]
    rows, fingerprints = [], {}
    for seed in config.seeds:
        seeds = owner_seeds(seed)
        fingerprints[str(seed)] = {owner: context.key(seeds[owner]).fingerprint for owner in OWNERS}
        marks = None
        for kind in args.suspects:
            described = {"benchmark": "two_owners", "model": setting.to_dict(), "recipe": config.recipe(setting).to_dict(),
                         "seed": seed, "suspect": kind, "mark": config.mark_config().to_dict(),
                         "data": context.train_fingerprint(), "fractions": args.fractions, "keys": fingerprints[str(seed)]}
            record_id = content_hash({**described, "detect": config.detect.to_dict(), "random_keys": args.random_keys})
            path = workdir / "records" / f"{kind}-s{seed}-{record_id}.json"
            if path.is_file():
                log.info("seed %d, %s: cached", seed, kind)
                rows.append(json.loads(path.read_text()))
                continue
            marks = marks if marks is not None else owner_marks(context, seed, args.fractions)
            start = time.perf_counter()
            model, accuracy = suspect(context, seed, kind, marks, described)
            row = {"suspect": kind, "seed": seed, "trained_on": list(SUSPECTS[kind]), "record_id": record_id,
                   "marked_images": {owner: len(marks[owner][0]) for owner in SUSPECTS[kind]},
                   "test_accuracy": accuracy, "key_fingerprints": fingerprints[str(seed)],
                   **detect(context, model, seed, kind, args.random_keys)}
            row["seconds"]["total"] = time.perf_counter() - start
            atomic_write_json(path, row)
            log.info("seed %d, %s: white %s, black %s", seed, kind,
                     {o: round(v, 2) for o, v in row["whitebox"]["log10_p"].items()},
                     {o: round(v, 2) for o, v in row["blackbox"]["log10_p"].items()})
            rows.append(row)
    summary = summarise(rows, config.detect.alpha)
    return {"benchmark": "two_owners", "smoke": args.smoke,
            "question": "with two owners' keys, does Holm's step-down across keys detect exactly the owners whose "
                        "data trained the suspect, and are unrelated keys' p-values uniform?",
            "config": {"experiment": config.to_dict(), "arch": args.arch, "fractions": args.fractions,
                       "owner_b_seed_offset": OWNER_B_OFFSET, "random_keys": args.random_keys,
                       "whitebox": "whitebox_keys (one alignment per suspect)",
                       "blackbox": "margin, perm, difference in differences against the clean reference model",
                       "correction": "holm", "alpha": config.detect.alpha, "workdir": str(workdir)},
            "seeds": list(config.seeds), "key_fingerprints": fingerprints, "summary": summary,
            "table": table(summary), "results": rows, "versions": versions()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "fashion-mnist.toml"),
                        help="experiment configuration: [mark], [train] and [detect] (reference images, probes, K)")
    parser.add_argument("--arch", default="resnet_narrow", help="the suspects' architecture (scratch)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--fractions", type=float, nargs=2, default=[FRACTIONS["A"], FRACTIONS["B"]],
                        metavar=("A", "B"), help="the fractions owners A and B mark, disjoint (default 0.05 0.10)")
    parser.add_argument("--suspects", nargs="+", default=list(SUSPECTS), choices=list(SUSPECTS))
    parser.add_argument("--random-keys", type=int, default=20, help="unrelated random keys per suspect (white-box)")
    parser.add_argument("--alpha", type=float, default=DEFAULT_ALPHA, help="family-wise level of Holm's decisions")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workdir", default=None,
                        help="caches and per-suspect records (default benchmarks/cache/two-owners[-smoke])")
    parser.add_argument("--out", default=None,
                        help="result JSON (default benchmarks/results/two_owners.json; with --smoke WORKDIR/two_owners.json)")
    parser.add_argument("--smoke", action="store_true", help="tiny synthetic data and sizes: checks the plumbing only")
    args = parser.parse_args(argv)
    if args.random_keys < 1:
        parser.error("--random-keys must be >= 1")
    if min(args.fractions) <= 0 or sum(args.fractions) > 1:
        parser.error(f"--fractions must be > 0 and sum to at most 1, got {args.fractions}")
    args.fractions = dict(zip(OWNERS, args.fractions))
    if args.smoke:
        args.arch, args.seeds = "cnn", args.seeds[:1]
    args.workdir = args.workdir or str(ROOT / "benchmarks" / "cache" / ("two-owners-smoke" if args.smoke else "two-owners"))
    out = Path(args.out or (Path(args.workdir) / "two_owners.json" if args.smoke
                            else ROOT / "benchmarks" / "results" / "two_owners.json"))
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    start = time.perf_counter()
    result = run(args)
    result["seconds"] = time.perf_counter() - start
    atomic_write_json(out, result)
    print(result["table"])
    random = result["summary"].get("random_keys")
    if random:
        print(f"random keys: {random['count']}, KS p (uniform) {random['ks_uniform_p']:.3f}, fraction p <= 0.05: "
              f"{random['fraction_at_most_0.05']:.3f}")
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

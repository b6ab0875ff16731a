"""What it costs to mark the black-box probes otherwise than the data was marked (issue 14, item 3).

The training data of the suspects was marked with an experiment configuration's ``[mark]`` settings
(``configs/fashion-mnist.toml``: 30 steps at lr 0.02, PSNR >= 40 dB). The black-box test marks fresh probes
and K control sets; this benchmark runs it twice on the same probes, suspects, key and reference model:

- ``config``: probes marked with the configuration's settings (what ``detect --marked-with`` does);
- ``defaults``: probes marked with the library defaults, ``MarkConfig()`` (what ``detect`` did before, and
  still does without ``--marked-with`` or marking flags).

Each variant reports the exact permutation test with difference in differences (``margin`` and ``loss``;
without a reference model, without DiD) as log10 p per suspect. Both variants are exact under H0; the
difference is power.

Suspects, two ways:

1. Given files: ``--key KEY --suspect marked=M.safetensors --suspect clean=C.safetensors
   [--reference-model R.safetensors] [--arch ARCH] [--probes fashion-mnist:holdout]``.
2. Made with the experiment runner's machinery (``--from-experiment OUT``): for each grid seed and fraction,
   the key, the marked subset and the auditor's reference model of ``radioactive experiment CONFIG --out OUT``
   (cached under ``OUT/cache``: a grid already run there is reused), a suspect trained the way the grid trains
   ``--model`` (cached under ``OUT/cache/probe-mismatch``; the grid itself keeps no suspect), and the grid's
   fresh probes (``probes`` holdout images after the white-box reference images).

3. The held-out suite's suspects (``--from-heldout OUT``, heldout/run_suite.py's output): every run record of
   the grid seeds given (``--seeds``, default 0) with its key, the suite's probes, control count, reference
   model and marking seed; the ``config`` variant then reuses the suite's cached marked probes
   (``OUT/cache/probes``), so only the ``defaults`` variant is marked anew (500 probes x 21 versions x 90
   steps per key, about 11 min on 2 cores):
       flock /tmp/radioactive-heavy.lock nice -n 10 .venv/bin/python benchmarks/bench_probe_mismatch.py \\
           --from-heldout results/heldout --seeds 0

Full run (heavy, about 20-25 min per seed on 2 cores at ~1,400 image-steps/s: the grid's marked subset, 11k
images x 30 steps, unless OUT/cache holds it; 500 probes x 21 versions at 30 and at 90 steps; two 3-epoch cnn
suspects; the reference model once):
    flock /tmp/radioactive-heavy.lock nice -n 10 .venv/bin/python benchmarks/bench_probe_mismatch.py \\
        --from-experiment results/fashion-mnist --config configs/fashion-mnist.toml --seeds 0 1 2 \\
        --fractions 0.0 0.1 --model scratch-cnn
Writes benchmarks/results/probe_mismatch.json (config, versions, key fingerprints, log10 p per variant).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

import torch

from radioactive import MarkConfig
from radioactive._io import atomic_write_json, versions
from radioactive.detect import Probes
from radioactive.detect.combine import verdict_from_observations
from radioactive.detect.observations import collect, model_predictor
from radioactive.detect.probes import first_per_class
from radioactive.experiment.config import load_config

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
STATISTICS = ("margin", "loss")
log = logging.getLogger("bench_probe_mismatch")


def variants(config_path: str) -> dict[str, MarkConfig]:
    """The two marking settings compared: the configuration's ``[mark]`` and the library defaults."""
    return {"config": load_config(config_path).mark_config(), "defaults": MarkConfig()}


def score(model: torch.nn.Module, key: Any, probes: Probes, *, marker: Any, references: list[torch.nn.Module],
          marks: dict[str, MarkConfig], seed: int, controls: int, cache: Path | None) -> dict[str, Any]:
    """log10 p of the perm test (DiD when there are references) per marking variant and statistic."""
    out: dict[str, Any] = {}
    for name, config in marks.items():
        start = time.perf_counter()
        obs = collect(model_predictor(model), key, probes, marker=marker, num_controls=controls,
                      reference=[model_predictor(r) for r in references] or None, config=config, seed=seed,
                      cache_dir=cache)
        out[name] = {statistic: verdict_from_observations(obs, statistic=statistic, combine="perm").log10_p
                     for statistic in STATISTICS}
        out[name]["seconds"] = time.perf_counter() - start
        log.info("  %s: %s", name, {k: round(v, 3) for k, v in out[name].items()})
    return out


def from_files(args: argparse.Namespace, marks: dict[str, MarkConfig]) -> tuple[list[dict[str, Any]], dict]:
    from radioactive.key import Key
    from radioactive.nets import load_suspect
    from radioactive.sources import load_labelled
    from radioactive.zoo import resolve_marker

    key = Key.load(args.key)
    marker = resolve_marker(key, args.marker)
    fresh = load_labelled(args.probes)
    picks = first_per_class(fresh.labels, args.probes_per_class, num_classes=key.num_classes)
    probes = Probes(fresh.images[picks], fresh.labels[picks], ids=[fresh.ids[i] for i in picks.tolist()])
    references = [load_suspect(path, arch=args.arch, num_classes=key.num_classes).eval()
                  for path in args.reference_model]
    rows = []
    for item in args.suspect:
        name, _, path = item.partition("=")
        log.info("suspect %s (%s)", name, path)
        model = load_suspect(path, arch=args.arch, num_classes=key.num_classes).eval()
        rows.append({"suspect": name, "path": path, "key_fingerprint": key.fingerprint,
                     "log10_p": score(model, key, probes, marker=marker, references=references, marks=marks,
                                      seed=args.seed, controls=args.controls, cache=args.cache_dir)})
    setup = {"key": args.key, "key_fingerprint": key.fingerprint, "probes": args.probes,
             "probes_per_class": args.probes_per_class, "reference_models": args.reference_model,
             "marking_seed": args.seed}
    return rows, setup


def _suspect(context: Any, model_name: str, seed: int, fraction: float) -> torch.nn.Module:
    """A suspect trained as the grid trains ``model_name`` at (seed, fraction), cached under the grid's cache."""
    from radioactive.experiment.identity import content_hash, derive_seed
    from radioactive.nets import load_checkpoint, save_checkpoint
    from radioactive.train import fit

    config = context.config
    setting = next((m for m in config.models if m.name == model_name), None)
    if setting is None:
        raise SystemExit(f"no model setting {model_name!r} in the config; it has {[m.name for m in config.models]}")
    described = {"model": setting.to_dict(), "recipe": config.recipe(setting).to_dict(), "seed": seed,
                 "fraction": fraction, "mark": config.mark_config().to_dict(), "data": context.train_fingerprint(),
                 "key": context.key(seed).fingerprint}
    path = context.cache / "probe-mismatch" / f"suspect-{content_hash(described)}.safetensors"
    if path.is_file():
        return load_checkpoint(path)[0].to(context.device).eval()
    images, labels = context.data["owner"]
    indices, marked, _ = context.marked_subset(seed, fraction)
    published = images.clone()
    if len(indices):
        published[indices] = marked
    start_point, teacher = context.start_point(setting)
    log.info("training %s at seed %d, fraction %g", model_name, seed, fraction)
    result = fit(start_point, published, labels, recipe=config.recipe(setting), seed=derive_seed("training", seed),
                 test=context.data["test"], teacher=teacher, device=context.device, num_classes=context.num_classes)
    path.parent.mkdir(parents=True, exist_ok=True)
    spec = result.spec if result.spec is not None else context.init_spec(setting)
    save_checkpoint(result.model.to("cpu"), path, spec, {"kind": "suspect", **{k: str(v) for k, v in described.items()},
                                                        "test_accuracy": result.metrics.get("test_accuracy")})
    return result.model.to(context.device).eval()


def from_experiment(args: argparse.Namespace, marks: dict[str, MarkConfig]) -> tuple[list[dict[str, Any]], dict]:
    from radioactive.experiment.context import Context
    from radioactive.experiment.identity import derive_seed

    config = load_config(args.config)
    args.controls = args.controls or config.detect.num_controls
    context = Context(config, args.from_experiment)
    probes = Probes(*context.probes())
    references = context.reference_models()
    rows = []
    for seed in args.seeds:
        key = context.key(seed)
        for fraction in args.fractions:
            model = _suspect(context, args.model, seed, fraction)
            log.info("seed %d, fraction %g", seed, fraction)
            rows.append({"suspect": f"{args.model}-f{fraction:g}-s{seed}", "seed": seed, "fraction": fraction,
                         "key_fingerprint": key.fingerprint,
                         "log10_p": score(model, key, probes, marker=context.marker, references=references,
                                          marks=marks, seed=derive_seed("marking", seed),
                                          controls=args.controls,
                                          cache=context.cache / "probes")})
    setup = {"experiment_out": str(args.from_experiment), "model": args.model, "seeds": args.seeds,
             "fractions": args.fractions, "probes": len(probes), "reference_models": len(references),
             "experiment": config.to_dict()}
    return rows, setup


def from_heldout(args: argparse.Namespace, marks: dict[str, MarkConfig]) -> tuple[list[dict[str, Any]], dict]:
    """The held-out suite's suspects (the seeds in ``args.seeds``), scored with the suite's own probes and reference."""
    import importlib.util

    from radioactive.key import Key
    from radioactive.zoo import resolve_marker

    spec = importlib.util.spec_from_file_location("bench_references", ROOT / "benchmarks" / "bench_references.py")
    bench_references = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_references)
    out = Path(args.from_heldout)
    suspects, reference_paths, shared = bench_references.from_heldout(out)
    suspects = [s for s in suspects if s["name"].rsplit("-s", 1)[1] in {str(seed) for seed in args.seeds}]
    device = torch.device("cpu")
    references = [bench_references.load_model({"weights": path}, 10, device) for path in reference_paths]
    args.controls = args.controls or shared["controls"]
    args.probe_slice, args.probes = shared["probe_slice"], shared.get("probes", "fashion-mnist:holdout")
    rows = []
    markers: dict[str, Any] = {}
    for entry in suspects:
        key = Key.load(entry["key"])
        if key.fingerprint not in markers:
            markers[key.fingerprint] = resolve_marker(key, None)
        model = bench_references.load_model(entry, key.num_classes, device)
        suite_marks = {**marks, "config": MarkConfig.from_dict(dict(entry["mark"]))}
        log.info("suspect %s", entry["name"])
        rows.append({"suspect": entry["name"], "fraction": entry["fraction"], "key_fingerprint": key.fingerprint,
                     "weights": entry["weights"],
                     "log10_p": score(model, key, bench_references.probes_for(args, key),
                                      marker=markers[key.fingerprint], references=references, marks=suite_marks,
                                      seed=entry["mark_seed"], controls=args.controls,
                                      cache=out / "cache" / "probes")})
    setup = {"heldout_out": str(out), "seeds": args.seeds, "probe_slice": args.probe_slice,
             "reference_models": reference_paths, "suite": shared}
    return rows, setup


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "fashion-mnist.toml"),
                        help="experiment configuration whose [mark] marked the suspects' data")
    parser.add_argument("--controls", type=int, default=None, help="K (default: the config's num_controls, else 20)")
    parser.add_argument("--out", default=str(RESULTS / "probe_mismatch.json"))
    given = parser.add_argument_group("given suspects")
    given.add_argument("--key")
    given.add_argument("--marker", default=None, help="marking network (default: the one the key records)")
    given.add_argument("--suspect", action="append", default=[], metavar="NAME=PATH")
    given.add_argument("--reference-model", action="append", default=[], metavar="PATH")
    given.add_argument("--arch", default=None, help="architecture of bare suspect weights")
    given.add_argument("--probes", default="fashion-mnist:holdout")
    given.add_argument("--probes-per-class", type=int, default=50)
    given.add_argument("--seed", type=int, default=0, help="marking seed of the probes")
    given.add_argument("--cache-dir", type=Path, default=None, help="cache of marked control sets")
    grid = parser.add_argument_group("suspects made like the experiment runner's")
    grid.add_argument("--from-experiment", default=None, metavar="OUT")
    grid.add_argument("--from-heldout", default=None, metavar="OUT", help="the held-out suite's output folder")
    grid.add_argument("--model", default="scratch-cnn", help="model setting name in the config")
    grid.add_argument("--seeds", type=int, nargs="+", default=[0])
    grid.add_argument("--fractions", type=float, nargs="+", default=[0.0, 0.1])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    marks = variants(args.config)
    start = time.perf_counter()
    if args.from_heldout:
        rows, setup = from_heldout(args, marks)
    elif args.from_experiment:
        rows, setup = from_experiment(args, marks)
    else:
        if not args.key or not args.suspect:
            parser.error("give --key and --suspect NAME=PATH (repeat), or --from-experiment OUT")
        args.controls = args.controls or 20
        rows, setup = from_files(args, marks)
    result = {
        "benchmark": "probe_mismatch",
        "question": "log10 p of the black-box perm test when the probes are marked with the data's settings "
                    "(config) or with the library defaults (defaults)",
        "config": {"config_file": args.config, "controls": args.controls, "statistics": list(STATISTICS),
                   "combine": "perm", "difference_in_differences": bool(setup.get("reference_models")),
                   "marking": {name: config.to_dict() for name, config in marks.items()}, **setup},
        "results": rows,
        "seconds": time.perf_counter() - start,
        "versions": versions(),
    }
    atomic_write_json(args.out, result)
    for row in rows:
        print(row["suspect"], {name: round(v["margin"], 2) for name, v in row["log10_p"].items()})
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

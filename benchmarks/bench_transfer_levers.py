"""Transfer levers on suspects this project never trained (issue 25): power on the open held-out suite and
calibration on its clean suspects.

Levers read from one collection of observations per suspect (``radioactive.detect.observations.collect``: the
probes marked with the key and K control carrier sets, queried on the suspect and on every reference):

- ``none``: margin / loss, exact permutation test, no reference;
- ``mean-cnn``: difference in differences against one clean ``cnn`` (the suite's auditor today);
- ``mean-bank``: difference in differences against the mean of the reference bank (``radioactive references``);
- ``matched`` / ``matched-class``: the suspect's leave-one-out prediction from the bank subtracted
  (``radioactive.detect.matched``);
and the probe lever (item 4): ``--probes N`` fresh held-out probes (500 in the suite; all 3,000 the auditor
holds besides the white-box reference images).

Power (``power``): the open suite's suspects (heldout/suite.toml, trained by heldout/train.py through
heldout/run_suite.py's Suite and cached in results/heldout/cache), the given pairs x seeds x fractions; one JSON
per suspect in ``OUT/power/`` (resumable), and the table ``OUT/power.json``.

Calibration (``calibration``): ``--keys`` random keys (never the suite's) against the open suite's clean suspects
(fraction 0, so H0 holds: third-party models the project did not train), ``--probes-per-class`` probes and
``--controls`` K, probes marked with the settings users get (``MarkConfig()``), every lever, FPR at 0.01 / 0.05 / 0.1 against its binomial 99 % upper bound and the KS p.

    flock /tmp/radioactive-heavy.lock .venv/bin/python benchmarks/bench_transfer_levers.py power \\
        --bank fashion-mnist --pairs preact_resnet-adamw convmixer-mixup_ema --seeds 0 1 2 \\
        --fractions 0.1 0.0 0.05 --probes 500 3000 --out benchmarks/results/transfer_levers
    flock /tmp/radioactive-heavy.lock .venv/bin/python benchmarks/bench_transfer_levers.py calibration \\
        --bank fashion-mnist --pairs preact_resnet-adamw convmixer-mixup_ema --keys 100 \\
        --out benchmarks/results/transfer_levers
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from radioactive._io import atomic_write_json, versions
from radioactive.detect import Probes
from radioactive.detect.combine import verdict_from_observations
from radioactive.detect.observations import Observations, collect
from radioactive.key import Key
from radioactive.nets import load_checkpoint
from radioactive.train.bank import bank_paths
from radioactive.zoo import SHIPPED_BANKS, shipped_bank

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
STATISTICS = ("margin", "loss")
LEVERS = ("none", "mean-cnn", "mean-bank", "matched", "matched-class")
SMOKE = False


def module(path: Path, name: str):
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


def say(message: str) -> None:
    print(f"[levers {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def lever_values(obs: Observations, cnn_index: int) -> dict[str, float]:
    """log10 p of every lever x statistic (perm) on one collection (``obs.references``: the bank, in order)."""
    out = {}
    single = Observations(**{**obs.__dict__, "references": (obs.references[cnn_index],)})
    bare = Observations(**{**obs.__dict__, "references": ()})
    for statistic in STATISTICS:
        out[f"none/{statistic}"] = verdict_from_observations(bare, statistic=statistic, combine="perm").log10_p
        out[f"mean-cnn/{statistic}"] = verdict_from_observations(single, statistic=statistic, combine="perm").log10_p
        out[f"mean-bank/{statistic}"] = verdict_from_observations(obs, statistic=statistic, combine="perm").log10_p
        for fit in ("matched", "matched-class"):
            out[f"{fit}/{statistic}"] = verdict_from_observations(obs, statistic=statistic, combine="perm",
                                                                  reference_fit=fit).log10_p
    return out


def load_bank(folder: str, device: torch.device) -> tuple[list[Any], list[dict], int]:
    models, info, cnn_index = [], [], None
    if folder in SHIPPED_BANKS and not Path(folder).exists():
        folder = shipped_bank(folder)
    for i, path in enumerate(bank_paths(folder)):
        model, spec, extra = load_checkpoint(path)
        models.append(model.to(device).eval())
        info.append({"file": path.name, "arch": spec.arch, "test_accuracy": (extra.get("metrics") or {}).get(
            "test_accuracy"), "member": extra.get("bank_member")})
        if cnn_index is None and spec.arch.endswith("cnn"):
            cnn_index = i
    if cnn_index is None:
        raise SystemExit(f"{folder}: the bank needs a cnn member (the suite's single reference today)")
    return models, info, cnn_index


def suite_config(run_suite, fractions: list[float]) -> dict[str, Any]:
    """heldout/suite.toml with its deep fractions cut to those measured here (a seed's marking covers its top
    fraction: 10 % instead of 20 % halves the owner's marking). The marked images, key and settings are the
    suite's; the marking streams are numbered within the marked subset, so the marks themselves are a fresh
    draw of the same marking, and the suspects are trained anew (the suite keeps no weights)."""
    config = run_suite.load_config(ROOT / "heldout" / "suite.toml")
    config["runs"]["deep_fractions"] = sorted(set(fractions) | {0.0})
    if SMOKE:  # seconds, for checking the script: 600 owner images, 1 epoch, 2 marking steps
        config["data"]["train_images"], config["epochs"], config["mark"] = 600, 1, {"steps": 2}
        config["detect"]["num_controls"] = 3
    return config


def open_suite(args: argparse.Namespace):
    """(run_suite module, config, Suite, reference predictors, bank info, index of the bank's cnn, pairs)."""
    run_suite = module(ROOT / "heldout" / "run_suite.py", "heldout_run_suite")
    config = suite_config(run_suite, [0.0, 0.05, 0.1])
    suite = run_suite.Suite(config, Path(args.out) / "smoke-cache" if SMOKE else ROOT / "results" / "heldout")
    bank, bank_info, cnn_index = load_bank(args.bank, suite.device)
    references = [suite.predictor(m) for m in bank]
    return run_suite, config, suite, references, bank_info, cnn_index, {p["name"]: p for p in config["pairs"]}


def power(args: argparse.Namespace) -> None:
    run_suite, config, suite, references, bank_info, cnn_index, pairs = open_suite(args)
    out = Path(args.out)
    holdout, holdout_labels = suite.data["holdout"]
    start_probes = config["detect"]["reference_images"]
    for fraction in args.fractions:
        for seed in args.seeds:
            for name in args.pairs:
                record_path = out / "power" / f"{name}-{fraction:g}-seed{seed}.json"
                earlier = json.loads(record_path.read_text()) if record_path.is_file() else {}
                missing = [c for c in args.probes if str(c) not in earlier.get("log10_p", {})]
                if not missing:
                    say(f"{record_path.name}: done earlier")
                    continue
                run = {"pair": pairs[name], "fraction": float(fraction), "seed": int(seed)}
                t0 = time.perf_counter()
                indices, marked, _ = suite.marked(seed, fraction)
                model, trained = suite.train(run, indices, marked)
                key = suite.key(seed)
                levers = dict(earlier.get("log10_p", {}))
                for count in missing:
                    probes = Probes(holdout[start_probes:start_probes + count],
                                    holdout_labels[start_probes:start_probes + count])
                    obs = collect(suite.predictor(model), key, probes, marker=suite.marker,
                                  num_controls=config["detect"]["num_controls"], reference=references,
                                  config=suite.mark_config, seed=run_suite.seed_of(config, "marking", seed),
                                  cache_dir=suite.cache / "probes")
                    levers[str(count)] = lever_values(obs, cnn_index)
                record = {"pair": name, "fraction": fraction, "seed": seed, "key_fingerprint": key.fingerprint,
                          "test_accuracy": trained["test_accuracy"], "marked_images": len(indices),
                          "queries_per_probe_set": {c: int(c) * (config["detect"]["num_controls"] + 1)
                                                    for c in levers},
                          "log10_p": levers, "seconds": time.perf_counter() - t0 + earlier.get("seconds", 0.0)}
                atomic_write_json(record_path, record)
                say(f"{record_path.name}: " + ", ".join(f"{c}/{k} {v:.2f}" for c, lv in levers.items()
                                                         for k, v in lv.items() if k.endswith("margin")))
    records = [json.loads(p.read_text()) for p in sorted((out / "power").glob("*.json"))]
    table: dict[str, Any] = {}
    counts = sorted({c for r in records for c in r["log10_p"]} | set(map(str, args.probes)), key=int)
    for count in counts:  # every probe count measured so far, not only this invocation's
        for lever in (f"{name}/{stat}" for name in LEVERS for stat in STATISTICS):
            for fraction in sorted({r["fraction"] for r in records}):
                values = [r["log10_p"][count][lever] for r in records if r["fraction"] == fraction
                          and count in r["log10_p"]]
                if values:
                    table.setdefault(count, {}).setdefault(lever, {})[f"{fraction:g}"] = {
                        "median": float(np.median(values)), "n": len(values)}
    earlier_record = json.loads((out / "power.json").read_text()) if (out / "power.json").is_file() else {}
    commands = [c for c in earlier_record.get("commands", [earlier_record.get("command")]) if c]
    command = " ".join(sys.argv)
    atomic_write_json(out / "power.json", {
        "what": "median log10 p per lever over the open suite's suspects (exact permutation test)",
        "command": command, "commands": commands + ([command] if command not in commands else []), "suite": "heldout/suite.toml",
        # every record's pair and seed, not only this invocation's (the table covers them all)
        "pairs": sorted({r["pair"] for r in records}), "seeds": sorted({r["seed"] for r in records}),
        "bank": bank_info, "num_controls": config["detect"]["num_controls"], "mark": suite.mark_config.to_dict(),
        "table": table, "records": records, "versions": versions()})


def calibration(args: argparse.Namespace) -> None:
    calib = module(ROOT / "benchmarks" / "bench_calibration.py", "bench_calibration")
    run_suite, config, suite, references, bank_info, cnn_index, pairs = open_suite(args)
    suspects = {}
    for name in args.pairs:
        run = {"pair": pairs[name], "fraction": 0.0, "seed": int(args.suspect_seed)}
        indices, marked, _ = suite.marked(run["seed"], 0.0)
        suspects[name] = suite.predictor(suite.train(run, indices, marked)[0])
    test_images, test_labels = suite.data["test"]
    probes = calib.balanced_probes(test_images, test_labels, args.probes_per_class)
    from radioactive.mark import MarkConfig

    # The marking settings users get (MarkConfig's defaults), unless --mark suite (the suite's data marking).
    base = suite.mark_config.to_dict() if args.mark == "suite" else MarkConfig().to_dict()
    mark = MarkConfig(**{**base, **({"steps": args.mark_steps} if args.mark_steps else {})})
    log10_ps: dict[str, dict[str, list[float]]] = {name: {} for name in suspects}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="radioactive-levers-") as cache:
        for i in range(args.keys):
            key = Key.generate(suite.marker.info, seed=5_000_000 + i)  # no other benchmark's keys
            for name, predict in suspects.items():
                obs = collect(predict, key, probes, marker=suite.marker, num_controls=args.controls,
                              reference=references, config=mark, seed=i, cache_dir=cache)
                for lever, value in lever_values(obs, cnn_index).items():
                    log10_ps[name].setdefault(lever, []).append(value)
            if (i + 1) % 10 == 0:
                say(f"{i + 1}/{args.keys} keys ({time.perf_counter() - start:.0f} s)")
    cells = {name: {lever: calib.fpr_check(np.array(v)) | {"log10_p": v} for lever, v in levers.items()}
             for name, levers in log10_ps.items()}
    ok = all(c[f"ok@{a}"] for levers in cells.values() for c in levers.values() for a in (0.01, 0.05, 0.1))
    out = Path(args.out)
    atomic_write_json(out / "calibration.json", {
        "what": "false-positive rates of every transfer lever on clean third-party suspects, random keys",
        "command": " ".join(sys.argv), "suspects": {n: f"heldout/suite.toml {n}, fraction 0, seed {args.suspect_seed}"
                                                   for n in suspects},
        "bank": bank_info, "keys": args.keys, "probes": len(probes.labels), "num_controls": args.controls,
        "mark": mark.to_dict(), "cells": cells, "ok": ok, "seconds": time.perf_counter() - start,
        "versions": versions()})
    say(f"calibration ok={ok}: " + "; ".join(f"{n} {lever} fpr@0.05 {c['fpr@0.05']:.2f}" for n, lv in cells.items()
                                            for lever, c in lv.items() if lever.endswith("margin")))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    for name in ("power", "calibration"):
        p = sub.add_parser(name)
        p.add_argument("--bank", default="fashion-mnist",
                       help="a reference bank folder (radioactive references), or the shipped bank's name (default)")
        p.add_argument("--pairs", nargs="+", default=["preact_resnet-adamw", "convmixer-mixup_ema"])
        p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "transfer_levers"))
        p.add_argument("--smoke", action="store_true", help="tiny settings, to check the script in seconds")
    power_parser, calibration_parser = sub.choices["power"], sub.choices["calibration"]
    power_parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    power_parser.add_argument("--fractions", type=float, nargs="+", default=[0.1, 0.0, 0.05])
    power_parser.add_argument("--probes", type=int, nargs="+", default=[500, 3000])
    calibration_parser.add_argument("--keys", type=int, default=100)
    calibration_parser.add_argument("--suspect-seed", type=int, default=0)
    calibration_parser.add_argument("--probes-per-class", type=int, default=10)
    calibration_parser.add_argument("--controls", type=int, default=9)
    calibration_parser.add_argument("--mark", choices=["defaults", "suite"], default="defaults",
                                    help="probes marked with MarkConfig's defaults (what users get) or the suite's")
    calibration_parser.add_argument("--mark-steps", type=int, default=0, help="override the marking steps")
    args = parser.parse_args(argv)
    global SMOKE
    SMOKE = args.smoke
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    (power if args.what == "power" else calibration)(args)


if __name__ == "__main__":
    main()

"""Probe levers (issue 10, part 2): does marking the black-box probes harder, or across classes, raise the power
of the exact test on the held-out suite's suspects?

Fresh probes are never published, so how they are marked is the auditor's choice. Every variant marks the key's
version and the K control versions the same way (same images, settings, per-image streams and, in cross mode,
target classes), so every variant is exact under H0; only power changes. Variants (``MODE-psnrDB-stepsN``):

- ``same-psnr40-steps30``: the baseline, the suite's own marking (steps 30, lr 0.02, PSNR >= 40 dB), same class;
- strength: the suite's marking with a PSNR floor of 35 or 30 dB (``--psnr-floors``) and/or 90 steps
  (``--steps``), lr unchanged;
- ``cross-*``: cross-class probes (``collect(..., probe_mode="cross")``: each probe marked along another class's
  carrier and read in that class's score), at the suite's marking and at every strength.

For every seed-0 suspect of the suite (``--seeds``), its key, the suite's 500 probes (holdout 2000:2500), K = 20
and marking seed, and per variant: log10 p of the exact stratified permutation test (``margin`` and ``loss``), with
the suite's reference model (difference in differences) and without; and the carrier-level signal relative to
the carrier-to-carrier spread: with ``R_j`` the mean over classes of version j's statistic, ``set_z = (R_0 -
mean R_ctrl) / sd R_ctrl`` (the key's mean response in units of the control sets' spread), and ``class_z``, the
mean over classes of ``(x_c0 - mean_j x_cj) / sd_j x_cj`` over the controls. A lever that raises the key's response
but raises the control sets' spread as much (stronger marks move every carrier's intrinsic effect too) leaves
both ratios, and the power, unchanged. The summary gives the median per variant, statistic, DiD and fraction.

Marked probes are cached (owner-only) under ``OUT/cache/probes-levers``; the baseline's are first copied from
the suite's own cache (``OUT/cache/probes``, read only) when present.

Heavy run (one key at seed 0; marking costs 500 probes x 21 versions x steps per variant, at ~1,400
image-steps/s on 2 cores: 225 s at 30 steps, 675 s at 90; 12 variants = 5 x 225 s (the baseline comes from the
suite's cache) + 6 x 675 s = about 86 min of marking; then 21 x 500 queries of each of the 16 seed-0 suspects
and the reference per variant, about 8 s each, about 26 min; about 2 h in all, more when the suite still runs):
    flock /tmp/radioactive-heavy.lock nice -n 10 .venv/bin/python benchmarks/bench_probe_levers.py \\
        --from-heldout results/heldout --seeds 0
Writes benchmarks/results/probe_levers.json (config, versions, marker and key fingerprints, reference hashes,
per suspect and variant the log10 p and ratios, the PSNR of each variant's key-marked probes, the summary).
Smoke (seconds; a private cache and output): ``--limit-suspects 1 --probe-count 40 --controls 2 --variants
same-psnr40-steps30 cross-psnr30-steps30 --steps-override 2 --cache-dir /tmp/levers-cache --out /tmp/levers.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import logging
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from radioactive._io import atomic_write_json, sha256_file, versions
from radioactive.detect import Probes
from radioactive.detect.combine import verdict_from_observations
from radioactive.detect.observations import collect, statistic_values
from radioactive.detect.probes import _cache_dir, cross_targets, marked_versions
from radioactive.key import Key
from radioactive.mark import MarkConfig, psnr

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
STATISTICS = ("margin", "loss")
log = logging.getLogger("bench_probe_levers")


def bench_references():
    """benchmarks/bench_references.py as a module (its from_heldout, load_model, predictor, probes_for)."""
    spec = importlib.util.spec_from_file_location("bench_references", ROOT / "benchmarks" / "bench_references.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def variants(suite: MarkConfig, floors: list[float], steps: list[int], modes: list[str]) -> dict[str, tuple[str, MarkConfig]]:
    """``{name: (probe mode, MarkConfig)}``: the suite's marking with every PSNR floor and step count, per mode."""
    out = {}
    for mode in modes:
        for floor in [suite.min_psnr, *[f for f in floors if f != suite.min_psnr]]:
            for count in [suite.steps, *[s for s in steps if s != suite.steps]]:
                out[f"{mode}-psnr{floor:g}-steps{count}"] = (mode, dataclasses.replace(suite, min_psnr=floor, steps=count))
    return out


def signal_to_spread(values: np.ndarray) -> dict[str, float]:
    """The key's response against the control sets' spread; ``values`` ``(K + 1, C)``, row 0 the key."""
    per_set = values.mean(axis=1)  # R_j: version j's statistic averaged over classes
    controls = per_set[1:]
    spread = float(controls.std(ddof=1))
    response = float(per_set[0] - controls.mean())
    class_sd = values[1:].std(axis=0, ddof=1)
    class_z = (values[0] - values[1:].mean(axis=0)) / np.where(class_sd > 0, class_sd, np.nan)
    return {"key_response": response, "control_spread": spread,
            "set_z": response / spread if spread > 0 else float("nan"), "class_z": float(np.nanmean(class_z))}


def seed_baseline_cache(suite_cache: Path, cache: Path, key: Key) -> int:
    """Copy the suite's cached marked probes of ``key`` into ``cache`` (the suite's folder stays untouched);
    collect re-validates every file it reads (key, probes, settings and version in its metadata)."""
    copied = 0
    for path in sorted(suite_cache.glob(f"{key.fingerprint}-*.safetensors")) if suite_cache.is_dir() else []:
        target = cache / path.name
        if not target.exists():
            shutil.copyfile(path, target)
            target.chmod(0o600)
            copied += 1
    return copied


def key_psnr(marker, key: Key, probes: Probes, config: MarkConfig, seed: int, cache: Path, mode: str) -> dict:
    """PSNR of the key-marked probes of a variant, read back from the cache collect filled."""
    targets = cross_targets(probes.labels, key.num_classes) if mode == "cross" else None
    _, images = next(marked_versions(marker, key, probes, num_controls=0, config=config, seed=seed, cache_dir=cache,
                                     targets=targets))
    values = psnr(images.float() / 255, probes.images.float() / 255)
    finite = values[torch.isfinite(values)]
    return {"psnr_min": float(values.min()), "psnr_mean": float(finite.mean()) if finite.numel() else None}


def score(obs, did: bool) -> dict[str, Any]:
    out = {}
    for statistic in STATISTICS:
        verdict = verdict_from_observations(obs, statistic=statistic, combine="perm", difference=did)
        out[statistic] = {"log10_p": verdict.log10_p, **signal_to_spread(statistic_values(obs, statistic, did)[1])}
    return out


def summarise(rows: list[dict[str, Any]], names: list[str]) -> list[dict[str, Any]]:
    """Median log10 p and ratios per variant, statistic, DiD and fraction."""
    out = []
    for fraction in sorted({r["fraction"] for r in rows}):
        group = [r for r in rows if r["fraction"] == fraction]
        for name in names:
            for did in ("did", "no_did"):
                for statistic in STATISTICS:
                    cells = [r["variants"][name][did][statistic] for r in group if name in r["variants"]]
                    if not cells:
                        continue
                    med = {k: statistics.median(c[k] for c in cells) for k in ("log10_p", "set_z", "class_z")}
                    out.append({"variant": name, "fraction": fraction, "difference_in_differences": did == "did",
                                "statistic": statistic, "suspects": len(cells), "median_log10_p": med["log10_p"],
                                "median_set_z": med["set_z"], "median_class_z": med["class_z"],
                                "below_1e-3": sum(c["log10_p"] <= -3 for c in cells)})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from-heldout", type=Path, required=True, metavar="OUT", help="the suite's output folder")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--modes", nargs="+", default=["same", "cross"], choices=["same", "cross"])
    parser.add_argument("--psnr-floors", type=float, nargs="+", default=[35.0, 30.0])
    parser.add_argument("--steps", type=int, nargs="+", default=[90])
    parser.add_argument("--variants", nargs="+", default=None, help="only these variant names")
    parser.add_argument("--controls", type=int, default=None, help="K (default: the suite's)")
    parser.add_argument("--limit-suspects", type=int, default=None, help="smoke: the first N suspects only")
    parser.add_argument("--probe-count", type=int, default=None, help="smoke: the first N of the suite's probes")
    parser.add_argument("--steps-override", type=int, default=None, help="smoke: every variant at this many steps")
    parser.add_argument("--cache-dir", type=Path, default=None, help="default OUT/cache/probes-levers")
    parser.add_argument("--out", type=Path, default=RESULTS / "probe_levers.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from radioactive.zoo import resolve_marker

    refs = bench_references()
    out_dir = args.from_heldout
    suspects, reference_paths, shared = refs.from_heldout(out_dir)
    suspects = [s for s in suspects if s["info"].get("seed") in set(args.seeds)][: args.limit_suspects]
    if not suspects:
        raise SystemExit(f"no suspects of seeds {args.seeds} in {out_dir}/runs")
    controls = args.controls or shared["controls"]
    probe_args = argparse.Namespace(probes="fashion-mnist:holdout", probe_slice=shared["probe_slice"],
                                    probes_per_class=None)
    cache = _cache_dir(args.cache_dir or out_dir / "cache" / "probes-levers")
    device = torch.device("cpu")
    references = [refs.load_model({"weights": path}, 10, device) for path in reference_paths]
    reference_predict = [refs.predictor(r, device) for r in references]
    markers, probe_sets, marks, psnrs, rows = {}, {}, {}, {}, []
    start = time.perf_counter()
    for number, entry in enumerate(suspects, 1):
        key = Key.load(entry["key"])
        if key.fingerprint not in markers:
            markers[key.fingerprint] = resolve_marker(key, None)
            probes = refs.probes_for(probe_args, key)
            if args.probe_count:
                probes = Probes(probes.images[: args.probe_count], probes.labels[: args.probe_count])
            probe_sets[key.fingerprint] = probes
            log.info("key %s: %d suite cache files copied", key.fingerprint,
                     seed_baseline_cache(out_dir / "cache" / "probes", cache, key))
        marker, probes = markers[key.fingerprint], probe_sets[key.fingerprint]
        suite_mark = MarkConfig.from_dict(dict(entry["mark"]))
        chosen = variants(suite_mark, args.psnr_floors, args.steps, args.modes)
        if args.variants:
            chosen = {name: chosen[name] for name in args.variants if name in chosen}
        if args.steps_override is not None:  # smoke: renamed after the steps they really get
            chosen = {f"{n.rsplit('-steps', 1)[0]}-steps{args.steps_override}": (m, dataclasses.replace(
                c, steps=args.steps_override)) for n, (m, c) in chosen.items()}
        marks.update({name: {"probe_mode": mode, "mark": config.to_dict()} for name, (mode, config) in chosen.items()})
        model = refs.load_model(entry, key.num_classes, device)
        row = {"suspect": entry["name"], "fraction": entry["fraction"], "key_fingerprint": key.fingerprint,
               "weights": entry["weights"], "weights_sha256": sha256_file(entry["weights"]), "info": entry["info"],
               "mark_seed": entry["mark_seed"], "suite_log10_p": entry.get("suite_log10_p"), "variants": {}}
        for name, (mode, config) in chosen.items():
            began = time.perf_counter()
            obs = collect(refs.predictor(model, device), key, probes, marker=marker, num_controls=controls,
                          reference=reference_predict, config=config, seed=entry["mark_seed"], cache_dir=cache,
                          probe_mode=mode)
            row["variants"][name] = {"did": score(obs, True), "no_did": score(obs, False),
                                     "seconds": time.perf_counter() - began}
            if (key.fingerprint, name) not in psnrs:
                psnrs[key.fingerprint, name] = key_psnr(marker, key, probes, config, entry["mark_seed"], cache, mode)
            log.info("[%d/%d] %s %s: margin DiD %.2f, no DiD %.2f (%.0f s)", number, len(suspects), entry["name"],
                     name, row["variants"][name]["did"]["margin"]["log10_p"],
                     row["variants"][name]["no_did"]["margin"]["log10_p"], time.perf_counter() - began)
        rows.append(row)
    result = {
        "benchmark": "probe_levers",
        "question": "log10 p of the exact black-box perm test when the fresh probes are marked more strongly (lower "
                    "PSNR floor, more steps) and/or across classes, on the held-out suite's suspects",
        "command": "flock /tmp/radioactive-heavy.lock nice -n 10 .venv/bin/python benchmarks/bench_probe_levers.py "
                   + " ".join(argv if argv is not None else sys.argv[1:]),
        "config": {"heldout_out": str(out_dir), "seeds": args.seeds, "probe_slice": shared["probe_slice"],
                   "probe_count": len(next(iter(probe_sets.values()))), "controls": controls, "combine": "perm",
                   "statistics": list(STATISTICS), "variants": marks, "smoke": bool(args.probe_count or
                   args.limit_suspects or args.steps_override is not None), "cache_dir": str(cache),
                   "ratios": "set_z = (R_key - mean R_controls) / sd R_controls with R = a version's statistic "
                             "averaged over classes; class_z = mean over classes of the key's z among the controls"},
        "references": [{"path": p, "sha256": sha256_file(p)} for p in reference_paths],
        "marker_sha256": sorted({m.info.weights_sha256 for m in markers.values()}),
        "key_fingerprints": sorted(markers),
        "key_psnr": {f"{fp}/{name}": v for (fp, name), v in psnrs.items()},
        "versions": versions(),
        "summary": summarise(rows, list(marks)),
        "suspects": rows,
        "seconds": time.perf_counter() - start,
    }
    atomic_write_json(args.out, result)
    for line in result["summary"]:
        if line["statistic"] == "margin":
            log.info("%-22s f=%-4g %-6s median log10 p %.2f, set_z %.2f", line["variant"], line["fraction"],
                     "DiD" if line["difference_in_differences"] else "no DiD", line["median_log10_p"],
                     line["median_set_z"])
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

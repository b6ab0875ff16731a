"""Several reference models for difference in differences: the black-box p-values with 0, 1, 3 and 5 references.

For every suspect (clean and marked, each with the key its data was marked with) the exact stratified
permutation test (``margin`` and ``loss``, ``--variants``) is computed without difference in differences
(0 references) and minus the mean response of the first n references, n in ``--counts``. One marking of the
probes and one pass of queries per suspect serve every count and variant: the references' statistics are
collected once (:class:`radioactive.detect.observations.Observations` keeps each one) and the counts take the
first n of them, in the order given. With references, the record also holds the references-alone test (their
mean response against the controls, both tails) that every audit with this key and these references shares.

Suspects, one of:
  --from-heldout OUT   the held-out suite's output folder (heldout/run_suite.py): every run record's suspect,
                       its key, the probes, controls and marking settings and seed the suite used; the suite's
                       own reference model(s) come first, so count 1 reproduces the suite's difference in
                       differences.
  --manifest FILE      a JSON list of {"name", "weights", "key", "fraction", and optionally "arch" (for
                       radioactive.nets.load_suspect), or "builder": "file.py:callable" with "builder_kwargs"
                       (a network to load the safetensors state dict into), "mark" (MarkConfig fields),
                       "mark_seed"}.
  --suspects DIR --key KEY   every .safetensors/.pt/.pt2 file in DIR (sorted; --arch for bare weights); a
                       sidecar DIR/<name>.json may give "fraction".
References: --references FILE ... (radioactive checkpoints, or weights with --reference-arch) and/or
--train-references ARCH:SEED ... (clean models trained here with radioactive.train.fit and the grid's recipe,
configs/fashion-mnist.toml [train], cached in benchmarks/cache/references/), appended in that order.

Run on the held-out suite (heavy: trains 4 references, about 3 x 5 minutes each on 2 cores, then marks the
probes 21 times per key and queries every suspect and reference):
    flock /tmp/radioactive-heavy.lock nice -n 10 .venv/bin/python benchmarks/bench_references.py \\
        --from-heldout results/heldout --train-references cnn:1 resnet_narrow:2 mlp:3 resnet_narrow:4
Writes benchmarks/results/references.json (settings, versions, references, keys, per suspect and count the
log10 p-values and the references-alone tails, and a summary per count and fraction).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.util
import json
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from radioactive._io import atomic_write_json, sha256_file, versions
from radioactive.detect import Probes
from radioactive.detect.combine import verdict_from_observations
from radioactive.detect.observations import collect
from radioactive.detect.probes import first_per_class
from radioactive.key import Key
from radioactive.mark import MarkConfig

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "benchmarks" / "cache"
log = logging.getLogger("bench_references")
SUFFIXES = (".safetensors", ".pt", ".pth", ".pt2")


# -- suspects ------------------------------------------------------------------------------------------
def from_heldout(out: Path, seeds: list[int] | None = None) -> tuple[list[dict[str, Any]], list[str], dict[str, Any]]:
    """(suspects, the suite's reference paths, shared settings) from the suite's run records (of ``seeds`` only,
    when given)."""
    records = [json.loads(p.read_text()) for p in sorted((out / "runs").glob("*.json"))]
    records = [r for r in records if seeds is None or r["seed"] in seeds]
    if not records:
        raise SystemExit(f"no run records in {out / 'runs'}: run heldout/run_suite.py first")
    suspects, references = [], []
    for record in records:
        shared = record["config"]["shared"]
        keys = sorted((out / "cache" / "keys").glob(f"seed-{record['seed']}-{record['key_fingerprint']}*"))
        if not keys:
            raise SystemExit(f"the key of run {record['run_id']} ({record['key_fingerprint']}) is not in {out}/cache/keys")
        suspects.append({
            "name": f"{record['pair']}-f{record['fraction']:g}-s{record['seed']}",
            "weights": str(out / "cache" / "models" / f"{record['pair']}-{record['training']['train_id']}.safetensors"),
            "builder": str(ROOT / "heldout" / "archs.py") + ":build", "builder_kwargs": {"arch": record["arch"]},
            "key": str(keys[0]), "fraction": record["fraction"], "mark": shared["mark"],
            "mark_seed": record["seeds"]["marking"],
            "info": {k: record.get(k) for k in ("run_id", "pair", "arch", "family", "recipe", "seed", "test_accuracy")},
            "suite_log10_p": record.get("log10_p"),
        })
        references += [r["path"] for r in record.get("references", []) if r["path"] not in references]
    detect = records[0]["config"]["shared"]["detect"]
    start = detect["reference_images"]
    return suspects, references, {"probe_slice": f"{start}:{start + detect['probes']}",
                                  "controls": detect["num_controls"]}


def from_folder(folder: Path, key: str, arch: str | None) -> list[dict[str, Any]]:
    suspects = []
    for path in sorted(p for p in folder.iterdir() if p.suffix in SUFFIXES):
        sidecar = path.with_suffix(".json")
        info = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
        suspects.append({"name": path.stem, "weights": str(path), "key": key, "arch": arch,
                         "fraction": info.get("fraction")})
    if not suspects:
        raise SystemExit(f"no model files ({', '.join(SUFFIXES)}) in {folder}")
    return suspects


def _callable(target: str):
    """``file.py:name`` or ``package.module:name``."""
    where, _, name = target.rpartition(":")
    if where.endswith(".py"):
        spec = importlib.util.spec_from_file_location(f"bench_builder_{Path(where).stem}", where)
        module = importlib.util.module_from_spec(spec)
        sys.path.insert(0, str(Path(where).parent))
        spec.loader.exec_module(module)
    else:
        module = importlib.import_module(where)
    return getattr(module, name)


def load_model(entry: dict[str, Any], num_classes: int, device: torch.device) -> torch.nn.Module:
    if entry.get("builder"):
        from safetensors.torch import load_file

        model = _callable(entry["builder"])(**entry.get("builder_kwargs", {}))
        model.load_state_dict(load_file(entry["weights"]))
    else:
        from radioactive.nets import load_suspect

        model = load_suspect(entry["weights"], arch=entry.get("arch"), num_classes=num_classes)
    return model.to(device).eval()


def predictor(model: torch.nn.Module, device: torch.device):
    def predict(images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model(images.to(device)).float().cpu()
    return predict


# -- references ----------------------------------------------------------------------------------------
def train_reference(arch: str, seed: int, splits, device: torch.device) -> Path:
    """A clean model trained with radioactive.train.fit and the grid's recipe on the owner split, cached."""
    from radioactive.experiment import load_config
    from radioactive.experiment.identity import content_hash
    from radioactive.nets import make_spec, save_checkpoint
    from radioactive.train import TrainRecipe, dataset_fingerprint, fit

    recipe = TrainRecipe.from_dict({**load_config(ROOT / "configs" / "fashion-mnist.toml").train, "mode": "scratch"})
    images, labels = splits["owner"]
    ident = content_hash({"arch": arch, "seed": seed, "recipe": recipe.to_dict(),
                          "data": dataset_fingerprint(images, labels)})
    path = CACHE / "references" / f"{arch}-s{seed}-{ident}.safetensors"
    if not path.is_file():
        start = time.perf_counter()
        log.info("training a clean reference %s (seed %d)", arch, seed)
        result = fit(make_spec(arch, 10, images), images, labels, recipe=recipe, seed=seed, device=device,
                     test=splits["test"])
        path.parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(result.model.cpu(), path, result.spec, {"kind": "reference", "seed": seed, "metrics": {
            k: v for k, v in result.metrics.items() if k != "history"}, "seconds": time.perf_counter() - start})
    return path


# -- the measurement -----------------------------------------------------------------------------------
def probes_for(args, key: Key) -> Probes:
    from radioactive.sources import load_labelled

    data = load_labelled(args.probes)
    if args.probe_slice:
        start, _, stop = args.probe_slice.partition(":")
        return Probes(data.images[int(start): int(stop)], data.labels[int(start): int(stop)])
    picks = first_per_class(data.labels, args.probes_per_class, num_classes=key.num_classes)
    return Probes(data.images[picks], data.labels[picks])


def measure(entry, references, args, marker_for, device) -> dict[str, Any]:
    key = Key.load(entry["key"])
    marker = marker_for(key)
    config = MarkConfig.from_dict(dict(entry["mark"])) if entry.get("mark") else MarkConfig(
        steps=args.mark_steps, lr=args.mark_lr, min_psnr=args.min_psnr)
    seed = entry.get("mark_seed", args.mark_seed)
    model = load_model(entry, key.num_classes, device)
    start = time.perf_counter()
    obs = collect(predictor(model, device), key, probes_for(args, key), marker=marker, num_controls=args.controls,
                  reference=[predictor(r, device) for r in references[: max(args.counts)]], config=config, seed=seed,
                  cache_dir=args.cache_dir or None)
    counts: dict[str, Any] = {}
    for count in args.counts:
        sub = dataclasses.replace(obs, references=obs.references[:count])
        row = {}
        for variant in args.variants:
            statistic, _, combine = variant.partition(":")
            verdict = verdict_from_observations(sub, statistic=statistic, combine=combine, difference=count > 0)
            row[f"{statistic}-{combine}"] = {"test": verdict.test, "log10_p": verdict.log10_p,
                                            "evidence": verdict.evidence,
                                            "reference_alone": verdict.details.get("reference_alone")}
        counts[str(count)] = row
    return {"name": entry["name"], "fraction": entry.get("fraction"), "weights": entry["weights"],
            "weights_sha256": sha256_file(entry["weights"]), "key_fingerprint": key.fingerprint,
            "mark": config.to_dict(), "mark_seed": seed, "info": entry.get("info", {}),
            "suite_log10_p": entry.get("suite_log10_p"), "counts": counts,
            "seconds": time.perf_counter() - start}


def summarise(results: list[dict[str, Any]], counts: list[int], variants: list[str]) -> list[dict[str, Any]]:
    """Per count, variant and fraction: median and worst log10 p (clean: the lowest; marked: the highest)."""
    rows = []
    fractions = sorted({r["fraction"] for r in results if r["fraction"] is not None})
    for count in counts:
        for variant in variants:
            name = variant.replace(":", "-")
            for fraction in fractions:
                values = [r["counts"][str(count)][name]["log10_p"] for r in results if r["fraction"] == fraction]
                rows.append({"references": count, "variant": name, "fraction": fraction, "suspects": len(values),
                             "median_log10_p": statistics.median(values),
                             "worst_log10_p": min(values) if fraction == 0 else max(values),
                             "below_0.05": sum(v <= -1.30103 for v in values),
                             "below_1e-3": sum(v <= -3.0 for v in values)})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--from-heldout", type=Path, default=None)
    source.add_argument("--manifest", type=Path, default=None)
    source.add_argument("--suspects", type=Path, default=None)
    parser.add_argument("--key", default=None, help="with --suspects: the key of every suspect")
    parser.add_argument("--arch", default=None, help="with --suspects: architecture of bare weights")
    parser.add_argument("--references", nargs="*", default=[], help="reference checkpoints, in order")
    parser.add_argument("--reference-arch", default=None, help="architecture of bare reference weights")
    parser.add_argument("--train-references", nargs="*", default=[], metavar="ARCH:SEED")
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="with --from-heldout: the suite seeds whose runs to use (default: every run)")
    parser.add_argument("--skip-missing", action="store_true",
                        help="with --from-heldout: leave out runs whose suspect is no longer cached (recorded)")
    parser.add_argument("--counts", type=int, nargs="+", default=[0, 1, 3, 5])
    parser.add_argument("--variants", nargs="+", default=["margin:perm", "loss:perm"])
    parser.add_argument("--marker", default=None, help="marking network (default: the one each key records)")
    parser.add_argument("--probes", default="fashion-mnist:holdout")
    parser.add_argument("--probe-slice", default=None, help="START:STOP of --probes (default: --probes-per-class)")
    parser.add_argument("--probes-per-class", type=int, default=50)
    parser.add_argument("--controls", type=int, default=20)
    parser.add_argument("--mark-steps", type=int, default=30)
    parser.add_argument("--mark-lr", type=float, default=0.02)
    parser.add_argument("--min-psnr", type=float, default=40.0)
    parser.add_argument("--mark-seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cache-dir", default=str(CACHE / "probes"), help="owner-only cache of marked versions")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "references.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from radioactive.zoo import resolve_device, resolve_marker

    device = resolve_device(args.device)
    references_paths = list(args.references)
    skipped: list[str] = []
    if args.from_heldout:
        suspects, suite_references, shared = from_heldout(args.from_heldout, args.seeds)
        if args.skip_missing:  # suspects whose cached weights are gone (a cache lost with its machine)
            skipped = [s["name"] for s in suspects if not Path(s["weights"]).is_file()]
            suspects = [s for s in suspects if Path(s["weights"]).is_file()]
            for name in skipped:
                log.warning("skipped %s: its weights are not in the suite's cache", name)
        references_paths = suite_references + [p for p in references_paths if p not in suite_references]
        args.probe_slice, args.controls = args.probe_slice or shared["probe_slice"], shared["controls"]
    elif args.manifest:
        suspects = json.loads(args.manifest.read_text())
    else:
        if not args.key:
            raise SystemExit("--suspects needs --key")
        suspects = from_folder(args.suspects, args.key, args.arch)
    if args.train_references:
        from radioactive.fmnist import fashion_mnist_splits

        splits = fashion_mnist_splits()
        for item in args.train_references:
            arch, _, seed = item.partition(":")
            references_paths.append(str(train_reference(arch, int(seed), splits, device)))
    args.counts = sorted(set(args.counts))
    if max(args.counts) > len(references_paths):
        raise SystemExit(f"--counts up to {max(args.counts)} need as many references; got {len(references_paths)}")
    from radioactive.nets import load_suspect

    num_classes = Key.load(suspects[0]["key"]).num_classes
    references = [load_suspect(p, arch=args.reference_arch, num_classes=num_classes).to(device).eval()
                  for p in references_paths[: max(args.counts)]]
    markers: dict[str, Any] = {}

    def marker_for(key: Key):
        if key.fingerprint not in markers:
            markers[key.fingerprint] = resolve_marker(key, args.marker).to(device)
        return markers[key.fingerprint]

    start = time.perf_counter()
    results = []
    for number, entry in enumerate(suspects, 1):
        result = measure(entry, references, args, marker_for, device)
        results.append(result)
        shown = ", ".join(f"{c} refs {v['margin-perm']['log10_p']:.2f}" for c, v in result["counts"].items()
                          if "margin-perm" in v)
        log.info("[%d/%d] %s (fraction %s): margin perm log10 p %s", number, len(suspects), entry["name"],
                 entry.get("fraction"), shown)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    out = {
        "benchmark": "references",
        "command": "flock /tmp/radioactive-heavy.lock nice -n 10 .venv/bin/python benchmarks/bench_references.py "
                   + " ".join(argv if argv is not None else sys.argv[1:]),
        "settings": settings,
        "skipped": skipped,
        "versions": versions(),
        "marker_sha256": sorted({m.info.weights_sha256 for m in markers.values()}),
        "references": [{"path": p, "sha256": sha256_file(p)} for p in references_paths[: max(args.counts)]],
        "key_fingerprints": sorted({r["key_fingerprint"] for r in results}),
        "note": "count n subtracts the mean response of the first n references; count 0 is the test without "
                "difference in differences. Audits that share a key and a reference share the references-alone draw.",
        "summary": summarise(results, args.counts, args.variants),
        "suspects": results,
        "seconds": time.perf_counter() - start,
    }
    atomic_write_json(args.out, out)
    for row in out["summary"]:
        log.info("%d refs %-12s fraction %-5g: median %.2f, worst %.2f (%d suspects)", row["references"],
                 row["variant"], row["fraction"], row["median_log10_p"], row["worst_log10_p"], row["suspects"])
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

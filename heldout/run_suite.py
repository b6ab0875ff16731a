"""Run the held-out suite: the owner marks, a third party trains with its own script, the auditor tests.

This script plays the data owner and the auditor, through radioactive's documented API: it marks the
Fashion-MNIST owner split with ``radioactive.mark`` (a fresh key per seed, nested subsets 5 % < 10 % < 20 %,
marked once per seed and cached by content hash), writes the published set, trains the suspect by calling
``heldout/train.py`` (the third party: no radioactive inside) in a subprocess, and runs ``whitebox`` (least
squares alignment) and ``blackbox`` (four variants, see ``VARIANTS``) on the result. One JSON record per run
goes to ``OUT/runs/<run_id>.json`` (written atomically); a run whose record exists is skipped, so an
interrupted suite resumes, and ``--only`` / ``--max-runs`` split it across sessions or across workers that
share one ``--out`` (on a 2-core CPU two 1-thread workers, ``OMP_NUM_THREADS=1 ... --threads 1``, train about
1.6 times as much per hour as one 2-thread worker; a published set one worker is training on is never deleted
by another: ``published_lock``). Caches (keys, owner-only;
marked images; trained suspects; the reference model) live in ``OUT/cache``. At the end the tables
``OUT/results.{json,md}`` are regenerated from every record (``heldout/table.py``).

Usage:
    .venv/bin/python heldout/run_suite.py heldout/suite.toml --out results/heldout [--only PAIR] [--max-runs N]
        [--reference CLEAN.safetensors ...] [--device cuda] [--dry-run] [--table-only]

``--reference`` adds clean radioactive checkpoints to the auditor's reference cnn (``blackbox`` subtracts
their mean response); it changes the run ids, so those runs are new records (trained suspects are reused).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

import torch
from safetensors.torch import load_file, save_file

from radioactive import (
    BlackboxSettings,
    Key,
    MarkConfig,
    Probes,
    WhiteboxSettings,
    blackbox,
    default_marker,
    fashion_mnist_splits,
    mark,
    whitebox,
)
from radioactive._io import atomic_write, atomic_write_json, sha256_file, versions
from radioactive.errors import OutputExistsError
from radioactive.experiment.identity import content_hash
from radioactive.nets import load_checkpoint, make_spec, save_checkpoint
from radioactive.train import TrainRecipe, dataset_fingerprint, fit
from radioactive.train.bank import bank_paths
from radioactive.zoo import shipped_bank

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import archs  # noqa: E402  (heldout/archs.py, as heldout/train.py imports it)

# record name -> (statistic, combination, difference in differences against the reference model(s))
VARIANTS = {
    "blackbox": ("margin", "rank", True),
    "blackbox-margin-perm": ("margin", "perm", True),
    "blackbox-loss-perm": ("loss", "perm", True),
    "blackbox-margin-perm-nodid": ("margin", "perm", False),
}


def variants(config: dict[str, Any]) -> dict[str, tuple]:
    """The black-box tests of a suite: ``VARIANTS``, or the configuration's ``[detect] variants`` (rows of
    ``[name, statistic, combine, difference in differences, reference fit]``)."""
    rows = config["detect"].get("variants")
    return {row[0]: tuple(row[1:]) for row in rows} if rows else VARIANTS


def sibling(name: str):
    """``heldout/<name>.py`` as module ``heldout_<name>`` (the folder is a set of scripts, not a package);
    ``name`` may name a script in a sub-folder (``sealed/train``: module ``heldout_sealed_train``)."""
    module_name = "heldout_" + name.replace("/", "_")
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, HERE / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return sys.modules[module_name]


def say(message: str) -> None:
    print(f"[heldout {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- configuration -------------------------------------------------------------------------------------
def third_party(config: dict[str, Any]) -> tuple[Any, Any]:
    """The third party's (training script, architectures) modules: ``heldout/train.py`` and ``heldout/archs.py``
    unless the configuration names others (``scripts = {train = "sealed/train", archs = "sealed/models"}``)."""
    scripts = config.get("scripts", {})
    return sibling(scripts.get("train", "train")), (sibling(scripts["archs"]) if "archs" in scripts else archs)


def load_config(path: str | Path) -> dict[str, Any]:
    """The suite's TOML, checked: unique pair names, known architectures and recipes, fractions in [0, 1)."""
    config = tomllib.loads(Path(path).read_text())
    train, nets = third_party(config)
    recipes = train.RECIPES
    names = [pair["name"] for pair in config["pairs"]]
    problems = [f"duplicate pair names {names}"] if len(set(names)) != len(names) else []
    for pair in config["pairs"]:
        if pair["arch"] not in nets.ARCHITECTURES:
            problems.append(f"pair {pair['name']}: unknown arch {pair['arch']!r}; choose from {sorted(nets.ARCHITECTURES)}")
        if pair["recipe"] not in recipes:
            problems.append(f"pair {pair['name']}: unknown recipe {pair['recipe']!r}; choose from {sorted(recipes)}")
    runs = config["runs"]
    if any(not 0 <= f < 1 for f in runs["fractions"] + runs["deep_fractions"]):
        problems.append("fractions must lie in [0, 1)")
    if problems:
        raise SystemExit(f"{path}: " + "; ".join(problems))
    MarkConfig(**config["mark"])  # validates
    return config


def seed_of(config: dict[str, Any], what: str, seed: int) -> int:
    """The suite's seed for ``what`` (key, selection, marking) at suite seed ``seed``: 63 bits of a hash."""
    material = json.dumps([config["seeds"]["purpose"], what, int(seed)]).encode()
    return int.from_bytes(hashlib.sha256(material).digest()[:8], "little") & ((1 << 63) - 1)


def expand(config: dict[str, Any]) -> list[dict[str, Any]]:
    """Every run as ``{pair, fraction, seed}``: seed 0 of every pair first, then the deep pairs' extra runs."""
    grid, runs = config["runs"], []
    for seed in sorted(set(grid["seeds"]) | set(grid["deep_seeds"])):
        for pair in config["pairs"]:
            fractions = set(grid["fractions"]) if seed in grid["seeds"] else set()
            if pair.get("deep") and seed in grid["deep_seeds"]:
                fractions |= set(grid["deep_fractions"])
            runs += [{"pair": pair, "fraction": float(f), "seed": int(seed)} for f in sorted(fractions)]
    first = [r for r in runs if r["fraction"] in grid["fractions"] and r["seed"] in grid["seeds"]]
    return first + [r for r in runs if r not in first]


def shared(config: dict[str, Any]) -> dict[str, Any]:
    """What every run's result depends on besides its cell: all but the name and the grid axes."""
    return {k: v for k, v in config.items() if k not in ("name", "pairs", "runs")}


def run_id(config: dict[str, Any], run: dict[str, Any]) -> str:
    recipe = third_party(config)[0].RECIPES[run["pair"]["recipe"]]
    return content_hash({"pair": run["pair"], "hyperparameters": recipe, "fraction": run["fraction"],
                         "seed": run["seed"], "shared": shared(config)})


# -- the owner, the third party, the auditor -------------------------------------------------------------

@contextlib.contextmanager
def published_lock(data_path: Path):
    """Hold a shared lock on a published set while it is written and trained on; yields a function that tells
    whether no other process holds it now (so that it may be deleted). Several workers may share one cache
    (split with ``--only``): a set another worker is training on is never deleted under it, and one deleted
    before a worker took its lock is written again (it is a deterministic function of the suite's seeds)."""
    lock_path = data_path.with_name(f".{data_path.name}.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_SH)

        def last_user() -> bool:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # converts ours; fails while another holds one
            except BlockingIOError:
                return False
            return True

        try:
            yield last_user
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)

class Suite:
    """Data, marker, keys and caches shared by the runs of one output folder."""

    def __init__(self, config: dict[str, Any], out: Path, *, device: str = "cpu", workers: int = 0,
                 threads: int = 0, keep_published: bool = False):
        self.config, self.out, self.cache = config, out, out / "cache"
        self.device = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                                   "cpu" if device == "auto" else device)
        self.workers, self.threads, self.keep_published = workers, threads, keep_published
        self._data = self._marker = self._references = None
        self._keys: dict[int, Key] = {}
        self.mark_config = MarkConfig(**config["mark"])
        self.script, self.nets = third_party(config)

    @property
    def data(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        if self._data is None:
            self._data = fashion_mnist_splits(holdout=self.config["data"]["holdout"])
            keep = self.config["data"].get("train_images", 0)  # > 0: a seeded subset of the owner split
            if keep:
                images, labels = self._data["owner"]
                gen = torch.Generator().manual_seed(seed_of(self.config, "train_subset", 0))
                chosen = torch.randperm(len(labels), generator=gen)[:keep].sort().values
                self._data["owner"] = (images[chosen], labels[chosen])
        return self._data

    @property
    def marker(self):
        if self._marker is None:
            self._marker = default_marker().to(self.device)
        return self._marker

    def key(self, seed: int) -> Key:
        """The secret key of suite seed ``seed``, also saved owner-only under ``cache/keys``."""
        if seed not in self._keys:
            key = Key.generate(self.marker.info, seed=seed_of(self.config, "key", seed))
            path = self.cache / "keys" / f"seed-{seed}-{key.fingerprint}.key"
            if not path.is_file():
                path.parent.mkdir(parents=True, exist_ok=True)
                with contextlib.suppress(OutputExistsError):  # another session saved it first: the same key
                    key.save(path)
            self._keys[seed] = key
        return self._keys[seed]

    def selection(self, seed: int, fraction: float) -> torch.Tensor:
        """Sorted owner indices of ``fraction`` of every class: a prefix of one seeded permutation per class,
        so the subsets of one seed are nested."""
        labels = self.data["owner"][1]
        gen = torch.Generator().manual_seed(seed_of(self.config, "selection", seed))
        chosen = []
        for cls in range(int(labels.max()) + 1):
            members = (labels == cls).nonzero().flatten()
            order = members[torch.randperm(len(members), generator=gen)]
            chosen.append(order[: int(round(fraction * len(members)))])
        return torch.cat(chosen).sort().values

    def top_fraction(self, seed: int) -> float:
        return max(r["fraction"] for r in expand(self.config) if r["seed"] == seed)

    def marked(self, seed: int, fraction: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(owner indices, marked uint8 images, PSNR) of ``fraction``: rows of the seed's one marking."""
        top = self.selection(seed, self.top_fraction(seed))
        key = self.key(seed)
        ident = content_hash({"key": key.fingerprint, "mark": self.mark_config.to_dict(),
                              "indices": content_hash(top.tolist()), "data": dataset_fingerprint(*self.data["owner"])})
        path = self.cache / f"marked-{ident}.safetensors"
        if path.is_file():
            stored = load_file(str(path))
        else:
            images, labels = self.data["owner"]
            start = time.perf_counter()
            say(f"marking {len(top)} owner images for seed {seed} ({self.mark_config.steps} steps)")
            result = mark(self.marker, images[top], labels[top], key, self.mark_config,
                          seed=seed_of(self.config, "marking", seed))
            stored = {"images": (result.images.detach().cpu() * 255).round().clamp(0, 255).to(torch.uint8),
                      "psnr": result.psnr.detach().cpu().to(torch.float64)}
            with atomic_write(path) as tmp:
                save_file({k: v.contiguous() for k, v in stored.items()}, str(tmp))
            say(f"marked {len(top)} images in {time.perf_counter() - start:.0f} s")
        wanted = self.selection(seed, fraction)
        position = {int(i): n for n, i in enumerate(top.tolist())}
        rows = torch.tensor([position[int(i)] for i in wanted.tolist()], dtype=torch.long)
        return wanted, stored["images"][rows], stored["psnr"][rows]

    def test_file(self) -> Path:
        path = self.cache / "test.safetensors"
        if not path.is_file():
            images, labels = self.data["test"]
            with atomic_write(path) as tmp:
                save_file({"images": images.contiguous(), "labels": labels.contiguous()}, str(tmp))
        return path

    def train(self, run: dict[str, Any], indices: torch.Tensor, marked: torch.Tensor) -> tuple[torch.nn.Module, dict]:
        """The third party's model for ``run``: trained by ``heldout/train.py`` in a subprocess, cached."""
        pair, seed = run["pair"], run["seed"]
        images, labels = self.data["owner"]
        published_id = content_hash({"data": dataset_fingerprint(images, labels), "indices": content_hash(indices.tolist()),
                                     "key": self.key(seed).fingerprint if len(indices) else None,
                                     "mark": self.mark_config.to_dict() if len(indices) else None})
        train_id = content_hash({"arch": pair["arch"], "recipe": pair["recipe"], "epochs": self.config["epochs"],
                                 "hyperparameters": self.script.RECIPES[pair["recipe"]], "seed": seed,
                                 "published": published_id})
        weights = self.cache / "models" / f"{pair['name']}-{train_id}.safetensors"
        sidecar = weights.with_suffix(".json")
        if not sidecar.is_file():
            data_path = self.cache / "published" / f"{published_id}.safetensors"
            with published_lock(data_path) as last_user:
                self._train_on(run, data_path, images, labels, indices, marked, weights)
                if last_user() and not self.keep_published:
                    data_path.unlink()
        model = self.nets.build(pair["arch"])
        model.load_state_dict(load_file(str(weights)))
        return model.to(self.device).eval(), {**json.loads(sidecar.read_text()), "train_id": train_id}

    def _train_on(self, run: dict[str, Any], data_path: Path, images: torch.Tensor, labels: torch.Tensor,
                  indices: torch.Tensor, marked: torch.Tensor, weights: Path) -> None:
        """Write the published set (if absent) and run the third party's script on it."""
        pair, seed = run["pair"], run["seed"]
        if not data_path.is_file():
            published = images.clone()
            published[indices] = marked
            with atomic_write(data_path) as tmp:
                save_file({"images": published.contiguous(), "labels": labels.contiguous()}, str(tmp))
        command = [sys.executable, self.script.__file__, "--arch", pair["arch"], "--recipe", pair["recipe"],
                   "--data", str(data_path), "--test", str(self.test_file()), "--epochs", str(self.config["epochs"]),
                   "--seed", str(seed), "--out", str(weights), "--device", str(self.device),
                   "--workers", str(self.workers), "--threads", str(self.threads)]
        say("training: " + " ".join(command[1:]))
        if subprocess.run(command).returncode != 0:
            raise SystemExit(f"{self.script.__file__} failed for {pair['name']} fraction {run['fraction']} seed {seed}")

    def references(self) -> list[tuple[torch.nn.Module, dict[str, Any]]]:
        """The auditor's clean models: a ``cnn`` trained by ``radioactive.train.fit`` (cached; none when
        ``reference_arch`` is empty), then extras, then a shipped bank (``reference_bank``)."""
        if self._references is None:
            detect = self.config["detect"]
            own = self._own_reference() if detect.get("reference_arch") else []
            self._references = []
            bank = [Path(p) for p in bank_paths(shipped_bank(detect["reference_bank"]))] if detect.get(
                "reference_bank") else []
            for file in own + [Path(p) for p in detect["extra_references"]] + bank:
                model, _, extra = load_checkpoint(file)
                self._references.append((model.to(self.device).eval(), {
                    "path": str(file), "sha256": sha256_file(file),
                    "test_accuracy": (extra.get("metrics") or {}).get("test_accuracy")}))
        return self._references

    def _own_reference(self) -> list[Path]:
        """The suite's own clean reference (trained once, cached)."""
        detect, images, labels = self.config["detect"], *self.data["owner"]
        recipe = TrainRecipe.from_dict({**self.config["reference_train"], "mode": "scratch"})
        ident = content_hash({"arch": detect["reference_arch"], "recipe": recipe.to_dict(),
                              "seed": detect["reference_seed"], "data": dataset_fingerprint(images, labels)})
        path = self.cache / f"reference-{ident}.safetensors"
        if not path.is_file():
            say(f"training the auditor's clean reference {detect['reference_arch']} (radioactive.train.fit)")
            spec = make_spec(detect["reference_arch"], 10, images)
            result = fit(spec, images, labels, recipe=recipe, seed=detect["reference_seed"], device=self.device,
                         test=self.data["test"])
            save_checkpoint(result.model, path, spec, {"kind": "reference", "metrics": {
                k: v for k, v in result.metrics.items() if k != "history"}})
        return [path]

    def predictor(self, model: torch.nn.Module):
        model.to(memory_format=torch.channels_last)  # several times faster convolutions on CPU (oneDNN)

        def predict(images: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return model(images.to(self.device).contiguous(memory_format=torch.channels_last)).float().cpu()
        return predict

    def detect(self, run: dict[str, Any], model: torch.nn.Module) -> dict[str, Any]:
        """Every test's verdict on ``model`` with the key of the run's seed."""
        detect, seed = self.config["detect"], run["seed"]
        key, (holdout, holdout_labels) = self.key(seed), self.data["holdout"]
        count, probes = detect["reference_images"], detect["probes"]
        verdicts = {"whitebox": whitebox(model, key, holdout[:count], marker=self.marker, settings=WhiteboxSettings(
            alignment=detect["alignment"], alpha=detect["alpha"]))}
        probe_set = Probes(holdout[count: count + probes], holdout_labels[count: count + probes])
        references = [self.predictor(m) for m, _ in self.references()]
        reference = references if len(references) > 1 else references[0]  # several: their mean response
        for name, (statistic, combine, did, *how) in variants(self.config).items():
            settings = BlackboxSettings(num_controls=detect["num_controls"], statistic=statistic, combine=combine,
                                        reference_fit=how[0] if how else "mean",
                                        mark=self.mark_config, seed=seed_of(self.config, "marking", seed),
                                        alpha=detect["alpha"], cache_dir=self.cache / "probes")
            verdicts[name] = blackbox(self.predictor(model), key, probe_set, marker=self.marker, settings=settings,
                                      reference=reference if did else None)
        return verdicts

    def run_one(self, run: dict[str, Any]) -> dict[str, Any]:
        pair, start = run["pair"], time.perf_counter()
        indices, marked, psnr = self.marked(run["seed"], run["fraction"])
        mark_seconds = time.perf_counter() - start
        model, trained = self.train(run, indices, marked)
        train_seconds = time.perf_counter() - start - mark_seconds
        verdicts = self.detect(run, model)
        detect_seconds = time.perf_counter() - start - mark_seconds - train_seconds
        finite = psnr[torch.isfinite(psnr)]
        key = self.key(run["seed"])
        return {
            "run_id": run_id(self.config, run), "suite": self.config["name"], "pair": pair["name"],
            "arch": pair["arch"], "family": self.nets.FAMILIES[pair["arch"]], "recipe": pair["recipe"],
            "deep": bool(pair.get("deep")), "fraction": run["fraction"], "seed": run["seed"],
            "seeds": {what: seed_of(self.config, what, run["seed"]) for what in ("selection", "marking")}
            | {"training": run["seed"], "reference": self.config["detect"]["reference_seed"]},
            "key_fingerprint": key.fingerprint, "marked_images": len(indices), "train_images": len(self.data["owner"][1]),
            "psnr_min": float(psnr.min()) if len(psnr) else None,
            "psnr_mean": float(finite.mean()) if len(finite) else None,
            "test_accuracy": trained["test_accuracy"],
            "log10_p": {name: verdict.log10_p for name, verdict in verdicts.items()},
            "verdicts": {name: verdict.to_dict() for name, verdict in verdicts.items()},
            "references": [info for _, info in self.references()],
            "training": {k: v for k, v in trained.items() if k != "versions"},
            "seconds": {"mark": mark_seconds, "train": train_seconds, "detect": detect_seconds,
                        "total": time.perf_counter() - start},
            "config": {"pair": pair, "fraction": run["fraction"], "seed": run["seed"], "shared": shared(self.config)},
            "scripts_sha256": {Path(m.__file__).relative_to(HERE).as_posix(): sha256_file(m.__file__)
                               for m in (self.script, self.nets, sys.modules[__name__])},
            "versions": versions(),
        }


def run_suite(config: dict[str, Any], out: Path, *, only: list[str] | None = None, max_runs: int | None = None,
              suite: Suite | None = None, train_only: bool = False, **options: Any) -> list[Path]:
    """Run (or resume) the suite into ``out``; returns the records written by this call.

    ``train_only``: mark and train every suspect into the cache (``out/cache/models``) and test none, so that a
    sealed suite's training (its dominant cost, which depends only on the marking settings) can run while an
    auditor-side lever is still being chosen; a later call without it tests the cached suspects once."""
    suite = suite or Suite(config, out, **options)
    runs = expand(config)
    unknown = set(only or []) - {pair["name"] for pair in config["pairs"]}
    if unknown:
        raise SystemExit(f"--only: unknown pairs {sorted(unknown)}; choose from {[p['name'] for p in config['pairs']]}")
    written = []
    for number, run in enumerate(runs, 1):
        label = f"[{number}/{len(runs)}] {run['pair']['name']} fraction {run['fraction']:g} seed {run['seed']}"
        path = out / "runs" / f"{run_id(config, run)}.json"
        if only and run["pair"]["name"] not in only:
            continue
        if path.is_file():
            say(f"{label}: done earlier, skipped")
            continue
        if max_runs is not None and len(written) >= max_runs:
            say(f"stopping after {max_runs} new runs (--max-runs)")
            break
        say(f"{label}: starting")
        if train_only:
            indices, marked, _ = suite.marked(run["seed"], run["fraction"])
            _, trained = suite.train(run, indices, marked)
            say(f"{label}: trained, accuracy {trained['test_accuracy']:.4f} (not tested: --train-only)")
            continue
        record = suite.run_one(run)
        atomic_write_json(path, record)
        written.append(path)
        shown = ", ".join(f"{k} {v:.2f}" for k, v in record["log10_p"].items())
        say(f"{label}: accuracy {record['test_accuracy']:.4f}; log10 p {shown} ({record['seconds']['total']:.0f} s)")
    return written


def write_plan(config: dict[str, Any], out: Path) -> None:
    """``out/config.json``: the resolved configuration and every planned run (what the tables count)."""
    atomic_write_json(out / "config.json", {**config, "planned_runs": [
        {"run_id": run_id(config, r), "pair": r["pair"]["name"], "fraction": r["fraction"], "seed": r["seed"]}
        for r in expand(config)]})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", nargs="?", default=str(HERE / "suite.toml"))
    parser.add_argument("--out", default="results/heldout", help="records in OUT/runs, caches in OUT/cache")
    parser.add_argument("--only", action="append", help="run only this pair (repeatable)")
    parser.add_argument("--max-runs", type=int, help="stop after this many new runs")
    parser.add_argument("--reference", action="append", default=[], help="extra clean radioactive checkpoint")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (marking, training, tests)")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers of heldout/train.py")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads of heldout/train.py (0: default)")
    parser.add_argument("--keep-published", action="store_true", help="keep the published sets in OUT/cache")
    parser.add_argument("--dry-run", action="store_true", help="list the runs and whether each is done")
    parser.add_argument("--table-only", action="store_true", help="only regenerate OUT/results.{json,md}")
    parser.add_argument("--train-only", action="store_true",
                        help="mark and train every suspect into OUT/cache/models, test none (no records, no table)")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    config["detect"]["extra_references"] = list(config["detect"]["extra_references"]) + args.reference
    out = Path(args.out)
    if args.dry_run:
        for run in expand(config):
            ident = run_id(config, run)
            done = "done" if (out / "runs" / f"{ident}.json").is_file() else "todo"
            print(f"{ident}  {done}  {run['pair']['name']:<24} fraction {run['fraction']:<5g} seed {run['seed']}")
        return
    write_plan(config, out)
    if not args.table_only:
        start = time.perf_counter()
        written = run_suite(config, out, only=args.only, max_runs=args.max_runs, device=args.device,
                            workers=args.workers, threads=args.threads, keep_published=args.keep_published,
                            train_only=args.train_only)
        if args.train_only:
            say(f"trained (or found trained) every suspect in {(time.perf_counter() - start) / 60:.1f} min; none tested")
            return
        say(f"{len(written)} new runs in {(time.perf_counter() - start) / 60:.1f} min")
    sibling("table").main(["--out", str(out), "--grid", str(HERE.parent / "results" / "fashion-mnist")])
    say(f"tables: {out / 'results.md'}")


if __name__ == "__main__":
    main()

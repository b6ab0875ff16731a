"""The runs of a grid: one cell is mark -> train -> detect (:func:`run_one`); :func:`run_experiment` runs or
resumes them all, one JSON record per run named by its id, and writes the aggregate."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch

from .._io import atomic_write_json, versions
from ..detect import Probes, WhiteboxSettings, whitebox
from ..detect.combine import verdict_from_observations
from ..detect.gradient import gradient_whitebox
from ..detect.observations import collect, model_predictor
from ..detect.verdict import Verdict
from ..errors import ConfigError
from ..fmnist_pairs import PAIR_SOURCES
from ..marker import Marker
from ..nets import ARCHITECTURES
from ..train import TrainResult, dataset_fingerprint, evaluate, fit
from .aggregate import aggregate
from .config import ExperimentConfig, ModelSetting
from .context import Context, Splits
from .identity import content_hash, derive_seed
from .resume import Job, Progress, run_pending
from .treatments import Treatment
from .twins import twins_verdicts

__all__ = ["RunSpec", "expand_grid", "run_one", "run_experiment", "dry_run", "treated_run_id"]



@dataclass(frozen=True)
class RunSpec:
    """One cell of the grid. ``run_id`` hashes everything that affects its result: the cell and ``shared``
    (the configuration less its name, grid axes and device)."""

    fraction: float
    model: ModelSetting
    seed: int
    shared: dict[str, Any]

    @classmethod
    def of(cls, config: ExperimentConfig, *, fraction: float, model: ModelSetting, seed: int) -> RunSpec:
        """The run of ``config`` at (``fraction``, ``model``, ``seed``), inside the grid or not."""
        shared = config.to_dict()
        for name in ("name", "fractions", "seeds", "models", "device"):
            shared.pop(name)
        return cls(fraction, model, seed, shared)

    def to_dict(self) -> dict[str, Any]:
        return {"fraction": self.fraction, "model": self.model.to_dict(), "seed": self.seed, "shared": self.shared}

    @property
    def run_id(self) -> str:
        return content_hash(self.to_dict())


def treated_run_id(spec: RunSpec, treatment: Treatment) -> str:
    """The id of ``spec`` under ``treatment``: the grid run's own without one (kind ``none``), else a hash of both."""
    return spec.run_id if treatment.kind == "none" else content_hash({"run": spec.to_dict(),
                                                                     "treatment": treatment.to_dict()})


def expand_grid(config: ExperimentConfig) -> list[RunSpec]:
    """Every run of the grid, ordered by seed, then fraction, then model setting."""
    return [RunSpec.of(config, fraction=fraction, model=model, seed=seed)
            for seed in config.seeds for fraction in config.fractions for model in config.models]


def _detect(spec: RunSpec, context: Context, model: torch.nn.Module, *, weights: torch.nn.Module | None = None
            ) -> dict[str, Verdict]:
    """Every configured test of ``model`` with the key of ``spec.seed``, by record name; the white-box tests
    read ``weights`` when given (a quantized model's dequantized copy, :mod:`radioactive.experiment.treatments`)."""
    weights = model if weights is None else weights
    detect, marker = context.config.detect, context.marker
    key = context.key(spec.seed)
    verdicts: dict[str, Verdict] = {}
    if "whitebox" in detect.tests:
        verdicts["whitebox"] = whitebox(weights, key, context.reference_images()[0], marker=marker,
                                        settings=WhiteboxSettings(
                                            alpha=detect.alpha, null_trials=detect.whitebox_null_trials,
                                            null_seed=derive_seed("whitebox_null", spec.seed)))
    if "gradient" in detect.tests:
        images, labels = context.reference_images()
        if detect.gradient_reference_images > 0:
            images, labels = images[: detect.gradient_reference_images], labels[: detect.gradient_reference_images]
        verdicts["gradient"] = gradient_whitebox(weights, key, (images, labels), marker=marker,
                                                 images_for=detect.gradient_images, alpha=detect.alpha)
    sources = [name for name in ("blackbox", "published") if name in detect.tests]
    # One reference: as recorded; several: their mean response is subtracted (difference in differences).
    reference = [model_predictor(m) for m in context.reference_models()] if sources else None
    for source in sources:
        probes = Probes(*context.probes()) if source == "blackbox" else context.published_probes(spec.seed)
        # One marking of the probes and one pass of queries serve every black-box variant.
        observations = collect(
            model_predictor(model), key, probes, marker=marker, num_controls=detect.num_controls,
            reference=reference, config=context.config.mark_config(), seed=derive_seed("marking", spec.seed),
            cache_dir=context.cache / "probes",
        )
        for name, statistic, combine, reference_fit in detect.variant_names(source):
            verdicts[name] = verdict_from_observations(observations, statistic=statistic, combine=combine,
                                                       alpha=detect.alpha, reference_fit=reference_fit)
    if context.config.twins.enabled:
        verdicts.update(twins_verdicts(context, spec.seed, spec.fraction, model))
    return verdicts


def _twin_summary(verdicts: dict[str, Verdict]) -> dict[str, Any]:
    """The twins tests' win rates and pair count (record keys ``twin_win_rate``, ``twin_pairs``; none without
    twins, so the records of other grids keep their keys)."""
    twins = {name: v for name, v in verdicts.items() if name.startswith("twins-")}
    if not twins:
        return {}
    return {"twin_win_rate": {name: v.details["win_rate"] for name, v in twins.items()},
            "twin_pairs": next(iter(twins.values())).counts["pairs"]}


def _test_accuracy(context: Context, model: torch.nn.Module, result: TrainResult, treatment: Treatment | None
                   ) -> float | None:
    """The suspect's test accuracy as its trainer measures it: on the test images, re-encoded as the published
    images were when a treatment re-encodes them (a model trained on images downscaled and back is tested on
    images made the same way; the record's ``clean_test_accuracy`` keeps the original test images')."""
    images, labels = context.data["test"]
    if treatment is not None and treatment.stage == "published":
        return evaluate(model, treatment.publish(images), labels)["accuracy"]
    return result.metrics.get("test_accuracy") if model is result.model else evaluate(model, images, labels)["accuracy"]


def run_one(spec: RunSpec, context: Context, *, keep_model: bool = False, progress: Progress | None = None,
            training_seed: int | None = None, treatment: Treatment | None = None,
            stored_clean: bool = False) -> dict[str, Any]:
    """Mark, train, detect: one run of the grid. Returns its JSON record (and, when ``keep_model``, the model,
    its spec and the verdicts under ``_model``, ``_spec`` and ``_verdicts``).

    ``training_seed`` replaces the grid's paired training seed (``derive_seed("training", spec.seed)``, the
    same at every fraction); the demo's clean control takes its own, so that it does not share the suspect's
    initialisation and batch order (and with them the same draw of the response to the key's carriers).

    ``treatment`` (the robustness table, :mod:`radioactive.experiment.treatments`) re-encodes the published
    images before training or changes the trained suspect before the tests; the record then carries it, its
    own run id and the treated model's test accuracy (``train_metrics`` keeps the untreated one). Runs that
    differ only in a model treatment share one training (:meth:`Context.suspect`).

    ``stored_clean`` (the demo's clean control): a run with no marked image reads its model from the cache or
    the package when one trained exactly so is there (:meth:`Context.clean_model`), and stores it otherwise.

    ``progress`` receives a line after each stage (marking, training, tests)."""
    say = progress or (lambda _line: None)
    start = time.perf_counter()
    images, labels = context.data["owner"]
    key = context.key(spec.seed)
    indices, marked, psnr = context.marked_subset(spec.seed, spec.fraction)
    published = images.clone()
    if len(indices):
        published[indices] = marked
    if treatment is not None:
        published = treatment.publish(published)
    mark_seconds = time.perf_counter() - start
    say(f"  marked images: {len(indices)} ({mark_seconds:.0f} s)")

    start_train = time.perf_counter()
    start_point, teacher = context.start_point(spec.model)
    seed = derive_seed("training", spec.seed) if training_seed is None else training_seed

    def train() -> TrainResult:
        return fit(start_point, published, labels, recipe=context.config.recipe(spec.model), seed=seed,
                   test=context.data["test"], teacher=teacher, device=context.device, num_classes=context.num_classes)

    if treatment is not None:
        # Named by what the training depends on (not the run id): the 0 % runs of two marking variants under
        # one treatment publish the same images and so share one training.
        trained_on = [spec.model.to_dict(), context.config.recipe(spec.model).to_dict(), seed,
                      dataset_fingerprint(published, labels)]
        result = context.suspect(spec.model, content_hash(trained_on), train)
    elif stored_clean and not len(indices):
        result = context.clean_model(spec.model, seed, train)
    else:
        result = train()
    model = result.model if treatment is None else treatment.apply(result.model, context, spec.seed)
    train_seconds = time.perf_counter() - start_train
    say(f"  trained {spec.model.name}: test accuracy {result.metrics.get('test_accuracy', float('nan')):.4f} "
        f"({train_seconds:.0f} s)")

    start_detect = time.perf_counter()
    verdicts = _detect(spec, context, model, weights=treatment.weights(model) if treatment is not None else None)
    detect_seconds = time.perf_counter() - start_detect
    say("  tests: " + ", ".join(f"{name} log10 p {v.log10_p:.2f}" for name, v in verdicts.items())
        + f" ({detect_seconds:.0f} s)")
    finite = psnr[torch.isfinite(psnr)]
    record = {
        "run_id": spec.run_id,
        "experiment": context.config.name,
        "fraction": spec.fraction,
        "model": spec.model.name,
        "mode": spec.model.mode,
        "arch": spec.model.arch if spec.model.mode in ("scratch", "distill") else spec.model.init,
        "seed": spec.seed,
        "key_fingerprint": key.fingerprint,
        "marked_images": int(len(indices)),
        "train_images": int(len(labels)),
        "psnr_min": float(psnr.min()) if len(psnr) else None,
        "psnr_mean": float(finite.mean()) if len(finite) else None,
        "test_accuracy": _test_accuracy(context, model, result, treatment),
        "accuracy_on_marked": evaluate(model, marked, labels[indices])["accuracy"] if len(indices) else None,
        "log10_p": {name: verdict.log10_p for name, verdict in verdicts.items()},
        **_twin_summary(verdicts),
        "verdicts": {name: verdict.to_dict() for name, verdict in verdicts.items()},
        "seconds": {"mark": mark_seconds, "train": train_seconds, "detect": detect_seconds,
                    "total": time.perf_counter() - start},
        "train_metrics": {k: v for k, v in result.metrics.items() if k != "history"},
        "config": spec.to_dict(),
        "versions": versions(),
    }
    if treatment is not None:
        record["run_id"], record["treatment"] = treated_run_id(spec, treatment), treatment.to_dict()
        if treatment.stage == "published":  # test_accuracy is on the test images re-encoded like the training set
            record["clean_test_accuracy"] = evaluate(model, *context.data["test"])["accuracy"]
    if keep_model:
        record["_model"] = model
        record["_spec"] = result.spec if result.spec is not None else context.init_spec(spec.model)
        record["_verdicts"] = verdicts
    return record


def run_experiment(
    config: ExperimentConfig,
    out: str | Path,
    *,
    marker: Marker | None = None,
    data: Splits | None = None,
    progress: Progress | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Run (or resume) every run of ``config`` into ``out``; write the aggregated table; return the records.

    ``out/config.json`` holds the resolved configuration, ``out/runs/<run_id>.json`` one record per run,
    ``out/results.{md,json}`` and ``out/plot.png`` the aggregate. ``limit`` stops after that many new runs.
    ``marker`` and ``data`` (``{"owner", "holdout", "test"}: (uint8 images, labels)``) replace the configured
    ones.
    """
    check_architectures(config)  # a misspelt name must fail now, not after the first run's marking
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "config.json", config.to_dict())
    context = Context(config, out, marker=marker, data=data)
    jobs = [Job(out / "runs" / f"{spec.run_id}.json", f"{spec.model.name} fraction {spec.fraction:g} seed {spec.seed}",
                partial(run_one, spec, context)) for spec in expand_grid(config)]
    records = run_pending(jobs, progress=progress, limit=limit)
    aggregate(records, out, alpha=config.detect.alpha)
    return records


def check_architectures(config: ExperimentConfig) -> None:
    """ConfigError for an architecture name that is neither built in, nor timm's, nor torchvision's."""
    wanted = []  # (name torchvision must know, what to say when it does not)
    for model in config.models:
        if model.mode not in ("scratch", "distill") or model.arch in ARCHITECTURES:
            continue
        source, _, name = model.arch.partition(":") if ":" in model.arch else ("", "", model.arch)
        if source != "timm":
            wanted.append((name, f"unknown architecture {model.arch!r} in model setting {model.name!r}; choose "
                                 f"from {sorted(ARCHITECTURES)}, torchvision:<name> or timm:<name>"))
    if config.marker_arch:
        wanted.append((config.marker_arch.partition(":")[2],
                       f"unknown marker architecture {config.marker_arch!r}; give torchvision:<name> with a name "
                       "from torchvision.models.list_models()"))
    if not wanted:
        return
    # Imported only when a name must be looked up: importing torchvision costs about a second.
    import torchvision

    names = set(torchvision.models.list_models())
    for name, message in wanted:
        if name not in names:
            raise ConfigError(message)


def dry_run(config: ExperimentConfig) -> list[str]:
    """Validate a configuration without data or training: the grid, the settings, and the architectures.

    Returns:
        lines to print: a summary, notes on files missing here, the resolved settings, one line per run.

    Raises:
        ConfigError: an unknown architecture.
    """
    check_architectures(config)
    runs = expand_grid(config)
    lines = [f"{config.name}: {len(runs)} runs = {len(config.fractions)} fractions x "
             f"{len(config.models)} model settings x {len(config.seeds)} seeds"]
    lines += [f"note: checkpoint {m.init!r} of {m.name!r} does not exist here" for m in config.models
              if m.init not in ("", "marker") and not Path(m.init).is_file()]
    if config.marker not in ("", "default") and not Path(config.marker).is_file():
        lines.append(f"note: marker weights {config.marker!r} do not exist here")
    if config.dataset not in ("fashion-mnist", *PAIR_SOURCES) and not Path(config.dataset).is_dir():
        lines.append(f"note: dataset folder {config.dataset!r} does not exist here")
    lines.append("marking: " + json.dumps(config.mark_config().to_dict()))
    lines += [f"model {m.name}: " + json.dumps(config.recipe(m).to_dict()) for m in config.models]
    lines.append("detect: " + json.dumps(config.detect.to_dict()))
    if config.twins.enabled:
        lines.append("twins: " + json.dumps(config.twins.to_dict()))
    lines += [f"  {spec.run_id}  {spec.model.name:<28} fraction {spec.fraction:<6g} seed {spec.seed}"
              for spec in runs]
    return lines

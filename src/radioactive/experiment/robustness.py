"""The robustness table: the experiment's runs under treatments of the published images (re-encoded before
training) or of the trained suspect (changed after training), each next to its 0 % control.

A robustness file is an experiment file (:func:`radioactive.experiment.load_config`) with two more tables:
``[markings]`` names variants of ``[mark]`` (``plain = {}`` is the file's own marking; ``jpeg-aug = { augment =
["crop", "flip", "jpeg"] }`` also marks against the differentiable JPEG) and ``[[treatments]]`` lists the
treatments (:class:`radioactive.experiment.treatments.Treatment`: ``kind``, optional ``name``, its parameters)
with the ``markings`` each runs under (default ``["plain"]``). Every run is a grid run of the marking's
experiment (:func:`radioactive.experiment.run_one` with the treatment), so marking, training, detection, the
caches and the seeds are the grid's; its record (``OUT/runs/<id>.json``: configuration, treatment, marking,
seeds, versions, key fingerprint) is skipped when it exists, so an interrupted table resumes. Runs are ordered
so that the model treatments of one suspect follow its untreated run and share its training.

``OUT/results.json`` and ``OUT/results.md`` hold the median and range over seeds of the test accuracy and of
each test's log10 p per (treatment, marking, suspect, fraction); ``scripts/update_readme.py`` renders the
README's table from ``results.json``. The runner script is ``benchmarks/run_robustness.py``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from .._io import atomic_write, atomic_write_json
from ..errors import ConfigError
from ..marker import Marker
from .aggregate import aggregate, markdown_table
from .config import ExperimentConfig, ModelSetting, config_from_dict, read_settings, replace_config
from .context import Context, Splits
from .identity import derive_seed
from .resume import Job, Progress, run_pending
from .run import RunSpec, check_architectures, run_one, treated_run_id
from .treatments import Treatment

__all__ = ["PLAIN", "TreatmentSetting", "RobustnessConfig", "RobustRun", "load_robustness", "robustness_from_dict",
           "expand_robustness", "run_robustness", "summarise", "dry_run_robustness"]

PLAIN = "plain"


@dataclass(frozen=True)
class TreatmentSetting:
    """A treatment and the marking variants (names in ``[markings]``) it runs under."""

    treatment: Treatment
    markings: tuple[str, ...] = (PLAIN,)

    def __post_init__(self) -> None:
        object.__setattr__(self, "markings", tuple(self.markings))
        if not self.markings:
            raise ConfigError(f"treatment {self.treatment.name!r} lists no markings; give at least one")


@dataclass(frozen=True)
class RobustnessConfig:
    """The experiment (its ``fractions``, ``models``, ``seeds``, ``[mark]``, ``[train]``, ``[detect]``), the marking
    variants (name -> settings over ``[mark]``; ``plain`` is always ``{}``) and the treatments."""

    experiment: ExperimentConfig
    treatments: tuple[TreatmentSetting, ...]
    markings: dict[str, dict[str, Any]] = field(default_factory=lambda: {PLAIN: {}})

    def __post_init__(self) -> None:
        markings = {PLAIN: {}, **{name: dict(values) for name, values in self.markings.items()}}
        if markings[PLAIN]:
            raise ConfigError(f"marking {PLAIN!r} is the file's own [mark]; give its settings there, not in [markings]")
        object.__setattr__(self, "markings", markings)
        object.__setattr__(self, "treatments", tuple(self.treatments))
        if not self.treatments:
            raise ConfigError("a robustness file needs at least one [[treatments]] table")
        names = [s.treatment.name for s in self.treatments]
        if len(set(names)) != len(names):
            raise ConfigError(f"treatments need distinct names, got {names}; give 'name' to tell them apart")
        for setting in self.treatments:
            unknown = [m for m in setting.markings if m not in markings]
            if unknown:
                raise ConfigError(f"treatment {setting.treatment.name!r} names markings {unknown}; "
                                  f"defined in [markings]: {sorted(markings)}")
        for name in markings:
            self.experiment_for(name)  # validates the marking settings

    def experiment_for(self, marking: str) -> ExperimentConfig:
        """The experiment with marking variant ``marking``: the file's ``[mark]``, then the variant's settings."""
        if marking == PLAIN:
            return self.experiment
        return replace_config(self.experiment, mark={**self.experiment.mark, **self.markings[marking]})

    def used_markings(self) -> list[str]:
        """The marking variants some treatment runs under, in the order they first appear."""
        return list(dict.fromkeys(m for s in self.treatments for m in s.markings))

    def to_dict(self) -> dict[str, Any]:
        return {"experiment": self.experiment.to_dict(), "markings": self.markings,
                "treatments": [{**s.treatment.to_dict(), "markings": list(s.markings)} for s in self.treatments]}


def robustness_from_dict(data: dict[str, Any]) -> RobustnessConfig:
    """A :class:`RobustnessConfig` from an experiment table with ``markings`` and ``treatments`` (as read
    from a robustness file).

    Raises:
        ConfigError: a missing or invalid treatment, marking or experiment setting.
    """
    data = dict(data)
    markings = data.pop("markings", {}) or {}
    entries = data.pop("treatments", None) or []
    if not isinstance(markings, dict) or not all(isinstance(v, dict) for v in markings.values()):
        raise ConfigError("[markings] must map names to tables of marking settings, e.g. "
                          "jpeg-aug = { augment = [\"crop\", \"flip\", \"jpeg\"] }")
    settings = []
    for entry in entries:
        if not isinstance(entry, dict) or "kind" not in entry:
            raise ConfigError(f"each [[treatments]] table needs a 'kind', got {entry!r}")
        entry = dict(entry)
        kind, name = entry.pop("kind"), entry.pop("name", "")
        marks = entry.pop("markings", [PLAIN])
        settings.append(TreatmentSetting(Treatment(kind, entry, name), tuple(marks)))
    return RobustnessConfig(config_from_dict(data), tuple(settings), markings)


def load_robustness(path: str | Path, overrides: dict[str, Any] | None = None) -> RobustnessConfig:
    """Read a robustness file (TOML or YAML); ``overrides`` replace top-level experiment settings."""
    return robustness_from_dict({**read_settings(path), **(overrides or {})})


@dataclass(frozen=True)
class RobustRun:
    """One run of the table: a grid run (``spec``) of the ``marking``'s experiment under ``treatment``."""

    spec: RunSpec
    treatment: Treatment
    marking: str

    @property
    def run_id(self) -> str:
        return treated_run_id(self.spec, self.treatment)

    @property
    def label(self) -> str:
        return f"{self.treatment.name} · {self.marking} · {self.spec.model.name}"


def expand_robustness(config: RobustnessConfig) -> list[RobustRun]:
    """Every run, by seed, marking, fraction and suspect; then the treatments that keep the training images
    (untreated first, so the model treatments reuse its training), then those that re-encode them."""
    ordered = sorted(config.treatments, key=lambda s: {"none": 0, "model": 1, "published": 2}[s.treatment.stage])
    runs = []
    for seed in config.experiment.seeds:
        for marking in config.used_markings():
            experiment = config.experiment_for(marking)
            for fraction in experiment.fractions:
                for model in experiment.models:
                    spec = RunSpec.of(experiment, fraction=fraction, model=model, seed=seed)
                    runs += [RobustRun(spec, s.treatment, marking) for s in ordered if marking in s.markings]
    return runs


def _seeds(seed: int, config: ExperimentConfig) -> dict[str, Any]:
    out: dict[str, Any] = {p: derive_seed(p, seed) for p in ("key", "selection", "marking", "training", "treatment")}
    out["reference_models"] = [derive_seed("reference_models", i)
                               for i in range(len(config.detect.reference_arch_list()))]
    return out


def _check(config: RobustnessConfig) -> None:
    students = tuple(ModelSetting(mode="scratch", arch=s.treatment.params["arch"], name=f"student-{s.treatment.name}",
                                  kwargs=s.treatment.params["kwargs"])
                     for s in config.treatments if s.treatment.kind == "distill")
    check_architectures(replace_config(config.experiment, models=config.experiment.models + students))


def run_robustness(
    config: RobustnessConfig,
    out: str | Path,
    *,
    marker: Marker | None = None,
    data: Splits | None = None,
    progress: Progress | None = None,
    limit: int | None = None,
    guard: Callable[[], AbstractContextManager] | None = None,
) -> list[dict[str, Any]]:
    """Run (or resume) every run of ``config`` into ``out``; write the summary; return the records.

    ``limit`` stops after that many new runs; ``guard()`` is entered around each new run (a lock on a shared
    machine); ``marker`` and ``data`` replace the configured ones (tests).
    """
    _check(config)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "config.json", config.to_dict())
    contexts: dict[str, Context] = {}

    def context_of(marking: str) -> Context:
        if marking not in contexts:
            first = next(iter(contexts.values()), None)  # one copy of the data and the marker for all
            contexts[marking] = Context(config.experiment_for(marking), out,
                                        marker=marker or (first.marker if first else None),
                                        data=data or (first.data if first else None))
        return contexts[marking]

    def execute(run: RobustRun) -> dict[str, Any]:
        record = run_one(run.spec, context_of(run.marking), treatment=run.treatment)
        record.update(marking=run.marking, seeds=_seeds(run.spec.seed, config.experiment))
        return record

    jobs = [Job(out / "runs" / f"{run.run_id}.json", f"{run.label} fraction {run.spec.fraction:g} seed {run.spec.seed}",
                partial(execute, run)) for run in expand_robustness(config)]
    records = run_pending(jobs, progress=progress, limit=limit, guard=guard)
    summarise(config, records, out)
    return records


def summarise(config: RobustnessConfig, records: list[dict[str, Any]], out: str | Path | None = None
              ) -> dict[str, Any]:
    """Median and range over seeds per (treatment, marking, suspect, fraction), in the file's order, from the
    records of the configured runs (others are ignored); written to ``out/results.{json,md}`` when given."""
    runs = {run.run_id: run for run in expand_robustness(config)}
    mine = [r for r in records if r["run_id"] in runs]
    labelled = [{**r, "model": runs[r["run_id"]].label} for r in mine]
    alpha = config.experiment.detect.alpha
    rows = aggregate(labelled, alpha=alpha)
    first = {run.label: run for run in runs.values()}
    treatments = [s.treatment.name for s in config.treatments]
    markings, models = config.used_markings(), [m.name for m in config.experiment.models]

    def place(row: dict[str, Any]) -> tuple[int, int, int, float]:  # the file's order: treatment, marking, suspect
        run = first[row["model"]]
        return (treatments.index(run.treatment.name), markings.index(run.marking),
                models.index(run.spec.model.name), row["fraction"])

    rows.sort(key=place)
    for row in rows:
        run = first[row["model"]]
        row.update(treatment=run.treatment.name, kind=run.treatment.kind, stage=run.treatment.stage,
                   marking=run.marking, suspect=run.spec.model.name)
    tests = sorted({t for r in mine for t in r["log10_p"]})
    summary = {"alpha": alpha, "tests": tests, "runs": len(mine), "planned": len(runs),
               "seeds": list(config.experiment.seeds), "fractions": list(config.experiment.fractions),
               "markings": config.markings, "rows": rows}
    if out is not None:
        out = Path(out)
        atomic_write_json(out / "results.json", summary)
        with atomic_write(out / "results.md") as tmp:
            tmp.write_text(f"{len(mine)} of {len(runs)} runs; rows: treatment · marking · suspect\n\n"
                           + markdown_table(rows, tests, alpha=alpha))
    return summary


def dry_run_robustness(config: RobustnessConfig) -> list[str]:
    """Validate a robustness file without data or training: a summary, the markings, one line per run."""
    _check(config)
    runs = expand_robustness(config)
    lines = [f"{config.experiment.name}: {len(runs)} runs = {len(config.treatments)} treatments x their markings x "
             f"{len(config.experiment.fractions)} fractions x {len(config.experiment.models)} suspects x "
             f"{len(config.experiment.seeds)} seeds"]
    lines += [f"marking {name}: " + json.dumps(config.experiment_for(name).mark_config().to_dict())
              for name in config.used_markings()]
    lines += [f"treatment {s.treatment.name}: " + json.dumps(s.treatment.params) for s in config.treatments]
    lines += [f"  {run.run_id}  {run.label:<44} fraction {run.spec.fraction:<6g} seed {run.spec.seed}" for run in runs]
    return lines

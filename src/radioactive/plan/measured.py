"""Measured responses: what each recorded run's verdicts say about the effect the marks had.

A source is an experiment output folder (``radioactive experiment ... --out FOLDER``: ``FOLDER/runs/*.json``, one
record per run with its verdicts) or the held-out suite's (``results/heldout``). From each verdict the planner
reads one number per class, in the test's unit (:attr:`radioactive.plan.catalogue.TestSpec.unit`):

- cosine tests: the recorded cosine of each class's row with its carrier;
- black-box tests: the true carrier set's standardised shift ``(x_0 - mean(controls)) / sd(controls)``, divided by
  the small-sample factor ``E[1 / sd]`` so that it estimates the shift in units of the controls' spread;
- twins: the win rate minus 1/2 (one number per run).

Only the records are read (``Verdict.to_dict()`` of every test the run made); nothing is recomputed.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import special

from ..errors import ConfigError
from .catalogue import TestSpec, spec_of_verdict

__all__ = ["Observation", "load_observations", "observation_from_verdict"]


@dataclass(frozen=True, kw_only=True)
class Observation:
    """One test of one recorded run.

    Attributes:
        source: the folder it was read from.
        run_id, model, fraction, seed: the run (``model``: the architecture / trainer setting, or the held-out
            suite's pair).
        record_test: the name the run recorded the test under (e.g. ``blackbox-margin-perm``).
        spec: the planner test.
        log10_p: the measured log10 p.
        effects: ``(C,)`` per-class effects (one for twins).
        sampling_var: variance of one class's effect estimate under H0 (1/D for cosines, about
            ``(1 + 1/K)(K - 1)/(K - 3)`` for black-box shifts, ``1/(4N)`` for a win rate).
        conditions: ``classes``, ``dim`` (marker), ``null_dim``, ``controls``, ``per_class`` (probes per class),
            ``reference`` (reference images), ``pairs`` (twins): those that apply.
    """

    source: str
    run_id: str
    model: str
    fraction: float
    seed: int
    record_test: str
    spec: TestSpec
    log10_p: float
    effects: np.ndarray = field(repr=False)
    sampling_var: float
    conditions: dict[str, Any]

    @property
    def effect(self) -> float:
        """The mean effect over classes."""
        return float(np.mean(self.effects))

    @property
    def class_var(self) -> float:
        """The spread of the per-class effects within the run (0 with one class)."""
        return float(np.var(self.effects, ddof=1)) if self.effects.size > 1 else 0.0


def _inverse_sd_factor(controls: int) -> float:
    """E[1 / s] for the sample standard deviation s of ``controls`` standard normal values (ddof 1)."""
    dof = controls - 1
    if dof < 2:
        return 1.0
    return math.sqrt(dof / 2.0) * math.exp(special.gammaln((dof - 1) / 2.0) - special.gammaln(dof / 2.0))


def observation_from_verdict(verdict: dict[str, Any], *, record: dict[str, Any], record_test: str, source: str,
                             dim: int | None) -> Observation | None:
    """The :class:`Observation` of one verdict of a run record, or None for a test the planner does not model."""
    spec = spec_of_verdict(verdict)
    if spec is None:
        return None
    counts, details, classes = verdict.get("counts") or {}, verdict.get("details") or {}, verdict.get("classes") or []
    conditions: dict[str, Any] = {"dim": dim}
    if spec.kind == "cosine":
        effects = np.array([c["cosine"] for c in classes], dtype=np.float64)
        null_dim = int(details.get("null_dim") or dim or 0)
        if null_dim < 2 or effects.size == 0:
            return None
        sampling_var = 1.0 / null_dim
        conditions.update(classes=len(effects), null_dim=null_dim, reference=counts.get("reference"))
    elif spec.kind == "twins":
        pairs = int(counts.get("pairs") or 0)
        if pairs == 0:
            return None
        effects = np.array([float(counts["wins"]) / pairs - 0.5])
        sampling_var = 0.25 / pairs
        conditions.update(pairs=pairs)
    else:
        true = np.array([c["statistic"] for c in classes], dtype=np.float64)
        controls = np.array([c["controls"] for c in classes], dtype=np.float64)
        if controls.ndim != 2 or controls.shape[1] < 4:
            return None
        k = controls.shape[1]
        spread = controls.std(axis=1, ddof=1)
        spread = np.where(spread > 0, spread, np.inf)
        effects = (true - controls.mean(axis=1)) / spread / _inverse_sd_factor(k)
        sampling_var = (1.0 + 1.0 / k) * (k - 1) / (k - 3)
        per_class = [c.get("count") for c in classes if c.get("count")]
        conditions.update(classes=len(effects), controls=k,
                          per_class=int(round(statistics.median(per_class))) if per_class else None)
    return Observation(source=source, run_id=str(record.get("run_id", "")), model=_model_name(record),
                       fraction=float(record["fraction"]), seed=int(record.get("seed", 0)), record_test=record_test,
                       spec=spec, log10_p=float(verdict["log10_p"]), effects=effects, sampling_var=sampling_var,
                       conditions=conditions)


def _model_name(record: dict[str, Any]) -> str:
    for name in ("model", "pair", "arch"):
        if record.get(name):
            return str(record[name])
    return "unnamed"


def _marker_dim(verdicts: dict[str, Any]) -> int | None:
    """The marker's feature dimension, from a white-box verdict of the run (None without one)."""
    for verdict in verdicts.values():
        alignment = (verdict or {}).get("alignment") or {}
        if alignment.get("marker_dim"):
            return int(alignment["marker_dim"])
    for verdict in verdicts.values():
        details = (verdict or {}).get("details") or {}
        if details.get("null_dim") and details.get("carrier_space", "full") == "full":
            return int(details["null_dim"])
    return None


def load_observations(folder: str | Path, *, name: str | None = None) -> list[Observation]:
    """Every modelled verdict of every run recorded under ``folder/runs/*.json``; ``name``: how the observations
    (and so the plan) name the folder (default: the path as given).

    Raises:
        ConfigError: the folder has no run records, or none of them holds verdicts.
    """
    folder = Path(folder)
    paths = sorted((folder / "runs").glob("*.json"))
    if not paths:
        raise ConfigError(f"{str(folder)!r} holds no run records (runs/*.json); give an experiment output folder "
                          "('radioactive experiment CONFIG --out FOLDER') or the held-out suite's results folder")
    source = str(folder) if name is None else name
    out: list[Observation] = []
    for path in paths:
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"run record {str(path)!r} cannot be read ({exc}); rerun the experiment to "
                              "rewrite it, or remove it") from exc
        verdicts = record.get("verdicts") or {}
        if "fraction" not in record:
            continue
        dim = _marker_dim(verdicts)
        for test, verdict in verdicts.items():
            if verdict and "log10_p" in verdict:
                obs = observation_from_verdict(verdict, record=record, record_test=test, source=source, dim=dim)
                if obs is not None:
                    out.append(obs)
    if not out:
        raise ConfigError(f"the run records under {str(folder / 'runs')!r} hold no verdicts the planner models "
                          "(white-box, gradient, black-box rank/perm, twins)")
    return out

"""The response model: how large an effect marking a fraction q of the training set leaves in a suspect.

Stated model, fitted per test family (:attr:`radioactive.plan.catalogue.TestSpec.family`) and per architecture /
trainer (``model``) or pooled over several:

- the mean per-class effect is ``a q^b`` (``b`` fitted on a grid in [0.2, 1.5] by least squares on every run
  when at least three marked fractions were measured; otherwise ``b = 1``: proportional to q);
- from run to run the mean effect varies with standard deviation ``gamma |a q^b|``, and from class to class
  within a run with ``kappa |a q^b|``: both are the spreads measured across seeds and classes beyond what the
  test's own sampling noise explains (least squares of the excess variance on the squared effect, kept only when
  it is at least 2 standard errors above 0; the noise is the larger of the test's sampling variance and what the
  unmarked runs showed), so a run with no marked images is exactly H0;
- the observation noise around the effect is the test's exact sampling law (:mod:`radioactive.plan.laws`).

Pooling several architectures fits one curve on all their runs and adds their disagreement to ``gamma`` (the
models' own spreads plus how far their curves lie from the pooled one): the band is then wider, as it should be
for an architecture that was not measured.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .measured import Observation

__all__ = ["EXPONENTS", "Response", "fit_response"]

EXPONENTS = tuple(np.round(np.arange(0.2, 1.5001, 0.05), 2))
MIN_FRACTIONS_FOR_EXPONENT = 3  # with two, a and b fit them exactly and b is noise


@dataclass(frozen=True, kw_only=True)
class Response:
    """A fitted response of one test family.

    Attributes:
        family, kind: the test family and its kind (``cosine``, ``blackbox``, ``twins``).
        models: the architectures / trainers whose runs were used.
        scale, exponent: ``a`` and ``b`` of ``a q^b``.
        exponent_fitted: False when ``b = 1`` was assumed (fewer than three marked fractions measured).
        run_spread, class_spread: ``gamma`` and ``kappa`` (module docstring).
        runs: how many runs; ``fractions``: the fractions measured (0 included).
        conditions: per condition (``classes``, ``dim``, ``null_dim``, ``controls``, ``per_class``, ``reference``,
            ``pairs``) the sorted distinct values the runs had.
        sources: the folders the runs came from.
    """

    family: str
    kind: str
    models: tuple[str, ...]
    scale: float
    exponent: float
    exponent_fitted: bool
    run_spread: float
    class_spread: float
    runs: int
    fractions: tuple[float, ...]
    conditions: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    sources: tuple[str, ...] = ()

    def mean(self, fraction: float) -> float:
        """The mean per-class effect at ``fraction`` marked."""
        return float(self.scale * max(fraction, 0.0) ** self.exponent) if fraction > 0 else 0.0

    @property
    def marked_range(self) -> tuple[float, float] | None:
        """The smallest and largest nonzero fraction measured."""
        marked = [f for f in self.fractions if f > 0]
        return (min(marked), max(marked)) if marked else None

    def describe(self) -> str:
        shape = (f"a q^b with b = {self.exponent:.2f} fitted" if self.exponent_fitted
                 else "a q (proportional to q: b = 1 assumed, fewer than three marked fractions measured)")
        return (f"mean per-class effect = {shape}, a = {self.scale:.4g}; run-to-run spread {self.run_spread:.2f} x "
                f"effect, class-to-class {self.class_spread:.2f} x effect; fitted on {self.runs} runs of "
                f"{', '.join(self.models)}")

    def to_dict(self) -> dict[str, Any]:
        return {"family": self.family, "kind": self.kind, "models": list(self.models), "scale": self.scale,
                "exponent": self.exponent, "exponent_fitted": self.exponent_fitted, "run_spread": self.run_spread,
                "class_spread": self.class_spread, "runs": self.runs, "fractions": list(self.fractions),
                "conditions": {k: list(v) for k, v in self.conditions.items()}, "sources": list(self.sources),
                "model": self.describe()}


def _one_per_run(observations: Iterable[Observation], family: str) -> list[Observation]:
    """One observation per run of ``family``: its rank and perm verdicts hold the same observations."""
    seen: dict[tuple[str, str, str, float, int], Observation] = {}
    for obs in observations:
        if obs.spec.family == family:
            seen.setdefault((obs.source, obs.run_id, obs.model, obs.fraction, obs.seed), obs)
    return list(seen.values())


def _fit_power(fractions: np.ndarray, effects: np.ndarray) -> tuple[float, float, bool]:
    marked = fractions > 0
    if len(np.unique(fractions[marked])) < MIN_FRACTIONS_FOR_EXPONENT:
        x = fractions[marked]
        scale = float(np.dot(x, effects[marked]) / np.dot(x, x)) if marked.any() else 0.0
        return scale, 1.0, False
    best = (np.inf, 0.0, 1.0)
    for exponent in EXPONENTS:
        x = fractions[marked] ** exponent
        scale = float(np.dot(x, effects[marked]) / np.dot(x, x))
        sse = float(np.sum((effects[marked] - scale * x) ** 2))
        if sse < best[0] - 1e-15:
            best = (sse, scale, float(exponent))
    return best[1], best[2], True


def _baseline(ratios: Sequence[float]) -> float:
    """Observed over theoretical noise variance in the unmarked runs (at least 1; 1 with fewer than two runs)."""
    return max(1.0, float(np.mean(ratios))) if len(ratios) >= 2 else 1.0


def _spread(squares: Sequence[float], noise: Sequence[float], means: np.ndarray,
            dofs: Sequence[int] | None = None) -> float:
    """Relative spread ``s`` in ``E[square] = noise + s^2 mean^2``, by least squares of the excess on ``mean^2``;
    0 unless the excess is at least 2 standard errors above 0 (the noise part's, as for a chi-square with
    ``dofs`` degrees of freedom, 1 by default)."""
    if len(squares) == 0:
        return 0.0
    excess, noise, weight = np.asarray(squares) - np.asarray(noise), np.asarray(noise), np.asarray(means) ** 2
    dofs = np.ones(len(noise)) if dofs is None else np.asarray(dofs, dtype=np.float64)
    total, norm = float(np.dot(weight, excess)), float(np.dot(weight, weight))
    error = float(np.sqrt(np.sum(weight ** 2 * 2.0 * noise ** 2 / dofs)))
    if norm <= 0 or total <= 2.0 * error:
        return 0.0
    return float(np.sqrt(total / norm))


def _pooled_spread(observations: Sequence[Observation], family: str, names: Sequence[str],
                   exclude: Callable[[Observation], bool] | None, scale: float, exponent: float,
                   fitted: float) -> float:
    """Run-to-run spread of a fit pooled over several models: each model's own spread plus how far the models'
    curves lie from the pooled one (over the marked fractions measured), relative to the pooled effect."""
    parts = [fit_response(observations, family, models=[name], exclude=exclude) for name in names]
    parts = [p for p in parts if p is not None]
    fractions = sorted({f for p in parts for f in p.fractions if f > 0})
    pooled = np.array([scale * f ** exponent for f in fractions])
    if not fractions or not np.any(pooled):
        return fitted
    between = np.mean([[(p.mean(f) - m) ** 2 for f, m in zip(fractions, pooled)] for p in parts], axis=0)
    within = np.mean([p.run_spread ** 2 for p in parts])
    return float(max(fitted, np.sqrt(np.sum(between) / np.sum(pooled ** 2) + within)))


def fit_response(observations: Sequence[Observation], family: str, *, models: Sequence[str] | None = None,
                 exclude: Callable[[Observation], bool] | None = None) -> Response | None:
    """Fit the response of ``family`` on the runs of ``models`` (default: every model, pooled).

    Args:
        observations: from :func:`radioactive.plan.measured.load_observations`.
        family: the test family.
        models: the architectures / trainers to use (None: all of them).
        exclude: leave out the observations for which this returns True (leave-one-out validation).

    Returns:
        the :class:`Response`, or None when no run of that family (and those models) was recorded.
    """
    chosen = [o for o in _one_per_run(observations, family)
              if (models is None or o.model in models) and not (exclude and exclude(o))]
    if not chosen:
        return None
    fractions = np.array([o.fraction for o in chosen])
    effects = np.array([o.effect for o in chosen])
    scale, exponent, fitted = _fit_power(fractions, effects)
    marked = [o for o in chosen if o.fraction > 0]
    means = np.array([scale * o.fraction ** exponent for o in marked])
    # The noise baseline: the test's sampling variance, or what the unmarked runs showed if that is larger.
    clean = [o for o in chosen if o.fraction == 0]
    run_base = _baseline([o.effect ** 2 / (o.sampling_var / o.effects.size) for o in clean])
    class_base = _baseline([o.class_var / o.sampling_var for o in clean if o.effects.size > 1])
    run_spread = _spread([(o.effect - m) ** 2 for o, m in zip(marked, means)],
                         [run_base * o.sampling_var / o.effects.size for o in marked], means)
    multi = [i for i, o in enumerate(marked) if o.effects.size > 1]
    class_spread = _spread([marked[i].class_var for i in multi], [class_base * marked[i].sampling_var for i in multi],
                           means[multi], [marked[i].effects.size - 1 for i in multi])
    names = sorted({o.model for o in chosen})
    if len(names) > 1:
        run_spread = _pooled_spread(observations, family, names, exclude, scale, exponent, run_spread)
    conditions: dict[str, set] = {}
    for obs in chosen:
        for name, value in obs.conditions.items():
            if value is not None:
                conditions.setdefault(name, set()).add(value)
    return Response(family=family, kind=chosen[0].spec.kind, models=tuple(names),
                    scale=scale, exponent=exponent, exponent_fitted=fitted, run_spread=run_spread,
                    class_spread=class_spread, runs=len(chosen), fractions=tuple(sorted(set(fractions.tolist()))),
                    conditions={k: tuple(sorted(v)) for k, v in sorted(conditions.items())},
                    sources=tuple(sorted({o.source for o in chosen})))

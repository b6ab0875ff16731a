"""Predictions: expected log10 p of each test, the smallest fraction that reaches a target, and where the
prediction leaves the measured conditions.

``predicted log10 p`` = the test's exact null law (:mod:`radioactive.plan.laws`) applied to effects drawn from the
fitted response (:mod:`radioactive.plan.response`). Quantiles are over ``draws`` simulated audits; the 10-90 %
band spans run-to-run variation (training seed, key) and the audit's own sampling noise.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import ConfigError
from .catalogue import DEFAULT_TESTS, Budget, TestSpec, floor_log10_p, null_description, parse_test
from .laws import EXACT_MAX_CLASSES, simulate_log10_p
from .measured import Observation
from .response import Response, fit_response

__all__ = ["DEFAULT_BUDGET", "PROBE_NOISE_RATIO", "extrapolation_reasons", "plan", "predict_log10_p",
           "probe_scale", "required_effect", "resolve_budget"]

# Used when neither the user nor the measured runs give the budget.
DEFAULT_BUDGET = {"reference_images": 2000, "probes_per_class": 50, "published_per_class": 30, "controls": 20,
                  "pairs": 3000}
# Probe-sampling variance over the carrier-to-carrier variance of one probe's statistic (rho): the black-box shift
# in control units scales as 1 / sqrt(1 + rho / n) with n probes per class. From docs/research.md (split-half, margin,
# 20 probes per class): probe sampling is 37 % of the across-version variance with one clean reference model
# subtracted, 8 % without; rho = 20 s / (1 - s).
PROBE_NOISE_RATIO = {True: 20 * 0.37 / 0.63, False: 20 * 0.08 / 0.92}
SEARCH_DRAWS = 200
_SEARCH_HIGH = {"cosine": 1.0, "blackbox": 30.0, "twins": 0.5}


def _measured(response: Response | None, name: str) -> Any:
    values = (response.conditions.get(name) if response else None) or ()
    return values[len(values) // 2] if values else None


def resolve_budget(spec: TestSpec, budget: Budget, response: Response | None) -> Budget:
    """``budget`` with every unset item taken from the measured runs (else :data:`DEFAULT_BUDGET`)."""
    per_class = _measured(response, "per_class")
    fill = {"reference_images": _measured(response, "reference"), "controls": _measured(response, "controls"),
            "pairs": _measured(response, "pairs"),
            "probes_per_class": per_class if spec.source != "published" else None,
            "published_per_class": per_class if spec.source == "published" else None}
    changes = {name: (value if value is not None else DEFAULT_BUDGET[name])
               for name, value in fill.items() if getattr(budget, name) is None}
    return dataclasses.replace(budget, **changes)


def _per_class(spec: TestSpec, budget: Budget) -> int:
    return budget.published_per_class if spec.source == "published" else budget.probes_per_class


def probe_scale(spec: TestSpec, budget: Budget, response: Response | None) -> float:
    """Factor on a black-box effect for another number of probes per class than measured (1 otherwise)."""
    measured = _measured(response, "per_class")
    if spec.kind != "blackbox" or measured is None:
        return 1.0
    rho = PROBE_NOISE_RATIO[spec.did]
    return math.sqrt((1.0 + rho / measured) / (1.0 + rho / _per_class(spec, budget)))


def _effects(spec: TestSpec, budget: Budget, mean: float, response: Response | None, draws: int,
             seed: int) -> np.ndarray:
    classes = 1 if spec.kind == "twins" else budget.classes
    rng = np.random.default_rng([seed, 1])
    run, per_class = rng.standard_normal((draws, 1)), rng.standard_normal((draws, classes))
    if response is None:
        return np.full((draws, classes), mean)
    return mean + abs(mean) * (response.run_spread * run + response.class_spread * per_class)


def predict_log10_p(spec: TestSpec, budget: Budget, response: Response | None, fraction: float, *,
                    draws: int = 400, seed: int = 0, exact: bool = True) -> np.ndarray:
    """``(draws,)`` simulated log10 p of ``spec`` at ``fraction`` marked (the null law itself without a response).
    ``budget`` must be resolved (:func:`resolve_budget`)."""
    mean = response.mean(fraction) * probe_scale(spec, budget, response) if response else 0.0
    return simulate_log10_p(spec, budget, _effects(spec, budget, mean, response, draws, seed), seed=seed, exact=exact)


def required_effect(spec: TestSpec, budget: Budget, response: Response | None, target_log10_p: float, *,
                    draws: int = SEARCH_DRAWS, seed: int = 0) -> float | None:
    """The mean per-class effect (the test's unit, with the response's spreads) whose median log10 p is the target,
    to about 1 %; None when even the largest effect searched (a cosine of 1, a shift of 30 control spreads, a win
    rate of 1) does not reach it."""
    def median(mean: float) -> float:
        return float(np.median(simulate_log10_p(spec, budget, _effects(spec, budget, mean, response, draws, seed),
                                                seed=seed, exact=False)))

    high = _SEARCH_HIGH[spec.kind]
    low = high * 1e-4
    if median(high) > target_log10_p:
        return None
    if median(low) <= target_log10_p:
        return low
    for _ in range(11):  # geometric bisection: about 1 % relative precision
        mid = math.sqrt(low * high)
        low, high = (mid, high) if median(mid) > target_log10_p else (low, mid)
    return high


@functools.lru_cache(maxsize=64)
def _null_median(spec: TestSpec, budget: Budget, draws: int, seed: int) -> float:
    return float(np.median(predict_log10_p(spec, budget, None, 0.0, draws=draws, seed=seed)))


def extrapolation_reasons(spec: TestSpec, budget: Budget, response: Response, fraction: float | None) -> list[str]:
    """Each way the prediction leaves the measured conditions, with the assumption it then rests on."""
    cond, unit, reasons = response.conditions, spec.unit, []

    def outside(name: str, value: Any) -> bool:
        return bool(cond.get(name)) and value not in cond[name]

    def listed(name: str) -> str:
        return ", ".join(str(v) for v in cond[name])

    if spec.kind != "twins" and outside("classes", budget.classes):
        reasons.append(f"C = {budget.classes}: measured only at C = {listed('classes')}; assumes the per-class "
                       f"effect ({unit}) does not depend on C")
    if outside("dim", budget.dim):
        reasons.append(f"d = {budget.dim}: measured only at d = {listed('dim')}; assumes the effect ({unit}) does "
                       "not depend on the marker's feature dimension")
    if spec.kind == "cosine" and outside("null_dim", budget.null_dim) and budget.dim in cond.get("dim", ()):
        reasons.append(f"{budget.space} carriers (null dimension {budget.null_dim}): measured only with null "
                       f"dimension {listed('null_dim')}; assumes the same learned cosine")
    span = response.marked_range
    if fraction is not None and fraction > 0 and span and not span[0] - 1e-12 <= fraction <= span[1] + 1e-12:
        law = f"q^{response.exponent:.2f}" if response.exponent_fitted else "q (proportional)"
        reasons.append(f"q = {fraction:.3g}: marked fractions measured only in [{span[0]:g}, {span[1]:g}]; assumes the "
                       f"effect keeps growing as {law} outside them")
    if spec.kind == "blackbox" and outside("per_class", _per_class(spec, budget)):
        reasons.append(f"{_per_class(spec, budget)} probes per class: measured only with {listed('per_class')}; "
                       f"effect scaled by {probe_scale(spec, budget, response):.3f}, assuming probe sampling is "
                       f"{'37' if spec.did else '8'} % of the controls' variance at 20 per class (docs/research.md)")
    if spec.kind == "cosine" and outside("reference", budget.reference_images):
        reasons.append(f"{budget.reference_images} reference images: measured only with {listed('reference')}; "
                       "assumes the alignment is as good")
    return reasons


def _test_entry(spec: TestSpec, budget: Budget, response: Response | None, fraction: float, target: float,
                *, draws: int, seed: int, pooled: bool) -> dict[str, Any]:
    resolved = resolve_budget(spec, budget, response)
    floor = floor_log10_p(spec, resolved)
    target_log10 = math.log10(target)
    # The null law depends on the test's kind and combination only, not on its statistic: shared across tests.
    null_spec = dataclasses.replace(spec, name=spec.kind, statistic="", source="", did=False, fit="mean")
    entry: dict[str, Any] = {
        "test": spec.name, "family": spec.family, "kind": spec.kind, "unit": spec.unit,
        "null": null_description(spec, resolved), "floor_log10_p": None if math.isinf(floor) else floor,
        "null_median_log10_p": _null_median(null_spec, resolved, draws, seed),
        "budget": {k: v for k, v in resolved.to_dict().items() if v is not None},
        "measured": response is not None, "response": response.to_dict() if response else None,
        "target_log10_p": target_log10, "expected_log10_p": None, "effect": None,
        "required_effect": None, "min_fraction": None, "extrapolation": False, "extrapolation_reasons": [],
    }
    if spec.kind == "blackbox" and spec.combine == "perm":
        entry["null_note"] = ("exact permutation law" if resolved.classes <= EXACT_MAX_CLASSES else
                              "saddlepoint approximation of the permutation law") + \
            "; the searches (required effect, smallest fraction) use the saddlepoint approximation"
    required = required_effect(spec, resolved, response, target_log10, draws=min(draws, SEARCH_DRAWS), seed=seed)
    entry["required_effect"] = required
    if floor > target_log10:
        entry["min_fraction_note"] = (f"unreachable: the test's smallest possible p-value with this budget is "
                                      f"10^{floor:.2f}, above the target")
    if response is None:
        entry["note"] = ("no measured run of this test family in the sources: its response is unknown; the "
                         "null law and the effect needed are exact, the p-value it would give is not predicted")
        return entry
    scale = probe_scale(spec, resolved, response)
    log10_p = predict_log10_p(spec, resolved, response, fraction, draws=draws, seed=seed)
    entry["effect"] = response.mean(fraction) * scale
    entry["expected_log10_p"] = {"median": float(np.median(log10_p)), "p10": float(np.quantile(log10_p, 0.1)),
                                 "p90": float(np.quantile(log10_p, 0.9))}
    reasons = extrapolation_reasons(spec, resolved, response, fraction)
    if required is not None and "min_fraction_note" not in entry:
        if response.scale * scale <= 0:
            entry["min_fraction_note"] = "the measured response is not positive: no fraction reaches the target"
        else:
            q = (required / (response.scale * scale)) ** (1.0 / response.exponent) if required > 0 else 0.0
            if q > 1.0:
                entry["min_fraction_note"] = f"not reached even with every image marked (would need q = {q:.3g})"
            else:
                entry["min_fraction"] = q
                outside = extrapolation_reasons(spec, resolved, response, q)
                entry["min_fraction_extrapolation"] = [r for r in outside if r.startswith("q = ")]
    elif required is None and "min_fraction_note" not in entry:
        entry["min_fraction_note"] = "unreachable with this budget"
    entry["extrapolation"] = bool(reasons)
    entry["extrapolation_reasons"] = reasons
    entry["assumptions"] = [response.describe()] + (
        [f"architecture/trainer not named: pooled over {', '.join(response.models)}; the band includes their "
         "spread, and an architecture unlike them is an extrapolation"] if pooled else [])
    return entry


def plan(budget: Budget, fraction: float, observations: Sequence[Observation], *, tests: Sequence[str] | None = None,
         model: str | None = None, target: float = 1e-4, draws: int = 400, seed: int = 0) -> dict[str, Any]:
    """Expected log10 p of each test at ``fraction`` marked, and the smallest fraction reaching ``target``.

    Args:
        budget: classes, dimension and the auditor's budget (None items: as measured).
        fraction: fraction of the training set marked, in [0, 1].
        observations: measured runs (:func:`radioactive.plan.measured.load_observations`).
        tests: planner test names (default: :data:`DEFAULT_TESTS` and every other test the sources measured).
        model: the architecture / trainer to use the runs of (None: pooled over every measured one).
        target: the p-value to reach.
        draws: simulated audits per prediction.
        seed: seed of the simulations.

    Returns:
        a JSON-ready dict: ``inputs``, ``sources``, ``models``, ``tests`` (one entry per test) and ``extrapolation``
        (whether any test's prediction leaves the measured conditions).
    """
    if not 0.0 <= fraction <= 1.0:
        raise ConfigError(f"--fraction must be in [0, 1], got {fraction}")
    if not 0.0 < target < 1.0:
        raise ConfigError(f"--target must be a p-value in (0, 1), got {target}")
    if draws < 20:
        raise ConfigError(f"--draws must be at least 20, got {draws}")
    models = sorted({o.model for o in observations})
    if model is not None and model not in models:
        raise ConfigError(f"no measured runs of model {model!r}; choose from {models} (or omit --model to pool them)")
    names = list(tests) if tests else list(DEFAULT_TESTS) + sorted(
        {o.spec.name for o in observations} - set(DEFAULT_TESTS))
    entries = {}
    for name in names:
        spec = parse_test(name)
        response = fit_response(observations, spec.family, models=None if model is None else [model])
        entries[name] = _test_entry(spec, budget, response, fraction, target, draws=draws, seed=seed,
                                    pooled=model is None)
    return {
        "inputs": {**budget.to_dict(), "fraction": fraction, "target": target, "model": model or "pooled",
                   "draws": draws, "seed": seed},
        "sources": sorted({o.source for o in observations}),
        "models": models,
        "response_model": ("per test family and architecture: mean per-class effect a q^b fitted on the measured "
                           "runs, run-to-run and class-to-class spreads proportional to it, observation noise from "
                           "the test's exact null law (radioactive.plan.response)"),
        "tests": entries,
        "extrapolation": any(e["extrapolation"] for e in entries.values()),
    }

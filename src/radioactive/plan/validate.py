"""Leave-one-out validation of the planner on measured runs.

A cell is (model, fraction, recorded test). For each cell the response of the cell's test family is fitted on
the model's runs without that (model, fraction) — its rank and perm verdicts share observations, so both leave
together — and the plan predicts the cell's median log10 p over seeds with the cell's own budget. A second pass
leaves a whole model out and predicts its cells from the other models pooled (a new architecture).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

import numpy as np

from .catalogue import Budget
from .measured import Observation
from .predict import predict_log10_p
from .response import fit_response

__all__ = ["cell_budget", "cells", "leave_one_out", "summarise"]


def cells(observations: Sequence[Observation]) -> dict[tuple[str, float, str], list[Observation]]:
    """Observations grouped by (model, fraction, recorded test name), sorted."""
    out: dict[tuple[str, float, str], list[Observation]] = {}
    for obs in observations:
        out.setdefault((obs.model, obs.fraction, obs.record_test), []).append(obs)
    return dict(sorted(out.items()))


def cell_budget(group: Sequence[Observation]) -> Budget:
    """The budget the cell's runs had (their median conditions)."""
    def median(name: str, default: Any = None) -> Any:
        values = [o.conditions[name] for o in group if o.conditions.get(name) is not None]
        return int(statistics.median_low(values)) if values else default

    spec = group[0].spec
    classes = median("classes", 1)
    dim = median("dim") or median("null_dim") or 2
    null_dim = median("null_dim")
    space = "neutral" if null_dim is not None and dim - classes == null_dim and null_dim != dim else "full"
    per_class = median("per_class")
    return Budget(classes=classes, dim=dim, space=space, reference_images=median("reference"),
                  probes_per_class=per_class if spec.source != "published" else None,
                  published_per_class=per_class if spec.source == "published" else None,
                  controls=median("controls"), pairs=median("pairs"))


def _predict(group: Sequence[Observation], response, draws: int, seed: int) -> dict[str, float]:
    from .predict import resolve_budget

    spec = group[0].spec
    budget = resolve_budget(spec, cell_budget(group), response)
    log10_p = predict_log10_p(spec, budget, response, group[0].fraction, draws=draws, seed=seed)
    return {"predicted": float(np.median(log10_p)), "predicted_p10": float(np.quantile(log10_p, 0.1)),
            "predicted_p90": float(np.quantile(log10_p, 0.9))}


def leave_one_out(observations: Sequence[Observation], *, draws: int = 400, seed: int = 0,
                  by: str = "cell") -> list[dict[str, Any]]:
    """Predicted against measured median log10 p for every cell.

    Args:
        observations: measured runs.
        draws, seed: of each prediction's simulation.
        by: ``cell`` (fit on the same model without the cell's fraction) or ``model`` (fit on the other models,
            pooled).

    Returns:
        one dict per cell: ``model``, ``fraction``, ``test`` (recorded name), ``planner_test``, ``seeds``,
        ``measured`` (median over seeds), ``measured_range``, ``predicted`` (median), ``predicted_p10``,
        ``predicted_p90``, ``error`` (predicted - measured), ``within_one``, ``extrapolated`` (the fraction lies
        outside the marked fractions the fit used), and the fit used.
    """
    if by not in ("cell", "model"):
        raise ValueError(f"by must be 'cell' or 'model', got {by!r}")
    rows = []
    for (model, fraction, test), group in cells(observations).items():
        spec = group[0].spec
        if by == "cell":
            response = fit_response(observations, spec.family, models=[model],
                                    exclude=lambda o, m=model, f=fraction: o.model == m and o.fraction == f)
        else:
            response = fit_response(observations, spec.family,
                                    models=sorted({o.model for o in observations} - {model}))
        measured = [o.log10_p for o in group]
        row = {"model": model, "fraction": fraction, "test": test, "planner_test": spec.name,
               "seeds": sorted(o.seed for o in group), "measured": float(statistics.median(measured)),
               "measured_range": [min(measured), max(measured)], **_predict(group, response, draws, seed),
               "fit": None if response is None else {
                   "scale": response.scale, "exponent": response.exponent, "run_spread": response.run_spread,
                   "class_spread": response.class_spread, "runs": response.runs}}
        span = response.marked_range if response is not None else None
        row["extrapolated"] = bool(fraction > 0 and (span is None or not span[0] <= fraction <= span[1]))
        row["error"] = row["predicted"] - row["measured"]
        row["within_one"] = abs(row["error"]) <= 1.0
        rows.append(row)
    return rows


def summarise(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Fraction of cells within one unit of log10 p, overall, per test and per model; and the error's spread."""
    def share(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        errors = np.array([r["error"] for r in items])
        return {"cells": len(items), "within_one": int(sum(r["within_one"] for r in items)),
                "fraction_within_one": float(np.mean(np.abs(errors) <= 1.0)) if len(items) else float("nan"),
                "median_abs_error": float(np.median(np.abs(errors))) if len(items) else float("nan"),
                "max_abs_error": float(np.max(np.abs(errors))) if len(items) else float("nan"),
                "inside_band": int(sum(r["predicted_p10"] <= r["measured"] <= r["predicted_p90"] for r in items))}

    marked = [r for r in rows if r["fraction"] > 0]
    return {"all": share(rows), "marked_only": share(marked),
            "interpolated": share([r for r in marked if not r["extrapolated"]]),
            "extrapolated": share([r for r in rows if r["extrapolated"]]),
            "per_test": {t: share([r for r in rows if r["test"] == t]) for t in sorted({r["test"] for r in rows})},
            "per_model": {m: share([r for r in rows if r["model"] == m]) for m in sorted({r["model"] for r in rows})}}

"""Paths of the committed records, loading, and the number format every generated table shares."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
GRID = ROOT / "results" / "fashion-mnist"
CONVERGED = ROOT / "results" / "fashion-mnist-converged"
HELDOUT = ROOT / "results" / "heldout"
ROBUSTNESS = ROOT / "results" / "robustness"
RESULTS_DOC = "docs/results.md"
# Markdown links inside docs/results.md are relative to docs/.
DOC_PREFIX = "../"


def load(name: str) -> dict[str, Any] | None:
    """``benchmarks/results/<name>`` as JSON, or None when it is not committed."""
    path = RESULTS / name
    return json.loads(path.read_text()) if path.is_file() else None


def load_json(path: Path) -> dict[str, Any] | None:
    """Any JSON record, or None when it is missing."""
    return json.loads(path.read_text()) if path.is_file() else None


def f(value: float | None, digits: int = 2) -> str:
    """A number with ``digits`` decimals; '–' for a missing or NaN value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def median(values: list[float]) -> float:
    return statistics.median(values)


def rel(path: Path) -> str:
    """``path`` relative to the repository root (as written in the tables), or as given outside it."""
    return path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else path.as_posix()


def link(path: str, prefix: str = DOC_PREFIX, text: str | None = None) -> str:
    """A Markdown link to the repository path ``path`` from a document ``prefix`` away from the root."""
    return f"[{text or path}]({prefix}{path})"

"""From run records to the experiment's summary: per (model setting, fraction), over seeds, the median and
range of accuracy and of each test's log10 p; as JSON, a Markdown table and a plot."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._io import atomic_write_json, save_png

__all__ = ["aggregate", "load_records", "markdown_table", "plot"]


def load_records(out: str | Path) -> list[dict[str, Any]]:
    """The records of the finished runs under ``out/runs``, in run-id order."""
    return [json.loads(path.read_text()) for path in sorted((Path(out) / "runs").glob("*.json"))]


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else 0.5 * (ordered[mid - 1] + ordered[mid])


def aggregate(records: Sequence[dict[str, Any]], out: str | Path | None = None, *, alpha: float = 0.05
              ) -> list[dict[str, Any]]:
    """Group runs by (model setting, fraction) over seeds: median and range of accuracy and of each test's
    log10 p, how many seeds each test detected at ``alpha``, PSNR, wall time. Writes ``results.json``,
    ``runs.json``, ``results.md`` and ``plot.png`` under ``out`` when given.

    Returns:
        one row (a dict) per (model setting, fraction), sorted.
    """
    groups: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for record in records:
        groups.setdefault((record["model"], float(record["fraction"])), []).append(record)
    tests = sorted({t for r in records for t in r["log10_p"]})
    rows = []
    for (model, fraction), items in sorted(groups.items()):
        row: dict[str, Any] = {"model": model, "fraction": fraction, "seeds": sorted(r["seed"] for r in items)}
        accuracy = [r["test_accuracy"] for r in items if r.get("test_accuracy") is not None]
        row["accuracy_median"] = _median(accuracy) if accuracy else None
        row["accuracy_range"] = [min(accuracy), max(accuracy)] if accuracy else None
        psnr_min = [r["psnr_min"] for r in items if r.get("psnr_min") is not None]
        psnr_mean = [r["psnr_mean"] for r in items if r.get("psnr_mean") is not None]
        row["psnr_min"] = min(psnr_min) if psnr_min else None
        row["psnr_mean"] = sum(psnr_mean) / len(psnr_mean) if psnr_mean else None
        for test in tests:
            values = [r["log10_p"][test] for r in items if test in r["log10_p"]]
            row[f"{test}_log10_p_median"] = _median(values) if values else None
            row[f"{test}_log10_p_range"] = [min(values), max(values)] if values else None
            row[f"{test}_detected"] = sum(v <= math.log10(alpha) for v in values) if values else None
        row["seconds_mean"] = sum(r["seconds"]["total"] for r in items) / len(items)
        rows.append(row)
    if out is not None:
        out = Path(out)
        atomic_write_json(out / "results.json", {"alpha": alpha, "tests": tests, "rows": rows})
        atomic_write_json(out / "runs.json", [{k: v for k, v in r.items() if k not in ("verdicts", "config")}
                                               for r in records])
        (out / "results.md").write_text(markdown_table(rows, tests, alpha=alpha))
        if records:
            plot(rows, tests, out / "plot.png", alpha=alpha)
    return rows


def _fmt(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def markdown_table(rows: Sequence[dict[str, Any]], tests: Sequence[str], *, alpha: float = 0.05) -> str:
    """The rows of :func:`aggregate` as a Markdown table (one column per test), with a legend line."""
    header = ["training", "marked", "seeds", "test acc. (median)", "PSNR min / mean (dB)"]
    header += [f"{t} log10 p median [min, max]" for t in tests]
    header.append("time / run (s)")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [
            row["model"], f"{100 * row['fraction']:g} %", str(len(row["seeds"])),
            _fmt(100 * row["accuracy_median"] if row["accuracy_median"] is not None else None, 2) + " %",
            f"{_fmt(row['psnr_min'], 1)} / {_fmt(row['psnr_mean'], 1)}",
        ]
        for test in tests:
            rng = row.get(f"{test}_log10_p_range")
            median = row.get(f"{test}_log10_p_median")
            cells.append("–" if rng is None else f"{median:.2f} [{rng[0]:.2f}, {rng[1]:.2f}]")
        cells.append(f"{row['seconds_mean']:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"log10 p: one-sided p-value of the test (detected when <= log10 {alpha:g} = {math.log10(alpha):.2f}).")
    return "\n".join(lines) + "\n"


def plot(rows: Sequence[dict[str, Any]], tests: Sequence[str], path: Path, *, alpha: float = 0.05) -> None:
    """log10 p against fraction marked, one panel per test, a line per model setting, seed range as bars."""
    # Imported here: pyplot costs about half a second, and the backend is chosen only when a plot is drawn.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = max(1, len(tests))
    ncols = min(4, count)
    nrows = math.ceil(count / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.0 * ncols, 3.8 * nrows), squeeze=False)
    for ax in axes.flat[len(tests):]:
        ax.set_visible(False)
    models = sorted({r["model"] for r in rows})
    for ax, test in zip(axes.flat, tests):
        for model in models:
            mine = [r for r in rows if r["model"] == model and r.get(f"{test}_log10_p_median") is not None]
            if not mine:
                continue
            xs = [100 * r["fraction"] for r in mine]
            ys = [r[f"{test}_log10_p_median"] for r in mine]
            lo = [y - r[f"{test}_log10_p_range"][0] for y, r in zip(ys, mine)]
            hi = [r[f"{test}_log10_p_range"][1] - y for y, r in zip(ys, mine)]
            ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label=model)
        ax.axhline(math.log10(alpha), color="red", linestyle="--", linewidth=1, label=f"alpha = {alpha:g}")
        ax.set_xlabel("images marked (%)")
        ax.set_ylabel("log10 p (median, seed range)")
        ax.set_title(test)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    save_png(fig, path)

"""Reports of a :class:`radioactive.detect.Verdict`: JSON with provenance, and an HTML page with plots.

This module computes nothing it reports: it draws what the verdict holds (plus the analytic null density).
"""

from __future__ import annotations

import html
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from . import stats
from ._io import atomic_write_bytes, atomic_write_json, save_png, versions
from .detect.verdict import Verdict, evidence_scale, evidence_words, format_p

__all__ = ["write_json", "write_report", "plot_null_density", "plot_blackbox", "plot_null_trials",
           "plot_permutation_null", "permutation_null"]


def _clean(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return obj


def write_json(verdict: Verdict, path: str | os.PathLike, *, command: dict[str, Any] | None = None) -> Path:
    """The verdict, the command's settings and the software versions, as JSON (atomically)."""
    out = {"verdict": verdict.to_dict(), "command": command or {}, "versions": versions()}
    atomic_write_json(path, _clean(out))
    return Path(path)


def _figure():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plot_null_density(verdict: Verdict, path: str | os.PathLike) -> Path:
    """Exact null density of a cosine in the test's dimension, with the observed per-class cosines."""
    plt = _figure()
    dim = int(verdict.details["null_dim"])
    cosines = np.array([c.cosine for c in verdict.classes], dtype=np.float64)
    width = max(6.0 / math.sqrt(dim), float(np.abs(cosines).max()) * 1.15 if len(cosines) else 0.0)
    width = min(width, 1.0)
    grid = np.linspace(-width, width, 801)
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.plot(grid, stats.cosine_pdf(grid, dim), color="0.2", label=f"null density (uniform direction, d = {dim})")
    threshold = None
    try:
        from scipy.optimize import brentq

        target = math.log(verdict.alpha)
        threshold = brentq(lambda c: stats.cosine_log_sf(c, dim) - target, 0.0, 1.0 - 1e-12)
        ax.axvline(threshold, color="0.5", ls="--", lw=1, label=f"per-class threshold at alpha = {verdict.alpha:g}")
    except ValueError:
        pass
    for score in verdict.classes:
        ax.axvline(score.cosine, color="tab:red", alpha=0.7, lw=1.2)
    ax.plot([], [], color="tab:red", label="observed cosines (one per class)")
    ax.set_xlabel("cosine between aligned classifier row and carrier")
    ax.set_ylabel("density")
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title(f"white-box: log10 p = {verdict.log10_p:.2f}")
    return save_png(fig, path, tight=True)


def plot_blackbox(verdict: Verdict, path: str | os.PathLike) -> Path:
    """Per class: the statistic on the true-carrier version against the control sets; and the distribution of
    the true-minus-control differences."""
    plt = _figure()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6), gridspec_kw={"width_ratios": [3, 2]})
    diffs = []
    for position, score in enumerate(verdict.classes):
        controls = np.array(score.controls)
        left.scatter(np.full(len(controls), position), controls, color="0.55", s=12,
                     label="control carrier sets" if position == 0 else None)
        left.scatter([position], [score.statistic], color="tab:red", marker="D", s=30,
                     label="true carriers" if position == 0 else None)
        if len(controls) > 1 and controls.std() > 0:
            diffs.extend(((score.statistic - controls) / controls.std(ddof=1)).tolist())
        else:
            diffs.extend((score.statistic - controls).tolist())
    left.set_xticks(range(len(verdict.classes)), [str(s.index) for s in verdict.classes])
    left.set_xlabel("class")
    left.set_ylabel(verdict.details.get("statistic", "statistic") + (" (minus reference)" if verdict.details.get(
        "difference_in_differences") else ""))
    left.legend(fontsize=8)
    right.hist(diffs, bins=30, color="tab:blue", alpha=0.8)
    right.axvline(0, color="0.3", lw=1)
    right.set_xlabel("(true - control) / control spread, per class and control")
    right.set_ylabel("count")
    fig.suptitle(f"{verdict.test}: log10 p = {verdict.log10_p:.2f}")
    return save_png(fig, path, tight=True)


def permutation_null(verdict: Verdict, grid: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """The exact null law of the permutation test's statistic (sum over classes of the standardised value of a
    uniformly chosen version), from the per-class values the verdict holds: ``(support, probabilities)``."""
    pmf, offset = np.ones(1), 0
    for score in verdict.classes:
        values = np.array([score.statistic, *score.controls], dtype=np.float64)
        spread = values.std(ddof=1) if len(values) > 1 and values.std() > 0 else 1.0
        ticks = np.round((values - values.mean()) / spread / grid).astype(np.int64)
        low = int(ticks.min())
        pmf = np.convolve(pmf, np.bincount(ticks - low) / len(values))
        offset += low
    return (offset + np.arange(pmf.size)) * grid, pmf


def plot_permutation_null(verdict: Verdict, path: str | os.PathLike) -> Path:
    """The permutation test's observed statistic against its exact null law and the control sets' own values."""
    plt = _figure()
    support, pmf = permutation_null(verdict)
    observed = float(verdict.details["sum_z"])
    controls = np.array(verdict.details.get("control_sums", []), dtype=np.float64)
    fig, ax = plt.subplots(figsize=(7, 3.2))
    width = support[1] - support[0] if len(support) > 1 else 0.05
    ax.plot(support, pmf / width, color="0.3", lw=1, label="exact null law (any version equally likely)")
    if len(controls):
        ax.plot(controls, np.zeros_like(controls), "|", color="0.45", ms=18, mew=1.5,
                label=f"the {len(controls)} control carrier sets, each scored as if it were the key")
    ax.axvline(observed, color="tab:red", lw=2, label=f"the key's carriers (log10 p = {verdict.log10_p:.2f})")
    ax.set_xlabel("sum over classes of the standardised statistic")
    ax.set_ylabel("density")
    ax.legend(fontsize=7, loc="upper left")
    return save_png(fig, path, tight=True)


def plot_null_trials(verdict: Verdict, path: str | os.PathLike) -> Path:
    plt = _figure()
    null = np.array(verdict.null_trials["null_log10_p"], dtype=np.float64)
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.hist(null, bins=min(40, max(5, len(null) // 3)), color="0.6", label=f"{len(null)} random keys")
    ax.axvline(verdict.log10_p, color="tab:red", lw=2, label="the real key")
    ax.axvline(math.log10(verdict.alpha), color="0.3", ls="--", lw=1, label=f"alpha = {verdict.alpha:g}")
    ax.set_xlabel("log10 p")
    ax.legend(fontsize=8)
    return save_png(fig, path, tight=True)


def _table(verdict: Verdict) -> str:
    white = verdict.test == "whitebox"
    head = "<tr><th>class</th><th>output</th><th>{}</th><th>log10 p</th><th>z</th></tr>".format(
        "cosine" if white else "statistic (true / controls mean)")
    rows = []
    for s in verdict.classes:
        value = f"{s.cosine:.4f}" if white else f"{s.statistic:.4f} / {np.mean(s.controls):.4f}"
        rows.append(f"<tr><td>{s.index}</td><td>{s.output}</td><td>{value}</td><td>{s.log10_p:.3f}</td>"
                    f"<td>{s.z:.2f}</td></tr>")
    return "<table>" + head + "".join(rows) + "</table>"


_ASSUMPTIONS_WHITE = (
    "H0: the suspect was not trained on data marked with this key. Under H0 its classifier rows are independent of "
    "the secret random carriers, so each cosine follows the law of one coordinate of a uniformly random direction "
    "(exact, no approximation); the classes' p-values are combined with Fisher's method. The alignment is computed "
    "from clean reference images only, so it cannot depend on the carriers. A small p-value is evidence that the "
    "model learned the carriers; a large one is not evidence of innocence (the white-box test is weak with few classes)."
)
_ASSUMPTIONS_BLACK = (
    "H0: the model behind the outputs was not trained on data marked with this key. The same probe images were marked "
    "with the key's carriers and with control carrier sets drawn the same way and never published; under H0 these "
    "versions are exchangeable, so the rank of the true set among them is exactly uniform per class (the rank "
    "test is exact; the t combination's calibration is measured by the project's benchmark). Per-image comparisons "
    "are not used: they are not calibrated."
)


_EVIDENCE_COLOURS = {"none": "#1b5e20", "weak": "#b26a00", "strong": "#b00020", "very strong": "#b00020"}
_LEVELS_TEXT = (
    f"Evidence levels: {evidence_scale()}; otherwise none. A p-value of 0.05 is weak evidence: whatever the alternative, it "
    "raises the odds against H0 by a factor of at most about 2.5 (Sellke, Bayarri and Berger 2001), against about "
    "53 at 1e-3 and 26,600 at 1e-6. An owner who audits many models, or runs several tests, must correct for "
    "that (e.g. 20 audits at 1e-3 give a family-wise error of at most 2 %)."
)


def write_report(verdict: Verdict, folder: str | os.PathLike, *, command: dict[str, Any] | None = None) -> Path:
    """Write ``index.html``, PNG plots and ``verdict.json`` into ``folder``; returns the page's path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    images = []
    if verdict.test == "whitebox":
        images.append(("Null density and observed cosines", plot_null_density(verdict, folder / "null_density.png")))
    else:
        images.append(("True carriers vs control carrier sets", plot_blackbox(verdict, folder / "blackbox.png")))
        if "control_sums" in verdict.details:
            images.append(("The key among its control sets: the empirical null",
                           plot_permutation_null(verdict, folder / "permutation_null.png")))
    if verdict.null_trials:
        images.append(("The real key among random keys", plot_null_trials(verdict, folder / "null_trials.png")))
    write_json(verdict, folder / "verdict.json", command=command)
    decision = "DETECTED" if verdict.detected else "NOT DETECTED"
    colour = _EVIDENCE_COLOURS[verdict.evidence]
    facts = [
        ("test", verdict.test),
        ("p-value", f"{format_p(verdict.log10_p)} (log10 p = {verdict.log10_p:.3f}; z = {verdict.z:.2f})"),
        ("evidence", evidence_words(verdict.log10_p)),
        ("decision", f"{decision} at significance level {verdict.alpha:g}"),
        ("key fingerprint", verdict.key_fingerprint),
        ("model", verdict.model_sha256 or "not recorded"),
        ("counts", ", ".join(f"{k}: {v}" for k, v in verdict.counts.items())),
    ]
    if verdict.alignment:
        a = verdict.alignment
        facts.append(("alignment", f"{a['method']} ({html.escape(str(a.get('reason', '')))}); R^2 {a['r2']:.4f}"))
    if verdict.null_trials:
        nt = verdict.null_trials
        facts.append(("null trials", f"the real key ranks {nt['rank']} among {nt['trials'] + 1} keys "
                                     f"(empirical p {nt['empirical_p']:.3g})"))
    marking = verdict.details.get("marking")
    if marking:
        facts.append(("probes marked with", marking["summary"]))
        if marking.get("warning"):
            facts.append(("warning", marking["warning"]))
    alone = verdict.details.get("reference_alone")
    if alone:
        facts.append(("reference alone", f"{alone['references']} reference model(s), {alone['statistic']}, against the "
                                         f"controls: log10 p {alone['log10_p_upper']:.2f} (upper tail: likes the true "
                                         f"set), {alone['log10_p_lower']:.2f} (lower tail: dislikes it)"))
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in facts)
    if alone and alone["extreme"]:
        rows += f"<tr><th>warning</th><td style='color:#b00020'>{html.escape(alone['note'])}</td></tr>"
    figures = "".join(f"<h2>{html.escape(title)}</h2><img src='{p.name}' alt='{html.escape(title)}'>" for title, p in images)
    assumptions = _ASSUMPTIONS_WHITE if verdict.test == "whitebox" else _ASSUMPTIONS_BLACK
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>radioactive: {html.escape(verdict.test)} verdict</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.25em .6em;text-align:left}}img{{max-width:100%}}</style></head>
<body><h1>Evidence: <span style="color:{colour}">{html.escape(evidence_words(verdict.log10_p))}</span></h1>
<table>{rows}</table>
<h2>What the p-value means</h2><p>{html.escape(assumptions)}</p><p>{html.escape(_LEVELS_TEXT)}</p>
{figures}
<h2>Per class</h2>{_table(verdict)}
<p>Machine-readable: <a href="verdict.json">verdict.json</a>.</p>
</body></html>
"""
    page_path = folder / "index.html"
    atomic_write_bytes(page_path, page.encode())
    return page_path

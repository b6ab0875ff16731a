"""Reports of a :class:`radioactive.detect.KeyFamily` (one suspect, several keys): JSON with provenance, and an
HTML page with the table of keys (fingerprints only) over one single-key report per key.

Like :mod:`radioactive.report`, this module computes nothing it reports.
"""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any

from ._io import atomic_write_bytes, atomic_write_json, versions
from .detect.keys import KeyFamily
from .detect.verdict import evidence_scale, evidence_words, format_p
from .report import _clean, write_report

__all__ = ["write_family_json", "write_family_report"]

_HOLM = (
    "Each key is tested exactly as it would be alone: its p-value answers H0 'the suspect was not trained on data "
    "marked with this key'. Testing several keys multiplies the chances of a small p-value by luck, so the "
    "decisions use Holm's step-down: with the m p-values sorted ascending, the i-th is multiplied by m - i + 1 "
    "(a running maximum keeps the order, capped at 1), and a key is detected when its adjusted p-value is at "
    "most alpha. Whatever the dependence between the tests, the probability of declaring any key whose H0 is "
    "true is then at most alpha. The evidence level is that of the key's own p-value."
)
_COLOURS = {"none": "#1b5e20", "weak": "#b26a00", "strong": "#b00020", "very strong": "#b00020"}
_PLOTS = ("null_density.png", "blackbox.png")


def write_family_json(family: KeyFamily, path: str | os.PathLike, *, command: dict[str, Any] | None = None) -> Path:
    """The family (each key's verdict and Holm's decisions), the command's settings and the software versions,
    as JSON (atomically)."""
    out = {"family": family.to_dict(), "command": command or {}, "versions": versions()}
    atomic_write_json(path, _clean(out))
    return Path(path)


def write_family_report(family: KeyFamily, folder: str | os.PathLike, *, command: dict[str, Any] | None = None) -> Path:
    """Write ``index.html`` (the table of keys) and ``family.json`` into ``folder``, and each key's single-key
    report (:func:`radioactive.report.write_report`) into ``folder/<key fingerprint>/``; returns the page."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows, sections = [], []
    for verdict, adjusted, detected in zip(family.verdicts, family.holm_log10_p, family.detected):
        fingerprint = verdict.key_fingerprint
        write_report(verdict, folder / fingerprint, command=command)
        level = verdict.evidence
        decision = "DETECTED" if detected else "not detected"
        rows.append(
            f"<tr><td><a href='{fingerprint}/index.html'><code>{fingerprint}</code></a></td>"
            f"<td>{html.escape(verdict.test)}</td><td>{html.escape(format_p(verdict.log10_p))}</td>"
            f"<td>{verdict.log10_p:.3f}</td><td style='color:{_COLOURS[level]}'>"
            f"{html.escape(evidence_words(verdict.log10_p))}</td><td>{html.escape(format_p(adjusted))}</td>"
            f"<td><b>{decision}</b></td></tr>")
        plot = next((name for name in _PLOTS if (folder / fingerprint / name).is_file()), None)
        if plot:
            sections.append(f"<h2>Key <code>{fingerprint}</code></h2><img src='{fingerprint}/{plot}' "
                            f"alt='key {fingerprint}'><p><a href='{fingerprint}/index.html'>its full report</a></p>")
    write_family_json(family, folder / "family.json", command=command)
    count = sum(family.detected)
    model = family.verdicts[0].model_sha256 or "not recorded"
    head = ("<tr><th>key fingerprint</th><th>test</th><th>p-value</th><th>log10 p</th><th>evidence</th>"
            "<th>Holm-adjusted p</th><th>decision</th></tr>")
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>radioactive: {len(family.verdicts)} keys</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.25em .6em;text-align:left}}img{{max-width:100%}}</style></head>
<body><h1>{count} of {len(family.verdicts)} keys detected</h1>
<p>Holm's step-down at family-wise alpha = {family.alpha:g}; suspect {html.escape(model)}.</p>
<table>{head}{''.join(rows)}</table>
<h2>What the decisions mean</h2><p>{html.escape(_HOLM)}</p><p>{html.escape(f"Evidence levels: {evidence_scale()}; otherwise none.")}</p>
{''.join(sections)}
<p>Machine-readable: <a href="family.json">family.json</a>.</p>
</body></html>
"""
    page_path = folder / "index.html"
    atomic_write_bytes(page_path, page.encode())
    return page_path

"""The robustness table (``configs/robustness.toml``, ``results/robustness/results.json``): the published images
re-encoded before training, or the suspect changed after it."""

from __future__ import annotations

import json
from pathlib import Path

from .common import ROBUSTNESS, f

ROBUSTNESS_TESTS = {"whitebox": "white-box", "blackbox": "black-box margin (exact perm., DiD)",
                    "blackbox-loss-perm": "black-box loss (exact perm., DiD)"}


def treatments(folder: Path = ROBUSTNESS) -> list[str]:
    """The robustness table from ``folder/results.json`` (configs/robustness.toml, written by
    ``.venv/bin/python benchmarks/run_robustness.py configs/robustness.toml --out results/robustness``, about
    4.5-5 h on 2 CPU cores): per treatment and marking, the test accuracy and each test's median log10 p at every
    fraction, the 0 % run being the treatment's control."""
    command = ("`.venv/bin/python benchmarks/run_robustness.py configs/robustness.toml --out results/robustness` "
               "(about 4.5-5 h on 2 CPU cores; resumable)")
    intro = ("**Robustness** (`configs/robustness.toml`): the published images re-encoded before training (every "
             "image: JPEG with a real codec, or downscaled and back), under the plain marking and under one that "
             "also optimises through kornia's differentiable JPEG (`jpeg-aug`); and the trained suspect changed "
             "after training (fine-tuned or distilled into a student of another architecture on the clean images "
             "the trainer has; global magnitude pruning; int8 dynamic quantization of its linear layers, the "
             "white-box test reading the dequantized int8 weights).")
    path = folder / "results.json"
    if not path.is_file():
        print("robustness table: not yet run")
        return [f"{intro} Not yet run: {command}, then `scripts/update_readme.py`.", ""]
    summary = json.loads(path.read_text())
    hours = sum(row["seconds_mean"] * len(row["seeds"]) for row in summary["rows"]) / 3600
    if summary["runs"] == summary["planned"]:
        command = command.replace("about 4.5-5 h", f"measured {hours:.1f} h")
    fractions = summary["fractions"]
    tests = [t for t in ROBUSTNESS_TESTS if t in summary["tests"]] + [
        t for t in summary["tests"] if t not in ROBUSTNESS_TESTS]
    groups: dict[tuple[str, str, str], dict[float, dict]] = {}
    for row in summary["rows"]:
        groups.setdefault((row["treatment"], row["marking"], row["suspect"]), {})[row["fraction"]] = row
    at = " / ".join(f"{100 * x:g}" for x in fractions) + " %"
    top = max(fractions)
    header = ["treatment", "marking", "suspect", f"test acc. (%) at {at}"]
    header += [f"{ROBUSTNESS_TESTS.get(t, t)} log10 p at {at} (seeds detected at {100 * top:g} %)" for t in tests]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (treatment, marking, suspect), rows in groups.items():
        accuracy = " / ".join(f(100 * rows[x]["accuracy_median"], 1) if x in rows and rows[x]["accuracy_median"]
                              is not None else "–" for x in fractions)
        cells = [treatment, marking, suspect, accuracy]
        for test in tests:
            medians = " / ".join(f(rows[x].get(f"{test}_log10_p_median")) if x in rows else "–" for x in fractions)
            last = rows.get(top, {})
            cells.append(f"{medians} ({last.get(f'{test}_detected', '–')}/{len(last.get('seeds', []))})")
        lines.append("| " + " | ".join(cells) + " |")
    config = json.loads((folder / "config.json").read_text()) if (folder / "config.json").is_file() else None
    settings = "; ".join(f"`{t['name']}`: " + ", ".join(f"{k} {json.dumps(v)}" for k, v in t["params"].items())
                         for t in (config or {}).get("treatments", []) if t["params"])
    return [
        f"{intro} {summary['runs']} of {summary['planned']} runs; regenerate with {command}, then `scripts/update_readme.py`. "
        + (f"Settings: {settings}. " if settings else "")
        + f"Cells: median over seeds {summary['seeds']} at each fraction marked, the 0 % run (same treatment, nothing "
        f"marked) being the control; detected: log10 p <= log10 {summary['alpha']:g}. Test accuracy: on the test "
        "images re-encoded like the published ones in the re-encoding rows (the trainer's own test set; the "
        "records keep the original test images' as `clean_test_accuracy`), on the original test images otherwise. "
        "Per-run records (configuration, treatment, seeds, versions, key fingerprints): `results/robustness/runs/`.",
        "",
        *lines,
        "",
    ]

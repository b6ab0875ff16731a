"""Suspects the project did not train, and several keys or references: the held-out suite
(``results/heldout/``, summarised by ``heldout/table.py``), the number of reference models
(``benchmarks/results/references*.json``) and two owners on one suspect (``benchmarks/results/two_owners*.json``)."""

from __future__ import annotations

import importlib.util
import json
import statistics
from pathlib import Path

from .common import GRID, HELDOUT, RESULTS, ROOT, f, load


def _table_module():
    spec = importlib.util.spec_from_file_location("heldout_table", ROOT / "heldout" / "table.py")
    table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(table)
    return table


def _summarise(folder: Path, write: bool):
    """(heldout/table.py, the folder's config or None, its summary); rewrites ``folder/results.*`` if ``write``."""
    table = _table_module()
    config = json.loads((folder / "config.json").read_text()) if (folder / "config.json").is_file() else None
    summary = table.summarise(table.load_runs(folder / "runs"), config=config, grid=table.load_grid(GRID))
    if write:
        table.write(folder, summary)
    return table, config, summary


def heldout(folder: Path = HELDOUT, *, write: bool = True) -> list[str]:
    """The held-out suite (heldout/suite.toml): suspects trained by a third party's own script, next to the grid.
    Regenerates ``folder/results.{json,md}`` from ``folder/runs/*.json`` first (heldout/table.py) unless
    ``write`` is False (``--check`` writes nothing)."""
    intro = ("**Held-out suite** (`heldout/suite.toml`): suspects this project never trained. A third party's own "
             "script (`heldout/train.py`: plain PyTorch and torchvision, no radioactive) trains four architecture "
             "families the grid does not use (plain convolutional with GroupNorm, pre-activation residual, "
             "MobileNetV2-style, ConvMixer) with three recipes: SGD with Nesterov momentum, warm-up and cosine (close "
             "to the grid's); AdamW with label smoothing, random erasing and a one-cycle schedule; MixUp/CutMix with "
             "an EMA of the weights (the last two regularise in ways `radioactive.train.fit` does not). The data are "
             "marked as in the grid, with keys of the suite's own. The recipes were fixed "
             "before any detection result on them: methods are improved on the grid and reported here unchanged.")
    runs = sorted((folder / "runs").glob("*.json")) if (folder / "runs").is_dir() else []
    if not runs:
        print("held-out suite: not yet run")
        return [intro + " Not yet run: `.venv/bin/python heldout/run_suite.py heldout/suite.toml --out "
                "results/heldout`, then `scripts/update_readme.py`.", ""]
    table, config, summary = _summarise(folder, write)
    det = config["detect"] if config else {"reference_images": "the", "probes": "the", "num_controls": "K"}
    planned = f" of {summary['planned_runs']}" if summary["planned_runs"] else ""
    return [
        f"{intro} {summary['runs']}{planned} runs; regenerate with `.venv/bin/python heldout/run_suite.py "
        "heldout/suite.toml --out results/heldout`, then `scripts/update_readme.py`. White-box with least-squares alignment on "
        f"{det['reference_images']} held-out images; black-box on {det['probes']} fresh held-out probes, "
        f"K = {det['num_controls']}, difference in differences (DiD) against the auditor's clean cnn trained by "
        "`radioactive.train.fit` (or without). Cells: log10 p, median [min, max] over seeds, and how many seeds "
        f"are at or below log10 {summary['alpha']:g}.",
        "",
        *table.readme_lines(summary),
        "",
        "Per-run records (configuration, seeds, versions, key fingerprints): `results/heldout/runs/`.",
        "",
    ]


SEALED = ROOT / "results" / "heldout-sealed"


def sealed(folder: Path = SEALED, *, write: bool = True) -> list[str]:
    """The sealed part of the held-out suite (heldout/sealed/suite.toml, issue 25): committed before any lever was
    measured, trained once the levers were chosen, tested once, reported unchanged."""
    intro = ("**Sealed held-out suite** (`heldout/sealed/suite.toml`, committed before any transfer lever was "
             "measured; one amendment to a recipe before its test, docs/research.md): a second third-party script (`heldout/sealed/train.py`, torchvision's own DenseNet, "
             "EfficientNet-B0, RegNet and ViT classes, four recipes the open suite does not use, 10 epochs each on "
             "a 20,000-image owner set), 0 / 5 / 10 % marked with the library's default marking, seeds 0-2. It was "
             "trained once the marking was chosen, tested once every lever was chosen, and is reported unchanged; "
             "nothing was tuned on it.")
    runs = sorted((folder / "runs").glob("*.json")) if (folder / "runs").is_dir() else []
    if not runs:
        return [intro + " Not yet tested: `.venv/bin/python heldout/run_suite.py heldout/sealed/suite.toml --out "
                "results/heldout-sealed`, then `heldout/summary.py` and `scripts/update_readme.py`.", ""]
    table, config, summary = _summarise(folder, write)
    det = config["detect"] if config else {"reference_images": "the", "probes": "the", "num_controls": "K"}
    planned = f" of {summary['planned_runs']}" if summary["planned_runs"] else ""
    queries = det["probes"] * (det["num_controls"] + 1) if config else None
    return [
        f"{intro} {summary['runs']}{planned} runs. White-box with least-squares alignment on "
        f"{det['reference_images']} held-out images; black-box on {det['probes']} fresh held-out probes, "
        f"K = {det['num_controls']}" + (f" ({queries:,} queries per audit)" if queries else "") + ", against the "
        "shipped Fashion-MNIST reference bank (5 clean models; matched to the suspect, or their mean) or none. "
        f"The first black-box column is the default test. Cells: log10 p, median [min, max] over seeds, and how many "
        f"seeds are at or below log10 {summary['alpha']:g}.",
        "",
        *table.readme_lines(summary),
        "",
        "Per-run records: `results/heldout-sealed/runs/`; the summary in acceptance 3's format: "
        "`benchmarks/results/heldout_summary.json` (`heldout/summary.py`).",
        "",
    ]


REFERENCE_FILES = ["references.json", "references-seeds-1-2.json"]


def reference_counts() -> list[str]:
    """Several references for difference in differences (issue 14): 0/1/3/5 references on the held-out suite
    (benchmarks/bench_references.py; one file per batch of suite seeds)."""
    batches = [(name, data) for name in REFERENCE_FILES if (data := load(name))]
    if not batches:
        return []
    rows = [s for _, data in batches for s in data["suspects"]]
    keys = sorted({s["key_fingerprint"] for s in rows})
    counts = sorted({int(c) for s in rows for c in s["counts"]})
    variants = [v for v in ("margin-perm", "loss-perm") if any(v in c for s in rows for c in s["counts"].values())]
    fractions = sorted({s["fraction"] for s in rows})
    header = ["marked", "test", "suspects (keys)"] + [f"{n} reference{'s' if n != 1 else ''}" for n in counts]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for fraction in fractions:
        for variant in variants:
            group = [s for s in rows if s["fraction"] == fraction]
            cells = []
            for n in counts:
                values = [s["counts"][str(n)][variant]["log10_p"] for s in group if str(n) in s["counts"]]
                worst = max(values) if fraction > 0 else min(values)
                cells.append(f"{f(statistics.median(values))} ({f(worst)})" if values else "–")
            n_keys = len({s["key_fingerprint"] for s in group})
            lines.append(f"| {100 * fraction:g} % | {variant.replace('-', ', ')} | {len(group)} ({n_keys}) | "
                         + " | ".join(cells) + " |")
    skipped = [n for _, data in batches for n in data.get("skipped", [])]
    refs = batches[0][1]["references"]
    return [
        f"**Several reference models** (`benchmarks/bench_references.py --from-heldout results/heldout`; "
        f"{len(rows)} held-out suspects, {len(keys)} keys): the exact permutation test without difference in "
        "differences (0) and minus the mean response of the first n references (the suite's clean cnn, then cnns, "
        f"resnet_narrows and an mlp of other seeds; {len(refs)} in all). Cells: median log10 p over suspects and, "
        "in brackets, the worst (clean: the lowest; marked: the highest). Files: "
        + ", ".join(f"`benchmarks/results/{name}`" for name, _ in batches)
        + (f"; {len(skipped)} suspects whose cached weights were lost with a machine are left out" if skipped else "")
        + ".",
        "",
        *lines,
        "",
    ]


def two_owners_command(name: str, config: dict, seeds: list[int]) -> str:
    """The command that regenerates a two-owner file (from its recorded configuration)."""
    parts = [".venv/bin/python benchmarks/bench_two_owners.py", "--seeds", *map(str, seeds)]
    if config["fractions"] != {"A": 0.05, "B": 0.1}:
        parts += ["--fractions", f"{config['fractions']['A']:g}", f"{config['fractions']['B']:g}"]
    if config["arch"] != "resnet_narrow":
        parts += ["--arch", config["arch"]]
    if name != "two_owners.json":
        parts += ["--out", f"benchmarks/results/{name}"]
    return " ".join(parts)


def two_owners() -> list[str]:
    """Several owners on one suspect (issue 12): benchmarks/bench_two_owners.py, one file per pair of fractions."""
    files = sorted(RESULTS.glob("two_owners*.json"))
    if not files:
        return ["**Two owners** (`benchmarks/bench_two_owners.py`): not yet run: `flock /tmp/radioactive-heavy.lock "
                ".venv/bin/python benchmarks/bench_two_owners.py --seeds 0 1 2`, then `scripts/update_readme.py`.", ""]
    out = []
    for path in files:
        data = json.loads(path.read_text())
        config, summary = data["config"], data["summary"]
        fr = config["fractions"]
        arch = config["arch"]
        alpha = summary["alpha"]
        lines = ["| suspect trained on | test | key A: median log10 p | A detected | key B: median log10 p | B detected "
                 "| decisions right |", "|---|---|---|---|---|---|---|"]
        for entry in summary["suspects"].values():
            shown = " + ".join(f"{o} ({100 * fr[o]:g} %)" for o in entry["trained_on"]) or "neither (clean)"
            for test in ("blackbox", "whitebox"):
                cell = entry[test]
                label = "black-box, margin, perm, DiD" if test == "blackbox" else "white-box"
                lines.append(f"| {shown} | {label} | {f(cell['median_log10_p']['A'])} | {cell['detected']['A']}/"
                             f"{entry['runs']} | {f(cell['median_log10_p']['B'])} | {cell['detected']['B']}/"
                             f"{entry['runs']} | {cell['correct']}/{entry['runs']} |")
        rk = summary.get("random_keys")
        random_line = (f"Unrelated random keys (white-box, the same alignment): {rk['count']} p-values, "
                       f"{100 * rk['fraction_at_most_0.05']:.1f} % at or below 0.05, {100 * rk['fraction_at_most_alpha']:.1f} % "
                       f"at or below {alpha:g}, KS against uniform p = {rk['ks_uniform_p']:.2f}, lowest log10 p "
                       f"{f(rk['min_log10_p'])}." if rk else "")
        out += [f"**Two owners, {100 * fr['A']:g} % and {100 * fr['B']:g} %** (`benchmarks/results/{path.name}`: "
                f"`{two_owners_command(path.name, config, data['seeds'])}`): owners A and B mark "
                f"disjoint subsets of the owner split with independent keys; {arch} suspects trained from scratch "
                f"(seeds {', '.join(map(str, data['seeds']))}) on both owners' marked images, one owner's"
                + (", or neither. " if "neither" in summary["suspects"] else
                   " (the clean suspect is the one above: same training seeds, data and keys). ")
                +
                f"Per key: median log10 p over seeds, and how often Holm's step-down across the two keys at "
                f"{alpha:g} detected it; \"decisions right\": runs where exactly the owners whose data was used "
                "were detected.",
                "", *lines, "", random_line, ""]
    return out

"""The README's one table, "what to expect": the demo, the held-out suite, the robustness summary and the marking
speed, each row naming the suspects it was measured on and linking to its record and its full table.

Records: ``benchmarks/results/demo_seeds.json`` and ``demo_fresh.json``; ``results/heldout/results.json`` (or,
when committed, ``benchmarks/results/heldout_summary.json``: the sealed and open halves of the suite);
``results/robustness/results.json``; ``benchmarks/results/bench_mark_speed.json``.
"""

from __future__ import annotations

import math
from typing import Any

from .common import HELDOUT, RESULTS_DOC, ROBUSTNESS, f, link, load, load_json

# Marked fractions the headline shows for the held-out suite.
FRACTIONS = (0.0, 0.05, 0.1)
HELDOUT_TEST = "blackbox-margin-perm"  # the default black-box test: margin, exact permutation, DiD
ROBUSTNESS_TEST = "blackbox"  # configs/robustness.toml's black-box test is margin, perm, DiD


def _record(path: str, prefix: str, section: str) -> str:
    """The record's link and the full table's link, for the last column."""
    return (link(path, prefix, text=f"`{path.rsplit('/', 1)[-1]}`") + " · "
            + link(f"{RESULTS_DOC}#{section}", prefix, text="table"))


def _values(values: list[float]) -> str:
    return ", ".join(f(v) for v in values)


def _at(fractions: list[float]) -> str:
    return " / ".join(f"{100 * x:g}" for x in fractions) + " %"


def demo_rows(prefix: str) -> list[str]:
    seeds, fresh = load("demo_seeds.json"), load("demo_fresh.json")
    rows = []
    if seeds:
        config, runs = seeds["config"], seeds["runs"]
        train, detect = config["train"], config["detect"]
        arch = config["models"][0]["arch"]
        images = config.get("train_images") or 0
        data = f"a {images:,}-image training set" if images else "the 55,000-image owner split"
        recipe = (f"{train['epochs']} epochs{' in bfloat16 mixed precision' if train.get('precision') == 'bfloat16' else ''}"
                  f", seeds {', '.join(str(r['seed']) for r in runs)}")
        record = _record("benchmarks/results/demo_seeds.json", prefix, "the-demo")
        for name, who in (("suspect", f"a {arch} trained from scratch by `radioactive.train.fit` on the published copy of "
                                      f"{data}, {100 * config['fractions'][-1]:g} % marked; {recipe}"),
                          ("control", f"a clean {arch} trained the same way on the originals; {recipe}")):
            values = [r["models"][name]["log10_p"]["blackbox"] for r in runs]
            detected = sum(bool(r["models"][name].get("detected")) for r in runs)
            rows.append(f"| Demo: {'suspect' if name == 'suspect' else 'clean control'} | {who} | "
                        f"{_values(values)}: detected on {detected} of {len(runs)} seeds "
                        f"({detect.get('reference_models', 1)} reference models"
                        + (", matched" if detect.get("reference_fit", "mean") != "mean" else "")
                        + f", {detect['probes']} probes, K = {detect['num_controls']})" + _beside(runs, name)
                        + f" | {record} |")
    if fresh:
        rows.append(f"| Demo: time | the whole `bash scripts/demo.sh` from a fresh clone, set-up included | "
                    f"{fresh['wall_time_s'] / 60:.1f} min on {fresh['cpu_count']} CPU cores "
                    f"({fresh['setup_seconds']:.0f} s set-up, {fresh['demo_seconds']:.0f} s demo) | "
                    + _record("benchmarks/results/demo_fresh.json", prefix, "the-demo") + " |")
    return rows


def _beside(runs: list[dict[str, Any]], name: str) -> str:
    """The plain difference in differences, when the demo's headline is matched and records it beside."""
    other = "blackbox-margin-perm-mean"
    if not all(other in r["models"][name]["log10_p"] for r in runs):
        return ""
    return "; with the references' mean subtracted instead: " + _values(
        [r["models"][name]["log10_p"][other] for r in runs])


def _suite_words(config: dict[str, Any] | None, summary: dict[str, Any] | None) -> str:
    """Who trained the held-out suspects, in words (families, recipes and epochs from the suite's records)."""
    words = "third-party architectures and recipes (`heldout/train.py`: plain PyTorch, not radioactive's trainer)"
    if summary:
        families = len({r["family"] for r in summary["rows"]})
        recipes = len({r["recipe"] for r in summary["rows"]})
        pairs = len({(r["arch"], r["recipe"]) for r in summary["rows"]})
        words = (f"{pairs} third-party architecture · recipe pairs ({families} families, {recipes} recipes; "
                 "`heldout/train.py`: plain PyTorch, not radioactive's trainer)")
    if config and "epochs" in config:
        words += f", {config['epochs']} epochs"
    return words


def heldout_rows(prefix: str) -> list[str]:
    config = load_json(HELDOUT / "config.json")
    sealed = load("heldout_summary.json")
    if sealed:
        configs = {"sealed": load_json(HELDOUT.parent / "heldout-sealed" / "config.json"), "open": config}
        return _sealed_rows(sealed, configs, prefix)
    summary = load_json(HELDOUT / "results.json")
    if not summary:
        return []
    claims = {c["fraction"]: c for c in summary["claims"] if c["test"] == HELDOUT_TEST}
    shown = [x for x in FRACTIONS if x in claims]
    if not shown:
        return []
    references = 1 + len((config or {}).get("detect", {}).get("extra_references", []))
    pairs = " / ".join(str(claims[x]["pairs"]) for x in shown)
    return [f"| Held-out suite | {_suite_words(config, summary)}; {pairs} pairs at {_at(shown)} | median over pairs at "
            f"{_at(shown)} marked: {' / '.join(f(claims[x]['suite_median']) for x in shown)} "
            f"({references} reference model{'s' if references != 1 else ''}) | "
            + _record("results/heldout/results.json", prefix, "held-out-suite") + " |"]


def _half_words(half: str, details: dict[str, Any], config: dict[str, Any] | None) -> str:
    """Which suspects a half of the held-out summary was measured on, from its own record and its suite's config."""
    pairs = ", ".join(f"`{p}`" for p in details.get("pairs", []))
    epochs = f", {config['epochs']} epochs" if config and "epochs" in config else ""
    if half == "sealed":
        seeds = sorted({s for r in (config or {}).get("planned_runs", []) for s in [r.get("seed")] if s is not None})
        return (f"sealed suspects, trained and tested once, never looked at while choosing the test: {pairs} "
                f"(`heldout/sealed/train.py`: torchvision models, plain PyTorch){epochs}"
                + (f", seeds {', '.join(map(str, seeds))}" if seeds else ""))
    seeds = details.get("seeds", [])
    return (f"open suspects, used while choosing the test: {pairs} (`heldout/train.py`: plain PyTorch, not "
            f"radioactive's trainer){epochs}" + (f", seeds {', '.join(map(str, seeds))}" if seeds else ""))


def _half_extras(details: dict[str, Any]) -> str:
    """Detections at the suite's alpha and the accuracy cost, where the half records them."""
    words = ""
    detected, runs, alpha = details.get("detected") or {}, details.get("runs") or {}, details.get("alpha")
    if detected and alpha:
        words += f"; detected at p ≤ {alpha:g}: " + ", ".join(
            f"{detected[k]} of {runs[k]} at {100 * float(k):g} %" for k in sorted(detected, key=float))
    cost = details.get("accuracy_cost") or {}
    if cost:
        words += "; accuracy cost (median, clean minus marked twin): " + ", ".join(
            f"{100 * v:+.2f} points at {100 * float(k):g} %" for k, v in sorted(cost.items(), key=lambda kv: float(kv[0])))
    return words


def _sealed_rows(sealed: dict[str, Any], configs: dict[str, dict[str, Any] | None], prefix: str) -> list[str]:
    """The sealed and open halves of the held-out suite (``benchmarks/results/heldout_summary.json``)."""
    record = _record("benchmarks/results/heldout_summary.json", prefix, "held-out-suite")
    calibration = sealed.get("calibration")
    if calibration:
        record += " · calibration: " + link(calibration, prefix, text=f"`{calibration.rsplit('/', 1)[-1]}`")
    rows = []
    for half in ("sealed", "open"):
        medians = {float(k): v for k, v in (sealed.get(half) or {}).items()}
        shown = [x for x in FRACTIONS if x in medians]
        if not shown:
            continue
        details = (sealed.get("details") or {}).get(half) or {}
        runs = details.get("runs", {})
        counts = " / ".join(str(runs.get(k, "?")) for k in (f"{x:g}" if x else "0.0" for x in shown))
        queries = f", {details['queries']:,} queries per audit" if details.get("queries") else ""
        rows.append(f"| Held-out suite, {half} | {_half_words(half, details, configs[half])}; "
                    f"{counts} suspects at {_at(shown)} | median log10 p (`{sealed.get('test', HELDOUT_TEST)}`{queries}) "
                    f"at {_at(shown)} marked: {' / '.join(f(medians[x]) for x in shown)}{_half_extras(details)} | "
                    f"{record} |")
    return rows


def robustness_rows(prefix: str) -> list[str]:
    summary = load_json(ROBUSTNESS / "results.json")
    if not summary:
        return []
    config = (load_json(ROBUSTNESS / "config.json") or {}).get("experiment", {})
    top = max(summary["fractions"])
    plain = [r for r in summary["rows"] if r["marking"] == "plain" and f"{ROBUSTNESS_TEST}_log10_p_median" in r]
    marked = [r for r in plain if r["fraction"] == top]
    clean = [r[f"{ROBUSTNESS_TEST}_log10_p_median"] for r in plain if r["fraction"] == 0]
    if not marked:
        return []
    cells = ", ".join(f"{r['treatment']} {f(r[f'{ROBUSTNESS_TEST}_log10_p_median'])} "
                      f"({r[f'{ROBUSTNESS_TEST}_detected']}/{len(r['seeds'])})" for r in marked)
    suspects = sorted({r["suspect"] for r in marked})  # "<mode>-<arch>", e.g. scratch-cnn
    named = [f"{s.split('-', 1)[1]} from scratch" if s.startswith("scratch-") else s for s in suspects]
    epochs = config.get("train", {}).get("epochs")
    who = (f"a {', '.join(named)} trained by `radioactive.train.fit`"
           + (f", {epochs} epochs" if epochs else "") + f", seeds {', '.join(map(str, summary['seeds']))}; the "
           "published images re-encoded before training, or the suspect changed after it")
    return [f"| Robustness | {who} | median at {100 * top:g} % marked (seeds detected): {cells}; clean (0 %) "
            f"medians {f(min(clean))} to {f(max(clean))} | "
            + _record("results/robustness/results.json", prefix, "robustness") + " |"]


def speed_rows(prefix: str) -> list[str]:
    speed = load("bench_mark_speed.json")
    if not speed:
        return []
    parts = []
    for name, label in (("fashion_mnist_cnn", "built-in cnn"), ("resnet18_224", "ResNet-18")):
        row = speed.get(name)
        if row:
            share = row.get("fraction_of_bare_loop")
            parts.append(f"{label} ({'×'.join(map(str, row['marker_input_size']))}, {row['steps']} steps): "
                         f"{f(row['images_per_second'], 2 if row['images_per_second'] < 10 else 1)} images/s"
                         + (f", {100 * share:.0f} % of a bare forward + input-gradient loop" if share else ""))
    return [f"| Marking speed | no suspect: the owner's side, fp32 on {speed['threads']} CPU threads | "
            + "; ".join(parts) + " | " + _record("benchmarks/results/bench_mark_speed.json", prefix, "marking") + " |"]


def headline(prefix: str = "") -> list[str]:
    """The table as Markdown lines; ``prefix`` leads from the document to the repository root."""
    seeds = load("demo_seeds.json")
    alpha = seeds["config"]["detect"].get("alpha", 1e-3) if seeds else 1e-3
    rows = demo_rows(prefix) + heldout_rows(prefix) + robustness_rows(prefix) + speed_rows(prefix)
    if not rows:
        return ["No results are committed yet: run the benchmarks, then `scripts/update_readme.py`.", ""]
    return [
        "log10 p of the black-box test (margin statistic, exact permutation combination, against clean reference "
        "models: matched to the suspect where a row says so, else their mean subtracted, i.e. difference in "
        f"differences) unless a row says otherwise; DETECTED means log10 p ≤ "
        f"{math.log10(alpha):g}. Every number is generated from the record the row links; every table: "
        + link(RESULTS_DOC, prefix) + ".",
        "",
        "| what | suspects it was measured on | result | record |",
        "|---|---|---|---|",
        *rows,
        "",
    ]

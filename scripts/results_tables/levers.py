"""Transfer levers (issue 25): power of every lever on the open held-out suite's suspects and their calibration
on its clean suspects (benchmarks/bench_transfer_levers.py → benchmarks/results/transfer_levers/)."""

from __future__ import annotations

import statistics

from .common import RESULTS, f, link, load_json

FOLDER = RESULTS / "transfer_levers"
LEVER_NAMES = {
    "none": "no reference",
    "mean-cnn": "mean of 1 clean cnn (the suite's auditor until now)",
    "mean-bank": "mean of the 5-model bank",
    "matched": "matched to the bank (shared weights)",
    "matched-class": "matched to the bank (weights per class)",
}


def power() -> list[str]:
    record = load_json(FOLDER / "power.json")
    if record is None:
        return []
    records = record["records"]
    fractions = sorted({r["fraction"] for r in records})
    pairs = sorted({r["pair"] for r in records})
    lines = [
        "### Transfer levers: power on the open suite",
        "",
        f"Median log10 p over the open suite's suspects ({', '.join(f'`{p}`' for p in pairs)}; heldout/train.py, "
        f"3 epochs; seeds {', '.join(str(s) for s in sorted({r['seed'] for r in records}))}; trained anew, so "
        "they are new draws of the suite's cells), the exact permutation test, K = "
        f"{record['num_controls']} control sets. The bank: `radioactive references --data fashion-mnist` "
        f"({len(record['bank'])} clean models: " + ", ".join(sorted({b['arch'] for b in record["bank"]}))
        + "; the shipped one). Record: "
        + link("benchmarks/results/transfer_levers/power.json") + " ("
        + "; ".join(f"`{c.replace(str(RESULTS.parents[1]) + '/', '')}`"
                    for c in record.get("commands", [record["command"]])) + ").",
        "",
    ]
    for count, table in sorted(record["table"].items(), key=lambda kv: int(kv[0])):
        queries = int(count) * (record["num_controls"] + 1)
        seeds = sorted({r["seed"] for r in records if count in r["log10_p"]})
        lines += [f"{count} fresh probes ({queries:,} queries per audit; seeds {', '.join(map(str, seeds))}):", "",
                  "| lever | statistic | " + " | ".join(f"{100 * q:g} % marked (n)" for q in fractions) + " |",
                  "|---|---|" + "---|" * len(fractions)]
        for lever, name in LEVER_NAMES.items():
            for statistic in ("margin", "loss"):
                cells = table.get(f"{lever}/{statistic}", {})
                values = [cells.get(f"{q:g}") for q in fractions]
                lines.append(f"| {name} | {statistic} | " + " | ".join(
                    f"{f(v['median'])} ({v['n']})" if v else "–" for v in values) + " |")
        lines.append("")
    return lines + paired(records, fractions)


def paired(records: list[dict], fractions: list[float]) -> list[str]:
    """More probes against the fewest, on the same suspects only (a count measured on fewer seeds than the first
    is otherwise compared with other draws): median log10 p of the margin statistic, fewest → more."""
    counts = sorted({c for r in records for c in r["log10_p"]}, key=int)
    lines = []
    for count in counts[1:]:
        both = [r for r in records if count in r["log10_p"] and counts[0] in r["log10_p"]]
        if not both:
            continue
        seeds = ", ".join(map(str, sorted({r["seed"] for r in both})))
        lines += [f"The same suspects with {counts[0]} and with {count} probes (seeds {seeds}; margin; median "
                  f"log10 p, {counts[0]} → {count}):", "",
                  "| lever | " + " | ".join(f"{100 * q:g} % marked (n)" for q in fractions) + " |",
                  "|---|" + "---|" * len(fractions)]
        for lever, name in LEVER_NAMES.items():
            cells = []
            for q in fractions:
                mine = [r for r in both if r["fraction"] == q and f"{lever}/margin" in r["log10_p"][count]]
                if not mine:
                    cells.append("–")
                    continue
                few = statistics.median(r["log10_p"][counts[0]][f"{lever}/margin"] for r in mine)
                more = statistics.median(r["log10_p"][count][f"{lever}/margin"] for r in mine)
                cells.append(f"{f(few)} → {f(more)} ({len(mine)})")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def calibration() -> list[str]:
    record = load_json(FOLDER / "calibration.json")
    if record is None:
        return []
    lines = [
        "### Transfer levers: calibration on clean third-party suspects",
        "",
        f"{record['keys']} random keys against each clean suspect ({'; '.join(record['suspects'].values())}), "
        f"{record['probes']} fresh probes marked with the settings users get ({record['mark']['steps']} steps at lr "
        f"{record['mark']['lr']}, {record['mark']['min_psnr']:g} dB), K = {record['num_controls']}, the exact "
        "permutation test. 99 % binomial upper bounds on the number of hits: "
        + ", ".join(f"{next(iter(next(iter(record['cells'].values())).values()))[f'upper99@{a}']:.0f} at {a}"
                    for a in (0.01, 0.05, 0.1))
        + f". Every cell within its bound: **{'yes' if record['ok'] else 'no'}**. Record: "
        + link("benchmarks/results/transfer_levers/calibration.json") + ".",
        "",
        "| suspect | lever | statistic | P(p ≤ 0.01) | P(p ≤ 0.05) | P(p ≤ 0.1) | KS p |",
        "|---|---|---|---|---|---|---|",
    ]
    for suspect, cells in record["cells"].items():
        for lever, name in LEVER_NAMES.items():
            for statistic in ("margin", "loss"):
                cell = cells.get(f"{lever}/{statistic}")
                if cell:
                    lines.append(f"| {suspect} | {name} | {statistic} | {f(cell['fpr@0.01'])} | "
                                 f"{f(cell['fpr@0.05'])} | {f(cell['fpr@0.1'])} | {f(cell['ks_pvalue'], 3)} |")
    return lines + [""]

"""``radioactive plan``: power planning before marking or auditing.

The library is imported inside :func:`run`, as in every subcommand: ``radioactive --help`` builds every
parser and should not pay for torch.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from ..errors import ConfigError

DEFAULT_SOURCE = Path("results") / "fashion-mnist"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "plan",
        help="power planning: expected log10 p of each test, and the smallest fraction reaching a target",
        description="Predict, before marking or auditing, the log10 p-value each test would give (median and "
        "10-90 % band over training runs and audits) and the smallest fraction of marked images whose median "
        "reaches --target. Each prediction applies the test's exact null law (the same code the test runs: "
        "cosine Beta law and Fisher, exact ranks, the stratified permutation law, Binomial(N, 1/2)) to effects "
        "drawn from a response model fitted on measured runs: per test family and architecture/trainer, the "
        "mean per-class effect is a q^b, with run-to-run and class-to-class spreads proportional to it. "
        "Predictions outside the measured conditions (classes, dimension, fractions, probes, reference images) "
        "are labelled extrapolations, with the assumption they rest on.",
    )
    parser.add_argument("--classes", type=int, required=True, help="number of classes C (one carrier each)")
    parser.add_argument("--dim", type=int, required=True,
                        help="feature dimension d of the marking network (its penultimate layer)")
    parser.add_argument("--fraction", type=float, required=True,
                        help="fraction q of the training set marked, in [0, 1] (0.05 for 5 %%)")
    parser.add_argument("--target", type=float, default=1e-4,
                        help="p-value to reach: the smallest q whose median log10 p is at most log10 TARGET is "
                        "reported (default 1e-4)")
    parser.add_argument("--test", action="append", dest="tests", metavar="NAME",
                        help="a test to plan (repeatable; default: all). whitebox, gradient, "
                        "SOURCE-STATISTIC-COMBINE[-did|-matched] (SOURCE blackbox: fresh probes, or published; "
                        "STATISTIC margin, loss, prob, label; COMBINE rank or perm; -did: difference in differences "
                        "against the mean of clean reference models; -matched: the references matched to the "
                        "suspect, detect's default), twins-STATISTIC (paired-twin secret-coin test)")
    parser.add_argument("--from", action="append", dest="sources", metavar="DIR",
                        help="experiment output folder whose runs (DIR/runs/*.json) the response is fitted on "
                        f"(repeatable; default {DEFAULT_SOURCE} unless --pilot is given; results/heldout: the "
                        "held-out suite, with tests without difference in differences)")
    parser.add_argument("--pilot", action="append", default=[], metavar="OUT",
                        help="output folder of a pilot experiment you ran on a small subset ('radioactive "
                        "experiment CONFIG --out OUT', same format); repeatable; replaces the default --from")
    parser.add_argument("--model", default=None,
                        help="architecture/trainer whose runs to use, as the runs name it (e.g. scratch-cnn); "
                        "default: pooled over every measured one (wider band)")
    parser.add_argument("--space", choices=["full", "neutral"], default="full",
                        help="carrier space of the key: full (null dimension d) or neutral (d - C)")
    parser.add_argument("--reference-images", type=int, default=None,
                        help="clean reference images of the white-box alignment (default: as measured)")
    parser.add_argument("--probes-per-class", type=int, default=None,
                        help="fresh black-box probes per class (default: as measured)")
    parser.add_argument("--published-per-class", type=int, default=None,
                        help="published probes per class for the published-* tests (default: as measured)")
    parser.add_argument("--controls", type=int, default=None,
                        help="K control carrier sets of the black-box tests (default: as measured)")
    parser.add_argument("--pairs", type=int, default=None,
                        help="N twin pairs of the twins test (default: as measured, else 3000)")
    parser.add_argument("--draws", type=int, default=400, help="simulated audits per prediction (default 400)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the simulations (default 0)")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON instead of a table")
    parser.set_defaults(func=run)


def _sources(args: argparse.Namespace) -> list[Path]:
    if args.sources:
        return [Path(s) for s in args.sources] + [Path(p) for p in args.pilot]
    if args.pilot:
        return [Path(p) for p in args.pilot]
    for base in (Path.cwd(), Path(__file__).resolve().parents[3]):
        if (base / DEFAULT_SOURCE / "runs").is_dir():
            return [(base / DEFAULT_SOURCE).resolve()]
    raise ConfigError(f"no measured runs: {str(DEFAULT_SOURCE)!r} is not here; give --from DIR (an experiment "
                      "output folder) or --pilot OUT")


def _shown(folder: Path) -> str:
    """How the plan names a measured folder: relative to the working directory or to the repository where it lies
    below one, else by its name (the JSON does not show the machine's layout)."""
    found = folder.resolve()
    for base in (Path.cwd().resolve(), Path(__file__).resolve().parents[3]):
        if found.is_relative_to(base) and found != base:
            return found.relative_to(base).as_posix()
    return found.name or str(folder)


def _p(value: float | None) -> str:
    if value is None:
        return "none"
    return "-inf" if math.isinf(value) else f"{value:.2f}"


def _budget(entry: dict[str, Any]) -> str:
    b = entry["budget"]
    if entry["kind"] == "cosine":
        return f"{b.get('reference_images')} ref. images"
    if entry["kind"] == "twins":
        return f"N = {b.get('pairs')} pairs"
    per_class = b.get("published_per_class") if entry["test"].startswith("published") else b.get("probes_per_class")
    return f"{per_class}/class, K = {b.get('controls')}"


def format_plan(result: dict[str, Any]) -> str:
    """The plan as a terminal table with its notes."""
    inputs = result["inputs"]
    lines = [f"radioactive plan: C = {inputs['classes']}, d = {inputs['dim']} ({inputs['space']} carriers, null "
             f"dimension {inputs['null_dim']}), q = {inputs['fraction']:g} marked, target p <= {inputs['target']:g}",
             f"measured runs: {', '.join(result['sources'])} (models: {', '.join(result['models'])}); "
             f"architecture: {inputs['model']}",
             f"model: {result['response_model']}", ""]
    header = f"{'test':<28} {'budget':<22} {'null med.':>9} {'floor':>8}  {'log10 p median [10 %, 90 %]':<30} " \
             f"{'smallest q':>10}"
    lines += [header, "-" * len(header)]
    for name, e in result["tests"].items():
        if e["expected_log10_p"] is None:
            need = "none reaches it" if e["required_effect"] is None else f"needs effect {e['required_effect']:.3g}"
            predicted = f"not measured ({need})"
        else:
            x = e["expected_log10_p"]
            predicted = f"{x['median']:.2f} [{x['p10']:.2f}, {x['p90']:.2f}]" + (" *" if e["extrapolation"] else "")
        smallest = "–" if e["min_fraction"] is None else f"{e['min_fraction']:.3g}" + (
            " *" if e.get("min_fraction_extrapolation") else "")
        lines.append(f"{name:<28} {_budget(e):<22} {_p(e['null_median_log10_p']):>9} {_p(e['floor_log10_p']):>8}  "
                     f"{predicted:<30} {smallest:>10}")
    lines += ["", "* extrapolation (outside the measured conditions):"]
    flagged = False
    for name, e in result["tests"].items():
        for reason in e["extrapolation_reasons"] + e.get("min_fraction_extrapolation", []):
            lines.append(f"  {name}: {reason}")
            flagged = True
    if not flagged:
        lines[-1] = "Every prediction is within the measured conditions (no extrapolation)."
    lines += ["", "Responses (effect units: cosine tests mean cosine; black-box shift in control sd; twins win rate "
              "- 1/2):"]
    seen = set()
    for name, e in result["tests"].items():
        if e["response"] and e["family"] not in seen:
            seen.add(e["family"])
            lines.append(f"  {e['family']}: {e['response']['model']}; effect at q: {e['effect']:.3g}")
        elif e.get("note") and e["family"] not in seen:
            seen.add(e["family"])
            lines.append(f"  {e['family']}: {e['note']}")
        if e.get("min_fraction_note") and e["min_fraction"] is None and e["response"]:
            lines.append(f"  {name}: smallest q: {e['min_fraction_note']}")
    if result["inputs"]["model"] == "pooled":
        lines.append("  pooled over the measured architectures: the band includes their spread; an architecture "
                     "unlike them is an extrapolation (--model NAME to use one)")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from ..plan import Budget, load_observations, plan

    budget = Budget(classes=args.classes, dim=args.dim, space=args.space, reference_images=args.reference_images,
                    probes_per_class=args.probes_per_class, published_per_class=args.published_per_class,
                    controls=args.controls, pairs=args.pairs)
    observations = [obs for folder in _sources(args) for obs in load_observations(folder, name=_shown(folder))]
    result = plan(budget, args.fraction, observations, tests=args.tests, model=args.model, target=args.target,
                  draws=args.draws, seed=args.seed)
    print(json.dumps(result, indent=2, allow_nan=False) if args.json else format_plan(result))
    return 0

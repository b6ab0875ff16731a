"""The whole story on Fashion-MNIST, as one small experiment.

The owner's marking network (the one shipped with the package), a key, ``fraction`` of the 55k owner
images marked and published; a suspect trained from scratch on the published data and a clean control
trained on the unmarked data; the white-box and black-box tests on both; the verdicts side by side and an
HTML report. It is :func:`radioactive.experiment.run_one` twice (fractions 0 and ``fraction``).
"""

from __future__ import annotations

import html
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ._io import atomic_write_bytes, atomic_write_json, save_png
from .demo_defaults import DEMO_DEFAULTS  # the design notes are there
from .detect.verdict import evidence_level, evidence_scale
from .errors import ConfigError
from .experiment import Context, ExperimentConfig, RunSpec, config_from_dict, run_one
from .experiment.context import Splits
from .experiment.identity import derive_seed
from .experiment.run import check_architectures
from .marker import Marker
from .nets import save_checkpoint
from .report import write_report

__all__ = ["DEMO_DEFAULTS", "demo_config", "describe", "run_demo", "DemoResult", "format_side_by_side"]

log = logging.getLogger(__name__)


def demo_config(
    *,
    fraction: float = DEMO_DEFAULTS["fraction"],
    epochs: int = DEMO_DEFAULTS["epochs"],
    arch: str = "cnn",
    seed: int = 0,
    mark_steps: int = DEMO_DEFAULTS["mark_steps"],
    mark_lr: float = DEMO_DEFAULTS["mark_lr"],
    probes: int = DEMO_DEFAULTS["probes"],
    num_controls: int = DEMO_DEFAULTS["num_controls"],
    reference_models: int = DEMO_DEFAULTS["reference_models"],
    whitebox_null_trials: int = DEMO_DEFAULTS["whitebox_null_trials"],
    reference_images: int = 1000,
    marker: str = "default",
    device: str = "cpu",
    train_images: int = DEMO_DEFAULTS["train_images"],
    precision: str = DEMO_DEFAULTS["precision"],
    mark_precision: str = DEMO_DEFAULTS["mark_precision"],
    reference_fit: str = DEMO_DEFAULTS["reference_fit"],
) -> ExperimentConfig:
    """The demo's experiment: one seed, one architecture, fractions 0 (clean control) and ``fraction``.

    The headline is the black-box test: the margin statistic, exact permutation combination, against
    ``reference_models`` clean models trained like the suspect (0: no reference), entering as ``reference_fit``
    says (``matched``: the suspect's leave-one-out prediction from them is subtracted, and the plain difference in
    differences against their mean is reported beside it as ``blackbox-margin-perm-mean``; ``mean``: the latter
    is the headline). The
    white-box test runs too, with ``whitebox_null_trials`` random keys as its empirical null. ``precision`` is the
    training recipe's (``bfloat16``: mixed precision) and ``mark_precision`` the marking network's
    (:class:`radioactive.MarkConfig`); float32 and fp32 leave the configuration as it was before they existed. The
    defaults (``radioactive.demo_defaults``) are timed and checked on seeds 0-2 in
    ``benchmarks/results/demo_fresh.json`` and ``demo_seeds.json``.

    Raises:
        ConfigError: ``epochs`` below 1 (the suspect would learn nothing, so there would be nothing to detect).
    """
    if not isinstance(epochs, int) or epochs < 1:
        raise ConfigError(f"epochs must be at least 1 (the demo's suspect learns from the marked data), got {epochs!r}")
    detect: dict[str, Any] = {
        "tests": ["blackbox", "whitebox"], "statistic": "margin", "combine": "perm",
        "blackbox_variants": ["loss:perm"] + (["margin:perm:mean"] if reference_fit != "mean" and reference_models
                                              else []),
        "reference_images": reference_images, "probes": probes,
        "num_controls": num_controls, "reference_model": reference_models > 0,
        "whitebox_null_trials": whitebox_null_trials,
    }
    if reference_models > 1:
        detect["reference_models"] = reference_models
    if reference_models and reference_fit != "mean":
        detect["reference_fit"] = reference_fit
    return config_from_dict({
        "name": "demo",
        "dataset": "fashion-mnist",
        "marker": marker,
        "fractions": [0.0, fraction],
        "seeds": [seed],
        "models": [{"mode": "scratch", "arch": arch}],
        "mark": {"steps": mark_steps, "lr": mark_lr, **({} if mark_precision == "fp32" else {"precision": mark_precision})},
        # float32 is left out, so that the demo's run ids and shipped reference names stay those of before
        "train": {"epochs": epochs, **({} if precision == "float32" else {"precision": precision})},
        "train_images": train_images,
        "detect": detect,
        "device": device,
    })


@dataclass
class DemoResult:
    """What the demo did: per model (``control``, ``suspect``) its record and verdicts, the report's path."""

    config: ExperimentConfig
    records: dict[str, dict[str, Any]]
    verdicts: dict[str, dict[str, Any]]
    report: Path
    key_path: Path
    seconds: float
    models: dict[str, Path] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "seconds": self.seconds,
            "report": str(self.report),
            "key": str(self.key_path),
            "models": {k: str(v) for k, v in self.models.items()},
            "runs": {name: {k: v for k, v in rec.items() if not k.startswith("_") and k not in ("config", "verdicts")}
                     for name, rec in self.records.items()},
        }


def _decision(log10_p: float, alpha: float) -> str:
    """The evidence level in words (README, "How strong is the evidence?"), with DETECTED at p <= ``alpha``."""
    level = evidence_level(log10_p)
    words = "no evidence" if level == "none" else f"{level} evidence"
    return f"{words}: DETECTED" if log10_p <= math.log10(alpha) else words


def _test_titles(config: ExperimentConfig) -> list[tuple[str, str]]:
    """(record name, title) of the demo's tests, the headline first."""
    detect = config.detect
    titles = [("blackbox", f"black-box, {detect.statistic} (headline)")]
    fits = {"mean": "mean of references", "matched": "matched", "matched-class": "matched per class"}
    titles += [(name, f"black-box, {statistic}" + (f", {fits[fit]}" if fit != detect.reference_fit else ""))
               for name, statistic, _, fit in detect.variant_names()[1:]]
    if "whitebox" in detect.tests:
        titles.append(("whitebox", "white-box (weak with 10 classes)"))
    return [(name, title) for name, title in titles if name in detect.tests or name.startswith("blackbox-")]


def _empirical_null(verdict: dict[str, Any]) -> str:
    """Where the key stands among its empirical null: the control sets (black-box) or random keys (white-box)."""
    if verdict.get("null_trials"):
        nt = verdict["null_trials"]
        return f"ranks {nt['rank']} of {nt['trials'] + 1} keys"
    sums = verdict.get("details", {}).get("control_sums")
    if sums:
        observed = verdict["details"]["sum_z"]
        rank = 1 + sum(value >= observed for value in sums)
        return f"ranks {rank} of {len(sums) + 1} carrier sets"
    return ""


def describe(config: ExperimentConfig, records: dict[str, dict[str, Any]] | None = None) -> list[str]:
    """What the demo does, in the README's words (one line per party)."""
    detect, mark = config.detect, config.mark_config()
    fraction = config.fractions[-1]
    train = config.train
    suspect = (records or {}).get("suspect", {})
    count = suspect.get("train_images") or config.train_images
    images = f"{count:,}" if count else "all"
    marked = suspect.get("marked_images")
    references = len(detect.reference_arch_list())
    how = ("matched to" if detect.reference_fit != "mean" else "difference in differences against")
    reference = (f"{how} {references} clean reference model"
                 f"{'s' if references != 1 else ''} ({', '.join(detect.reference_arch_list())}, trained like the suspect on "
                 "the clean images; shipped with the package for the default settings)") if references else \
        "no reference model"
    if references and detect.reference_fit != "mean":
        reference += " (the suspect's leave-one-out prediction from them is subtracted)"
    per_class = detect.probes // 10
    lines = [
        f"owner:    marks {100 * fraction:g} % of {images} training images"
        + (f" ({marked} images)" if marked is not None else "")
        + f" with a secret key: {mark.steps} steps at lr {mark.lr:g}, every image at PSNR >= {mark.min_psnr:g} dB",
        f"trainer:  {config.models[0].arch} from scratch, {train.get('epochs')} epochs (SGD, cosine, crop + flip"
        + (", bfloat16 mixed precision" if train.get("precision") == "bfloat16" else "") + "): the "
        "suspect on the published images, the clean control (its own seed) on the original images (the control is "
        "independent of every key: shipped with the package for the default settings, like the references)",
        f"auditor:  black-box (headline): {detect.statistic} statistic, exact permutation combination, {reference}; "
        f"{detect.probes} fresh held-out probes (about {per_class} per class), K = {detect.num_controls} control "
        "carrier sets; its empirical null is the control sets, each scored as if it were the key",
    ]
    if "whitebox" in detect.tests:
        lines.append(f"          white-box: the paper's cosine test on {detect.reference_images} held-out images, with "
                     f"{detect.whitebox_null_trials} random keys as its empirical null; with 10 classes it is expected "
                     "to be weak (README: Few classes)")
    return lines


def format_side_by_side(result: DemoResult) -> str:
    """What the demo did, then the verdicts of both models as a small text table."""
    alpha = result.config.detect.alpha
    fraction = result.config.fractions[-1]
    names = [("control", "clean control (0 % marked)"), ("suspect", f"suspect ({100 * fraction:g} % marked)")]
    rows = [("", *[title for _, title in names])]
    rows.append(("test accuracy", *[f"{100 * result.records[n]['test_accuracy']:.2f} %" for n, _ in names]))
    for test, title in _test_titles(result.config):
        cells, nulls = [], []
        for name, _ in names:
            value = result.records[name]["log10_p"][test]
            cells.append(f"log10 p = {value:7.2f}  {_decision(value, alpha)}")
            nulls.append(_empirical_null(result.verdicts.get(name, {}).get(test, {})))
        rows.append((title, *cells))
        if any(nulls):
            rows.append(("  the key among its null", *nulls))
    psnr = result.records["suspect"].get("psnr_min")
    rows.append(("marked images", "0", f"{result.records['suspect']['marked_images']} (PSNR >= {psnr:.1f} dB)"
                 if psnr is not None else "0"))
    widths = [max(len(str(r[i])) for r in rows) for i in range(3)]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append(f"(H0: the model was not trained on data marked with this key; evidence {evidence_scale()}; "
                 f"detected when p <= {alpha:g})")
    return "\n".join(describe(result.config, result.records) + [""] + lines)


def _sample_figure(original: torch.Tensor, marked: torch.Tensor, path: Path, count: int = 8) -> None:
    # Imported here: pyplot costs about half a second, and the backend is chosen only when a plot is drawn.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = min(count, len(original))
    fig, axes = plt.subplots(3, count, figsize=(1.4 * count, 4.4), squeeze=False)
    for i in range(count):
        clean = original[i].float() / 255
        mark = marked[i].float() / 255
        diff = (mark - clean)[0]
        scale = float(diff.abs().max()) or 1.0
        for row, (image, cmap, kwargs) in enumerate((
            (clean[0], "gray", {"vmin": 0, "vmax": 1}),
            (mark[0], "gray", {"vmin": 0, "vmax": 1}),
            (diff, "RdBu", {"vmin": -scale, "vmax": scale}),
        )):
            axes[row][i].imshow(image.numpy(), cmap=cmap, **kwargs)
            axes[row][i].axis("off")
    for row, title in enumerate(("original", "marked", "difference (amplified)")):
        axes[row][0].set_title(title, fontsize=8, loc="left")
    fig.tight_layout()
    save_png(fig, path, dpi=100)


def _write_page(result: DemoResult, folder: Path, links: dict[tuple[str, str], Path]) -> Path:
    alpha = result.config.detect.alpha
    fraction = result.config.fractions[-1]
    head = f"<tr><th></th><th>clean control (0 % marked)</th><th>suspect ({100 * fraction:g} % marked)</th></tr>"
    rows = [head, "<tr><th>test accuracy</th>" + "".join(
        f"<td>{100 * result.records[n]['test_accuracy']:.2f} %</td>" for n in ("control", "suspect")) + "</tr>"]
    for test, title in _test_titles(result.config):
        cells = []
        for name in ("control", "suspect"):
            value = result.records[name]["log10_p"][test]
            decision = _decision(value, alpha)
            colour = "#b00020" if decision.endswith("DETECTED") else "#1b5e20"
            link = links[(name, test)].relative_to(folder)
            cells.append(f"<td><a href='{html.escape(str(link))}'>log10 p = {value:.2f}</a> "
                         f"<b style='color:{colour}'>{decision}</b></td>")
        rows.append(f"<tr><th>{html.escape(title)}</th>{''.join(cells)}</tr>")
        nulls = [_empirical_null(result.verdicts.get(name, {}).get(test, {})) for name in ("control", "suspect")]
        if any(nulls):
            rows.append("<tr><th>&nbsp;&nbsp;the key among its empirical null</th>"
                        + "".join(f"<td>{html.escape(n)}</td>" for n in nulls) + "</tr>")
    suspect = result.records["suspect"]
    facts = [
        ("key fingerprint", suspect["key_fingerprint"]),
        ("marked training images", f"{suspect['marked_images']} of {suspect['train_images']}"),
        ("PSNR of marked images", f"min {suspect['psnr_min']:.2f} dB, mean {suspect['psnr_mean']:.2f} dB"
         if suspect.get("psnr_min") is not None else "–"),
        ("training", f"{result.config.models[0].arch} from scratch, {result.config.train.get('epochs')} epochs"),
        ("wall time", f"{result.seconds:.0f} s"),
    ]
    fact_rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in facts)
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>radioactive demo</title>
<style>body{{font-family:sans-serif;max-width:64em;margin:2em auto}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:.3em .7em;text-align:left}}img{{max-width:100%}}</style></head>
<body><h1>Radioactive data on Fashion-MNIST</h1>
<p>The owner marked {100 * fraction:g} % of its training images with a secret key and published the set.
A third party trained a model from scratch on the published images (the <i>suspect</i>); a <i>clean control</i> was
trained the same way on the unmarked images. Both were tested with the key: the white-box test reads the
weights, the black-box test only the outputs. Each p-value is for H0: "this model was not trained on data marked
with this key"; evidence {html.escape(evidence_scale())}; it is detected when p &le; {alpha:g}.</p>
<table>{''.join(rows)}</table>
<h2>What was done</h2><ul>{''.join(f"<li>{html.escape(line.split(':', 1)[0])}: {html.escape(line.split(':', 1)[1].strip())}</li>"
                                for line in describe(result.config, result.records) if ':' in line[:10])}</ul>
<p>The white-box test is expected to be weak with 10 classes (the README's paragraph "Few classes"); the
black-box test's evidence is the key's carriers against control carrier sets that were never published.</p>
<table>{fact_rows}</table>
<h2>Marked images</h2><img src="samples.png" alt="original, marked and difference">
<p>Per-test reports (plots, per-class scores, assumptions): follow the links in the table.
Machine-readable: <a href="demo.json">demo.json</a>.</p>
</body></html>
"""
    path = folder / "index.html"
    atomic_write_bytes(path, page.encode())
    return path


def run_demo(
    out: str | Path = "runs/demo",
    *,
    config: ExperimentConfig | None = None,
    marker: Marker | None = None,
    data: Splits | None = None,
    progress: Callable[[str], None] | None = None,
) -> DemoResult:
    """Run the demo into ``out``: ``key.safetensors``, ``models/{control,suspect}.safetensors``,
    ``report/index.html`` (plus one report per test and model) and ``report/demo.json``.

    ``marker`` and ``data`` (``{"owner", "holdout", "test"}: (uint8 images, labels)``) replace the configured
    ones, as in :func:`radioactive.experiment.run_experiment`."""
    start = time.perf_counter()
    config = config or demo_config()
    check_architectures(config)  # a misspelt --arch must fail now, not after minutes of marking
    epochs = config.recipe(config.models[0]).epochs
    if epochs < 1:
        raise ConfigError(f"train.epochs must be at least 1 (the demo's suspect learns from the marked data), got "
                          f"{epochs}; set --epochs or the configuration's train.epochs")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    say = progress or (lambda _line: None)
    context = Context(config, out, marker=marker, data=data)
    for line in describe(config):
        say(line)
    say("marking network: loading (or training, a few minutes, once)")
    _ = context.marker
    seed = config.seeds[0]
    key = context.key(seed)
    key_path = out / "key.safetensors"
    if not key_path.exists():
        key.save(key_path)
    model_setting = config.models[0]
    records: dict[str, dict[str, Any]] = {}
    verdicts: dict[str, dict[str, Any]] = {}
    paths: dict[str, Path] = {}
    for name, fraction in (("suspect", config.fractions[-1]), ("control", 0.0)):
        what = f"{100 * fraction:g} % marked" if fraction else "clean"
        say(f"{name}: marking, training ({what} data, {config.train.get('epochs')} epochs) and testing")
        spec = RunSpec.of(config, fraction=fraction, model=model_setting, seed=seed)
        training_seed = derive_seed("control_training", seed) if name == "control" else None
        record = run_one(spec, context, keep_model=True, progress=say, training_seed=training_seed,
                         stored_clean=name == "control")
        model = record.pop("_model")
        model_spec = record.pop("_spec")
        verdicts[name] = record.pop("_verdicts")
        records[name] = record
        paths[name] = out / "models" / f"{name}.safetensors"
        save_checkpoint(model.to("cpu"), paths[name], model_spec,
                        {"kind": name, "fraction": fraction, "key_fingerprint": key.fingerprint,
                         "test_accuracy": record["test_accuracy"]})
        say(f"{name}: accuracy {record['test_accuracy']:.4f}, "
            + ", ".join(f"{t} log10 p {v:.2f}" for t, v in record["log10_p"].items()))
    report_dir = out / "report"
    links = {}
    for name, by_test in verdicts.items():
        for test, verdict in by_test.items():
            links[(name, test)] = write_report(verdict, report_dir / name / test,
                                               command={"demo": name, "config": config.to_dict()})
    indices, marked, _ = context.marked_subset(seed, config.fractions[-1])
    if len(indices):
        _sample_figure(context.data["owner"][0][indices[:8]], marked[:8], report_dir / "samples.png")
    result = DemoResult(config=config, records=records, verdicts={}, report=report_dir / "index.html",
                        key_path=key_path, seconds=time.perf_counter() - start, models=paths)
    result.verdicts = {n: {t: v.to_dict() for t, v in by.items()} for n, by in verdicts.items()}
    atomic_write_json(report_dir / "demo.json", result.to_dict())
    _write_page(result, report_dir, links)
    return result


"""Research (issue 25, lever 3): carriers drawn by a public selection rule that lowers the intrinsic response.

One-off research code, not part of the product. Question: every clean model responds to a carrier set on its
own (the *intrinsic response*: probes marked along a carrier change a clean model's margin), and that response,
varying from set to set, is the noise the black-box test must beat. If the key and the K control sets were all
drawn by one public rule that keeps only carriers to which the reference bank responds little, the K + 1 sets
stay exchangeable (i.i.d. draws of one rule, independent of the suspect under H0) and the spread among them may
shrink. Does it, on suspects the project never trained?

Measured here without re-marking any published data: for every class c, ``--candidates`` random carriers
(uniform on the marker's feature sphere, as ``Key.generate`` draws them) each mark the class-c probes (the open
suite's detection probes, holdout[2000:2500], marked with the suite's settings); every model answers every
marked version. Per (model, class, carrier): the mean margin on the probes marked along the carrier. Models:
the shipped bank (5 clean references), the open suite's clean seed-0 suspects (preact_resnet-adamw,
convmixer-mixup_ema) and its 10 %-marked seeds 0-2 (whose keys' own carriers are marked too).

Reported per suspect: the spread (sd over carriers, per class, pooled) of its response, for all carriers and for
the carriers the rule keeps (the bank's mean response closest to the bank's median over candidates: keep
1 in ``--keep-one-in``), the correlation of its response with the bank's, the residual sd after the matched fit
(regression on the bank's responses, what ``--reference-fit matched`` does per set), and, for the marked
suspects, the z-score of the key's carriers against random carriers and against kept carriers; then
(``matched_and_selected``) selection and matching together: the key's per-class z after the matched fit, and the
kept carriers' residual spread over all carriers' (``--analyse-only`` recomputes it from the record).

    flock /tmp/radioactive-heavy.lock .venv/bin/python research/selected_carriers.py \\
        --out benchmarks/results/research/selected_carriers.json
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import numpy as np
import torch

from radioactive._io import atomic_write_json, versions
from radioactive.detect.observations import output_scores, per_image_statistics
from radioactive.key import _seed_generator, random_carriers
from radioactive.mark import image_seeds, mark

ROOT = Path(__file__).resolve().parents[1]


def bench():
    spec = importlib.util.spec_from_file_location("bench_transfer_levers", ROOT / "benchmarks" / "bench_transfer_levers.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_transfer_levers"] = mod
    spec.loader.exec_module(mod)
    return mod


def say(message: str) -> None:
    print(f"[selected {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def margins(predict, images: torch.Tensor, labels: np.ndarray) -> np.ndarray:
    values, kind = output_scores(predict, images, 500, "auto")
    return per_image_statistics(values, kind, labels)["margin"]


def _residual(response: dict[str, np.ndarray], bank: list[str], name: str, c: int, fit_on: list[int],
              target: int) -> float:
    """The suspect's response to carrier ``target`` of class ``c`` minus its prediction from the bank's, the
    ridge fit (0.1, standardised columns) made on the carriers ``fit_on`` only."""
    x = np.stack([response[b][c] for b in bank], axis=1)
    y = response[name][c]
    mu, sd = x[fit_on].mean(0), x[fit_on].std(0)
    xs, ym = (x[fit_on] - mu) / sd, y[fit_on].mean()
    w = np.linalg.solve(xs.T @ xs + 0.1 * np.eye(len(bank)), xs.T @ (y[fit_on] - ym))
    return float((y[target] - ym) - ((x[target] - mu) / sd) @ w)


def analyse(record: dict) -> dict:
    """Selection and matching together: for each marked suspect, the key's per-class z after the matched fit
    (per class, on the random candidates), against every candidate's leave-one-out residual and against the
    kept candidates' only; ``sum_z / sqrt(C)`` is the evidence a one-sided z test would see."""
    response = {k: np.array(v) for k, v in record["responses"].items()}
    m, keep = record["candidates_per_class"], np.array(record["kept"])
    bank = [k for k in response if k.startswith("bank")]
    seeds = sorted(int(s) for s in record["key_fingerprints"])
    out = {}
    for name in response:
        if "-0.1-" not in name:
            continue
        col = m + seeds.index(int(name.rsplit("seed", 1)[1]))
        num_classes = response[name].shape[0]
        z_all, sd_ratio = [], []
        for c in range(num_classes):
            cols = list(range(m))
            loo = [_residual(response, bank, name, c, [j for j in cols if j != i], i) for i in cols]
            key = _residual(response, bank, name, c, cols, col)
            kept = [loo[i] for i in cols if keep[c][i]]
            z_all.append(key / np.std(loo, ddof=1))
            sd_ratio.append(np.std(kept, ddof=1) / np.std(loo, ddof=1))
        out[name] = {"matched_key_z": [float(z) for z in z_all], "matched_sum_z": float(np.sum(z_all) / np.sqrt(num_classes)),
                     "kept_over_all_residual_sd": float(np.median(sd_ratio))}
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--candidates", type=int, default=40, help="random carriers per class")
    parser.add_argument("--keep-one-in", type=int, default=8)
    parser.add_argument("--pairs", nargs="+", default=["preact_resnet-adamw", "convmixer-mixup_ema"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", required=True)
    parser.add_argument("--analyse-only", action="store_true", help="only (re)compute the analysis of OUT")
    args = parser.parse_args(argv)
    if args.analyse_only:
        import json

        record = json.loads(Path(args.out).read_text())
        record["matched_and_selected"] = analyse(record)
        atomic_write_json(Path(args.out), record)
        for name, row in record["matched_and_selected"].items():
            say(f"{name}: matched sum z {row['matched_sum_z']:.2f}, kept/all residual sd {row['kept_over_all_residual_sd']:.2f}")
        return
    b = bench()
    ns = argparse.Namespace(bank="fashion-mnist", out=str(ROOT / "benchmarks" / "results" / "transfer_levers"))
    run_suite, config, suite, references, bank_info, _, pairs = b.open_suite(ns)
    holdout, holdout_labels = suite.data["holdout"]
    start = config["detect"]["reference_images"]
    images, labels = holdout[start:start + 500], holdout_labels[start:start + 500]
    num_classes = suite.marker.info.spec.num_classes
    d = suite.marker.info.feature_dim

    # Suspects: clean seed 0 and 10 % seeds (cached by heldout/run_suite.py's Suite).
    suspects, keys = {}, {}
    for name in args.pairs:
        for fraction, seeds in ((0.0, [0]), (0.1, args.seeds)):
            for seed in seeds:
                run = {"pair": pairs[name], "fraction": fraction, "seed": seed}
                indices, marked, _ = suite.marked(seed, fraction)
                model, _ = suite.train(run, indices, marked)
                suspects[f"{name}-{fraction:g}-seed{seed}"] = suite.predictor(model)
                keys[seed] = suite.key(seed)
    models = {**{f"bank{i}": r for i, r in enumerate(references)}, **suspects}

    # Carriers: per class, the candidates (rows c * M .. c * M + M - 1), then each seed's key carrier.
    gen = _seed_generator(20261207, "selected-carriers")
    m = args.candidates
    candidates = random_carriers(num_classes * m, d, gen)
    key_rows = torch.cat([keys[s].carriers for s in args.seeds])  # (S * C, d)
    carriers = torch.cat([candidates, key_rows])
    t0 = time.perf_counter()
    jobs_images, jobs_labels, jobs_class, jobs_carrier = [], [], [], []
    for c in range(num_classes):
        idx = (labels == c).nonzero().flatten()
        rows = list(range(c * m, (c + 1) * m)) + [num_classes * m + i * num_classes + c for i in range(len(args.seeds))]
        for r in rows:
            jobs_images.append(images[idx])
            jobs_labels.append(torch.full((len(idx),), r, dtype=torch.long))
            jobs_class.append(c)
            jobs_carrier.append(r)
    all_images = torch.cat(jobs_images)
    all_rows = torch.cat(jobs_labels)
    seeds = image_seeds(run_suite.seed_of(config, "marking", 0), list(range(all_images.shape[0])))
    say(f"marking {all_images.shape[0]} probe versions ({len(jobs_class)} carriers)")
    result = mark(suite.marker, all_images.float() / 255.0, all_rows, carriers, suite.mark_config, seed=seeds)
    marked_u8 = (result.images.detach().cpu() * 255).round().clamp(0, 255).to(torch.uint8)
    mark_seconds = time.perf_counter() - t0
    say(f"marked in {mark_seconds:.0f} s; querying {len(models)} models")
    true_labels = torch.cat([torch.full((len(j),), c) for j, c in zip(jobs_labels, jobs_class)]).numpy()
    bounds = np.cumsum([0] + [len(j) for j in jobs_labels])
    response = {}  # model -> (C, M + S): mean margin shift along each carrier (marked - unmarked)
    for name, predict in models.items():
        per_image = margins(predict, marked_u8, true_labels)
        base = margins(predict, images, labels.numpy())
        rows = np.array([per_image[bounds[i]:bounds[i + 1]].mean() for i in range(len(jobs_class))])
        base_c = np.array([base[labels.numpy() == c].mean() for c in range(num_classes)])
        response[name] = rows.reshape(num_classes, m + len(args.seeds)) - base_c[:, None]
    bank_names = [n for n in models if n.startswith("bank")]
    bank_mean = np.mean([response[n] for n in bank_names], axis=0)  # (C, M + S)

    # The rule: among candidates, keep those whose bank mean response is closest to the bank's per-class median.
    keep = np.zeros((num_classes, m), dtype=bool)
    for c in range(num_classes):
        dist = np.abs(bank_mean[c, :m] - np.median(bank_mean[c, :m]))
        keep[c, np.argsort(dist)[: max(2, m // args.keep_one_in)]] = True

    def pooled_sd(values: np.ndarray, mask: np.ndarray | None = None) -> float:
        rows = [values[c, :m][mask[c]] if mask is not None else values[c, :m] for c in range(num_classes)]
        return float(np.sqrt(np.mean([np.var(r, ddof=1) for r in rows])))

    def matched_residual_sd(name: str) -> float:
        out = []
        for c in range(num_classes):
            x = np.stack([response[n][c, :m] for n in bank_names], axis=1)
            x = (x - x.mean(0)) / x.std(0)
            y = response[name][c, :m] - response[name][c, :m].mean()
            resid = []
            for j in range(m):  # leave one out, ridge 0.1 (as radioactive.detect.matched)
                mask = np.arange(m) != j
                w = np.linalg.solve(x[mask].T @ x[mask] + 0.1 * np.eye(x.shape[1]), x[mask].T @ y[mask])
                resid.append(y[j] - x[j] @ w)
            out.append(np.var(resid, ddof=1))
        return float(np.sqrt(np.mean(out)))

    summary = {}
    for name in suspects:
        r = response[name]
        corr = [float(np.corrcoef(r[c, :m], bank_mean[c, :m])[0, 1]) for c in range(num_classes)]
        row = {"sd_all": pooled_sd(r), "sd_kept": pooled_sd(r, keep), "sd_matched_residual": matched_residual_sd(name),
               "corr_with_bank_mean": float(np.mean(corr))}
        row["sd_ratio_kept"] = row["sd_kept"] / row["sd_all"]
        if "-0.1-" in name:
            seed = int(name.rsplit("seed", 1)[1])
            col = m + args.seeds.index(seed)
            z_all = [(r[c, col] - r[c, :m].mean()) / r[c, :m].std(ddof=1) for c in range(num_classes)]
            z_kept = [(r[c, col] - r[c, :m][keep[c]].mean()) / r[c, :m][keep[c]].std(ddof=1) for c in range(num_classes)]
            row |= {"key_z_all_mean": float(np.mean(z_all)), "key_z_kept_mean": float(np.mean(z_kept)),
                    "key_bank_z": float(np.mean([(bank_mean[c, col] - bank_mean[c, :m].mean())
                                                 / bank_mean[c, :m].std(ddof=1) for c in range(num_classes)]))}
        summary[name] = row
        say(f"{name}: " + ", ".join(f"{k} {v:.3f}" for k, v in row.items()))
    record = {
        "what": "spread of third-party suspects' per-carrier response, all random carriers vs carriers kept by a "
                "public rule on the reference bank's response (issue 25, lever 3)",
        "command": " ".join(sys.argv), "candidates_per_class": m, "keep_one_in": args.keep_one_in,
        "probes": "holdout[2000:2500] (the open suite's detection probes), each class's probes per carrier",
        "mark": suite.mark_config.to_dict(), "bank": bank_info,
        "key_fingerprints": {str(s): keys[s].fingerprint for s in args.seeds},
        "summary": summary, "responses": {n: v.tolist() for n, v in response.items()},
        "kept": keep.tolist(), "seconds": {"mark": mark_seconds, "total": time.perf_counter() - t0},
        "versions": versions()}
    record["matched_and_selected"] = analyse(record)
    atomic_write_json(Path(args.out), record)


if __name__ == "__main__":
    main()

"""Research (issue 10, the demo): the demo at other training scales, seeds 0-2, with per-stage times.

One-off research code. The demo's configuration (``radioactive.demo.demo_config``) with ``--train-images`` and
``--epochs`` changed; the 4 clean references for those settings are trained first into ``--workdir``'s cache
(the demo would ship them, as it ships today's), so the per-seed times are those of a demo that finds them.
Each seed's record keeps the seconds of marking, training and testing of the suspect and of the control, so the
time of a demo whose clean control is shipped too (it is independent of every key) can be read off.

    flock /tmp/radioactive-heavy.lock .venv/bin/python research/demo_scale.py --train-images 0 --epochs 3 \
        --out benchmarks/results/research/demo-55k-3epochs-seeds.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

from radioactive._io import atomic_write_json, versions
from radioactive.demo import demo_config, run_demo
from radioactive.experiment import Context


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-images", type=int, required=True, help="0: the whole 55k owner split")
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--precision", choices=["float32", "bfloat16"], default="float32",
                        help="the training recipe's precision (suspect, control and references alike)")
    parser.add_argument("--mark-precision", choices=["fp32", "bf16"], default="fp32",
                        help="the marking network's arithmetic (the marked images and the probes)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--workdir", default="/tmp/demo-scale")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    tag = f"{args.train_images or 55000}x{args.epochs}" + ("-bf16" if args.precision == "bfloat16" else "") \
        + ("-markbf16" if args.mark_precision == "bf16" else "")
    workdir = Path(args.workdir) / tag

    def config_for(seed: int):
        return demo_config(seed=seed, train_images=args.train_images, epochs=args.epochs, precision=args.precision,
                           mark_precision=args.mark_precision)

    start = time.perf_counter()
    Context(config_for(0), workdir).reference_models()  # trained once, cached (the demo would ship them)
    reference_seconds = time.perf_counter() - start
    print(f"references ready ({reference_seconds:.0f} s)", file=sys.stderr, flush=True)
    runs = []
    for seed in args.seeds:
        config = config_for(seed)
        began = time.perf_counter()
        result = run_demo(workdir, config=config, progress=lambda line: print(line, file=sys.stderr, flush=True))
        wall = time.perf_counter() - began
        alpha = config.detect.alpha
        runs.append({"seed": seed, "wall_time_s": wall,
                     "key_fingerprint": result.records["suspect"]["key_fingerprint"],
                     "models": {name: {"test_accuracy": rec["test_accuracy"], "log10_p": rec["log10_p"],
                                       "seconds": rec["seconds"], "marked_images": rec["marked_images"],
                                       "psnr_min": rec["psnr_min"],
                                       "detected": rec["log10_p"]["blackbox"] <= math.log10(alpha)}
                                for name, rec in result.records.items()}})
        runs[-1]["wall_without_control_training_s"] = wall - rec_seconds(result.records["control"], "train")
        print(json.dumps({"seed": seed, "wall": round(wall), **{n: {k: round(v, 2) for k, v in m["log10_p"].items()}
                                                                  for n, m in runs[-1]["models"].items()}}), flush=True)
        (workdir / "key.safetensors").unlink(missing_ok=True)  # the next seed's demo writes its own key
    headline = [(r["models"]["suspect"]["log10_p"]["blackbox"], r["models"]["control"]["log10_p"]["blackbox"])
                for r in runs]
    atomic_write_json(args.out, {
        "research": "demo_scale", "command": " ".join(sys.argv), "config": config_for(0).to_dict(),
        "criterion": "suspect log10 p <= -3 and control log10 p > log10(0.05) on the headline test, every seed",
        "all_seeds_pass": all(s <= -3 and c > math.log10(0.05) for s, c in headline),
        "reference_training_seconds": reference_seconds, "runs": runs, "threads": torch.get_num_threads(),
        "versions": versions(), "date": time.strftime("%Y-%m-%d %H:%M:%S")})
    print(f"written {args.out}")
    return 0


def rec_seconds(record: dict, stage: str) -> float:
    return float(record["seconds"][stage])


if __name__ == "__main__":
    sys.exit(main())

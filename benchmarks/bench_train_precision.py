"""Training throughput of the trainer simulation in float32 and in bfloat16 mixed precision.

What `radioactive.train.fit` runs per step (channels-last batch, forward under the recipe's autocast, float32
cross-entropy, backward, SGD with Nesterov momentum), timed for the built-in ``cnn`` (and ``resnet_narrow``) on
random 28 x 28 batches. The precisions alternate, ``--repeats`` times each, so that a machine's drift (another
job, frequency changes) touches both alike; the result is the median rate per precision and the median of the
per-repeat ratios. Writes benchmarks/results/train_precision.json.

    flock /tmp/radioactive-heavy.lock .venv/bin/python benchmarks/bench_train_precision.py
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from radioactive._io import atomic_write_json, versions
from radioactive.nets import NetSpec, build_from_spec

ROOT = Path(__file__).resolve().parents[1]


def rate(model: torch.nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
         bfloat16: bool, steps: int) -> float:
    """Images per second over ``steps`` training steps (after 2 warm-up steps)."""
    def step() -> None:
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16, enabled=bfloat16):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(2):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * len(x) / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archs", nargs="+", default=["cnn", "resnet_narrow"])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "train_precision.json")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    x = torch.rand(args.batch_size, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (args.batch_size,))
    results = {}
    for arch in args.archs:
        model = build_from_spec(NetSpec(arch, 10, in_channels=1, input_size=(28, 28))).train()
        model = model.to(memory_format=torch.channels_last)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
        rates: dict[str, list[float]] = {"float32": [], "bfloat16": []}
        for _ in range(args.repeats):
            for name in rates:
                rates[name].append(rate(model, optimizer, x, y, name == "bfloat16", args.steps))
        ratios = [b / f for f, b in zip(rates["float32"], rates["bfloat16"])]
        results[arch] = {"images_per_second": {k: statistics.median(v) for k, v in rates.items()},
                         "all": rates, "speedup_median": statistics.median(ratios), "speedups": ratios}
        print(f"{arch}: float32 {results[arch]['images_per_second']['float32']:.0f} img/s, bfloat16 "
              f"{results[arch]['images_per_second']['bfloat16']:.0f} img/s, x{results[arch]['speedup_median']:.2f}")
    flags = ""
    if Path("/proc/cpuinfo").is_file():
        text = Path("/proc/cpuinfo").read_text()
        flags = " ".join(f for f in ("avx512_bf16", "amx_bf16", "avx512f") if f in text)
    atomic_write_json(args.out, {
        "benchmark": "train_precision", "command": "benchmarks/bench_train_precision.py " + " ".join(sys.argv[1:]),
        "settings": {k: str(v) for k, v in vars(args).items()}, "results": results,
        "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "cpu_flags": flags,
        "machine": platform.processor() or platform.machine(), "versions": versions(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S")})
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The demo's default settings, in a module without torch so the command line can build its parser from them.

The demo's design (docs/research.md, "The demo"): the whole 55k owner split and 4 epochs of the grid's recipe in
bfloat16 mixed precision (1.6x float32's rate on the 2 CPU cores it is measured on,
benchmarks/results/train_precision.json), so that the suspect memorises the marks enough to be detected on
every seed 0-2 (benchmarks/results/research/demo-55k-4epochs-bf16-seeds.json: headline log10 p -4.48, -3.96,
-5.08 against -0.08, -0.05, -0.52 for the clean controls) while one training stays near two minutes; smaller
float32 scales were not detected on every seed (20,000 x 4: -4.39, -1.17, -1.00; 55,000 x 3: -3.16, -3.54,
-2.32). 10 marking steps at lr 0.06 (the marking network in bfloat16 autocast,
benchmarks/results/bench_mark_precision_cpu.json) reach the 40 dB floor with about 88 % of the 30-step feature
shift at a third of the cost, which pays for 400 probes x 21 carrier sets; the headline test is the exact
permutation test with the suspect's response matched to clean reference models trained like the suspect (the
leave-one-out fit of radioactive.detect.matched, the transfer work's choice; the plain difference in differences
against their mean is reported beside it). Those
and the default seed's clean control are independent of every key and are shipped with the package under the
names the experiment cache gives them, so the demo trains only its suspect.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DEMO_DEFAULTS"]

DEMO_DEFAULTS: dict[str, Any] = {
    "fraction": 0.10, "epochs": 4, "train_images": 0, "mark_steps": 10, "mark_lr": 0.06, "probes": 400,
    "num_controls": 20, "reference_models": 4, "whitebox_null_trials": 100,
    "precision": "bfloat16", "mark_precision": "bf16", "reference_fit": "matched",
}

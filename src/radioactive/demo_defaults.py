"""The demo's default settings, in a module without torch so the command line can build its parser from them.

The demo's design (docs/research.md, "The demo"): a 20,000-image training set (a fixed subset of the 55k owner
split) and 4 epochs of the grid's recipe keep two trainings near a minute each on 2 CPU cores (40,000 images and 3
epochs were measured too: median suspect log10 p -2.82 against -1.17 over seeds 0-2, but 7.7 minutes per demo
against 3.6, over the 7-minute budget; benchmarks/results/research/demo-40k-3epochs-seeds.json); 10 marking steps
at lr 0.06 reach the 40 dB floor with about 88 % of the 30-step feature shift at a third of the cost, which pays
for 400 probes x 21 carrier sets; the headline test is the exact permutation test with difference in differences
against clean reference models trained like the suspect (shipped with the package under the names the experiment
cache gives them, so the demo does not spend minutes on them).
"""

from __future__ import annotations

from typing import Any

__all__ = ["DEMO_DEFAULTS"]

DEMO_DEFAULTS: dict[str, Any] = {
    "fraction": 0.10, "epochs": 4, "train_images": 20_000, "mark_steps": 10, "mark_lr": 0.06, "probes": 400,
    "num_controls": 20, "reference_models": 4, "whitebox_null_trials": 100,
    "precision": "float32", "mark_precision": "fp32",
}

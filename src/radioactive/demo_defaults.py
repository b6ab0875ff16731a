"""The demo's default settings, in a module without torch so the command line can build its parser from them.

The demo's design (docs/research.md, "The demo"): a 40,000-image training set (a fixed subset of the 55k owner
split) and 3 epochs, the grid's recipe, keep two trainings near two minutes each on 2 CPU cores while giving
the suspect about 4,000 marked images to learn from; 10 marking steps at lr 0.06 reach the 40 dB floor with
about 88 % of the 30-step feature shift at a third of the cost, which pays for 400 probes x 21 carrier sets;
the headline test is the exact permutation test with difference in differences against clean reference models
trained like the suspect (shipped with the package under the names the experiment cache gives them, so the
demo does not spend minutes on them).
"""

from __future__ import annotations

from typing import Any

__all__ = ["DEMO_DEFAULTS"]

DEMO_DEFAULTS: dict[str, Any] = {
    "fraction": 0.10, "epochs": 3, "train_images": 40_000, "mark_steps": 10, "mark_lr": 0.06, "probes": 400,
    "num_controls": 20, "reference_models": 4, "whitebox_null_trials": 100,
}

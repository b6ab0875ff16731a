"""What names and seeds the runs of an experiment: content hashes and one seed per random purpose.

Run ids and cache keys are hashes of JSON-able descriptions (:func:`content_hash`), so that a rerun finds what
an earlier one wrote. Every random choice of a run takes its seed from :func:`derive_seed`, by purpose. The
formulas are the ones the committed grid (``results/fashion-mnist``) was produced with: changing one changes
every result of that purpose (and orphans nothing, but no longer reproduces the records), so they live in one
table, here, and ``tests/experiment/test_grid_ids.py`` pins them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from ..errors import ConfigError

__all__ = ["SEED_PURPOSES", "EXPERIMENT_WIDE", "content_hash", "derive_seed"]


def content_hash(obj: Any, length: int = 12) -> str:
    """The first ``length`` hex digits of the SHA-256 of ``obj`` as canonical JSON (sorted keys)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:length]


# purpose -> seed as a function of the grid seed. The multipliers are primes, so that the seeds of the
# different purposes of nearby grid seeds never coincide.
SEED_PURPOSES: dict[str, Callable[[int], int]] = {
    # The secret key (Key.generate): the carriers, the unit of randomness of every test.
    "key": lambda seed: 1_000_003 * seed + 17,
    # Which images of each class are marked (one permutation per class; smaller fractions take prefixes).
    "selection": lambda seed: 7_919 * seed + 3,
    # The marking's per-image augmentation streams; the control twins of published probes share them.
    "marking": lambda seed: seed,
    # The suspect's training: initialisation, batch order, augmentation.
    "training": lambda seed: seed,
    # The demo's clean control: its own training seed, not the suspect's (see experiment.run_one).
    "control_training": lambda seed: 1_000_037 * seed + 5,
    # The random keys of the white-box test's empirical null (``whitebox_null_trials``).
    "whitebox_null": lambda seed: 7_727 * seed + 11,
    # A robustness treatment's own training (fine-tuning, the distilled student): experiment.treatments.
    "treatment": lambda seed: 1_000_099 * seed + 31,
    # The twin secret (``[twins]``): each marked image's secret direction, twin streams and coin.
    "twins": lambda seed: 1_000_081 * seed + 29,
    # Experiment-wide (the grid seed is not used):
    # which images of a folder dataset are held out, never published (Fashion-MNIST's split uses seed 0 too);
    "holdout": lambda _seed: 0,
    # which training images ``train_images`` > 0 keeps;
    "train_subset": lambda _seed: 1,
    # the auditor's clean reference model, one per experiment, shared by every run.
    "reference_model": lambda _seed: 99_991,
    # The i-th of several reference models (``reference_models`` > 1; the argument is i, not a grid seed);
    # i = 0 is the single reference model's seed, so the first reference is that model.
    "reference_models": lambda index: 99_991 + 1_000_033 * index,
}
EXPERIMENT_WIDE = frozenset({"holdout", "train_subset", "reference_model"})


def derive_seed(purpose: str, seed: int | None = None) -> int:
    """The seed of ``purpose`` in the run of grid seed ``seed`` (None for the experiment-wide purposes).

    Raises:
        ConfigError: an unknown purpose, a per-run purpose without a grid seed, or an experiment-wide one with.

    Examples:
        >>> derive_seed("key", 2), derive_seed("selection", 2), derive_seed("reference_model")
        (2000023, 15841, 99991)
    """
    if purpose not in SEED_PURPOSES:
        raise ConfigError(f"unknown seed purpose {purpose!r}; choose from {sorted(SEED_PURPOSES)}")
    if (seed is None) != (purpose in EXPERIMENT_WIDE):
        kind = "experiment-wide: pass no" if seed is not None else "per run: pass the"
        raise ConfigError(f"seed purpose {purpose!r} is {kind} grid seed")
    return SEED_PURPOSES[purpose](0 if seed is None else int(seed))

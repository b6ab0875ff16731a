"""Null trials: the same test run with fresh random keys against the same suspect.

Under H0 the real key is one more draw like these, so the rank of its p-value among theirs is an empirical
p-value that needs no distributional assumption (it is coarse: at best ``1 / (trials + 1)``).
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable, Sequence

import numpy as np

from ..key import Key, random_key
from .verdict import Verdict

__all__ = ["null_seeds", "null_trial_summary", "with_null_trials"]


def null_seeds(trials: int, seed: int | None) -> list[int]:
    """``trials`` key seeds drawn from ``seed`` (default: 63 random bits from the OS)."""
    generator = np.random.default_rng(secrets.randbits(63) if seed is None else seed)
    return [int(s) for s in generator.integers(0, 2**63 - 1, size=trials)]


def null_trial_summary(real_log10_p: float, null_log10_ps: Sequence[float], seeds: Sequence[int], alpha: float) -> dict:
    """Where the real key's log10 p falls among the random keys' (rank 1: below every one of them)."""
    null = np.asarray(null_log10_ps, dtype=np.float64)
    rank = 1 + int((null <= real_log10_p).sum())
    return {
        "trials": len(null),
        "rank": rank,
        "empirical_p": rank / (len(null) + 1),
        "null_log10_p": null.tolist(),
        "null_fraction_below_alpha": float((null <= math.log10(alpha)).mean()) if len(null) else float("nan"),
        "seeds": list(seeds),
    }


def with_null_trials(verdict: Verdict, key: Key, trials: int, seed: int | None,
                     log10_p_for: Callable[[Key], float]) -> Verdict:
    """``verdict`` with the summary of ``trials`` random keys, each scored by ``log10_p_for(key)``."""
    if trials <= 0:
        return verdict
    seeds = null_seeds(trials, seed)
    null = [log10_p_for(random_key(key, s)) for s in seeds]
    return verdict.with_null_trials(null_trial_summary(verdict.log10_p, null, seeds, verdict.alpha))

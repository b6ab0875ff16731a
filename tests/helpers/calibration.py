"""Calibration checks shared by the detection tests: a false-positive rate within its binomial interval, with
enough trials that a rate twice the nominal one fails."""

from __future__ import annotations

import numpy as np

from radioactive import stats


def assert_rate_within(p_values, alpha: float, *, exact: bool = False, level: float = 0.99) -> None:
    """``P(p <= alpha)`` over ``p_values`` is at most ``alpha`` (at least, too, when ``exact``) within the
    central ``level`` binomial interval; and the check has the power to fail a doubled rate."""
    values = np.asarray(p_values, dtype=np.float64)
    low, high = stats.binomial_interval(len(values), alpha, level)
    assert high < 2 * alpha * len(values), f"{len(values)} trials are too few: a doubled rate at {alpha} would pass"
    hits = int((values <= alpha * (1 + 1e-9)).sum())
    assert hits <= high, f"{hits} of {len(values)} p-values <= {alpha}: above the {level:.0%} bound {high}"
    if exact:
        assert hits >= low, f"{hits} of {len(values)} p-values <= {alpha}: below the {level:.0%} bound {low}"

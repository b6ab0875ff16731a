"""Matched references (a synthetic control): the suspect's response predicted from a bank of clean references.

Difference in differences subtracts the references' *mean* response per class and carrier set. When the bank
holds models of other architectures and recipes than the suspect, their mean can respond to the carriers far
more (or less) strongly than the suspect does, and the subtraction adds noise instead of removing the
carrier's intrinsic effect. Here the suspect's per-class values are regressed on every reference's, and the
test reads what the references do not explain.

Exactness (docs: "Keeping new tests exact"). Per class ``k`` the suspect's value ``y[i, k]`` and the
references' values ``r[j, i, k]`` on carrier set ``i`` (i = 0 the key, 1..K the controls) are, under H0,
exchangeable over ``i`` jointly, and independent across classes. The residual of observation ``(i, k)`` comes
from a ridge regression fitted on every *other* observation (leave one out), after standardising each class's
values over all K + 1 sets. That map commutes with any permutation of the sets within any class: permuting a
class's sets permutes its observations, which changes neither the standardisation nor the set of observations
any fit sees. So the residual matrix keeps the null's invariance and the stratified permutation test (or the
rank test) on it stays exact. The fit never learns which set is the key.

Two fits:
- ``matched`` (default): one set of weights over the bank shared by every class (C·(K + 1) observations);
- ``matched-class``: weights per class (K + 1 observations each; for small banks).
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError

__all__ = ["REFERENCE_FITS", "DEFAULT_RIDGE", "matched_residuals"]

REFERENCE_FITS = ("mean", "matched", "matched-class")
# Ridge penalty per observation on standardised columns: the weights shrink a little towards zero, which keeps
# a bank of many similar references from fitting noise; chosen on the grid, never on a sealed suspect.
DEFAULT_RIDGE = 0.1


def _standardise(values: np.ndarray) -> np.ndarray:
    """Each class's values standardised over the K + 1 sets (axis -2); a constant column becomes zeros."""
    mean = values.mean(axis=-2, keepdims=True)
    spread = values.std(axis=-2, keepdims=True)
    return np.where(spread > 0, (values - mean) / np.where(spread > 0, spread, 1.0), 0.0)


def _loo_ridge(y: np.ndarray, x: np.ndarray, ridge: float) -> np.ndarray:
    """Leave-one-out residuals of a ridge regression without intercept: ``(y - H y) / (1 - diag H)`` with
    ``H = X (X'X + ridge·n·I)^-1 X'``, exact for ridge as for least squares. ``y`` ``(n,)``, ``x`` ``(n, m)``."""
    n, m = x.shape
    gram = x.T @ x + ridge * n * np.eye(m)
    hat = x @ np.linalg.solve(gram, x.T)
    leverage = np.clip(np.diag(hat), None, 1 - 1e-9)
    return (y - hat @ y) / (1.0 - leverage)


def matched_residuals(suspect: np.ndarray, references: np.ndarray, *, fit: str = "matched",
                      ridge: float = DEFAULT_RIDGE) -> np.ndarray:
    """What the reference bank does not explain of the suspect's response.

    Args:
        suspect: ``(K + 1, C')`` per-class statistic on every carrier set (row 0: the key's).
        references: ``(M, K + 1, C')`` the same for each of the M references.
        fit: ``matched`` (weights shared by the classes) or ``matched-class`` (weights per class).
        ridge: penalty per observation on the standardised references (>= 0).

    Returns:
        ``(K + 1, C')`` leave-one-out residuals (larger = more response to that set than the bank predicts).

    Examples:
        >>> rng = np.random.default_rng(0)
        >>> refs = rng.normal(size=(3, 21, 10))
        >>> suspect = refs.mean(axis=0) + 0.1 * rng.normal(size=(21, 10))
        >>> res = matched_residuals(suspect, refs)
        >>> bool(res.std() < 0.5 * ((suspect - suspect.mean(0)) / suspect.std(0)).std())
        True
    """
    y = np.asarray(suspect, dtype=np.float64)
    x = np.asarray(references, dtype=np.float64)
    if y.ndim != 2 or y.shape[0] < 3:
        raise ConfigError(f"need (K + 1, classes) suspect values with K >= 2, got shape {y.shape}")
    if x.ndim != 3 or x.shape[1:] != y.shape or x.shape[0] < 1:
        raise ConfigError(f"need (references, K + 1, classes) = (M, {y.shape[0]}, {y.shape[1]}) reference values, "
                          f"got shape {x.shape}")
    if not (np.isfinite(y).all() and np.isfinite(x).all()):
        raise ConfigError("statistics must be finite")
    if not ridge >= 0:
        raise ConfigError(f"ridge must be >= 0, got {ridge!r}")
    ys, xs = _standardise(y), _standardise(x)  # (S, C), (M, S, C)
    sets, classes = y.shape
    if fit == "matched":
        design = xs.transpose(1, 2, 0).reshape(sets * classes, -1)  # rows (set, class)
        return _loo_ridge(ys.reshape(-1), design, ridge).reshape(sets, classes)
    if fit == "matched-class":
        out = np.empty_like(ys)
        for k in range(classes):
            out[:, k] = _loo_ridge(ys[:, k], xs[:, :, k].T, ridge)
        return out
    raise ConfigError(f"unknown reference fit {fit!r}; choose from {[f for f in REFERENCE_FITS if f != 'mean']}")

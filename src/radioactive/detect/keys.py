"""Several owners, one suspect: which keys does a model carry?

Each key is tested exactly as alone (:func:`radioactive.detect.whitebox`, :func:`radioactive.detect.blackbox`,
or any single-key test), then the m p-values are corrected for multiplicity with Holm's step-down: sorted
ascending, ``adjusted p_(i) = max_{j <= i} min(1, (m - j + 1) p_(j))``, and a key is declared detected when its
adjusted p-value is at most ``alpha``. Whatever the dependence between the tests, the probability of declaring
*any* key whose H0 is true ("the suspect was not trained on data marked with this key") is at most ``alpha``
(the family-wise error rate). Results name each key by its fingerprint only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from ..key import Key
from ..marker import Marker
from .black_box import blackbox
from .observations import Predict
from .probes import Probes
from .settings import BlackboxSettings, WhiteboxSettings
from .verdict import DEFAULT_ALPHA, Verdict, evidence_level, evidence_scale, format_p
from .white_box import prepare, prepare_options, score_parts

__all__ = ["KeyFamily", "blackbox_keys", "detect_keys", "holm_adjust", "whitebox_keys"]


def holm_adjust(log10_ps: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values, as log10, in the order given.

    With the m p-values sorted ascending, ``adjusted p_(i) = max_{j <= i} min(1, (m - j + 1) p_(j))``; computed
    in log space, so p-values far below 1e-300 keep their exact adjustment.

    Args:
        log10_ps: ``(m,)`` log10 p-values (<= 0; ``-inf`` allowed, NaN refused).

    Examples:
        >>> np.round(10 ** holm_adjust(np.log10([0.01, 0.04, 0.03])), 6).tolist()
        [0.03, 0.06, 0.06]
    """
    logs = np.asarray(log10_ps, dtype=np.float64).reshape(-1)
    if logs.size == 0:
        raise ConfigError("Holm's adjustment needs at least one p-value")
    if np.isnan(logs).any():
        raise ValueError(f"log10 p-values must not be NaN, got {logs.tolist()}")
    order = np.argsort(logs, kind="stable")
    factors = np.log10(logs.size - np.arange(logs.size, dtype=np.float64))  # log10(m - j + 1), j = 1..m
    adjusted = np.maximum.accumulate(np.minimum(0.0, logs[order] + factors))
    out = np.empty_like(adjusted)
    out[order] = adjusted
    return out


@dataclass(frozen=True)
class KeyFamily:
    """One suspect tested with several keys: each key's own verdict, and Holm's decision across them.

    Attributes:
        verdicts: one per key, in the order tested; each is what the single-key test returns for that key.
        alpha: the family-wise error level of the decisions.
        holm_log10_p: per key (same order), the Holm-adjusted p-value, log10 (computed, not given).
    """

    verdicts: tuple[Verdict, ...]
    alpha: float = DEFAULT_ALPHA
    holm_log10_p: tuple[float, ...] = field(init=False)

    def __post_init__(self) -> None:
        verdicts = tuple(self.verdicts)
        if not verdicts:
            raise ConfigError("a key family needs at least one verdict")
        if not 0 < self.alpha < 1:
            raise ConfigError(f"alpha must be in (0, 1), got {self.alpha}")
        _check_distinct([v.key_fingerprint for v in verdicts])
        object.__setattr__(self, "verdicts", verdicts)
        object.__setattr__(self, "holm_log10_p", tuple(float(x) for x in holm_adjust([v.log10_p for v in verdicts])))

    @property
    def fingerprints(self) -> tuple[str, ...]:
        return tuple(v.key_fingerprint for v in self.verdicts)

    @property
    def detected(self) -> tuple[bool, ...]:
        """Per key: H0 rejected by Holm's step-down at ``alpha`` (family-wise)."""
        threshold = math.log10(self.alpha)
        return tuple(adjusted <= threshold for adjusted in self.holm_log10_p)

    @property
    def any_detected(self) -> bool:
        return any(self.detected)

    def _common(self, name: str) -> Any:
        values = {getattr(v, name) for v in self.verdicts}
        return values.pop() if len(values) == 1 else None

    def summary(self) -> str:
        """A table for a terminal: per key its fingerprint, p-value, evidence, Holm-adjusted p and decision."""
        tests = self._common("test") or ", ".join(sorted({v.test for v in self.verdicts}))
        model = self._common("model_sha256")
        lines = [f"test        {tests}; {len(self.verdicts)} keys" + (f"; model {model[:16]}" if model else "")]
        header = f"{'key':<18}{'p-value':<12}{'log10 p':>10}  {'evidence':<13}{'Holm p':<12}decision"
        lines += ["", header, "-" * len(header)]
        for verdict, adjusted, detected in zip(self.verdicts, self.holm_log10_p, self.detected):
            lines.append(f"{verdict.key_fingerprint:<18}{format_p(verdict.log10_p):<12}{verdict.log10_p:>10.3f}  "
                         f"{evidence_level(verdict.log10_p):<13}{format_p(adjusted):<12}"
                         f"{'DETECTED' if detected else 'not detected'}")
        lines.append("")
        for verdict in self.verdicts:
            lines += [f"{verdict.key_fingerprint}  {note}" for note in _notes(verdict)]
        count = sum(self.detected)
        lines.append(f"evidence    of each key's own p-value: {evidence_scale()}")
        lines.append(f"decision    {count} of {len(self.verdicts)} keys DETECTED by Holm's step-down at family-wise "
                     f"alpha = {self.alpha:g}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "correction": "holm",
            "alpha": self.alpha,
            "keys": len(self.verdicts),
            "detected_keys": [fp for fp, hit in zip(self.fingerprints, self.detected) if hit],
            "any_detected": self.any_detected,
            "results": [
                {"key_fingerprint": v.key_fingerprint, "test": v.test, "log10_p": v.log10_p, "p": v.p,
                 "evidence": v.evidence, "holm_log10_p": adjusted, "holm_p": 10.0 ** adjusted, "detected": hit,
                 "decision": "detected" if hit else "not detected", "verdict": v.to_dict()}
                for v, adjusted, hit in zip(self.verdicts, self.holm_log10_p, self.detected)
            ],
        }


def _notes(verdict: Verdict) -> list[str]:
    """What a key's single-key summary would add beyond its p-value: null trials and warnings."""
    notes = []
    if verdict.null_trials:
        nt = verdict.null_trials
        notes.append(f"null trials: {nt['trials']} random keys, the key ranks {nt['rank']} (empirical p "
                     f"{nt['empirical_p']:.3g})")
    marking = verdict.details.get("marking")
    if marking and marking.get("warning"):
        notes.append(f"WARNING: {marking['warning']}")
    alone = verdict.details.get("reference_alone")
    if alone and alone.get("extreme"):
        notes.append(f"reference alone EXTREME: {alone['note']}")
    return notes


def _check_distinct(fingerprints: Sequence[str]) -> None:
    seen = set()
    for fingerprint in fingerprints:
        if fingerprint in seen:
            raise ConfigError(f"key {fingerprint} is given twice; test each key once (Holm's correction counts keys)")
        seen.add(fingerprint)


def _markers(marker: Marker | Sequence[Marker], keys: Sequence[Key]) -> list[Marker]:
    if isinstance(marker, Marker):
        return [marker] * len(keys)
    markers = list(marker)
    if len(markers) != len(keys):
        raise ConfigError(f"{len(markers)} markers for {len(keys)} keys; give one marker for all or one per key")
    return markers


def detect_keys(keys: Sequence[Key], test: Callable[[Key], Verdict], *, alpha: float = DEFAULT_ALPHA) -> KeyFamily:
    """Run the single-key ``test`` once per key, then Holm's step-down across the keys at ``alpha``.

    Args:
        keys: the keys to test, each once.
        test: ``key -> Verdict``: one of the single-key tests with everything but the key fixed.
        alpha: the family-wise error level.

    Examples:
        >>> family = detect_keys([key_a, key_b], lambda key: blackbox(predict, key, probes, marker=marker))  # doctest: +SKIP
    """
    keys = list(keys)
    if not keys:
        raise ConfigError("give at least one key")
    _check_distinct([key.fingerprint for key in keys])
    return KeyFamily(tuple(test(key) for key in keys), alpha=alpha)


def whitebox_keys(
    model: nn.Module,
    keys: Sequence[Key],
    reference: Any,
    *,
    marker: Marker | Sequence[Marker],
    settings: WhiteboxSettings | None = None,
    marked: Sequence[bool] | torch.Tensor | None = None,
) -> KeyFamily:
    """The white-box test of ``model`` for each key (arguments as :func:`radioactive.detect.whitebox`), and
    Holm's decision at ``settings.alpha``.

    The features and the alignment do not depend on the key: they are computed once per marker, and every
    key is scored on them exactly as :func:`radioactive.detect.whitebox` scores it (same p-value, bit for bit).

    Args:
        marker: the marker of every key, or one per key (keys made for different marking networks).
    """
    settings = settings if settings is not None else WhiteboxSettings()
    keys = list(keys)
    if not keys:
        raise ConfigError("give at least one key")
    markers = _markers(marker, keys)
    _check_distinct([key.fingerprint for key in keys])
    prepared: dict[int, Any] = {}
    verdicts = []
    for key, key_marker in zip(keys, markers):
        if id(key_marker) not in prepared:
            prepared[id(key_marker)] = prepare(model, key, reference, marker=key_marker, marked=marked,
                                               **prepare_options(settings))
        key.check_marker(key_marker.info)
        verdicts.append(score_parts(prepared[id(key_marker)], key, settings))
    return KeyFamily(tuple(verdicts), alpha=settings.alpha)


def blackbox_keys(
    predict: Predict,
    keys: Sequence[Key],
    probes: Probes,
    *,
    marker: Marker | Sequence[Marker],
    settings: BlackboxSettings | None = None,
    reference: Predict | Sequence[Predict] | None = None,
) -> KeyFamily:
    """The black-box test of ``predict`` for each key (arguments as :func:`radioactive.detect.blackbox`; each key
    gets its own probe markings and control sets), and Holm's decision at ``settings.alpha``.

    Args:
        marker: the marker of every key, or one per key.
    """
    settings = settings if settings is not None else BlackboxSettings()
    keys = list(keys)
    markers = dict(zip((key.fingerprint for key in keys), _markers(marker, keys)))
    return detect_keys(keys, lambda key: blackbox(predict, key, probes, marker=markers[key.fingerprint],
                                                  settings=settings, reference=reference), alpha=settings.alpha)

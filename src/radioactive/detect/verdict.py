"""The result of a detection test: a frozen :class:`Verdict` with per-class :class:`ClassScore` rows."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import ConfigError

__all__ = ["DEFAULT_ALPHA", "EVIDENCE_LEVELS", "ClassScore", "Verdict", "evidence_level", "evidence_scale",
           "evidence_words", "format_p"]


def format_p(log10_p: float) -> str:
    """A p-value from its log10, readable at any magnitude: ``0.012``, ``3.1e-07``, ``10^-1087.3``."""
    if math.isnan(log10_p):
        return "nan"
    if log10_p == -math.inf:
        return "0 (below any representable value)"
    if log10_p > -4:
        return f"{10 ** log10_p:.3g}"
    if log10_p > -300:
        return f"{10 ** log10_p:.2e}"
    return f"10^{log10_p:.1f}"


# Evidence against H0 in words, strongest first: (level, the largest p-value that reaches it). Why these
# thresholds: README, "How strong is the evidence?" (the Sellke-Bayarri-Berger bound on the Bayes factor:
# at most about 2.5 at p = 0.05, 53 at 1e-3, 26,600 at 1e-6). Above the last threshold the level is "none".
EVIDENCE_LEVELS: tuple[tuple[str, float], ...] = (("very strong", 1e-6), ("strong", 1e-3), ("weak", 0.05))
# The default decision level: "strong" evidence, the level at which to tell an owner their model was trained
# on your data (``alpha`` of the settings, of the gradient test and of ``radioactive detect --alpha``).
DEFAULT_ALPHA = 1e-3


def evidence_level(log10_p: float) -> str:
    """The evidence level of a p-value given by its log10: ``none`` (p > 0.05), ``weak`` (1e-3 < p <= 0.05),
    ``strong`` (1e-6 < p <= 1e-3) or ``very strong`` (p <= 1e-6); thresholds in :data:`EVIDENCE_LEVELS`.

    Examples:
        >>> evidence_level(-1.0), evidence_level(-2.0), evidence_level(-3.0), evidence_level(-6.0)
        ('none', 'weak', 'strong', 'very strong')
    """
    if math.isnan(log10_p):
        return "none"
    for level, threshold in EVIDENCE_LEVELS:
        if log10_p <= math.log10(threshold):
            return level
    return "none"


def _threshold(p: float) -> str:
    mantissa, _, exponent = f"{p:.0e}".partition("e")
    return f"{p:g}" if p >= 0.01 else f"{mantissa}e{int(exponent)}"


def evidence_words(log10_p: float) -> str:
    """The evidence level with its threshold, for people: ``strong (p <= 1e-3)``, ``none (p > 0.05)``."""
    level = evidence_level(log10_p)
    if level == "none":
        return f"none (p > {_threshold(EVIDENCE_LEVELS[-1][1])})"
    return f"{level} (p <= {_threshold(dict(EVIDENCE_LEVELS)[level])})"


def evidence_scale() -> str:
    """The levels and their thresholds in one line: ``weak p <= 0.05, strong p <= 1e-3, very strong p <= 1e-6``."""
    return ", ".join(f"{level} p <= {_threshold(threshold)}" for level, threshold in reversed(EVIDENCE_LEVELS))


@dataclass(frozen=True)
class ClassScore:
    """One class's contribution to a test.

    Attributes:
        index: the class index in the key.
        log10_p: the class's own p-value (log10).
        z: the one-sided z-score with the same p-value.
        cosine: white-box: cosine between the aligned classifier row and the carrier.
        statistic: black-box: the statistic on the true-carrier version (after differencing, if any).
        controls: black-box: the same statistic on each control carrier set.
        count: reference/probe images of this class that entered the statistic (black-box), else 0.
        output: the suspect's output index used for this class.
    """

    index: int
    log10_p: float
    z: float
    cosine: float | None = None
    statistic: float | None = None
    controls: tuple[float, ...] = ()
    count: int = 0
    output: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"index": self.index, "log10_p": self.log10_p, "z": self.z}
        if self.cosine is not None:
            out["cosine"] = self.cosine
        if self.statistic is not None:
            out["statistic"] = self.statistic
            out["controls"] = list(self.controls)
        out["count"] = self.count
        out["output"] = self.output if self.output is not None else self.index
        return out


@dataclass(frozen=True)
class Verdict:
    """A detection test's answer to H0: "the suspect was not trained on data marked with this key".

    Attributes:
        test: the test's name (``whitebox``, ``blackbox-rank``, ``blackbox-t``; ``-did`` with a reference model).
        log10_p: combined p-value, log10 (exact far below 1e-300).
        alpha: the significance level of ``detected``.
        classes: per-class scores.
        z: the one-sided z-score with the same combined p-value.
        key_fingerprint: names the key (never the carriers).
        model_sha256: hash of the suspect's weights (white-box) or an identifier the caller gave.
        counts: number of classes, reference images, probes, control sets ...
        alignment: white-box: method (``lstsq``/``identity``), R^2 of both, feature dims.
        details: the test's settings (statistic, null dimension, warnings raised ...).
        null_trials: filled by :func:`radioactive.detect.null_trials`: the p-values of random keys.
    """

    test: str
    log10_p: float
    alpha: float
    classes: tuple[ClassScore, ...]
    z: float
    key_fingerprint: str
    model_sha256: str | None = None
    counts: dict[str, int] = field(default_factory=dict)
    alignment: dict[str, Any] | None = None
    details: dict[str, Any] = field(default_factory=dict)
    null_trials: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise ConfigError(f"alpha must be in (0, 1), got {self.alpha}")
        if math.isnan(self.log10_p) or self.log10_p > 1e-9:
            raise ValueError(f"log10_p must be <= 0, got {self.log10_p}")
        object.__setattr__(self, "classes", tuple(self.classes))

    @property
    def p(self) -> float:
        """The combined p-value as a float (0.0 when it is below the double range; use ``log10_p``)."""
        return 10.0 ** self.log10_p

    @property
    def detected(self) -> bool:
        """True when H0 is rejected at ``alpha``."""
        return self.log10_p <= math.log10(self.alpha)

    @property
    def decision(self) -> str:
        return "detected" if self.detected else "not detected"

    @property
    def evidence(self) -> str:
        """The evidence level of the p-value (:func:`evidence_level`): ``none``, ``weak``, ``strong``, ``very strong``."""
        return evidence_level(self.log10_p)

    def with_null_trials(self, summary: dict[str, Any]) -> Verdict:
        return replace(self, null_trials=summary)

    def summary(self) -> str:
        """A few readable lines for a terminal."""
        lines = [
            f"test        {self.test}",
            f"key         {self.key_fingerprint}",
        ]
        if self.model_sha256:
            lines.append(f"model       {self.model_sha256[:16]}")
        lines.append(f"p-value     {format_p(self.log10_p)}  (log10 p = {self.log10_p:.3f}, z = {self.z:.2f})")
        if self.alignment:
            align = self.alignment
            identity = align.get("r2_identity", float("nan"))
            extra = f"; identity R^2 {identity:.3f}" if align.get("method") != "identity" and math.isfinite(identity) else ""
            lines.append(f"alignment   {align.get('method')} (R^2 {align.get('r2', float('nan')):.3f}{extra})")
        counts = ", ".join(f"{k} {v}" for k, v in self.counts.items())
        if counts:
            lines.append(f"counts      {counts}")
        if self.classes:
            worst = min(self.classes, key=lambda c: c.log10_p)
            lines.append(f"classes     {len(self.classes)}; strongest class {worst.index} (log10 p {worst.log10_p:.2f})")
        marking = self.details.get("marking")
        if marking:
            lines.append(f"marking     {marking['summary']}")
            if marking.get("warning"):
                lines.append(f"WARNING     {marking['warning']}")
        if self.null_trials:
            nt = self.null_trials
            lines.append(
                f"null trials {nt['trials']} random keys: the real key ranks {nt['rank']} (empirical p {nt['empirical_p']:.3g})"
            )
        alone = self.details.get("reference_alone")
        if alone:
            lines.append(f"reference   {alone['references']} model(s) alone vs controls: log10 p {alone['log10_p_upper']:.2f} "
                         f"(likes the true set), {alone['log10_p_lower']:.2f} (dislikes it)"
                         + (f"; EXTREME: {alone['note']}" if alone["extreme"] else ""))
        if self.details.get("references_hint"):
            lines.append(f"hint        {self.details['references_hint']}")
        lines.append(f"evidence    {evidence_words(self.log10_p)}")
        verdict = "DETECTED" if self.detected else "not detected"
        lines.append(f"decision    {verdict} at alpha = {self.alpha:g}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "test": self.test,
            "log10_p": self.log10_p,
            "p": self.p,
            "z": self.z,
            "alpha": self.alpha,
            "detected": self.detected,
            "decision": self.decision,
            "evidence": self.evidence,
            "key_fingerprint": self.key_fingerprint,
            "model_sha256": self.model_sha256,
            "counts": dict(self.counts),
            "alignment": self.alignment,
            "details": self.details,
            "classes": [c.to_dict() for c in self.classes],
            "null_trials": self.null_trials,
        }

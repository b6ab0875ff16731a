"""The tests a plan covers, their budgets, and the names recorded runs give them.

A planner test name says what the test computes: ``whitebox`` and ``gradient`` (cosines of classifier rows, or
of the suspect's gradient responses, with the key's carriers; Fisher over classes); ``SOURCE-STATISTIC-COMBINE``
with an optional ``-did`` for the black-box tests (``SOURCE`` ``blackbox``: fresh probes, or ``published``: the
published images against control-marked twins; ``STATISTIC`` ``margin``, ``loss``, ``prob`` or ``label``;
``COMBINE`` ``rank`` or ``perm``, the two exact combinations; ``-did``: difference in differences against clean
reference models, their mean subtracted; ``-matched``: the references matched to the suspect, the default of
``radioactive detect``); ``twins-STATISTIC`` for the paired-twin secret-coin test.

A test's *family* drops the combination: ``rank`` and ``perm`` of one statistic are two null laws applied to the
same observations, so they share one measured response. The mean and the matched references subtract different
things, so they are two families.

Examples:
    >>> spec = parse_test("blackbox-margin-perm-did")
    >>> spec.family, spec.kind, spec.combine, spec.did
    ('blackbox-margin-did', 'blackbox', 'perm', True)
    >>> parse_test("blackbox-margin-perm-matched").family
    'blackbox-margin-matched'
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from ..errors import ConfigError

__all__ = ["Budget", "DEFAULT_TESTS", "TestSpec", "floor_log10_p", "null_description", "parse_test",
           "spec_of_verdict"]

STATISTICS = ("margin", "loss", "prob", "label")
COMBINES = ("rank", "perm")

DEFAULT_TESTS = (
    "whitebox", "gradient",
    "blackbox-margin-rank-did", "blackbox-margin-perm-did", "blackbox-loss-perm-did",
    "blackbox-margin-perm", "blackbox-loss-perm",
    "published-margin-rank-did", "published-margin-perm-did", "published-loss-perm-did",
    "twins-loss", "twins-margin",
)


@dataclass(frozen=True)
class TestSpec:
    """One test: ``kind`` ``cosine`` (white-box and gradient), ``blackbox`` or ``twins``.

    Attributes:
        name: the planner's name (module docstring).
        kind: which null law and which response unit (mean cosine, standardised shift, win-rate excess).
        combine: ``fisher`` (cosines), ``rank`` / ``perm`` (black-box), ``binomial`` (twins).
        statistic: the black-box or twins statistic (empty for cosines).
        source: ``fresh`` or ``published`` probes (black-box only).
        did: difference in differences against clean reference models (black-box only).
        fit: how the references enter with ``did``: ``mean`` (subtracted) or ``matched`` (fitted to the suspect).
    """

    __test__ = False  # not a pytest class

    name: str
    kind: str
    combine: str
    statistic: str = ""
    source: str = ""
    did: bool = False
    fit: str = "mean"

    @property
    def family(self) -> str:
        """The measured response this test shares with its other combinations."""
        if self.kind != "blackbox":
            return self.name
        prefix = "published" if self.source == "published" else "blackbox"
        return f"{prefix}-{self.statistic}" + self.suffix

    @property
    def suffix(self) -> str:
        """``-did`` (the references' mean), ``-matched`` (matched to the suspect) or nothing (no references)."""
        return ("-matched" if self.fit == "matched" else "-did") if self.did else ""

    @property
    def unit(self) -> str:
        return {"cosine": "mean cosine of the classes' rows with their carriers",
                "blackbox": "mean standardised shift of the true carrier set (units of the controls' spread)",
                "twins": "win rate of the published twin minus 1/2"}[self.kind]


def parse_test(name: str) -> TestSpec:
    """The :class:`TestSpec` of a planner test name (see the module docstring)."""
    if name in ("whitebox", "gradient"):
        return TestSpec(name=name, kind="cosine", combine="fisher")
    parts = name.split("-")
    if len(parts) == 2 and parts[0] == "twins" and parts[1] in STATISTICS:
        return TestSpec(name=name, kind="twins", combine="binomial", statistic=parts[1])
    did = parts[-1] in ("did", "matched")
    core = parts[:-1] if did else parts
    if len(core) == 3 and core[0] in ("blackbox", "published") and core[1] in STATISTICS and core[2] in COMBINES:
        return TestSpec(name=name, kind="blackbox", combine=core[2], statistic=core[1],
                        source="published" if core[0] == "published" else "fresh", did=did,
                        fit="matched" if parts[-1] == "matched" else "mean")
    raise ConfigError(f"unknown test {name!r}; choose from {list(DEFAULT_TESTS)} or any "
                      f"SOURCE-STATISTIC-COMBINE[-did|-matched] with SOURCE in ['blackbox', 'published'], STATISTIC in "
                      f"{list(STATISTICS)} and COMBINE in {list(COMBINES)}")


def spec_of_verdict(verdict: dict[str, Any]) -> TestSpec | None:
    """The planner test a recorded verdict (``Verdict.to_dict()``) ran, or None for one the planner does not model
    (the ``t`` combination, which is not exact)."""
    test, details = str(verdict.get("test", "")), verdict.get("details") or {}
    if test == "whitebox":
        return parse_test("whitebox")
    if test == "whitebox-gradient":
        return parse_test("gradient")
    if test.startswith("twins-"):
        return parse_test(test)
    if test.startswith("blackbox-"):
        combine = test.split("-")[1]
        if combine not in COMBINES:
            return None
        source = "published" if details.get("probe_source") == "published" else "blackbox"
        did = bool(details.get("difference_in_differences", test.endswith(("-did", "-matched"))))
        fit = details.get("reference_fit") or ("matched" if test.endswith("-matched") else "mean")
        if did and fit not in ("mean", "matched"):
            return None  # matched with weights per class: not modelled
        return parse_test(f"{source}-{details.get('statistic', 'margin')}-{combine}"
                          + (("-matched" if fit == "matched" else "-did") if did else ""))
    return None


@dataclass(frozen=True, kw_only=True)
class Budget:
    """What the auditor spends, and the setting. ``None`` means "as in the measured runs".

    Attributes:
        classes: number of classes C (one carrier each).
        dim: the marker's feature dimension d.
        space: ``full`` carriers (null in dimension d) or ``neutral`` (d - C).
        reference_images: clean reference images of the white-box alignment.
        probes_per_class: fresh probes per class (black-box).
        published_per_class: published probes per class (``published-*`` tests).
        controls: K control carrier sets (black-box).
        pairs: N twin pairs (twins test).
    """

    classes: int
    dim: int
    space: str = "full"
    reference_images: int | None = None
    probes_per_class: int | None = None
    published_per_class: int | None = None
    controls: int | None = None
    pairs: int | None = None

    def __post_init__(self) -> None:
        if self.classes < 1:
            raise ConfigError(f"--classes must be at least 1, got {self.classes}")
        if self.space not in ("full", "neutral"):
            raise ConfigError(f"--space must be 'full' or 'neutral', got {self.space!r}")
        if self.null_dim < 2:
            raise ConfigError(f"the carriers' null needs dimension >= 2; got --dim {self.dim} with {self.space} "
                              f"carriers and {self.classes} classes (null dimension {self.null_dim})")
        for name in ("reference_images", "probes_per_class", "published_per_class", "controls", "pairs"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {value}")

    @property
    def null_dim(self) -> int:
        return self.dim - self.classes if self.space == "neutral" else self.dim

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "null_dim": self.null_dim}


def null_description(spec: TestSpec, budget: Budget) -> str:
    """The exact law of the test's p-value under H0, in words."""
    c = budget.classes
    if spec.kind == "cosine":
        return (f"per class, the cosine is one coordinate of a uniform unit vector in dimension {budget.null_dim} "
                f"((c + 1)/2 ~ Beta({(budget.null_dim - 1) / 2:g}, {(budget.null_dim - 1) / 2:g})); Fisher over "
                f"{c} independent classes (chi2 with {2 * c} dof); continuous: p is uniform")
    if spec.kind == "twins":
        return f"wins ~ Binomial({budget.pairs}, 1/2) exactly (secret fair coins); discrete, conservative"
    k = budget.controls
    if spec.combine == "rank":
        return (f"per class, the true set's rank among {k} + 1 exchangeable carrier sets is uniform; Fisher over "
                f"{c} classes (discrete, conservative)")
    return (f"exact stratified permutation of the sum of {c} classes' standardised values over {k} + 1 "
            f"exchangeable carrier sets ({(k + 1)}^{c} equally likely relabellings)")


def floor_log10_p(spec: TestSpec, budget: Budget) -> float:
    """The smallest log10 p the test can return with this budget (-inf for the continuous cosine null)."""
    from .. import stats

    if spec.kind == "cosine":
        return -math.inf
    if spec.kind == "twins":
        return -budget.pairs * math.log10(2.0)
    per_class = -math.log(budget.controls + 1.0)
    if spec.combine == "rank":
        return stats.fisher_log_sf([per_class] * budget.classes) / stats.LOG10
    return budget.classes * per_class / stats.LOG10

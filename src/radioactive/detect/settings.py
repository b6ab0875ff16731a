"""Settings of the two detection fronts: small frozen objects, validated when made, with ``to_dict()``.

``whitebox(model, key, reference, *, marker, settings=WhiteboxSettings(...))`` and
``blackbox(predict, key, probes, *, marker, settings=BlackboxSettings(...))`` take every option through
these objects, so an option is checked once, before any image is marked or any model is queried. The named
choices (alignments, statistics, combinations, output kinds) are listed here, for the API and the CLI alike.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import ConfigError
from ..mark import MarkConfig
from .matched import REFERENCE_FITS
from .verdict import DEFAULT_ALPHA

__all__ = ["WhiteboxSettings", "BlackboxSettings", "ALIGNMENTS", "STATISTICS", "COMBINATIONS", "OUTPUTS",
           "PROBE_MODES", "REFERENCE_FITS"]

ALIGNMENTS = ("auto", "lstsq", "identity")
STATISTICS = ("margin", "prob", "loss", "label")
COMBINATIONS = ("rank", "t", "perm")
OUTPUTS = ("auto", "logits", "probs", "labels")
PROBE_MODES = ("same", "cross")


def check_choice(what: str, value: str, choices: Sequence[str]) -> None:
    """ConfigError naming the valid choices unless ``value`` is one of them."""
    if value not in choices:
        raise ConfigError(f"unknown {what} {value!r}; choose from {list(choices)}")


def _class_pairs(class_map: Any) -> tuple[tuple[int, int], ...] | None:
    """``{key class: output}`` or ``[(key class, output), ...]`` as a tuple of int pairs (order kept)."""
    if class_map is None:
        return None
    items = class_map.items() if isinstance(class_map, Mapping) else class_map
    try:
        pairs = tuple((int(k), int(o)) for k, o in items)
    except (TypeError, ValueError):
        raise ConfigError(
            f"class_map must map key classes to suspect outputs, e.g. {{0: 0, 2: 1}} or [(0, 0), (2, 1)]; got "
            f"{class_map!r}"
        ) from None
    if not pairs:
        raise ConfigError("class_map is empty; map at least one key class to a suspect output, or pass None")
    return pairs


def _whole(settings: Any, name: str, low: int | None = None) -> None:
    """Check that ``settings.name`` is a whole number (>= ``low``) and store it as a plain int."""
    value = getattr(settings, name)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or (low is not None and value < low):
        bound = f" >= {low}" if low is not None else ""
        raise ConfigError(f"{name} must be an integer{bound}, got {value!r}")
    object.__setattr__(settings, name, int(value))


@dataclass(frozen=True, kw_only=True)
class _Shared:
    """Options both tests take (see the subclasses)."""

    class_map: Mapping[int, int] | Sequence[tuple[int, int]] | None = None
    alpha: float = DEFAULT_ALPHA
    batch_size: int = 256
    null_trials: int = 0
    null_seed: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "class_map", _class_pairs(self.class_map))
        if not (isinstance(self.alpha, int | float) and 0 < self.alpha < 1):
            raise ConfigError(f"alpha must be in (0, 1), got {self.alpha!r}")
        _whole(self, "batch_size", 1)
        _whole(self, "null_trials", 0)
        if self.null_seed is not None:
            _whole(self, "null_seed")

    def _shared_dict(self) -> dict[str, Any]:
        return {
            "class_map": [list(pair) for pair in self.class_map] if self.class_map is not None else None,
            "alpha": self.alpha,
            "batch_size": self.batch_size,
            "null_trials": self.null_trials,
            "null_seed": self.null_seed,
        }


@dataclass(frozen=True, kw_only=True)
class WhiteboxSettings(_Shared):
    """Options of :func:`radioactive.detect.whitebox`.

    Attributes:
        head: dotted name of the suspect's final linear layer (found automatically otherwise).
        batch_size: images per forward pass.
        alignment: ``auto`` (identity when the suspect shares the marker's feature space, least squares
            otherwise), ``lstsq`` or ``identity``.
        class_map: ``{key class: suspect output}`` to test a subset of classes (when the suspect's number of
            outputs differs from the key's); kept as a tuple of pairs.
        alpha: significance level of the decision (default 1e-3: "strong" evidence, see
            :data:`radioactive.detect.verdict.EVIDENCE_LEVELS`).
        allow_marked: proceed with a warning when the reference images are marked (otherwise refused).
        input_size: resize images to this ``(H, W)`` (or ``n``: ``(n, n)``) for the suspect (default: as given).
        transform: applied to image batches before the suspect (e.g. its own normalisation).
        null_trials: also score this many fresh random keys against the same suspect (cheap: only the
            carriers change) and report where the real key's p-value falls among them.
        null_seed: seed of the random keys (default: from the OS, recorded in the result).

    Examples:
        >>> WhiteboxSettings(alignment="lstsq", null_trials=100, null_seed=0).to_dict()["alignment"]
        'lstsq'
    """

    head: str | None = None
    alignment: str = "auto"
    allow_marked: bool = False
    input_size: tuple[int, int] | None = None
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("alignment", self.alignment, ALIGNMENTS)
        if self.input_size is not None:
            size = (self.input_size, self.input_size) if isinstance(self.input_size, int) else tuple(self.input_size)
            if len(size) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size):
                raise ConfigError(f"input_size must be a positive int or a (height, width) pair, got {self.input_size!r}")
            object.__setattr__(self, "input_size", size)
        if self.transform is not None and not callable(self.transform):
            raise ConfigError(f"transform must be callable (image batch -> image batch), got {self.transform!r}")

    def to_dict(self) -> dict[str, Any]:
        transform = None
        if self.transform is not None:
            # A name for the record: a function's name, or a module's class name (e.g. its normalisation).
            transform = getattr(self.transform, "__name__", None) or type(self.transform).__name__
        return {
            "head": self.head,
            "alignment": self.alignment,
            "allow_marked": self.allow_marked,
            "input_size": list(self.input_size) if self.input_size is not None else None,
            "transform": transform,
            **self._shared_dict(),
        }


@dataclass(frozen=True, kw_only=True)
class BlackboxSettings(_Shared):
    """Options of :func:`radioactive.detect.blackbox`.

    Attributes:
        num_controls: K, the number of control carrier sets (the rank test's resolution is 1 / (K + 1)).
        statistic: ``margin`` (true-class log-probability minus the best other), ``prob``, ``loss`` (minus
            the cross-entropy) or ``label`` (accuracy of predicted labels).
        combine: ``perm`` (default: exact stratified permutation test of the summed standardised values, the
            strongest exact combination measured), ``rank`` (exact rank p-value per class, Fisher across
            classes) or ``t`` (control t statistics, Stouffer; needs K >= 3); see
            :func:`radioactive.detect.combine.verdict_from_observations`.
        reference_fit: how reference models enter (difference in differences): ``matched`` (default: subtract
            the suspect's leave-one-out prediction from every reference, weights shared by the classes; exact, see
            :mod:`radioactive.detect.matched`), ``matched-class`` (weights per class) or ``mean`` (subtract the
            references' mean response, the default before the transfer work: on third-party suspects the open
            suite's median log10 p at 10 % marked was -1.68 matched against -1.23 with the mean of the same
            five-model bank, benchmarks/results/transfer_levers/power.json). Without references it changes nothing.
        mark: the :class:`radioactive.MarkConfig` the probes are marked with (for published probes: the
            settings the published images were marked with, as recorded in their ``mark.json``).
        seed: marking seed, the same for every version (for published probes: the seed they were marked with).
        mark_origin: where ``mark`` and ``seed`` come from, recorded in the verdict (e.g. the path of the
            marking run's ``mark.json``, or ``"command line"``). None with the default ``MarkConfig()``: fresh
            probes are then marked with the library defaults, and the verdict warns that these may differ from
            how the data was marked.
        class_map: ``{key class: suspect output}`` for a suspect with other outputs.
        output: what the suspect returns: ``auto``, ``logits``, ``probs`` or ``labels``.
        alpha: significance level of the decision (default 1e-3: "strong" evidence, see
            :data:`radioactive.detect.verdict.EVIDENCE_LEVELS`).
        batch_size: images per query of the suspect.
        cache_dir: where marked control sets are cached (owner-only); None: no cache.
        model_id: identifier of the suspect recorded in the verdict (e.g. its URL or file hash).
        null_trials: rerun the same test with this many fresh random keys against the same model (each costs
            K + 1 markings of the probes; fresh probes only) and report where the real key's p-value falls.
        null_seed: seed of the random keys (default: from the OS, recorded in the result).
        probe_mode: ``same`` (each probe marked along its own class's carrier) or ``cross`` (fresh probes marked
            along another class's carrier and read in that class's score; exact too, see
            :func:`radioactive.detect.observations.collect`).
        data_mark: the settings the *data* was marked with, when the probes are deliberately marked otherwise
            (``mark``: e.g. a lower PSNR floor or more steps, for stronger probes); recorded in the verdict's
            ``details.marking``. The test stays exact (every version is marked with ``mark``); only its power
            changes. Fresh probes only.
    """

    num_controls: int = 9
    statistic: str = "margin"
    combine: str = "perm"
    reference_fit: str = "matched"
    mark: MarkConfig = field(default_factory=MarkConfig)
    seed: int = 0
    mark_origin: str | None = None
    output: str = "auto"
    cache_dir: str | os.PathLike | None = None
    model_id: str | None = None
    probe_mode: str = "same"
    data_mark: MarkConfig | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _whole(self, "num_controls", 1)
        check_choice("probe mode", self.probe_mode, PROBE_MODES)
        if isinstance(self.data_mark, Mapping):
            object.__setattr__(self, "data_mark", MarkConfig.from_dict(dict(self.data_mark)))
        elif self.data_mark is not None and not isinstance(self.data_mark, MarkConfig):
            raise ConfigError(f"data_mark must be a MarkConfig (how the data was marked) or None, got "
                              f"{type(self.data_mark).__name__}")
        check_choice("statistic", self.statistic, STATISTICS)
        check_choice("combination", self.combine, COMBINATIONS)
        check_choice("reference fit", self.reference_fit, REFERENCE_FITS)
        check_choice("output kind", self.output, OUTPUTS)
        if self.combine == "t" and self.num_controls < 3:
            raise ConfigError(f"the t combination needs at least 3 control sets, got num_controls={self.num_controls}; "
                              "use 3 or more (--controls) or another combination (--combine rank or perm)")
        if self.statistic != "label" and self.output == "labels":
            raise ConfigError(f"the model returns labels only; the statistic must be 'label', not {self.statistic!r}")
        if self.mark is None:
            object.__setattr__(self, "mark", MarkConfig())
        elif isinstance(self.mark, Mapping):
            object.__setattr__(self, "mark", MarkConfig.from_dict(dict(self.mark)))
        elif not isinstance(self.mark, MarkConfig):
            raise ConfigError(f"mark must be a MarkConfig (the marking settings), got {type(self.mark).__name__}")
        _whole(self, "seed")
        if self.cache_dir is not None and not isinstance(self.cache_dir, str | os.PathLike):
            raise ConfigError(f"cache_dir must be a folder path or None, got {self.cache_dir!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "num_controls": self.num_controls,
            "statistic": self.statistic,
            "combine": self.combine,
            "mark": self.mark.to_dict(),
            "seed": self.seed,
            "mark_origin": self.mark_origin,
            "output": self.output,
            "cache_dir": os.fspath(self.cache_dir) if self.cache_dir is not None else None,
            "model_id": self.model_id,
            **self._shared_dict(),
            # Added later: left out at their defaults so earlier records read the same.
            **({"probe_mode": self.probe_mode} if self.probe_mode != "same" else {}),
            "reference_fit": self.reference_fit,
            **({"data_mark": self.data_mark.to_dict()} if self.data_mark is not None else {}),
        }

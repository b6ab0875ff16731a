"""An experiment's configuration: the grid (fractions x training settings x seeds) and its shared settings.

Frozen dataclasses validated when made; files (TOML, YAML) only at the edge (:func:`load_config`). The
``to_dict()`` of each is what run ids hash (:mod:`radioactive.experiment.run`): a field added, renamed or
given another default changes every run id and orphans committed records (``tests/experiment/test_grid_ids.py``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from ..detect.matched import REFERENCE_FITS
from ..detect.settings import COMBINATIONS, STATISTICS
from ..detect.verdict import DEFAULT_ALPHA
from ..errors import ConfigError
from ..mark import MarkConfig
from ..train import MODES, TrainRecipe
from ..twins import DEFAULT_SPREAD

try:
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = [
    "TESTS",
    "ModelSetting",
    "DetectSettings",
    "TwinSettings",
    "ExperimentConfig",
    "load_config",
    "read_settings",
    "config_from_dict",
    "replace_config",
]

TESTS = ("whitebox", "gradient", "blackbox", "published")


@dataclass(frozen=True)
class ModelSetting:
    """How the simulated trainer trains: ``mode`` and ``arch``; ``init`` is the network that ``finetune``,
    ``linear_probe`` and ``distill`` (teacher) start from: ``marker`` or a checkpoint path."""

    mode: str = "scratch"
    arch: str = "cnn"
    init: str = ""
    name: str = ""
    recipe: dict[str, Any] = field(default_factory=dict)
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"unknown training mode {self.mode!r}; choose from {list(MODES)}")
        if self.mode in ("finetune", "linear_probe", "distill") and not self.init:
            object.__setattr__(self, "init", "marker")
        if not self.name:
            label = f"{self.mode}-{self.arch}" if self.mode in ("scratch", "distill") else f"{self.mode}-{self.init}"
            object.__setattr__(self, "name", label)
        TrainRecipe.from_dict({**self.recipe, "mode": self.mode})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DetectSettings:
    """Which tests run and how. ``reference_images`` (white-box) and ``probes`` (black-box, fresh clean
    images) come from the held-out split, disjoint. ``reference_model``: train a clean model (``reference_arch``)
    for the black-box difference in differences; ``reference_models`` = N > 1 trains N of them, each with its
    own seed (:func:`radioactive.experiment.derive_seed` ``("reference_models", i)``; the first is the single
    reference's), of the architectures ``reference_archs`` taken in turn (default: all ``reference_arch``), and
    subtracts their mean response. ``alpha`` is the decision level (default 1e-3, "strong" evidence); the grid
    reports p-values, so it only changes the counts of detected seeds.

    ``tests``: ``whitebox`` (the paper's test: least-squares alignment, cosine of each row with its carrier),
    ``gradient`` (:func:`radioactive.detect.gradient.gradient_whitebox` on the reference images, exact) and
    ``blackbox`` (``statistic`` and ``combine``). ``blackbox_variants`` (``"loss:perm"``, ...) are more
    black-box tests computed from the same observations, recorded as ``blackbox-<statistic>-<combine>``: they
    cost no extra marking or queries. ``reference_fit`` is how the reference models enter the main test
    (``mean``: their mean is subtracted; ``matched`` / ``matched-class``: the suspect's leave-one-out prediction
    from them, :mod:`radioactive.detect.matched`); a variant ``"margin:perm:matched"`` names its own fit and is
    recorded as ``blackbox-margin-perm-matched``. ``gradient_reference_images`` > 0 runs the gradient test on the first
    that many reference images only (it costs one suspect backward and one marker JVP per image and class). ``whitebox_null_trials``
    > 0 also scores that many random keys against the suspect (the white-box test's empirical null; cheap).

    ``published``: the black-box test on *published* probes — up to ``published_probes`` images per class of the
    smallest non-zero fraction's marked subset (published in every marked run, since subsets are nested), as
    published, against K control-marked twins of their originals made with the same augmentation streams;
    the same statistic and variants as ``blackbox``, recorded as ``published`` and ``published-<stat>-<combine>``.
    On a 0 % run the same images were seen clean, never marked: the test is then a calibration check."""

    tests: tuple[str, ...] = ("whitebox", "blackbox")
    reference_images: int = 1000
    probes: int = 500
    num_controls: int = 9
    statistic: str = "margin"
    combine: str = "rank"
    blackbox_variants: tuple[str, ...] = ()
    gradient_images: str = "all"
    gradient_reference_images: int = 0
    whitebox_null_trials: int = 0
    published_probes: int = 50
    reference_model: bool = True
    reference_arch: str = "cnn"
    alpha: float = DEFAULT_ALPHA
    reference_models: int = 1
    reference_archs: tuple[str, ...] = ()
    reference_fit: str = "mean"

    def __post_init__(self) -> None:
        object.__setattr__(self, "tests", tuple(self.tests))
        bad = [t for t in self.tests if t not in TESTS]
        if bad:
            raise ConfigError(f"unknown tests {bad}; choose from {list(TESTS)}")
        if self.reference_images < 1 or self.probes < 1 or self.num_controls < 1:
            raise ConfigError(f"reference_images, probes and num_controls must be >= 1, got {self.reference_images}, "
                              f"{self.probes} and {self.num_controls}")
        if not 0 < self.alpha < 1:
            raise ConfigError(f"alpha must be in (0, 1), got {self.alpha}")
        object.__setattr__(self, "blackbox_variants", tuple(self.blackbox_variants))
        for variant in ((f"{self.statistic}:{self.combine}:{self.reference_fit}",) + self.blackbox_variants):
            statistic, combine, fit = _variant(variant, self.reference_fit)
            if statistic not in STATISTICS or combine not in COMBINATIONS or fit not in REFERENCE_FITS:
                raise ConfigError(f"black-box variant {variant!r} must be 'statistic:combine' or "
                                  f"'statistic:combine:fit' with statistic in {list(STATISTICS)}, combine in "
                                  f"{list(COMBINATIONS)} and fit in {list(REFERENCE_FITS)}")
        if self.gradient_images not in ("own", "all"):
            raise ConfigError(f"gradient_images must be 'own' or 'all', got {self.gradient_images!r}")
        object.__setattr__(self, "reference_archs", tuple(self.reference_archs))
        trials = self.whitebox_null_trials
        if isinstance(trials, bool) or not isinstance(trials, int) or trials < 0:
            raise ConfigError(f"whitebox_null_trials must be an integer >= 0, got {trials!r}")
        count = self.reference_models
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ConfigError(f"reference_models must be an integer >= 1, got {count!r}")
        if len(self.reference_archs) > count:
            raise ConfigError(f"{len(self.reference_archs)} reference_archs for reference_models = {count}; raise "
                              "reference_models or list fewer architectures (they are taken in turn)")
        if not self.reference_model and (count != 1 or self.reference_archs):
            raise ConfigError("reference_models and reference_archs need reference_model = true")

    def variant_names(self, prefix: str = "blackbox") -> list[tuple[str, str, str, str]]:
        """(record name, statistic, combine, reference fit) of every black-box test: the main one first. A
        variant without a fit takes the main test's."""
        out = [(prefix, self.statistic, self.combine, self.reference_fit)]
        for variant in self.blackbox_variants:
            statistic, combine, fit = _variant(variant, self.reference_fit)
            named = variant.count(":") == 2
            out.append((f"{prefix}-{statistic}-{combine}" + (f"-{fit}" if named else ""), statistic, combine, fit))
        return out

    def reference_arch_list(self) -> list[str]:
        """The architecture of each reference model, in order (empty without ``reference_model``)."""
        if not self.reference_model:
            return []
        archs = self.reference_archs or (self.reference_arch,)
        return [archs[i % len(archs)] for i in range(self.reference_models)]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["tests"] = list(self.tests)
        out["blackbox_variants"] = list(self.blackbox_variants)
        # Left out at their defaults: the run ids of configurations written before they existed stay the same.
        if self.reference_models == 1:
            out.pop("reference_models")
        if self.whitebox_null_trials == 0:
            out.pop("whitebox_null_trials")
        if self.reference_archs:
            out["reference_archs"] = list(self.reference_archs)
        else:
            out.pop("reference_archs")
        if self.reference_fit == "mean":
            out.pop("reference_fit")
        return out


def _variant(text: str, default_fit: str) -> tuple[str, str, str]:
    """``"statistic:combine[:fit]"`` -> (statistic, combine, fit)."""
    parts = text.split(":")
    if len(parts) > 3:
        return parts[0], parts[1], ""  # refused by the caller, naming the variant
    return parts[0], parts[1] if len(parts) > 1 else "", parts[2] if len(parts) > 2 else default_fit


@dataclass(frozen=True)
class TwinSettings:
    """The paired-twin secret-coin test in a grid (:mod:`radioactive.twins`, :mod:`radioactive.detect.twins`).

    ``enabled``: every image of the largest fraction's marked subset is marked as two twins (spread
    ``spread``) and the twin its secret coin names is published (the secret's seed is
    :func:`radioactive.experiment.derive_seed` ``("twins", seed)``); each run then tests whether the suspect
    prefers the published twins of its marked subset (of the smallest non-zero fraction's on a 0 % run: a
    calibration check) over their siblings, with each of ``statistics`` averaged over ``views`` fixed views
    (0: the test's default), recorded as ``twins-<statistic>`` with the win rate. The images the
    ``published`` test probes with stay marked plainly (control twins cannot share the secret directions and
    streams, :mod:`radioactive.detect.published`), so they are not among the pairs."""

    enabled: bool = False
    statistics: tuple[str, ...] = ("loss", "margin")
    spread: float = DEFAULT_SPREAD
    views: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise ConfigError(f"twins.enabled must be true or false, got {self.enabled!r}")
        object.__setattr__(self, "statistics", tuple(self.statistics))
        bad = [s for s in self.statistics if s not in STATISTICS]
        if bad or not self.statistics:
            raise ConfigError(f"twins.statistics must name at least one of {list(STATISTICS)}, got "
                              f"{list(self.statistics)}")
        if isinstance(self.spread, bool) or not isinstance(self.spread, int | float) or not 0 < self.spread <= 4:
            raise ConfigError(f"twins.spread must be in (0, 4], got {self.spread!r}")
        if isinstance(self.views, bool) or not isinstance(self.views, int) or not 0 <= self.views <= 16:
            raise ConfigError(f"twins.views must be an integer in [0, 16] (0: the test's default), got {self.views!r}")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["statistics"] = list(self.statistics)
        return out


@dataclass(frozen=True)
class ExperimentConfig:
    """A grid: ``fractions`` x ``models`` x ``seeds`` with shared marking, training and detection settings.

    ``dataset`` is ``fashion-mnist`` (its ``owner`` split is published, its ``holdout`` split gives the
    references and probes), ``fashion-mnist-pairs`` or ``fashion-mnist-pairs10`` (the same splits, 28 x 56
    composites: :mod:`radioactive.fmnist_pairs`; they need a marker trained on them) or a class-subfolder
    folder (then ``test`` names the test folder and ``holdout`` clean images are kept aside, never published,
    for references and probes). ``marker`` is ``default`` (the
    Fashion-MNIST marker shipped with the package) or a checkpoint; ``marker_arch`` builds a torchvision
    marker (``torchvision:resnet18``) with weights from ``marker``. ``train_images`` > 0 keeps only that many
    training images (quick runs and tests).
    """

    name: str = "experiment"
    dataset: str = "fashion-mnist"
    test: str = ""
    holdout: int = 5000
    image_size: int = 0
    train_images: int = 0
    marker: str = "default"
    marker_arch: str = ""
    key_space: str = "full"
    fractions: tuple[float, ...] = (0.0, 0.1)
    seeds: tuple[int, ...] = (0,)
    models: tuple[ModelSetting, ...] = (ModelSetting(),)
    mark: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    detect: DetectSettings = DetectSettings()
    device: str = "cpu"
    twins: TwinSettings = TwinSettings()

    def __post_init__(self) -> None:
        object.__setattr__(self, "fractions", tuple(float(f) for f in self.fractions))
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        object.__setattr__(self, "models", tuple(
            m if isinstance(m, ModelSetting) else ModelSetting(**m) for m in self.models))
        if isinstance(self.detect, dict):
            object.__setattr__(self, "detect", DetectSettings(**self.detect))
        if isinstance(self.twins, dict):
            try:
                object.__setattr__(self, "twins", TwinSettings(**self.twins))
            except TypeError as exc:
                raise ConfigError(f"invalid [twins] setting ({exc}); valid: {sorted(TwinSettings.__dataclass_fields__)}"
                                  ) from exc
        bad = [f for f in self.fractions if not 0 <= f <= 1]
        if bad:
            raise ConfigError(f"fractions must lie in [0, 1] (0.05 for 5 %), got {bad}")
        if not self.fractions or not self.seeds or not self.models:
            raise ConfigError("an experiment needs at least one fraction, one seed and one model setting")
        if self.twins.enabled and not any(f > 0 for f in self.fractions):
            raise ConfigError("[twins] needs a non-zero fraction in the grid (its twins are made for the marked images)")
        if self.key_space not in ("full", "neutral"):
            raise ConfigError(f"unknown key_space {self.key_space!r}; choose from ['full', 'neutral']")
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ConfigError(f"model settings need distinct names, got {names}")
        self.mark_config()
        TrainRecipe.from_dict(dict(self.train))

    def mark_config(self) -> MarkConfig:
        """The marking settings (``mark``) as a validated :class:`radioactive.MarkConfig`."""
        return MarkConfig.from_dict(dict(self.mark))

    def recipe(self, model: ModelSetting) -> TrainRecipe:
        """The training recipe of ``model``: the shared ``train`` settings, then the model's own."""
        return TrainRecipe.from_dict({**self.train, **model.recipe, "mode": model.mode})

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["fractions"] = list(self.fractions)
        out["seeds"] = list(self.seeds)
        out["models"] = [m.to_dict() for m in self.models]
        out["detect"] = self.detect.to_dict()
        # Left out when disabled: the run ids of configurations written before twins existed stay the same.
        if self.twins.enabled:
            out["twins"] = self.twins.to_dict()
        else:
            out.pop("twins")
        return out


_TOP_LEVEL = set(ExperimentConfig.__dataclass_fields__) | {"modes", "archs"}


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> ExperimentConfig:
    """Read an experiment from TOML (``.toml``) or YAML (``.yaml``/``.yml``); ``overrides`` replace top-level
    settings (the command line's ``--device``).

    ``models`` is a list of tables (``mode``, ``arch``, ``init``, ``name``, ``recipe``); instead, ``modes`` and
    ``archs`` lists give their cartesian product.

    Raises:
        ConfigError: a missing or unparsable file, another suffix, or an invalid setting.
    """
    return config_from_dict({**read_settings(path), **(overrides or {})})


def read_settings(path: str | Path) -> dict[str, Any]:
    """The table of settings in a TOML or YAML experiment file, unvalidated (``load_config`` validates it; the
    robustness table's file adds its own tables, :mod:`radioactive.experiment.robustness`).

    Raises:
        ConfigError: a missing or unparsable file, another suffix, or something other than a table.
    """
    path = Path(path)
    if not path.is_file():
        problem = "does not exist (that path is a folder)" if path.is_dir() else "does not exist"
        raise ConfigError(f"experiment file {str(path)!r} {problem}; give the path of a .toml or .yaml file "
                          "(examples in configs/)")
    if path.suffix not in (".toml", ".yaml", ".yml"):
        raise ConfigError(f"experiment file must be .toml, .yaml or .yml, got {str(path)!r}")
    try:
        text = path.read_text()
        data = tomllib.loads(text) if path.suffix == ".toml" else (yaml.safe_load(text) or {})
    except (UnicodeDecodeError, tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot parse {str(path)!r}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{str(path)!r} must hold a table of settings, got {type(data).__name__}")
    return data


def config_from_dict(data: dict[str, Any]) -> ExperimentConfig:
    """An :class:`ExperimentConfig` from a dict as :func:`load_config` reads it (``modes``/``archs`` allowed).

    Raises:
        ConfigError: unknown or invalid settings, naming the valid ones.
    """
    unknown = set(data) - _TOP_LEVEL
    if unknown:
        raise ConfigError(f"unknown experiment settings {sorted(unknown)}; valid: {sorted(_TOP_LEVEL)}")
    data = dict(data)
    modes, archs = data.pop("modes", None), data.pop("archs", None)
    if modes or archs:
        if "models" in data:
            raise ConfigError("give either 'models' or 'modes'/'archs', not both")
        data["models"] = [{"mode": m, "arch": a} for m in (modes or ["scratch"]) for a in (archs or ["cnn"])]
    try:
        if "models" in data:
            data["models"] = [m if isinstance(m, ModelSetting) else ModelSetting(**m) for m in data["models"]]
        if isinstance(data.get("detect"), dict):
            data["detect"] = DetectSettings(**data["detect"])
        return ExperimentConfig(**data)
    except TypeError as exc:
        raise ConfigError(f"invalid experiment setting: {exc}") from exc


def replace_config(config: ExperimentConfig, **changes: Any) -> ExperimentConfig:
    """``dataclasses.replace`` for experiment configs (re-validated)."""
    return replace(config, **changes)

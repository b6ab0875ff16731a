"""Experiments: a grid of fraction marked x training setting (mode, architecture) x seed, as a loop over the
public API (``mark`` -> ``fit`` -> ``whitebox`` / ``blackbox``).

Every run is named by the hash of its resolved configuration and writes one JSON record; a rerun skips the
records already written, so an interrupted grid resumes. Expensive shared pieces are cached by hash too: the
marked images of a seed (marked once for the largest fraction; smaller fractions use nested subsets), the
auditor's clean reference model, and the black-box control markings of the probes.

Seeds vary everything random in a run: the key (carriers are the unit of randomness of the tests), the
marked subset, the marking and the training.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from ._io import atomic_write, atomic_write_json, versions
from .errors import ConfigError
from .train import MODES, TrainRecipe, dataset_fingerprint, evaluate, fit, make_spec

__all__ = [
    "ModelSetting",
    "DetectSettings",
    "ExperimentConfig",
    "RunSpec",
    "load_config",
    "expand_grid",
    "run_experiment",
    "run_one",
    "aggregate",
    "Context",
]

log = logging.getLogger(__name__)
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
    for the black-box difference in differences.

    ``tests``: ``whitebox`` (the paper's test: least-squares alignment, cosine of each row with its carrier),
    ``gradient`` (:func:`radioactive.detect.gradient.gradient_whitebox` on the reference images, exact) and
    ``blackbox`` (``statistic`` and ``combine``). ``blackbox_variants`` (``"loss:perm"``, ...) are more
    black-box tests computed from the same observations, recorded as ``blackbox-<statistic>-<combine>``: they
    cost no extra marking or queries. ``gradient_reference_images`` > 0 runs the gradient test on the first
    that many reference images only (it costs one suspect backward and one marker JVP per image and class).

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
    published_probes: int = 50
    reference_model: bool = True
    reference_arch: str = "cnn"
    alpha: float = 0.05

    def __post_init__(self) -> None:
        object.__setattr__(self, "tests", tuple(self.tests))
        bad = [t for t in self.tests if t not in TESTS]
        if bad:
            raise ConfigError(f"unknown tests {bad}; choose from {list(TESTS)}")
        if self.reference_images < 1 or self.probes < 1 or self.num_controls < 1:
            raise ConfigError("reference_images, probes and num_controls must be >= 1")
        if not 0 < self.alpha < 1:
            raise ConfigError(f"alpha must be in (0, 1), got {self.alpha}")
        from .detect.black_box import COMBINATIONS, STATISTICS

        object.__setattr__(self, "blackbox_variants", tuple(self.blackbox_variants))
        for variant in ((f"{self.statistic}:{self.combine}",) + self.blackbox_variants):
            statistic, _, combine = variant.partition(":")
            if statistic not in STATISTICS or combine not in COMBINATIONS:
                raise ConfigError(f"black-box variant {variant!r} must be 'statistic:combine' with statistic in "
                                  f"{list(STATISTICS)} and combine in {list(COMBINATIONS)}")
        if self.gradient_images not in ("own", "all"):
            raise ConfigError(f"gradient_images must be 'own' or 'all', got {self.gradient_images!r}")

    def variant_names(self, prefix: str = "blackbox") -> list[tuple[str, str, str]]:
        """(record name, statistic, combine) of every black-box test: the main one first."""
        out = [(prefix, self.statistic, self.combine)]
        out += [(f"{prefix}-{v.partition(':')[0]}-{v.partition(':')[2]}", v.partition(":")[0], v.partition(":")[2])
                for v in self.blackbox_variants]
        return out

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["tests"] = list(self.tests)
        out["blackbox_variants"] = list(self.blackbox_variants)
        return out


@dataclass(frozen=True)
class ExperimentConfig:
    """A grid: ``fractions`` x ``models`` x ``seeds`` with shared marking, training and detection settings.

    ``dataset`` is ``fashion-mnist`` or a class-subfolder folder (then ``test`` names the test folder and
    ``holdout`` clean images are kept aside, never published, for references and probes). ``marker`` is
    ``default`` (the cached Fashion-MNIST marker) or a checkpoint; ``marker_arch`` builds a torchvision or timm
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

    def __post_init__(self) -> None:
        object.__setattr__(self, "fractions", tuple(float(f) for f in self.fractions))
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        object.__setattr__(self, "models", tuple(
            m if isinstance(m, ModelSetting) else ModelSetting(**m) for m in self.models))
        if isinstance(self.detect, dict):
            object.__setattr__(self, "detect", DetectSettings(**self.detect))
        bad = [f for f in self.fractions if not 0 <= f <= 1]
        if bad:
            raise ConfigError(f"fractions must lie in [0, 1] (0.05 for 5 %), got {bad}")
        if not self.fractions or not self.seeds or not self.models:
            raise ConfigError("an experiment needs at least one fraction, one seed and one model setting")
        if self.key_space not in ("full", "neutral"):
            raise ConfigError(f"unknown key_space {self.key_space!r}; choose from ['full', 'neutral']")
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ConfigError(f"model settings need distinct names, got {names}")
        self.mark_config()
        TrainRecipe.from_dict(dict(self.train))

    def mark_config(self) -> Any:
        from .mark import MarkConfig

        return MarkConfig.from_dict(dict(self.mark))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["fractions"] = list(self.fractions)
        out["seeds"] = list(self.seeds)
        out["models"] = [m.to_dict() for m in self.models]
        out["detect"] = self.detect.to_dict()
        return out


_TOP_LEVEL = set(ExperimentConfig.__dataclass_fields__) | {"modes", "archs"}


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> ExperimentConfig:
    """Read an experiment from TOML (``.toml``) or YAML (``.yaml``/``.yml``).

    ``models`` is a list of tables (``mode``, ``arch``, ``init``, ``name``, ``recipe``); instead, ``modes`` and
    ``archs`` lists give their cartesian product.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"experiment file {str(path)!r} does not exist")
    text = path.read_text()
    try:
        if path.suffix == ".toml":
            try:
                import tomllib
            except ModuleNotFoundError:  # pragma: no cover - Python 3.10
                import tomli as tomllib
            data = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            raise ConfigError(f"experiment file must be .toml, .yaml or .yml, got {str(path)!r}")
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"cannot parse {str(path)!r}: {exc}") from exc
    data = {**data, **(overrides or {})}
    return config_from_dict(data)


def config_from_dict(data: dict[str, Any]) -> ExperimentConfig:
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


# ---------------------------------------------------------------------------------------------------------
# Runs.


def _hash(obj: Any, length: int = 12) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:length]


@dataclass(frozen=True)
class RunSpec:
    """One cell of the grid. ``run_id`` hashes everything that affects its result."""

    fraction: float
    model: ModelSetting
    seed: int
    shared: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"fraction": self.fraction, "model": self.model.to_dict(), "seed": self.seed, "shared": self.shared}

    @property
    def run_id(self) -> str:
        return _hash(self.to_dict())


def _shared(config: ExperimentConfig) -> dict[str, Any]:
    out = config.to_dict()
    for name in ("name", "fractions", "seeds", "models", "device"):
        out.pop(name)
    return out


def expand_grid(config: ExperimentConfig) -> list[RunSpec]:
    """Every run of the grid, ordered by seed, then fraction, then model setting."""
    shared = _shared(config)
    return [RunSpec(fraction, model, seed, shared)
            for seed in config.seeds for fraction in config.fractions for model in config.models]


class Context:
    """Data, marker and caches shared by the runs of one experiment folder."""

    def __init__(self, config: ExperimentConfig, out: Path, *, marker: Any = None,
                 data: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None):
        self.config = config
        self.out = Path(out)
        self.cache = self.out / "cache"
        # "auto" in a configuration file is resolved here, at the file's edge, once.
        self.device = torch.device(
            ("cuda" if torch.cuda.is_available() else "cpu") if config.device == "auto" else config.device)
        self._marker = marker
        self._data = data
        self._reference_model: torch.nn.Module | None = None

    # -- data ---------------------------------------------------------------------------------------
    @property
    def data(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        if self._data is None:
            self._data = self._load_data()
        return self._data

    def _load_data(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        config = self.config
        if config.dataset == "fashion-mnist":
            from .train import fashion_mnist_splits

            splits = fashion_mnist_splits(validation=config.holdout)
        else:
            from .cli.train import read_dataset

            size = config.image_size or None
            images, labels, _, _ = read_dataset(config.dataset, size=size)
            if not config.test:
                raise ConfigError("a folder dataset needs 'test' (a folder of test images)")
            test_images, test_labels, _, _ = read_dataset(config.test, size=size or images.shape[-1])
            order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
            held, kept = order[: config.holdout].sort().values, order[config.holdout:].sort().values
            splits = {"train": (images[kept], labels[kept]), "val": (images[held], labels[held]),
                      "test": (test_images, test_labels)}
        if config.train_images:
            images, labels = splits["train"]
            keep = torch.randperm(len(labels), generator=torch.Generator().manual_seed(1))[: config.train_images]
            splits["train"] = (images[keep.sort().values], labels[keep.sort().values])
        need = config.detect.reference_images + config.detect.probes
        if len(splits["val"][1]) < need:
            raise ConfigError(
                f"the held-out split has {len(splits['val'][1])} images but reference_images + probes = {need}"
            )
        return splits

    @property
    def num_classes(self) -> int:
        return int(self.data["train"][1].max()) + 1

    def reference_images(self) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = self.data["val"]
        count = self.config.detect.reference_images
        return images[:count], labels[:count]

    def probes(self) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = self.data["val"]
        start = self.config.detect.reference_images
        return images[start : start + self.config.detect.probes], labels[start : start + self.config.detect.probes]

    # -- marker and key -----------------------------------------------------------------------------
    @property
    def marker(self) -> Any:
        if self._marker is None:
            from .marker import Marker

            config = self.config
            if config.marker_arch:
                source, _, arch = config.marker_arch.partition(":")
                if source != "torchvision":
                    raise ConfigError(f"marker_arch must be torchvision:<name>, got {config.marker_arch!r}")
                self._marker = Marker.from_torchvision(arch, weights=config.marker or None,
                                                       input_size=config.image_size or 224)
            elif config.marker == "default":
                from .train import default_marker

                self._marker = default_marker()
            else:
                self._marker = Marker.from_checkpoint(config.marker)
            self._marker.to(self.device)
            # Same weights, faster convolutions (the weight hash is layout-independent).
            self._marker.model.to(memory_format=torch.channels_last)
        return self._marker

    def key(self, seed: int) -> Any:
        from .key import Key

        head_weight = self.marker.split.weight() if self.config.key_space == "neutral" else None
        return Key.generate(self.marker.info, seed=1_000_003 * seed + 17, space=self.config.key_space,
                            head_weight=head_weight)

    # -- marking ------------------------------------------------------------------------------------
    def marked_subset(self, seed: int, fraction: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(indices into the training split, marked uint8 images, PSNR) for ``fraction`` of every class.

        Nested across fractions: the images marked at 1 % are among those marked at 2 %, and so on. The
        largest fraction of the experiment is marked once per seed and cached.
        """
        top = max(self.config.fractions)
        indices = self._selection(seed, top)
        images, psnr = self._marked_top(seed, indices)
        wanted = self._selection(seed, fraction)
        position = {int(i): n for n, i in enumerate(indices.tolist())}
        rows = torch.tensor([position[int(i)] for i in wanted.tolist()], dtype=torch.long)
        return wanted, images[rows], psnr[rows]

    def published_probes(self, seed: int) -> Any:
        """Black-box probes made of published images: up to ``published_probes`` per class of the smallest
        non-zero fraction's marked subset, with their originals and their positions in the marking call (the
        augmentation streams the control twins must share)."""
        from .detect import Probes

        fractions = [f for f in self.config.fractions if f > 0]
        if not fractions:
            raise ConfigError("the 'published' test needs a non-zero fraction in the grid")
        top = self._selection(seed, max(fractions))
        marked, _ = self._marked_top(seed, top)
        small = self._selection(seed, min(fractions))
        position = {int(i): n for n, i in enumerate(top.tolist())}
        labels = self.data["train"][1]
        keep = torch.cat([torch.nonzero(labels[small] == k).flatten()[: self.config.detect.published_probes]
                          for k in range(self.num_classes)])
        chosen = small[keep.sort().values]
        rows = torch.tensor([position[int(i)] for i in chosen.tolist()], dtype=torch.long)
        return Probes(self.data["train"][0][chosen], labels[chosen], published=marked[rows], ids=rows.tolist())

    def _selection(self, seed: int, fraction: float) -> torch.Tensor:
        labels = self.data["train"][1]
        gen = torch.Generator().manual_seed(7_919 * seed + 3)
        chosen = []
        for cls in range(self.num_classes):
            members = (labels == cls).nonzero().flatten()
            order = members[torch.randperm(len(members), generator=gen)]
            chosen.append(order[: int(round(fraction * len(members)))])
        return torch.cat(chosen).sort().values if chosen else torch.zeros(0, dtype=torch.long)

    def _marked_top(self, seed: int, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        from safetensors.torch import load_file, save_file

        from .mark import mark

        config = self.config
        key = self.key(seed)
        ident = _hash({"key": key.fingerprint, "mark": config.mark_config().to_dict(), "indices": _hash(indices.tolist()),
                       "data": self.train_fingerprint()})
        path = self.cache / f"marked-{ident}.safetensors"
        if path.is_file():
            stored = load_file(str(path))
            return stored["images"], stored["psnr"]
        images, labels = self.data["train"]
        if len(indices) == 0:
            return images[:0].clone(), torch.zeros(0, dtype=torch.float64)
        start = time.perf_counter()
        log.info("marking %d training images (seed %d)", len(indices), seed)
        result = mark(self.marker, images[indices], labels[indices], key, config.mark_config(), seed=seed)
        marked = (result.images.detach().cpu() * 255).round().clamp(0, 255).to(torch.uint8)
        psnr = result.psnr.detach().cpu().to(torch.float64)
        self.cache.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as tmp:
            save_file({"images": marked.contiguous(), "psnr": psnr.contiguous()}, str(tmp),
                      metadata={"seconds": str(time.perf_counter() - start), "summary": json.dumps(result.to_dict())})
        return marked, psnr

    def train_fingerprint(self) -> str:
        if not hasattr(self, "_train_fp"):
            self._train_fp = dataset_fingerprint(*self.data["train"])
        return self._train_fp

    # -- models -------------------------------------------------------------------------------------
    def recipe(self, model: ModelSetting) -> TrainRecipe:
        return TrainRecipe.from_dict({**self.config.train, **model.recipe, "mode": model.mode})

    def start_point(self, model: ModelSetting) -> tuple[Any, Any]:
        """(spec or network to train, teacher or None)."""
        num_classes = self.num_classes
        if model.mode == "scratch":
            return make_spec(model.arch, num_classes, self.data["train"][0], kwargs=model.kwargs), None
        if model.init == "marker":
            network = self.marker.model
        else:
            from .nets import load_checkpoint

            network = load_checkpoint(model.init)[0].to(self.device)
        if model.mode == "distill":
            return make_spec(model.arch, num_classes, self.data["train"][0], kwargs=model.kwargs), network
        return network, None

    def init_spec(self, model: ModelSetting) -> Any:
        """The spec of the network a ``finetune``/``linear_probe`` run starts from."""
        if model.init == "marker":
            return self.marker.spec
        from .nets import load_checkpoint

        return load_checkpoint(model.init)[1]

    def reference_model(self) -> torch.nn.Module:
        """The auditor's clean model (same recipe, ``reference_arch``, its own seed), trained once and cached."""
        if self._reference_model is None:
            from .nets import load_checkpoint, save_checkpoint

            config = self.config
            recipe = TrainRecipe.from_dict({**config.train, "mode": "scratch"})
            ident = _hash({"arch": config.detect.reference_arch, "recipe": recipe.to_dict(),
                           "data": self.train_fingerprint()})
            path = self.cache / f"reference-{ident}.safetensors"
            if path.is_file():
                model = load_checkpoint(path)[0]
            else:
                log.info("training the auditor's clean reference model (%s)", config.detect.reference_arch)
                images, labels = self.data["train"]
                spec = make_spec(config.detect.reference_arch, self.num_classes, images)
                result = fit(spec, images, labels, recipe=recipe, seed=99_991, device=self.device,
                             test=self.data["test"])
                save_checkpoint(result.model, path, spec, {"kind": "reference", "metrics": {
                    k: v for k, v in result.metrics.items() if k != "history"}})
                model = result.model
            self._reference_model = model.to(self.device).eval()
        return self._reference_model


def _predict(model: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    device = next(model.parameters()).device

    @torch.no_grad()
    def predict(images: torch.Tensor) -> torch.Tensor:
        return model(images.to(device)).cpu()

    return predict


def run_one(
    spec: RunSpec, context: Context, *, keep_model: bool = False, progress: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Mark, train, detect: one run of the grid. Returns its JSON record (and the model when ``keep_model``).

    ``progress`` receives a line after each stage (marking, training, tests)."""
    say = progress or (lambda _line: None)
    config = context.config
    start = time.perf_counter()
    images, labels = context.data["train"]
    key = context.key(spec.seed)
    indices, marked, psnr = context.marked_subset(spec.seed, spec.fraction)
    published = images.clone()
    if len(indices):
        published[indices] = marked
    mark_seconds = time.perf_counter() - start
    say(f"  marked images: {len(indices)} ({mark_seconds:.0f} s)")

    start_train = time.perf_counter()
    start_point, teacher = context.start_point(spec.model)
    recipe = context.recipe(spec.model)
    result = fit(start_point, published, labels, recipe=recipe, seed=spec.seed, test=context.data["test"],
                 teacher=teacher, device=context.device, num_classes=context.num_classes)
    model = result.model
    train_seconds = time.perf_counter() - start_train
    say(f"  trained {spec.model.name}: test accuracy {result.metrics.get('test_accuracy', float('nan')):.4f} "
        f"({train_seconds:.0f} s)")

    verdicts: dict[str, Any] = {}
    detect = config.detect
    start_detect = time.perf_counter()
    if "whitebox" in detect.tests:
        from .detect import whitebox

        verdicts["whitebox"] = whitebox(model, key, context.reference_images()[0], marker=context.marker,
                                        alpha=detect.alpha)
    if "gradient" in detect.tests:
        from .detect.gradient import gradient_whitebox

        refs = context.reference_images()
        if detect.gradient_reference_images > 0:
            refs = (refs[0][: detect.gradient_reference_images], refs[1][: detect.gradient_reference_images])
        verdicts["gradient"] = gradient_whitebox(model, key, refs, marker=context.marker,
                                                 images_for=detect.gradient_images, alpha=detect.alpha)
    sources = [name for name in ("blackbox", "published") if name in detect.tests]
    if sources:
        from .detect import Probes
        from .detect.black_box import collect, verdict_from_observations

        reference = _predict(context.reference_model()) if detect.reference_model else None
        for source in sources:
            probes = Probes(*context.probes()) if source == "blackbox" else context.published_probes(spec.seed)
            # One marking of the probes and one pass of queries serve every black-box variant.
            observations = collect(
                _predict(model), key, probes, marker=context.marker, num_controls=detect.num_controls,
                reference=reference, config=config.mark_config(), seed=spec.seed, cache_dir=context.cache / "probes",
            )
            for name, statistic, combine in detect.variant_names(source):
                verdicts[name] = verdict_from_observations(observations, statistic=statistic, combine=combine,
                                                           alpha=detect.alpha)
    detect_seconds = time.perf_counter() - start_detect
    say("  tests: " + ", ".join(f"{name} log10 p {v.log10_p:.2f}" for name, v in verdicts.items())
        + f" ({detect_seconds:.0f} s)")
    finite = psnr[torch.isfinite(psnr)]
    record = {
        "run_id": spec.run_id,
        "experiment": config.name,
        "fraction": spec.fraction,
        "model": spec.model.name,
        "mode": spec.model.mode,
        "arch": spec.model.arch if spec.model.mode in ("scratch", "distill") else spec.model.init,
        "seed": spec.seed,
        "key_fingerprint": key.fingerprint,
        "marked_images": int(len(indices)),
        "train_images": int(len(labels)),
        "psnr_min": float(psnr.min()) if len(psnr) else None,
        "psnr_mean": float(finite.mean()) if len(finite) else None,
        "test_accuracy": result.metrics.get("test_accuracy"),
        "accuracy_on_marked": evaluate(model, marked, labels[indices])["accuracy"] if len(indices) else None,
        "log10_p": {name: verdict.log10_p for name, verdict in verdicts.items()},
        "verdicts": {name: verdict.to_dict() for name, verdict in verdicts.items()},
        "seconds": {"mark": mark_seconds, "train": train_seconds, "detect": detect_seconds,
                    "total": time.perf_counter() - start},
        "train_metrics": {k: v for k, v in result.metrics.items() if k != "history"},
        "config": spec.to_dict(),
        "versions": versions(),
    }
    if keep_model:
        record["_model"] = model
        record["_spec"] = result.spec if result.spec is not None else context.init_spec(spec.model)
        record["_verdicts"] = verdicts
    return record


def run_experiment(
    config: ExperimentConfig,
    out: str | Path,
    *,
    marker: Any = None,
    data: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
    progress: Callable[[str], None] | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Run (or resume) every run of ``config`` into ``out``; write the aggregated table; return the records.

    ``out/config.json`` holds the resolved configuration, ``out/runs/<run_id>.json`` one record per run,
    ``out/results.{md,json}`` and ``out/plot.png`` the aggregate. ``limit`` stops after that many new runs.
    ``marker`` and ``data`` (``{"train", "val", "test"}: (uint8 images, labels)``) replace the configured ones.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "config.json", config.to_dict())
    context = Context(config, out, marker=marker, data=data)
    runs = expand_grid(config)
    records = []
    done_new = 0
    for number, spec in enumerate(runs, 1):
        path = out / "runs" / f"{spec.run_id}.json"
        label = f"[{number}/{len(runs)}] {spec.model.name} fraction {spec.fraction:g} seed {spec.seed}"
        if path.is_file():
            records.append(json.loads(path.read_text()))
            if progress:
                progress(f"{label}: cached")
            continue
        if limit is not None and done_new >= limit:
            break
        record = run_one(spec, context)
        atomic_write_json(path, record)
        records.append(record)
        done_new += 1
        if progress:
            shown = ", ".join(f"{k} log10 p {v:.2f}" for k, v in record["log10_p"].items())
            progress(f"{label}: accuracy {record['test_accuracy']:.4f}, {shown} ({record['seconds']['total']:.0f} s)")
    aggregate(records, out, alpha=config.detect.alpha)
    return records


# ---------------------------------------------------------------------------------------------------------
# Aggregation.


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else 0.5 * (ordered[mid - 1] + ordered[mid])


def aggregate(records: Sequence[dict[str, Any]], out: str | Path | None = None, *, alpha: float = 0.05) -> list[dict[str, Any]]:
    """Group runs by (model setting, fraction) over seeds: median and range of accuracy and of each test's
    log10 p, mean PSNR, wall time. Writes ``results.json``, ``results.md`` and ``plot.png`` under ``out``."""
    groups: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for record in records:
        groups.setdefault((record["model"], float(record["fraction"])), []).append(record)
    tests = sorted({t for r in records for t in r["log10_p"]})
    rows = []
    for (model, fraction), items in sorted(groups.items()):
        row: dict[str, Any] = {"model": model, "fraction": fraction, "seeds": sorted(r["seed"] for r in items)}
        accuracy = [r["test_accuracy"] for r in items if r.get("test_accuracy") is not None]
        row["accuracy_median"] = _median(accuracy) if accuracy else None
        row["accuracy_range"] = [min(accuracy), max(accuracy)] if accuracy else None
        psnr_min = [r["psnr_min"] for r in items if r.get("psnr_min") is not None]
        psnr_mean = [r["psnr_mean"] for r in items if r.get("psnr_mean") is not None]
        row["psnr_min"] = min(psnr_min) if psnr_min else None
        row["psnr_mean"] = sum(psnr_mean) / len(psnr_mean) if psnr_mean else None
        for test in tests:
            values = [r["log10_p"][test] for r in items if test in r["log10_p"]]
            row[f"{test}_log10_p_median"] = _median(values) if values else None
            row[f"{test}_log10_p_range"] = [min(values), max(values)] if values else None
            row[f"{test}_detected"] = sum(v <= math.log10(alpha) for v in values) if values else None
        row["seconds_mean"] = sum(r["seconds"]["total"] for r in items) / len(items)
        rows.append(row)
    if out is not None:
        out = Path(out)
        atomic_write_json(out / "results.json", {"alpha": alpha, "tests": tests, "rows": rows})
        atomic_write_json(out / "runs.json", [{k: v for k, v in r.items() if k not in ("verdicts", "config")}
                                               for r in records])
        (out / "results.md").write_text(markdown_table(rows, tests, alpha=alpha))
        if records:
            plot(rows, tests, out / "plot.png", alpha=alpha)
    return rows


def _fmt(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def markdown_table(rows: Sequence[dict[str, Any]], tests: Sequence[str], *, alpha: float = 0.05) -> str:
    header = ["training", "marked", "seeds", "test acc. (median)", "PSNR min / mean (dB)"]
    header += [f"{t} log10 p median [min, max]" for t in tests]
    header.append("time / run (s)")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [
            row["model"], f"{100 * row['fraction']:g} %", str(len(row["seeds"])),
            _fmt(100 * row["accuracy_median"] if row["accuracy_median"] is not None else None, 2) + " %",
            f"{_fmt(row['psnr_min'], 1)} / {_fmt(row['psnr_mean'], 1)}",
        ]
        for test in tests:
            rng = row.get(f"{test}_log10_p_range")
            median = row.get(f"{test}_log10_p_median")
            cells.append("–" if rng is None else f"{median:.2f} [{rng[0]:.2f}, {rng[1]:.2f}]")
        cells.append(f"{row['seconds_mean']:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"log10 p: one-sided p-value of the test (detected when <= log10 {alpha:g} = {math.log10(alpha):.2f}).")
    return "\n".join(lines) + "\n"


def plot(rows: Sequence[dict[str, Any]], tests: Sequence[str], path: Path, *, alpha: float = 0.05) -> None:
    """log10 p against fraction marked, one panel per test, a line per model setting, seed range as bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = max(1, len(tests))
    ncols = min(4, count)
    nrows = math.ceil(count / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.0 * ncols, 3.8 * nrows), squeeze=False)
    for ax in axes.flat[len(tests):]:
        ax.set_visible(False)
    models = sorted({r["model"] for r in rows})
    for ax, test in zip(axes.flat, tests):
        for model in models:
            mine = [r for r in rows if r["model"] == model and r.get(f"{test}_log10_p_median") is not None]
            if not mine:
                continue
            xs = [100 * r["fraction"] for r in mine]
            ys = [r[f"{test}_log10_p_median"] for r in mine]
            lo = [y - r[f"{test}_log10_p_range"][0] for y, r in zip(ys, mine)]
            hi = [r[f"{test}_log10_p_range"][1] - y for y, r in zip(ys, mine)]
            ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label=model)
        ax.axhline(math.log10(alpha), color="red", linestyle="--", linewidth=1, label=f"alpha = {alpha:g}")
        ax.set_xlabel("images marked (%)")
        ax.set_ylabel("log10 p (median, seed range)")
        ax.set_title(test)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def dry_run(config: ExperimentConfig) -> list[str]:
    """Validate a configuration without data or training: the grid, the settings, and the architectures."""
    from .nets import ARCHITECTURES

    lines = []
    for model in config.models:
        for arch in ([model.arch] if model.mode in ("scratch", "distill") else []):
            source, _, name = arch.partition(":") if ":" in arch else ("", "", arch)
            if arch in ARCHITECTURES:
                continue
            if source == "timm":
                continue
            import torchvision

            if name not in torchvision.models.list_models():
                raise ConfigError(f"unknown architecture {arch!r} in model setting {model.name!r}")
        if model.init not in ("", "marker") and not Path(model.init).is_file():
            lines.append(f"note: checkpoint {model.init!r} of {model.name!r} does not exist here")
    if config.marker_arch:
        import torchvision

        arch = config.marker_arch.partition(":")[2]
        if arch not in torchvision.models.list_models():
            raise ConfigError(f"unknown marker architecture {config.marker_arch!r}")
    if config.marker not in ("", "default") and not Path(config.marker).is_file():
        lines.append(f"note: marker weights {config.marker!r} do not exist here")
    if config.dataset != "fashion-mnist" and not Path(config.dataset).is_dir():
        lines.append(f"note: dataset folder {config.dataset!r} does not exist here")
    runs = expand_grid(config)
    lines.insert(0, f"{config.name}: {len(runs)} runs = {len(config.fractions)} fractions x "
                    f"{len(config.models)} model settings x {len(config.seeds)} seeds")
    lines.append("marking: " + json.dumps(config.mark_config().to_dict()))
    for model in config.models:
        recipe = TrainRecipe.from_dict({**config.train, **model.recipe, "mode": model.mode})
        lines.append(f"model {model.name}: " + json.dumps(recipe.to_dict()))
    lines.append("detect: " + json.dumps(config.detect.to_dict()))
    for spec in runs:
        lines.append(f"  {spec.run_id}  {spec.model.name:<28} fraction {spec.fraction:<6g} seed {spec.seed}")
    return lines


def replace_config(config: ExperimentConfig, **changes: Any) -> ExperimentConfig:
    """``dataclasses.replace`` for experiment configs (re-validated)."""
    return replace(config, **changes)

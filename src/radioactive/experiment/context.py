"""What the runs of one experiment folder share: the data splits, the marker, the keys, the marked subsets
and the caches (marked images, the auditor's reference model), each made once and named by content."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .._io import atomic_write
from ..detect import Probes
from ..errors import ConfigError, DatasetError
from ..fmnist import SPLITS, fashion_mnist_splits, holdout_indices
from ..fmnist_pairs import PAIR_SOURCES, fashion_mnist_pairs_splits, warn_flips
from ..key import Key
from ..mark import image_seeds, mark
from ..marker import Marker
from ..nets import NetSpec, load_checkpoint, make_spec, save_checkpoint
from ..sources import load_labelled
from ..train import TrainRecipe, TrainResult, dataset_fingerprint, fit
from ..zoo import default_marker, resolve_device, shipped_model
from .config import ExperimentConfig, ModelSetting
from .identity import content_hash, derive_seed
from .twins import published_top

__all__ = ["Context", "Splits"]

log = logging.getLogger(__name__)

# split name -> (uint8 images (N, c, H, W), int64 labels (N,)); the names of radioactive.fmnist.SPLITS.
Splits = dict[str, tuple[torch.Tensor, torch.Tensor]]


def _check_splits(data: Splits) -> Splits:
    if set(data) != set(SPLITS):
        raise ConfigError(f"data must hold the splits {list(SPLITS)} (owner: published, holdout: never published, "
                          f"test), each (uint8 images, labels); got {sorted(data)}")
    return data


class Context:
    """Data, marker and caches shared by the runs of one experiment folder.

    Args:
        config: the experiment.
        out: its output folder (caches go to ``out/cache``).
        marker: replaces the configured marking network.
        data: replaces the configured dataset: ``{"owner", "holdout", "test"}`` -> (uint8 images, labels).
    """

    def __init__(self, config: ExperimentConfig, out: str | Path, *, marker: Marker | None = None,
                 data: Splits | None = None):
        self.config = config
        self.out = Path(out)
        self.cache = self.out / "cache"
        # "auto" in a configuration file is resolved here, at the file's edge, once.
        self.device = resolve_device(config.device)
        self._marker = marker
        self._data = _check_splits(data) if data is not None else None
        self._reference_models: dict[int, torch.nn.Module] = {}
        self._train_fingerprint: str | None = None
        self._suspect: tuple[str, TrainResult] | None = None

    # -- data ---------------------------------------------------------------------------------------
    @property
    def data(self) -> Splits:
        if self._data is None:
            self._data = self._load_data()
        return self._data

    def _load_data(self) -> Splits:
        config = self.config
        if config.dataset == "fashion-mnist":
            # Its holdout is drawn by the same rule (seed 0) as a folder dataset's below.
            splits = fashion_mnist_splits(holdout=config.holdout)
        elif config.dataset in PAIR_SOURCES:
            splits = fashion_mnist_pairs_splits(config.dataset, holdout=config.holdout)
            warn_flips(config.dataset, any(config.recipe(model).flip for model in config.models))
        else:
            if not config.test:
                raise ConfigError(f"a folder dataset ({config.dataset!r}) needs 'test': a folder of test images")
            size = config.image_size or None
            owner = load_labelled(config.dataset, size=size)
            test = load_labelled(config.test, size=size or tuple(owner.images.shape[-2:]),
                                 channels=owner.images.shape[1])
            if test.classes != owner.classes:
                raise DatasetError(f"the test folder {config.test!r} has classes {test.classes} but the dataset "
                                   f"{config.dataset!r} has {owner.classes}; give both the same class subfolders")
            held, kept = holdout_indices(len(owner), holdout=config.holdout, seed=derive_seed("holdout"))
            splits = {"owner": (owner.images[kept], owner.labels[kept]),
                      "holdout": (owner.images[held], owner.labels[held]),
                      "test": (test.images, test.labels)}
        if config.train_images:
            images, labels = splits["owner"]
            gen = torch.Generator().manual_seed(derive_seed("train_subset"))
            keep = torch.randperm(len(labels), generator=gen)[: config.train_images].sort().values
            splits["owner"] = (images[keep], labels[keep])
        need = config.detect.reference_images + config.detect.probes
        if len(splits["holdout"][1]) < need:
            raise ConfigError(f"the held-out split has {len(splits['holdout'][1])} images but reference_images + "
                              f"probes = {need}; raise 'holdout' or lower reference_images or probes")
        return splits

    @property
    def num_classes(self) -> int:
        return int(self.data["owner"][1].max()) + 1

    def reference_images(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The white-box reference images: the first ``reference_images`` of the holdout split."""
        images, labels = self.data["holdout"]
        count = self.config.detect.reference_images
        return images[:count], labels[:count]

    def probes(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The fresh black-box probes: the ``probes`` holdout images after the reference images."""
        images, labels = self.data["holdout"]
        start = self.config.detect.reference_images
        stop = start + self.config.detect.probes
        return images[start:stop], labels[start:stop]

    def train_fingerprint(self) -> str:
        """Content fingerprint of the (clean) owner split: part of every cache key."""
        if self._train_fingerprint is None:
            self._train_fingerprint = dataset_fingerprint(*self.data["owner"])
        return self._train_fingerprint

    # -- marker and key -----------------------------------------------------------------------------
    @property
    def marker(self) -> Marker:
        if self._marker is None:
            self._marker = self._load_marker().to(self.device)
            # Same weights, faster convolutions (the weight hash is layout-independent).
            self._marker.model.to(memory_format=torch.channels_last)
        return self._marker

    def _load_marker(self) -> Marker:
        config = self.config
        if config.marker_arch:
            source, _, arch = config.marker_arch.partition(":")
            if source != "torchvision":
                raise ConfigError(f"marker_arch must be torchvision:<name>, got {config.marker_arch!r}")
            return Marker.from_torchvision(arch, weights=config.marker or None, input_size=config.image_size or 224)
        marker = default_marker() if config.marker == "default" else Marker.from_checkpoint(config.marker)
        classes = PAIR_SOURCES.get(config.dataset, 0)
        if marker.spec.num_classes < classes:
            raise ConfigError(f"the dataset {config.dataset} has {classes} classes but the marker {config.marker!r} has "
                              f"{marker.spec.num_classes}; train one on it (radioactive train-marker --data "
                              f"{config.dataset} --out marker.safetensors) and set marker = \"marker.safetensors\"")
        return marker

    def key(self, seed: int) -> Key:
        """The secret key of grid seed ``seed``."""
        head_weight = self.marker.split.weight() if self.config.key_space == "neutral" else None
        return Key.generate(self.marker.info, seed=derive_seed("key", seed), space=self.config.key_space,
                            head_weight=head_weight)

    # -- marking ------------------------------------------------------------------------------------
    def marked_subset(self, seed: int, fraction: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(indices into the owner split, marked uint8 images, PSNR) for ``fraction`` of every class.

        Nested across fractions: the images marked at 1 % are among those marked at 2 %, and so on. The
        largest fraction of the experiment is marked once per seed and cached. With ``[twins]``, the images
        are the published twins (:func:`radioactive.experiment.twins.published_top`).
        """
        indices = self.selection(seed, max(self.config.fractions))
        if self.config.twins.enabled:
            images, psnr = published_top(self, seed, indices)
        else:
            images, psnr = self.marked_plain(seed, indices)
        wanted = self.selection(seed, fraction)
        rows = _positions(indices, wanted)
        return wanted, images[rows], psnr[rows]

    def published_probes(self, seed: int) -> Probes:
        """Black-box probes made of published images: up to ``published_probes`` per class of the smallest
        non-zero fraction's marked subset, with their originals and their positions in the marking call (the
        augmentation streams the control twins must share)."""
        top, chosen, rows = self.published_choice(seed)
        images, labels = self.data["owner"]
        if self.config.twins.enabled:  # only these are marked plainly, each in its stream of the full marking
            published, _ = self.marked_plain(seed, chosen, streams=rows.tolist())
        else:
            published = self.marked_plain(seed, top)[0][rows]
        return Probes(images[chosen], labels[chosen], published=published, ids=rows.tolist())

    def published_choice(self, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(the largest non-zero fraction's subset, the published probes' owner indices (sorted), their rows in
        the former: their augmentation streams) of :meth:`published_probes`."""
        fractions = [f for f in self.config.fractions if f > 0]
        if not fractions:
            raise ConfigError("the 'published' test needs a non-zero fraction in the grid")
        top = self.selection(seed, max(fractions))
        small = self.selection(seed, min(fractions))
        labels = self.data["owner"][1]
        keep = torch.cat([torch.nonzero(labels[small] == k).flatten()[: self.config.detect.published_probes]
                          for k in range(self.num_classes)])
        chosen = small[keep.sort().values]
        return top, chosen, _positions(top, chosen)

    def selection(self, seed: int, fraction: float) -> torch.Tensor:
        """Sorted indices of ``fraction`` of every class: a prefix of one seeded permutation per class."""
        labels = self.data["owner"][1]
        gen = torch.Generator().manual_seed(derive_seed("selection", seed))
        chosen = []
        for cls in range(self.num_classes):
            members = (labels == cls).nonzero().flatten()
            order = members[torch.randperm(len(members), generator=gen)]
            chosen.append(order[: int(round(fraction * len(members)))])
        return torch.cat(chosen).sort().values if chosen else torch.zeros(0, dtype=torch.long)

    def marked_plain(self, seed: int, indices: torch.Tensor, *, streams: list[int] | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """(marked uint8 images, PSNR) of the owner images ``indices``, marked with the key of ``seed``; cached.
        Image ``i`` is marked in augmentation stream ``i`` of the run's marking seed, or ``streams[i]``."""
        config = self.config
        key = self.key(seed)
        described = {"key": key.fingerprint, "mark": config.mark_config().to_dict(),
                     "indices": content_hash(indices.tolist()), "data": self.train_fingerprint()}
        if streams is not None:  # absent otherwise: the cache names of earlier grids stay the same
            described["streams"] = content_hash(list(streams))
        ident = content_hash(described)
        path = self.cache / f"marked-{ident}.safetensors"
        if path.is_file():
            stored = load_file(str(path))
            return stored["images"], stored["psnr"]
        images, labels = self.data["owner"]
        if len(indices) == 0:
            return images[:0].clone(), torch.zeros(0, dtype=torch.float64)
        start = time.perf_counter()
        log.info("marking %d training images (seed %d)", len(indices), seed)
        marking_seed = derive_seed("marking", seed)
        result = mark(self.marker, images[indices], labels[indices], key, config.mark_config(),
                      seed=marking_seed if streams is None else image_seeds(marking_seed, streams))
        marked = (result.images.detach().cpu() * 255).round().clamp(0, 255).to(torch.uint8)
        psnr = result.psnr.detach().cpu().to(torch.float64)
        self.cache.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as tmp:
            save_file({"images": marked.contiguous(), "psnr": psnr.contiguous()}, str(tmp),
                      metadata={"seconds": str(time.perf_counter() - start), "summary": json.dumps(result.to_dict())})
        return marked, psnr

    # -- models -------------------------------------------------------------------------------------
    def suspect(self, model: ModelSetting, ident: str, train: Callable[[], TrainResult]) -> TrainResult:
        """``train()``, or the model an earlier call with the same ``ident`` trained: the runs of a robustness
        table that change a trained suspect (``experiment.treatments``) share one training, and so do the 0 %
        controls of its marking variants (no image marked: the same training). The caller names it by
        everything its training depends on. The last one is kept in memory; each is also stored in the cache
        (``suspect-<ident>.safetensors``), so that an interrupted table does not train it again."""
        if self._suspect is not None and self._suspect[0] == ident:
            return self._suspect[1]
        result = self._trained_once(model, self.cache / f"suspect-{ident}.safetensors", train, {"kind": "suspect"})
        self._suspect = (ident, result)
        return result

    def clean_model_name(self, model: ModelSetting, seed: int) -> str:
        """The file name of :meth:`clean_model`'s model: a hash of the setting, recipe, data and seed."""
        described = {"role": "clean", "model": model.to_dict(), "recipe": self.config.recipe(model).to_dict(),
                     "data": self.train_fingerprint(), "seed": seed}
        return f"clean-{content_hash(described)}.safetensors"

    def clean_model(self, model: ModelSetting, seed: int, train: Callable[[], TrainResult]) -> TrainResult:
        """``model`` trained on the clean owner split with training seed ``seed``: read from the cache or the
        package (the demo ships its clean control, as it ships its references: it is independent of every key),
        or ``train()`` once and cached. The name hashes the setting, the recipe, the data and the seed, so a
        stored model is used only where it is exactly what would otherwise be trained."""
        path = self.cache / self.clean_model_name(model, seed)
        return self._trained_once(model, path, train, {"kind": "clean", "seed": seed},
                                  stored=path if path.is_file() else shipped_model(path.name), note_stored=True)

    def _trained_once(self, model: ModelSetting, path: Path, train: Callable[[], TrainResult], extra: dict[str, Any],
                      *, stored: Path | None = None, note_stored: bool = False) -> TrainResult:
        """The model stored at ``stored`` (default: ``path`` when it exists), or ``train()`` saved to ``path``
        with ``extra`` and its metrics (less the history). ``note_stored`` adds ``stored=<name>`` to the
        metrics of a model read back."""
        stored = stored if stored is not None else (path if path.is_file() else None)
        if stored is not None:
            network, spec, saved = load_checkpoint(stored)
            metrics = dict(saved.get("metrics", {}), **({"stored": path.name} if note_stored else {}))
            return TrainResult(network.to(self.device).eval(), spec, self.config.recipe(model), metrics)
        result = train()
        self.cache.mkdir(parents=True, exist_ok=True)
        save_checkpoint(result.model, path, result.spec if result.spec is not None else self.init_spec(model),
                        {**extra, "metrics": {k: v for k, v in result.metrics.items() if k != "history"}})
        return result

    def start_point(self, model: ModelSetting) -> tuple[NetSpec | torch.nn.Module, torch.nn.Module | None]:
        """(spec or network to train, teacher or None)."""
        images = self.data["owner"][0]
        if model.mode == "scratch":
            return make_spec(model.arch, self.num_classes, images, kwargs=model.kwargs), None
        network = self.marker.model if model.init == "marker" else load_checkpoint(model.init)[0].to(self.device)
        if model.mode == "distill":
            return make_spec(model.arch, self.num_classes, images, kwargs=model.kwargs), network
        return network, None

    def init_spec(self, model: ModelSetting) -> NetSpec:
        """The spec of the network a ``finetune``/``linear_probe`` run starts from."""
        return self.marker.spec if model.init == "marker" else load_checkpoint(model.init)[1]

    def reference_model(self, index: int = 0) -> torch.nn.Module:
        """The auditor's clean model number ``index`` (same recipe; ``reference_arch``, or the ``index``-th of
        ``reference_archs`` in turn; its own seed), trained once and cached. Index 0 is the single reference."""
        if index not in self._reference_models:
            config = self.config
            archs = config.detect.reference_archs or (config.detect.reference_arch,)
            arch = archs[index % len(archs)]
            recipe = TrainRecipe.from_dict({**config.train, "mode": "scratch"})
            seed = derive_seed("reference_models", index)
            described = {"arch": arch, "recipe": recipe.to_dict(), "data": self.train_fingerprint()}
            if index:  # the first keeps the single reference model's cache name
                described["seed"] = seed
            path = self.cache / f"reference-{content_hash(described)}.safetensors"
            shipped = shipped_model(path.name)
            if path.is_file() or shipped is not None:
                model = load_checkpoint(path if path.is_file() else shipped)[0]
            else:
                log.info("training the auditor's clean reference model %d (%s)", index, arch)
                images, labels = self.data["owner"]
                spec = make_spec(arch, self.num_classes, images)
                result = fit(spec, images, labels, recipe=recipe, seed=seed, device=self.device,
                             test=self.data["test"])
                save_checkpoint(result.model, path, spec, {"kind": "reference", "seed": seed, "metrics": {
                    k: v for k, v in result.metrics.items() if k != "history"}})
                model = result.model
            self._reference_models[index] = model.to(self.device).eval()
        return self._reference_models[index]

    def reference_models(self) -> list[torch.nn.Module]:
        """Every reference model of the configuration (``reference_models`` of them; none without
        ``reference_model``)."""
        return [self.reference_model(i) for i in range(len(self.config.detect.reference_arch_list()))]


def _positions(indices: torch.Tensor, wanted: torch.Tensor) -> torch.Tensor:
    """Row of each of ``wanted`` in ``indices`` (every one of ``wanted`` is among ``indices``)."""
    position = {int(i): n for n, i in enumerate(indices.tolist())}
    return torch.tensor([position[int(i)] for i in wanted.tolist()], dtype=torch.long)

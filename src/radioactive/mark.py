"""Batched, augmentation-aware marking of images (the optimisation of docs/method.md), on tensors only.

For an image ``x`` of class ``k`` with carrier ``u_k``, the marked image ``x~`` minimises

    L(x~) = -<phi(A(x~)) - phi(x), u_k> + lambda_ft ||phi(A(x~)) - phi(x)|| + lambda_img ||x~ - x||^2

with a fresh random differentiable augmentation ``A`` at every step, under three constraints: pixels stay in
[0, 1], ``|x~ - x| <= epsilon`` everywhere, and the PSNR of ``x~`` against ``x`` stays above a floor (the
perturbation is projected onto the L2 ball that PSNR implies). Pixels are rounded to 8 bits periodically and
at the end; a final fix-up scales the 8-bit perturbation down where rounding broke the floor, so every
returned image meets it exactly as it will be saved.

All images of a call are optimised together (in chunks of ``batch_size``); the marker's weights get no
gradients. Each image's augmentations come from its own random stream, so an image's result does not depend
on which other images share its batch (up to floating-point differences of batched kernels).

Marking runs where the marker is (``marker.to(device)``; nothing here picks a device). On an accelerator
the step loop is queued without host synchronisation, the batch size follows the free memory
(:func:`choose_batch_size`) and ``MarkConfig.precision`` may run the marking network in TF32 or bf16.
"""

from __future__ import annotations

import math
import warnings
import weakref
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch

from ._device import PRECISIONS, batch_for_memory, network_precision, step_augmentations, step_memory
from ._optimise import Features, evaluate_shift, feature_function, finish, frozen, image_seeds, optimise, psnr
from .augment import Augmentation, AugmentParams
from .errors import ConfigError, KeyMismatchError
from .key import Key
from .marker import adapt_channels, classifier_rows, marker_channels
from .nets import state_dict_sha256

__all__ = ["MarkConfig", "MarkResult", "mark", "psnr", "image_seeds", "marker_channels", "choose_batch_size"]

# MarkConfig's defaults before the marking front (benchmarks/results/mark_front.json) changed them: a marking
# record (mark.json) that lacks one of these fields was written when it was the default.
RECORD_DEFAULTS: dict[str, Any] = {"steps": 90, "lr": 0.01}


@dataclass(frozen=True)
class MarkConfig:
    """Settings of the marking optimisation; defaults are tuned for Fashion-MNIST and the built-in ``cnn``.

    30 steps at lr 0.02: the fewest steps whose feature shift along the carrier (under fresh augmentations, at
    the 40 dB floor) is within 2 % of the best of a steps x lr grid (``benchmarks/bench_mark_front.py``,
    ``benchmarks/results/mark_front.json``, docs/marking.md); until then 90 steps at lr 0.01
    (:data:`RECORD_DEFAULTS`, which marking records lacking these fields are read with).

    Attributes:
        steps: optimisation steps per image (0 returns the images unchanged).
        lr: Adam step size in pixel units ([0, 1] scale), decayed with a cosine schedule.
        epsilon: L-infinity radius in [0, 1] pixel units (0 returns the images unchanged).
        min_psnr: quality floor in dB that every output image meets (peak 1, MSE over all values).
        lambda_ft: weight of the feature-shift norm (keeps the shift pointing along the carrier).
        lambda_img: weight of the squared pixel distance.
        lambda_class: weight of a term that moves the features *against* the marker's own classifier row of
            the image's class (``+ lambda_class <phi(A(x~)) - phi(x), w_y / ||w_y||>``): marked images become
            harder examples, which a trainer's loss weighs more, so it has more reason to use the carrier.
            The term does not depend on the carrier, so control-marked versions stay exchangeable. The class
            is ``label mod C`` (control sets stack blocks of C labels), matched to the marker's row by name
            where :func:`mark` gets ``classes`` (:func:`radioactive.marker.classifier_rows`).
        augment: differentiable augmentations applied at each step, in order (see ``radioactive.augment``).
        augment_params: ranges of the random augmentations.
        round_every: round pixels to 8 bits every this many steps (0: only at the end).
        eval_draws: fresh augmentations over which the reported shift and cosine are averaged.
        precision: arithmetic of the marking network's forward and backward: ``"fp32"`` (IEEE fp32, also on
            GPUs whose cuDNN would use TF32), ``"tf32"`` (TF32 matmuls and convolutions on CUDA; the same as
            fp32 elsewhere) or ``"bf16"`` (autocast to bfloat16). The image, the loss, the projection and the
            PSNR stay in fp32, and the reported shift and cosine are measured in fp32. ``benchmarks/results/``
            records what each costs the mark.
    """

    steps: int = 30
    lr: float = 0.02
    epsilon: float = 10 / 255
    min_psnr: float = 40.0
    lambda_ft: float = 0.01
    lambda_img: float = 0.0
    lambda_class: float = 0.0
    augment: tuple[str, ...] = ("crop", "flip")
    augment_params: AugmentParams = field(default_factory=AugmentParams)
    round_every: int = 10
    eval_draws: int = 1
    precision: str = "fp32"

    def __post_init__(self) -> None:
        object.__setattr__(self, "augment", tuple(self.augment))
        if isinstance(self.augment_params, dict):
            object.__setattr__(self, "augment_params", AugmentParams(**self.augment_params))
        checks = [
            (isinstance(self.steps, int) and self.steps >= 0, f"steps must be an integer >= 0, got {self.steps!r}"),
            (self.lr > 0 and math.isfinite(self.lr), f"lr must be > 0, got {self.lr!r}"),
            (0 <= self.epsilon <= 1, f"epsilon must be in [0, 1] (pixel units; 10/255 = {10 / 255:.4f}), got {self.epsilon!r}"),
            (0 < self.min_psnr < 200, f"min_psnr must be in (0, 200) dB, got {self.min_psnr!r}"),
            (self.lambda_ft >= 0 and self.lambda_img >= 0 and self.lambda_class >= 0,
             "lambda_ft, lambda_img and lambda_class must be >= 0"),
            (isinstance(self.round_every, int) and self.round_every >= 0, f"round_every must be an integer >= 0, got {self.round_every!r}"),
            (isinstance(self.eval_draws, int) and self.eval_draws >= 0, f"eval_draws must be an integer >= 0, got {self.eval_draws!r}"),
            (self.precision in PRECISIONS, f"precision must be one of {list(PRECISIONS)}, got {self.precision!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        Augmentation(self.augment, (8, 8), self.augment_params)  # validates the names
        if self.epsilon > 16 / 255:
            warnings.warn(f"epsilon {self.epsilon:.4f} is above 16/255: marks may become visible", stacklevel=3)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["augment"] = list(self.augment)
        out["augment_params"] = {name: list(value) for name, value in out["augment_params"].items()}
        # Added later: left out at their defaults so the identities (hashes) of earlier runs and caches hold.
        if not self.lambda_class:
            del out["lambda_class"]
        if self.precision == "fp32":
            del out["precision"]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MarkConfig:
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown marking settings {sorted(unknown)}; valid: {sorted(known)}")
        data = dict(data)
        if "augment_params" in data and isinstance(data["augment_params"], dict):
            data["augment_params"] = AugmentParams(**{k: tuple(v) for k, v in data["augment_params"].items()})
        if "augment" in data:
            data["augment"] = tuple(data["augment"])
        return cls(**data)

    @classmethod
    def from_record(cls, data: dict[str, Any]) -> MarkConfig:
        """The settings a marking record (``mark.json``'s ``settings.config``) holds.

        A field the record lacks takes the value the library used when the record was written
        (:data:`RECORD_DEFAULTS`: 90 steps at lr 0.01), not today's default, so that ``detect --marked-with``
        marks the probes as older outputs were marked. Records written now hold every such field.
        """
        return cls.from_dict({**RECORD_DEFAULTS, **data})


@dataclass(frozen=True, eq=False)
class MarkResult:
    """Marked images and per-image statistics.

    Attributes:
        images: ``(N, c, H, W)`` float32 in [0, 1], 8-bit exact (``images * 255`` is integral).
        psnr: ``(N,)`` float64 dB against the 8-bit input (``inf`` for an unchanged image).
        shift: ``(N,)`` float64 ``<phi(A(x~)) - phi(A(x)), u_k>`` under fresh augmentations ``A``.
        cosine: ``(N,)`` float64 cosine between that feature shift and the carrier (0 where no shift).
    """

    images: torch.Tensor
    psnr: torch.Tensor
    shift: torch.Tensor
    cosine: torch.Tensor

    def __len__(self) -> int:
        return self.images.shape[0]

    def to_dict(self) -> dict[str, Any]:
        """Summary statistics (no pixels)."""
        finite = self.psnr[torch.isfinite(self.psnr)]
        return {
            "count": len(self),
            "psnr_min": float(self.psnr.min()) if len(self) else None,
            "psnr_mean_finite": float(finite.mean()) if finite.numel() else None,
            "shift_mean": float(self.shift.mean()) if len(self) else None,
            "cosine_mean": float(self.cosine.mean()) if len(self) else None,
            "fraction_positive_shift": float((self.shift > 0).double().mean()) if len(self) else None,
        }


def _resolve_carriers(marker: Any, carriers: Key | torch.Tensor, weights_sha256: str) -> torch.Tensor:
    if isinstance(carriers, Key):
        # Checked against the weights as they are now, not as they were when the Marker was built.
        carriers.check_marker(replace(marker.info, weights_sha256=weights_sha256))
        carriers = carriers.carriers
    if not isinstance(carriers, torch.Tensor) or carriers.dim() != 2:
        raise ConfigError("carriers must be a Key or a (classes, dim) tensor")
    if carriers.shape[1] != marker.feature_dim:
        raise KeyMismatchError(
            f"carriers have dimension {carriers.shape[1]} but the marker's features have {marker.feature_dim}; "
            "use carriers made for this marking network"
        )
    carriers = carriers.to(torch.float64)
    return carriers / carriers.norm(dim=1, keepdim=True).clamp_min(1e-12)


def default_batch_size(input_size: tuple[int, int]) -> int:
    """Images per batch off CUDA (and the plan of `radioactive mark`): about 2^19 marker-input pixels, at most 512."""
    return int(max(1, min(512, (1 << 19) // (input_size[0] * input_size[1]))))


# marker model -> {(image shape, settings that change a step's memory): (bytes per image, fixed bytes)}
_STEP_MEMORY: weakref.WeakKeyDictionary[Any, dict[tuple[Any, ...], tuple[float, float]]] = weakref.WeakKeyDictionary()


def choose_batch_size(marker: Any, image_shape: Sequence[int], config: MarkConfig | None = None) -> int:
    """The number of images :func:`mark` optimises together when no ``batch_size`` is given.

    On CUDA: as many as fit in 80 % of the device's free memory (``torch.cuda.mem_get_info`` plus what
    PyTorch's cache holds unused), at most 1024, by the memory one step takes per image. That is measured
    once per marker, image shape, augmentations and precision, by one step on 4 and on 12 random images (the
    difference is the per-image cost; this resets the device's peak-memory statistics). Elsewhere (CPU and
    other devices): about 2^19 marker-input pixels per batch, at most 512, the rule marking has always used
    (larger batches run no faster on CPU). Batches of another size give the same marks up to floating-point
    differences of batched kernels: give ``batch_size`` explicitly where bytes must repeat across machines.

    Args:
        marker: the :class:`radioactive.Marker`, on the device it will mark on.
        image_shape: ``(c, H, W)`` of the images to mark.
        config: the marking settings (augmentations and precision change the memory a step takes).
    """
    config = config or MarkConfig()
    device = marker.device
    if device.type != "cuda":
        return default_batch_size(marker.spec.input_size)
    shape = tuple(int(v) for v in image_shape)
    cache = _STEP_MEMORY.setdefault(marker.model, {})
    signature = (shape, config.augment, config.precision, tuple(marker.spec.input_size), str(device))
    if signature not in cache:
        features = _marker_features(marker, feature_function(marker, marker_channels(marker),
                                                             state_dict_sha256(marker.model)))
        augmentation = Augmentation(config.augment, tuple(marker.spec.input_size), config.augment_params)
        with frozen(marker.model):
            cache[signature] = step_memory(features, augmentation, shape, config.precision, device)
    return batch_for_memory(*cache[signature], device)


def _marker_features(marker: Any, raw_features: Features) -> Features:
    channels = marker_channels(marker)

    def features(x: torch.Tensor) -> torch.Tensor:
        x = adapt_channels(x, channels).contiguous(memory_format=torch.channels_last)
        return raw_features(x)

    return features


def mark(
    marker: Any,
    images: torch.Tensor,
    labels: torch.Tensor | Sequence[int],
    carriers: Key | torch.Tensor,
    config: MarkConfig | None = None,
    *,
    seed: int | Sequence[int] = 0,
    batch_size: int | None = None,
    progress: Callable[[int], None] | None = None,
    targets: torch.Tensor | Sequence[int] | None = None,
    classes: Sequence[str] | None = None,
) -> MarkResult:
    """Mark a batch of images so that the marker's features move along their class carriers.

    Args:
        marker: a :class:`radioactive.Marker` (frozen; marking runs on its device, in its dtype).
        images: ``(N, c, H, W)`` uint8 or float in [0, 1], one size per call; quantised to 8 bits first.
            ``c`` is 1 or 3; it is adapted to the marker's channels inside (grey repeated, colour averaged).
            uint8 images travel to the marker's device as uint8 (4x fewer bytes), without waiting when they
            are in pinned memory (``images.pin_memory()``, a DataLoader's ``pin_memory=True``).
        labels: ``(N,)`` class indices in ``[0, C)``; ``targets`` ``(N,)``: the carrier each image moves along instead.
        carriers: a :class:`radioactive.Key` (checked against the marker) or a ``(C, d)`` tensor, e.g.
            ``key.control_carriers(j)``.
        config: :class:`MarkConfig`.
        seed: run seed (image ``i`` gets stream ``(seed, i)``) or one seed per image (``N`` ints).
        batch_size: images optimised together (default: :func:`choose_batch_size`).
        progress: called with the number of images finished after each batch.
        classes: the names of the classes ``labels`` index (the dataset's), so that ``config.lambda_class`` reads
            the marker's row of the same name (refused if it names none); default: row ``label mod C``.

    Returns:
        :class:`MarkResult` on the images' device (each batch is moved there as it finishes, so the
        marker's device holds one batch at a time whatever ``N`` is).

    Raises:
        KeyMismatchError: the key was made for another marking network, or carriers of the wrong dimension.
        ConfigError: bad shapes, labels or pixel range; ``classes`` the marker does not name (with lambda_class).

    Examples:
        >>> import torch
        >>> from radioactive import Marker
        >>> from radioactive.nets import NetSpec, build_from_spec
        >>> spec = NetSpec("cnn", 4, input_size=(16, 16), kwargs={"width": 4, "feature_dim": 8})
        >>> marker = Marker.from_model(build_from_spec(spec), spec)
        >>> carriers = torch.nn.functional.normalize(torch.randn(4, 8, dtype=torch.float64), dim=1)
        >>> result = mark(marker, torch.rand(3, 1, 16, 16), torch.tensor([0, 1, 2]), carriers,
        ...               MarkConfig(steps=3), seed=0)
        >>> bool((result.psnr >= 40).all())
        True
    """
    config = config or MarkConfig()
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        raise ConfigError(f"images must be a (N, c, H, W) tensor, got {getattr(images, 'shape', type(images))}")
    labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1).cpu()
    targets = labels if targets is None else torch.as_tensor(targets, dtype=torch.long).reshape(-1).cpu()
    count = images.shape[0]
    if labels.shape[0] != count or targets.shape[0] != count:
        raise ConfigError(f"{count} images but {labels.shape[0]} labels" + ("" if targets is labels else f" and {targets.shape[0]} targets"))
    weights_sha256 = state_dict_sha256(marker.model)
    carriers = _resolve_carriers(marker, carriers, weights_sha256)
    for name, values in (("labels", labels), ("targets", targets)):
        if count and (int(values.min()) < 0 or int(values.max()) >= carriers.shape[0]):
            raise ConfigError(f"{name} must lie in [0, {carriers.shape[0]}); got range [{int(values.min())}, {int(values.max())}]")
    if images.dtype != torch.uint8 and not images.is_floating_point():
        raise ConfigError(f"images must be float in [0, 1] or uint8, got {images.dtype}")
    if images.dtype != torch.uint8 and count and (float(images.min()) < 0 or float(images.max()) > 1):
        raise ConfigError("images must lie in [0, 1]; divide 8-bit images by 255")
    if isinstance(seed, int):
        seeds = image_seeds(seed, range(count))
    else:
        seeds = [int(s) for s in seed]
        if len(seeds) != count:
            raise ConfigError(f"{count} images but {len(seeds)} seeds")
    if not count:
        empty = torch.zeros(0, dtype=torch.float64)
        floats = images.float() / 255 if images.dtype == torch.uint8 else images.float()
        return MarkResult(images=floats.clone(), psnr=empty, shift=empty.clone(), cosine=empty.clone())

    out_device = images.device
    batch_size = batch_size or choose_batch_size(marker, images.shape[1:], config)
    rows = classifier_rows(marker, classes) if config.lambda_class else None  # (C, d), row k: class k's
    chunks = []
    features = _marker_features(marker, feature_function(marker, marker_channels(marker), weights_sha256))
    for start in range(0, count, batch_size):
        end = min(count, start + batch_size)
        marked, *stats = _mark_batch(marker, features, images[start:end], labels[start:end], carriers, config, seeds[start:end], targets[start:end], rows)
        chunks.append((marked.to(out_device), *stats))
        if progress is not None:
            progress(end - start)
    return MarkResult(
        images=torch.cat([c[0] for c in chunks]),
        psnr=torch.cat([c[1] for c in chunks]),
        shift=torch.cat([c[2] for c in chunks]),
        cosine=torch.cat([c[3] for c in chunks]),
    )


def _mark_batch(
    marker: Any, features: Features, images: torch.Tensor, labels: torch.Tensor, carriers: torch.Tensor,
    config: MarkConfig, seeds: list[int], targets: torch.Tensor, rows: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    model = marker.model
    device = marker.device
    param = next(model.parameters(), None)
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    input_size = tuple(marker.spec.input_size)
    augmentation = Augmentation(config.augment, input_size, config.augment_params)
    width = augmentation.num_uniforms
    draws = config.steps + config.eval_draws
    # Per-image streams: an image's augmentations do not depend on its batch-mates.
    uniforms = torch.stack([
        torch.rand(draws, width, generator=torch.Generator().manual_seed(s), dtype=torch.float64) for s in seeds
    ], 1) if width else torch.zeros(draws, len(seeds), 0, dtype=torch.float64)  # (draws, B, width)

    # uint8 travels as uint8 (and without waiting from pinned memory); the integers are exact either way.
    moved = images.detach().to(device, non_blocking=images.device.type == "cpu" and images.is_pinned())
    if moved.dtype == torch.uint8:
        x0_int = moved.to(torch.float32)  # (B, c, H, W)
    else:
        x0_int = torch.round(moved.to(torch.float32) * 255)
    x0 = (x0_int / 255).to(dtype)
    u = carriers[targets].to(device=device, dtype=dtype)  # (B, d): each image's own class unless targets say otherwise
    avoid = None if rows is None else rows[labels % rows.shape[0]].to(device=device, dtype=dtype)  # (B, d)
    n_values = x0[0].numel()
    max_sq_int = torch.full((len(seeds),), n_values * 255.0**2 * 10 ** (-config.min_psnr / 10), device=device)
    eps_int = int(math.floor(config.epsilon * 255 + 1e-6))

    # The features run on a private copy; frozen() covers a marker that could not be copied.
    with frozen(model):
        if config.steps > 0 and eps_int > 0:
            augment = step_augmentations(augmentation, uniforms[:config.steps], tuple(x0.shape[-2:]), device)
            with network_precision(config.precision, device):
                delta = optimise(features, augment, x0, u, config, eps_int, max_sq_int, input_size, avoid=avoid)
        else:
            delta = torch.zeros_like(x0)
        marked_int = finish(x0_int, delta.float(), eps_int, max_sq_int)
        marked = (marked_int / 255).to(dtype)
        with network_precision("fp32", device):
            shift, cosine = evaluate_shift(features, augmentation, x0, marked, u, uniforms[config.steps:])
    return (marked.float(), psnr(marked_int / 255, x0_int / 255).cpu(), shift.cpu(), cosine.cpu())

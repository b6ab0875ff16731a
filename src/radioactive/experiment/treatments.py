"""What can happen to marked data or to the suspect between the owner's marking and the audit: the treatments
of the robustness table (:mod:`radioactive.experiment.robustness`).

Two stages. Before training, the *published images* are re-encoded (every image, marked or not, as a
re-encoding pipeline would): a real JPEG codec (libjpeg through Pillow, not the differentiable
approximation the marking may train against) or a downscale to a fraction of the size and back. After
training, the *suspect* is changed: fine-tuned on clean data, globally magnitude-pruned, dynamically
quantized to int8, or distilled into a student of another architecture. The pure functions here work on
tensors and modules; :class:`Treatment` binds one of them, with its parameters, to a run of the experiment
(:func:`radioactive.experiment.run_one` calls ``publish`` before training, ``apply`` after it and tests
``weights(model)`` white-box).
"""

from __future__ import annotations

import copy
import io
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..nets import make_spec
from ..train import TrainRecipe, fit
from .identity import derive_seed

if TYPE_CHECKING:
    from .context import Context

__all__ = ["KINDS", "PUBLISH_KINDS", "MODEL_KINDS", "Treatment", "jpeg_reencode", "downscale_and_back",
           "prune_global", "quantize_int8", "dequantized", "clean_pool"]

PUBLISH_KINDS = ("jpeg", "downscale")
MODEL_KINDS = ("finetune", "prune", "quantize", "distill")
KINDS = ("none",) + PUBLISH_KINDS + MODEL_KINDS

# kind -> parameters and their defaults; ``recipe`` holds TrainRecipe fields over the experiment's [train].
_DEFAULTS: dict[str, dict[str, Any]] = {
    "none": {},
    "jpeg": {"quality": 75},
    "downscale": {"factor": 0.5},
    "finetune": {"recipe": {"epochs": 2, "lr": 0.01}},
    "prune": {"amount": 0.5},
    "quantize": {},
    "distill": {"arch": "resnet_narrow", "kwargs": {}, "recipe": {"epochs": 3}},
}

# kind -> default row label from the parameters.
_LABELS = {
    "jpeg": lambda p: f"jpeg-q{p['quality']}",
    "downscale": lambda p: f"downscale-{p['factor']:g}",
    "prune": lambda p: f"prune-{p['amount']:g}",
    "quantize": lambda _p: "quantize-int8",
    "distill": lambda p: f"distill-{p['arch']}",
}


# -- the pure functions ----------------------------------------------------------------------------------
def jpeg_reencode(images: torch.Tensor, quality: int) -> torch.Tensor:
    """Encode uint8 images ``(N, c, H, W)`` (c = 1 or 3) as baseline JPEG at ``quality`` with Pillow's libjpeg
    (its defaults: 4:2:0 chroma subsampling for colour) and decode them back: what a publisher's re-encoding
    does to the files. Returns uint8, same shape.

    Examples:
        >>> images = torch.randint(0, 256, (2, 1, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
        >>> jpeg_reencode(images, 90).shape
        torch.Size([2, 1, 16, 16])
    """
    import numpy as np
    from PIL import Image

    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ConfigError(f"jpeg_reencode needs uint8 images (N, 1 or 3, H, W), got {images.dtype} {tuple(images.shape)}")
    if isinstance(quality, bool) or not 1 <= int(quality) <= 100:
        raise ConfigError(f"JPEG quality must be in [1, 100], got {quality!r}")
    pixels = images.cpu().permute(0, 2, 3, 1).numpy()  # (N, H, W, c)
    out = np.empty_like(pixels)
    for n, image in enumerate(pixels):
        buffer = io.BytesIO()
        Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buffer, format="JPEG",
                                                                              quality=int(quality))
        buffer.seek(0)
        out[n] = np.asarray(Image.open(buffer)).reshape(image.shape)
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous().to(images.device)


def downscale_and_back(images: torch.Tensor, factor: float = 0.5, *, batch_size: int = 4096) -> torch.Tensor:
    """Resize uint8 images ``(N, c, H, W)`` to ``factor`` of their size (bilinear, antialiased) and back to
    ``(H, W)`` (bilinear), rounded to 8 bits as a stored file would be. Returns uint8, same shape."""
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ConfigError(f"downscale_and_back needs uint8 images (N, c, H, W), got {images.dtype} {tuple(images.shape)}")
    if not 0 < factor < 1:
        raise ConfigError(f"downscale factor must be in (0, 1), got {factor!r}")
    height, width = images.shape[-2:]
    small = (max(1, round(height * factor)), max(1, round(width * factor)))
    out = torch.empty_like(images)
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size].float() / 255  # (B, c, H, W)
        x = F.interpolate(x, size=small, mode="bilinear", align_corners=False, antialias=True)
        x = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)
        out[start : start + batch_size] = (x * 255).round().clamp(0, 255).to(torch.uint8)
    return out


def _prunable(model: nn.Module) -> list[tuple[nn.Module, str]]:
    return [(module, "weight") for module in model.modules() if isinstance(module, (nn.Conv2d, nn.Linear))]


def prune_global(model: nn.Module, amount: float = 0.5) -> nn.Module:
    """A copy of ``model`` with the ``amount`` smallest-magnitude weights of all its convolutions and linear
    layers together (the classifier included; biases and batch norms kept) set to zero, for good
    (``torch.nn.utils.prune.global_unstructured`` with L1 magnitude, then ``prune.remove``)."""
    from torch.nn.utils import prune

    if not 0 < amount < 1:
        raise ConfigError(f"pruning amount must be in (0, 1), got {amount!r}")
    pruned = copy.deepcopy(model)
    targets = _prunable(pruned)
    if not targets:
        raise ConfigError("the model has no nn.Conv2d or nn.Linear weights to prune")
    prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=float(amount))
    for module, name in targets:
        prune.remove(module, name)
    return pruned.eval()


def quantize_int8(model: nn.Module) -> nn.Module:
    """A CPU copy of ``model`` with its ``nn.Linear`` layers dynamically quantized to int8
    (``torch.ao.quantization.quantize_dynamic``: int8 weights, activations quantized on the fly). Convolutions
    have no dynamic int8 kernel and stay float, so on the built-in CNNs this quantizes the classifier, which is
    where both tests look. Runs on CPU only (the quantized kernels are CPU kernels)."""
    from torch.ao.quantization import quantize_dynamic

    source = copy.deepcopy(model).cpu().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # eager-mode quantization is deprecated in favour of torchao
        return quantize_dynamic(source, {nn.Linear}, dtype=torch.qint8)


def dequantized(model: nn.Module) -> nn.Module:
    """What the white-box test reads of a dynamically quantized model: a copy whose int8 linear layers are
    float ``nn.Linear`` layers holding the dequantized int8 weights (scale x (q - zero point)) and the float
    bias. The white-box test needs an ``nn.Linear`` classifier; these are exactly the weights the quantized
    model multiplies by. ``model`` itself when nothing in it is quantized."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    if not any(isinstance(m, DynamicLinear) for m in model.modules()):
        return model
    out = copy.deepcopy(model)
    for name, module in list(out.named_modules()):
        if isinstance(module, DynamicLinear):
            weight = module.weight().dequantize()  # (out, in) float32
            bias = module.bias()
            linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
            with torch.no_grad():
                linear.weight.copy_(weight)
                if bias is not None:
                    linear.bias.copy_(bias)
            parent_name, _, child = name.rpartition(".")
            setattr(out.get_submodule(parent_name) if parent_name else out, child, linear)
    return out.eval()


def clean_pool(context: Context, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The clean images the trainer has at every fraction of the grid (seed ``seed``): the owner split less
    the largest fraction's marked subset (never the held-out split). Fine-tuning and distillation use it,
    so the 0 % control is treated with the same images as the marked runs."""
    images, labels = context.data["owner"]
    marked = context.marked_subset(seed, max(context.config.fractions))[0]
    keep = torch.ones(len(labels), dtype=torch.bool)
    keep[marked] = False
    return images[keep], labels[keep]


# -- one treatment in a run ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Treatment:
    """One treatment: ``kind`` (``none``, ``jpeg``, ``downscale``, ``finetune``, ``prune``, ``quantize``,
    ``distill``) and its ``params`` (defaults filled in): ``quality`` (jpeg, 1-100), ``factor`` (downscale,
    in (0, 1)), ``amount`` (prune, in (0, 1)), ``recipe`` (finetune, distill: TrainRecipe fields over the
    experiment's ``[train]``), ``arch`` and ``kwargs`` (distill: the student). ``name`` labels the rows.

    Examples:
        >>> Treatment("jpeg", {"quality": 90}).name, Treatment("prune").params
        ('jpeg-q90', {'amount': 0.5})
    """

    kind: str = "none"
    params: dict[str, Any] = field(default_factory=dict)
    name: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"unknown treatment {self.kind!r}; choose from {list(KINDS)}")
        defaults = _DEFAULTS[self.kind]
        unknown = sorted(set(self.params) - set(defaults))
        if unknown:
            raise ConfigError(f"unknown parameters {unknown} of treatment {self.kind!r}; valid: {sorted(defaults)}")
        params = {**copy.deepcopy(defaults), **self.params}
        object.__setattr__(self, "params", params)
        quality = params.get("quality", 75)
        if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
            raise ConfigError(f"jpeg quality must be an integer in [1, 100], got {quality!r}")
        for key in ("factor", "amount"):
            if key in params and (isinstance(params[key], bool) or not isinstance(params[key], int | float)
                                  or not 0 < params[key] < 1):
                raise ConfigError(f"{self.kind} {key} must be in (0, 1), got {params[key]!r}")
        if "recipe" in params:
            self.recipe({})  # validates the fields
        if not self.name:
            object.__setattr__(self, "name", _LABELS.get(self.kind, lambda _: self.kind)(params))

    @property
    def stage(self) -> str:
        """``published`` (changes the training images), ``model`` (changes the trained suspect) or ``none``."""
        return "published" if self.kind in PUBLISH_KINDS else "model" if self.kind in MODEL_KINDS else "none"

    def recipe(self, train: dict[str, Any]) -> TrainRecipe:
        """The fine-tuning or distillation recipe: the experiment's ``train`` settings, then ``params['recipe']``."""
        mode = "finetune" if self.kind == "finetune" else "distill"
        return TrainRecipe.from_dict({**train, **self.params["recipe"], "mode": mode})

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "params": copy.deepcopy(self.params), "name": self.name}

    def publish(self, images: torch.Tensor) -> torch.Tensor:
        """The published uint8 images ``(N, c, H, W)`` as the trainer receives them."""
        if self.kind == "jpeg":
            return jpeg_reencode(images, self.params["quality"])
        if self.kind == "downscale":
            return downscale_and_back(images, self.params["factor"])
        return images

    def apply(self, model: nn.Module, context: Context, seed: int) -> nn.Module:
        """The suspect of grid seed ``seed`` after the treatment (a new module; ``model`` is left as it is).
        Fine-tuning and distillation train on :func:`clean_pool` with the seed ``derive_seed("treatment", seed)``."""
        if self.kind == "prune":
            return prune_global(model, self.params["amount"])
        if self.kind == "quantize":
            return quantize_int8(model)
        if self.kind not in ("finetune", "distill"):
            return model
        images, labels = clean_pool(context, seed)
        recipe = self.recipe(context.config.train)
        own_seed = derive_seed("treatment", seed)
        if self.kind == "finetune":
            return fit(model, images, labels, recipe=recipe, seed=own_seed, device=context.device,
                       num_classes=context.num_classes).model
        student = make_spec(self.params["arch"], context.num_classes, images, kwargs=self.params["kwargs"])
        return fit(student, images, labels, recipe=recipe, seed=own_seed, teacher=model, device=context.device,
                   num_classes=context.num_classes).model

    def weights(self, model: nn.Module) -> nn.Module:
        """The network the white-box test reads: the model itself, or its :func:`dequantized` copy."""
        return dequantized(model) if self.kind == "quantize" else model

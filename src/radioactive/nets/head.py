"""Head resolution: a classifier as *features + final linear head*.

``split_head`` finds a model's final linear layer (an explicit name, timm's ``get_classifier()``, else the
last ``nn.Linear`` run in a dry forward pass), captures that layer's input with a forward pre-hook, and
checks that ``head(features)`` reproduces the logits, so every detector works on any architecture.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import HeadResolutionError


@dataclass
class FeatureSplit:
    """A classifier split into ``features(x) -> (N, d)`` and its final linear layer ``head``.

    ``head_name`` is the module's dotted name in ``model``. Calling ``features`` runs the whole model and
    captures the head's input (so it works for any topology), in the model's current mode.
    """

    model: nn.Module
    head: nn.Linear
    head_name: str

    @property
    def feature_dim(self) -> int:
        return self.head.in_features

    @property
    def num_classes(self) -> int:
        return self.head.out_features

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        captured: list[torch.Tensor] = []

        def hook(_module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            captured.append(inputs[0])

        handle = self.head.register_forward_pre_hook(hook)
        try:
            logits = self.model(x)
        finally:
            handle.remove()
        if not captured:
            raise HeadResolutionError(f"the head {self.head_name!r} did not run in the forward pass; pass head=")
        feats = captured[-1]
        return feats.reshape(-1, feats.shape[-1]) if feats.dim() > 2 else feats, logits

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features_and_logits(x)[0]

    def weight(self) -> torch.Tensor:
        """Head weights ``(C, d)`` as float64 on CPU."""
        return self.head.weight.detach().to("cpu", torch.float64)

    def bias(self) -> torch.Tensor | None:
        return None if self.head.bias is None else self.head.bias.detach().to("cpu", torch.float64)


def _named(model: nn.Module, target: nn.Module) -> str:
    for name, module in model.named_modules():
        if module is target:
            return name
    return "<unnamed>"


def split_head(
    model: nn.Module,
    example: torch.Tensor,
    *,
    head: str | None = None,
    atol: float = 1e-4,
) -> FeatureSplit:
    """Find ``model``'s final linear layer and check that it maps the captured features to the logits.

    Args:
        model: any classifier ``(N, ...) -> (N, C)``.
        example: a small batch of valid inputs (used for the dry forward pass and the check).
        head: dotted module name of the final linear layer, to override the automatic search.
        atol: tolerance (relative to the logits' scale) of the reproduction check.

    Raises:
        HeadResolutionError: no linear head, a wrong ``head`` name, or a head that does not produce the
            logits (e.g. a layer after it); the message says to pass ``head=``.
    """
    modules = dict(model.named_modules())
    if head is not None:
        if head not in modules:
            linear = [name for name, mod in modules.items() if isinstance(mod, nn.Linear)]
            raise HeadResolutionError(f"no module named {head!r} in the model; its linear layers are {linear}")
        layer = modules[head]
        if not isinstance(layer, nn.Linear):
            raise HeadResolutionError(f"module {head!r} is a {type(layer).__name__}, not nn.Linear; pass head=")
        name = head
    else:
        layer = None
        getter = getattr(model, "get_classifier", None)
        if callable(getter):
            candidate = getter()
            if isinstance(candidate, nn.Linear):
                layer = candidate
        if layer is None:
            order: list[nn.Linear] = []
            hooks = [
                mod.register_forward_pre_hook(lambda m, _inp: order.append(m))
                for mod in modules.values()
                if isinstance(mod, nn.Linear)
            ]
            was_training = model.training
            model.eval()
            try:
                with torch.no_grad():
                    model(example)
            finally:
                for hook in hooks:
                    hook.remove()
                model.train(was_training)
            if not order:
                raise HeadResolutionError("the model runs no nn.Linear layer; pass head= with its classifier's name")
            layer = order[-1]
        name = _named(model, layer)
    split = FeatureSplit(model=model, head=layer, head_name=name)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            feats, logits = split.features_and_logits(example)
            if logits.dim() != 2:
                raise HeadResolutionError(f"the model returns shape {tuple(logits.shape)}, expected (N, classes)")
            again = layer(feats)
    finally:
        model.train(was_training)
    scale = logits.abs().max().clamp_min(1.0)
    if again.shape != logits.shape or not torch.allclose(again, logits, atol=atol * float(scale), rtol=1e-3):
        raise HeadResolutionError(
            f"the layer {name!r} does not reproduce the model's logits (something runs after it); "
            "pass head= with the name of the final linear layer"
        )
    return split

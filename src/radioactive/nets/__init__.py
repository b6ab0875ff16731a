"""Classifiers as *features + final linear head*.

- :mod:`.archs`: built-in CPU-scale architectures, torchvision/timm by name, :class:`NetSpec`, :func:`make_spec`.
- :mod:`.head`: :func:`split_head` finds a model's final linear layer and checks it reproduces the logits.
- :mod:`.checkpoint`: the weight hash, checkpoints (safetensors + JSON spec), safe loading of suspects.
- :mod:`.user`: architectures from the user's own code (``module:callable``), which building runs.

Import direction: ``user`` <- ``archs`` <- ``head``, ``archs`` <- ``checkpoint``. The names below are the public ones.
"""

from __future__ import annotations

from .archs import ARCHITECTURES, NetSpec, Normalize, build_from_spec, build_model, make_spec, parse_arch
from .checkpoint import (
    ExportedModel,
    is_torchscript,
    load_checkpoint,
    load_state_dict_file,
    load_suspect,
    save_checkpoint,
    state_dict_sha256,
)
from .head import FeatureSplit, split_head

__all__ = [
    "ARCHITECTURES",
    "NetSpec",
    "Normalize",
    "build_model",
    "build_from_spec",
    "make_spec",
    "parse_arch",
    "split_head",
    "FeatureSplit",
    "state_dict_sha256",
    "save_checkpoint",
    "load_checkpoint",
    "load_state_dict_file",
    "load_suspect",
    "is_torchscript",
    "ExportedModel",
]

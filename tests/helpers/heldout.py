"""The held-out suite's scripts (``heldout/``, outside the package: the third party and the auditor) as modules.

``heldout/`` goes first on ``sys.path`` (its scripts import ``archs`` by name, as they do when run);
``train``, ``run_suite`` and ``table`` load as ``heldout_<name>``, the names ``run_suite`` gives them too."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[2]
HELDOUT = ROOT / "heldout"


def load(name: str) -> ModuleType:
    """``heldout/<name>.py`` as a module (``archs`` under its own name, the others as ``heldout_<name>``)."""
    if str(HELDOUT) not in sys.path:
        sys.path.insert(0, str(HELDOUT))
    if name == "archs":
        return importlib.import_module("archs")
    module_name = f"heldout_{name}"
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, HELDOUT / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return sys.modules[module_name]


def suite_config() -> dict[str, Any]:
    """``heldout/suite.toml`` as committed."""
    return tomllib.loads((HELDOUT / "suite.toml").read_text())


def write_images(path: Path, count: int, seed: int) -> Path:
    """A safetensors file of ``count`` random uint8 28 x 28 grey images with labels cycling through 10 classes."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (count, 1, 28, 28), dtype=torch.uint8, generator=gen)
    save_file({"images": images, "labels": torch.arange(count, dtype=torch.int64) % 10}, str(path))
    return path

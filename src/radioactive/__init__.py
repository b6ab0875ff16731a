"""radioactive: mark an image dataset with a secret key, then test whether a model was trained on it.

Implements *Radioactive data: tracing through training* (Sablayrolles et al., ICML 2020) with exactly
calibrated white-box and black-box tests. Public names are imported lazily so that ``import radioactive``
stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Key": "key",
    "MarkerInfo": "key",
    "Marker": "marker",
    "NetSpec": "nets",
    "split_head": "nets",
    "load_suspect": "nets",
    "MarkConfig": "mark",
    "MarkResult": "mark",
    "mark": "mark",
    "whitebox": "detect",
    "blackbox": "detect",
    "Verdict": "detect",
    "ClassScore": "detect",
    "RadioactiveError": "errors",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(f".{_EXPORTS[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module 'radioactive' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__

"""radioactive: mark an image dataset with a secret key, then test whether a model was trained on it.

Implements *Radioactive data: tracing through training* (Sablayrolles et al., ICML 2020) with exactly
calibrated white-box and black-box tests.
"""

from __future__ import annotations

__version__ = "0.1.0"

# Imported eagerly: the submodule ``radioactive.mark`` and the function ``mark`` share a name, and a lazy
# attribute would be shadowed by the submodule as soon as anything imports it.
from .detect import ClassScore, Probes, Verdict, blackbox, whitebox  # noqa: E402
from .errors import RadioactiveError  # noqa: E402
from .key import Key, MarkerInfo  # noqa: E402
from .mark import MarkConfig, MarkResult, mark  # noqa: E402
from .marker import Marker  # noqa: E402
from .nets import NetSpec, load_suspect, split_head  # noqa: E402

__all__ = [
    "ClassScore",
    "Key",
    "MarkConfig",
    "MarkResult",
    "Marker",
    "MarkerInfo",
    "NetSpec",
    "Probes",
    "RadioactiveError",
    "Verdict",
    "__version__",
    "blackbox",
    "load_suspect",
    "mark",
    "split_head",
    "whitebox",
]

"""radioactive: mark an image dataset with a secret key, then test whether a model was trained on it.

Implements *Radioactive data: tracing through training* (Sablayrolles et al., ICML 2020) with exactly
calibrated white-box and black-box tests.
"""

from __future__ import annotations

__version__ = "0.1.0"

# Imported eagerly: the submodule ``radioactive.mark`` and the function ``mark`` share a name, and a lazy
# attribute would be shadowed by the submodule as soon as anything imports it.
from .detect import (  # noqa: E402
    BlackboxSettings,
    ClassScore,
    Probes,
    Verdict,
    WhiteboxSettings,
    blackbox,
    whitebox,
)
from .errors import RadioactiveError  # noqa: E402
from .fmnist import fashion_mnist_splits  # noqa: E402
from .key import Key, MarkerInfo  # noqa: E402
from .mark import MarkConfig, MarkResult, mark  # noqa: E402
from .marker import Marker  # noqa: E402
from .publish import mark_dataset  # noqa: E402
from .sources import load_labelled, open_source  # noqa: E402
from .twins import TwinSecret, mark_twins  # noqa: E402
from .zoo import default_marker  # noqa: E402

__all__ = [
    "BlackboxSettings",
    "ClassScore",
    "Key",
    "MarkConfig",
    "MarkResult",
    "Marker",
    "MarkerInfo",
    "Probes",
    "RadioactiveError",
    "TwinSecret",
    "Verdict",
    "WhiteboxSettings",
    "__version__",
    "blackbox",
    "default_marker",
    "fashion_mnist_splits",
    "load_labelled",
    "mark",
    "mark_dataset",
    "mark_twins",
    "open_source",
    "whitebox",
]

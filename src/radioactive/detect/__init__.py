"""Detection tests: white-box (weights) and black-box (outputs only), both returning a :class:`Verdict`."""

from __future__ import annotations

from .verdict import ClassScore, Verdict, format_p
from .whitebox import align, random_key, whitebox

__all__ = ["ClassScore", "Verdict", "align", "format_p", "random_key", "whitebox", "blackbox", "Probes"]


def __getattr__(name: str):
    if name in ("blackbox", "Probes"):
        from . import blackbox as _blackbox

        return getattr(_blackbox, name)
    raise AttributeError(f"module 'radioactive.detect' has no attribute {name!r}")

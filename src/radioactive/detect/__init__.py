"""Detection tests: white-box (weights) and black-box (outputs only), both returning a :class:`Verdict`.

Modules, in import order: ``settings`` (the options), ``common``, ``verdict``, ``null`` (random-key trials);
weights: ``white_box``, ``gradient``; outputs: ``probes`` -> ``observations`` -> ``combine`` -> ``black_box``,
and ``published`` (probes and marking settings from the output folder of ``radioactive mark``).
"""

from __future__ import annotations

from .black_box import blackbox
from .probes import Probes
from .settings import BlackboxSettings, WhiteboxSettings
from .verdict import ClassScore, Verdict, format_p
from .white_box import align, whitebox

__all__ = [
    "BlackboxSettings",
    "ClassScore",
    "Probes",
    "Verdict",
    "WhiteboxSettings",
    "align",
    "blackbox",
    "format_p",
    "whitebox",
]

"""Detection tests: white-box (weights) and black-box (outputs only), both returning a :class:`Verdict`.

Modules, in import order: ``settings`` (the options), ``common``, ``verdict``, ``null`` (random-key trials);
weights: ``white_box``, ``gradient``; outputs: ``probes`` -> ``observations`` -> ``combine`` -> ``black_box``,
and ``published`` (probes and marking settings from the output folder of ``radioactive mark``); the paired-twin
secret-coin test: ``twins`` (``twins_test``, and ``fisher_combine`` with a carrier-level verdict).
"""

from __future__ import annotations

from .black_box import blackbox
from .probes import Probes
from .settings import BlackboxSettings, WhiteboxSettings
from .twins import TwinPairs, fisher_combine, published_pairs, twin_pairs, twins_test
from .verdict import ClassScore, Verdict, format_p
from .white_box import align, whitebox

__all__ = [
    "BlackboxSettings",
    "ClassScore",
    "Probes",
    "TwinPairs",
    "Verdict",
    "WhiteboxSettings",
    "align",
    "blackbox",
    "fisher_combine",
    "format_p",
    "published_pairs",
    "twin_pairs",
    "twins_test",
    "whitebox",
]

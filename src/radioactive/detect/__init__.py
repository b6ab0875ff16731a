"""Detection tests: white-box (weights) and black-box (outputs only), both returning a :class:`Verdict`.

Modules, in import order: ``settings`` (the options), ``common``, ``verdict``, ``null`` (random-key trials);
weights: ``white_box``, ``gradient``; outputs: ``probes`` -> ``observations`` -> ``combine`` -> ``black_box``,
and ``published`` (probes and marking settings from the output folder of ``radioactive mark``); the paired-twin
secret-coin test: ``twins`` (``twins_test``, and ``fisher_combine`` with a carrier-level verdict); several keys on one
suspect with Holm's step-down across them: ``keys`` (``detect_keys``, ``whitebox_keys``, ``blackbox_keys``).
"""

from __future__ import annotations

from .black_box import blackbox
from .keys import KeyFamily, blackbox_keys, detect_keys, holm_adjust, whitebox_keys
from .probes import Probes
from .settings import BlackboxSettings, WhiteboxSettings
from .twins import TwinPairs, fisher_combine, published_pairs, twin_pairs, twins_test
from .verdict import ClassScore, Verdict, format_p
from .white_box import align, whitebox

__all__ = [
    "BlackboxSettings",
    "ClassScore",
    "KeyFamily",
    "Probes",
    "TwinPairs",
    "Verdict",
    "WhiteboxSettings",
    "align",
    "blackbox",
    "blackbox_keys",
    "detect_keys",
    "fisher_combine",
    "format_p",
    "holm_adjust",
    "published_pairs",
    "twin_pairs",
    "twins_test",
    "whitebox",
    "whitebox_keys",
]

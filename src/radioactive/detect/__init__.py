"""Detection tests: white-box (weights) and black-box (outputs only), both returning a :class:`Verdict`."""

from __future__ import annotations

from .black_box import Probes, blackbox
from .verdict import ClassScore, Verdict, format_p
from .white_box import align, random_key, whitebox

__all__ = ["ClassScore", "Probes", "Verdict", "align", "blackbox", "format_p", "random_key", "whitebox"]

"""Toy data and marker for the experiment runner and the demo: four classes of 16 x 16 grey images, each a
bright square in its own quadrant (see :func:`helpers.tiny.quadrant_images`)."""

from __future__ import annotations

import pytest
import torch
from helpers.tiny import TINY_CNN, quadrant_images, tiny_marker, tiny_spec

from radioactive.marker import Marker


def toy_splits(seed: int = 0) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``owner`` (80), ``holdout`` (40) and ``test`` (24) splits: uint8 (N, 1, 16, 16) images, int64 labels."""
    gen = torch.Generator().manual_seed(seed)  # one stream for the three splits, in this order
    return {name: quadrant_images(num, gen, brightness=0.6) for name, num in (("owner", 80), ("holdout", 40),
                                                                              ("test", 24))}


@pytest.fixture()
def toy_data() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """:func:`toy_splits` with seed 0."""
    return toy_splits()


@pytest.fixture()
def toy_marker() -> Marker:
    """A 4-class marker for the toy images (``cnn`` with :data:`helpers.tiny.TINY_CNN`, seed 0), built without
    touching torch's global generator."""
    with torch.random.fork_rng():
        return tiny_marker(tiny_spec(4, 16, **TINY_CNN))

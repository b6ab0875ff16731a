"""Fixtures shared across the test areas. The areas mirror src/radioactive:

- ``data/``: data, sources, fmnist, _lists (one reader, lists, named splits)
- ``marking/``: mark, _optimise, augment, publish, manifest
- ``nets/``: nets/, marker, zoo;  ``keys/``: key (and secrets);  ``train/``: train/
- ``detect/``: detect/, endpoint;  ``report/``: report;  ``stats/``: stats
- ``experiment/``: experiment/, demo;  ``cli/``: cli/ (commands end to end)
- ``package/``: the public API, the wheel, _io, fuzzing of every parser
- ``heldout/``: the held-out suite's scripts (``heldout/`` at the repository root, outside the package)

Plain helper modules live in ``helpers/`` (``pythonpath = ["tests"]`` in pyproject.toml makes them
importable as ``helpers.<module>``). The builders behind these fixtures are in ``helpers/tiny.py``, for tests
that need another size or seed than the fixtures give."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.kill_resume import make_setup
from helpers.tiny import save_tiny_marker, tiny_spec

from radioactive.marker import Marker


@pytest.fixture()
def tiny_marker_file(tmp_path) -> tuple[Marker, Path]:
    """A 10-class marker for 28 x 28 grey images (``cnn``, width 4, 16 features, seed 0) saved as
    ``tmp_path/marker.safetensors``; returns the loaded marker and its path."""
    path = save_tiny_marker(tmp_path / "marker.safetensors", tiny_spec(10, feature_dim=16))
    return Marker.from_checkpoint(path), path


@pytest.fixture()
def mark_setup(tmp_path) -> tuple[Path, Path]:
    """What ``radioactive mark`` needs, in ``tmp_path``: ``marker.safetensors`` (3 classes, 16 x 16),
    ``key.safetensors`` (keygen seed 3) and ``src/`` (ant, bee, cow: four 16 x 16 PNGs and one 18 x 20 JPEG
    each, tree seed 0). Returns (tmp_path, src)."""
    _, src = make_setup(tmp_path, per_class=4, tree_seed=0)
    return tmp_path, src

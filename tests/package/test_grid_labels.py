"""docs/results.md's grid tables name each black-box column from the grid's own configuration: the Fashion-MNIST
grid's (margin, rank, one reference) keeps its labels; the composite grids' (margin, perm, references matched
to the suspect) say so."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def _grids():
    if str(SCRIPTS) not in sys.path:
        sys.path.insert(0, str(SCRIPTS))
    return importlib.import_module("results_tables.grids")


def test_black_box_columns_follow_the_grids_configuration():
    grids = _grids()
    fmnist = {"statistic": "margin", "combine": "rank", "reference_model": True}
    assert grids.test_label("blackbox", fmnist) == "black-box margin, rank"
    assert grids.test_label("blackbox-margin-perm", fmnist) == "black-box margin, perm"
    composite = {"statistic": "margin", "combine": "perm", "reference_fit": "matched", "reference_model": True}
    assert grids.test_label("blackbox", composite) == "black-box margin, perm, matched refs"
    assert grids.test_label("blackbox-loss-perm", composite) == "black-box loss, perm, matched refs"
    assert grids.test_label("blackbox-margin-perm-mean", composite) == "black-box margin, perm, mean of refs"
    assert grids.test_label("whitebox", composite) == "white-box (paper)"

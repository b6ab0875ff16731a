"""Experiments: a grid of fraction marked x training setting (mode, architecture) x seed, as a loop over the
public API (``mark`` -> ``fit`` -> ``whitebox`` / ``blackbox``).

Every run is named by the hash of its resolved configuration and writes one JSON record; a rerun skips the
records already written, so an interrupted grid resumes. Expensive shared pieces are cached by hash too: the
marked images of a seed (marked once for the largest fraction; smaller fractions use nested subsets), the
auditor's clean reference model, and the black-box control markings of the probes.

Seeds vary everything random in a run: the key (carriers are the unit of randomness of the tests), the
marked subset, the marking and the training; :func:`derive_seed` names each purpose's seed.

Modules, in import order: ``identity`` (run ids, cache keys, seeds), ``config`` (the settings and their
files), ``twins`` (twin marking and the paired-twin test, ``[twins]``), ``context`` (data, marker, keys,
marked subsets, caches), ``aggregate`` (tables and plot), ``run`` (one run, the grid, the dry run).
"""

from __future__ import annotations

from .aggregate import aggregate, load_records, markdown_table, plot
from .config import (
    DetectSettings,
    ExperimentConfig,
    ModelSetting,
    TwinSettings,
    config_from_dict,
    load_config,
    replace_config,
)
from .context import Context
from .identity import derive_seed
from .run import RunSpec, dry_run, expand_grid, run_experiment, run_one

__all__ = [
    "ModelSetting",
    "DetectSettings",
    "TwinSettings",
    "ExperimentConfig",
    "RunSpec",
    "load_config",
    "config_from_dict",
    "replace_config",
    "expand_grid",
    "run_experiment",
    "run_one",
    "dry_run",
    "aggregate",
    "load_records",
    "markdown_table",
    "plot",
    "derive_seed",
    "Context",
]

"""The committed Fashion-MNIST grid stays addressable: every run id of configs/fashion-mnist.toml is the
name of a committed record under results/fashion-mnist/runs/, and the configuration dicts the ids hash are
byte for byte those the records were produced with. A change to any config dataclass's ``to_dict()`` (a
renamed field, a new default) or to the run-id hash would orphan all 54 records; this test catches it."""

import json
from pathlib import Path

import pytest

from radioactive.errors import ConfigError
from radioactive.experiment import Context, derive_seed, expand_grid, load_config

ROOT = Path(__file__).resolve().parents[2]
GRID = ROOT / "results" / "fashion-mnist"


def _records() -> dict[str, dict]:
    return {path.stem: json.loads(path.read_text()) for path in sorted((GRID / "runs").glob("*.json"))}


def _json(obj):
    # The records went through JSON: compare like with like (tuples become lists).
    return json.loads(json.dumps(obj, sort_keys=True))


@pytest.fixture(scope="module")
def grid():
    if not (GRID / "runs").is_dir():
        pytest.skip("results/fashion-mnist/runs not present")
    config = load_config(ROOT / "configs" / "fashion-mnist.toml")
    return config, expand_grid(config), _records()


def test_every_run_id_names_a_committed_record(grid):
    config, runs, records = grid
    assert len(runs) == 54 and len(records) == 54
    assert len({r.run_id for r in runs}) == 54
    assert {r.run_id for r in runs} == set(records)
    for spec in runs:
        record = records[spec.run_id]
        assert record["run_id"] == spec.run_id
        assert (record["fraction"], record["model"], record["seed"]) == (spec.fraction, spec.model.name, spec.seed)


def test_config_dicts_are_unchanged(grid):
    config, runs, records = grid
    committed = json.loads((GRID / "config.json").read_text())
    assert _json(config.to_dict()) == committed
    for spec in runs:
        assert _json(spec.to_dict()) == records[spec.run_id]["config"]


def test_seed_derivations_are_the_ones_the_grid_used():
    # The committed records were produced with these formulas (the code before derive_seed existed).
    for seed in (0, 1, 2, 7):
        assert derive_seed("key", seed) == 1_000_003 * seed + 17
        assert derive_seed("selection", seed) == 7_919 * seed + 3
        assert derive_seed("marking", seed) == derive_seed("training", seed) == seed
    assert (derive_seed("holdout"), derive_seed("train_subset"), derive_seed("reference_model")) == (0, 1, 99_991)
    with pytest.raises(ConfigError, match="unknown seed purpose 'keys'"):
        derive_seed("keys", 0)
    with pytest.raises(ConfigError, match="per run: pass the grid seed"):
        derive_seed("key")
    with pytest.raises(ConfigError, match="experiment-wide: pass no grid seed"):
        derive_seed("reference_model", 0)


def test_keys_are_the_committed_runs_keys(grid, tmp_path):
    """The key of each grid seed, drawn with the shipped marker, is the key the committed runs were tested with."""
    config, _, records = grid
    context = Context(config, tmp_path)
    keys = {seed: context.key(seed).fingerprint for seed in config.seeds}
    assert len(set(keys.values())) == 3
    assert all(record["key_fingerprint"] == keys[record["seed"]] for record in records.values())

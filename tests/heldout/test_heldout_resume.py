"""The held-out suite's runner: the runs it plans, resuming (records that exist are skipped), --only and
--max-runs, nested marked subsets marked once per seed, and keys that are not the grid's."""

from __future__ import annotations

import json
import stat

import pytest
import torch
from helpers.heldout import HELDOUT, load

from radioactive import Key
from radioactive.experiment.identity import derive_seed


@pytest.fixture(scope="module")
def runner():
    module = load("run_suite")
    return module, module.load_config(HELDOUT / "suite.toml")


class StubSuite:
    """Records which runs it was asked for instead of marking, training and testing."""

    def __init__(self):
        self.calls = []

    def run_one(self, run):
        self.calls.append((run["pair"]["name"], run["fraction"], run["seed"]))
        return {"log10_p": {"whitebox": -0.1}, "test_accuracy": 0.9, "seconds": {"total": 0.0}}

    def marked(self, seed, fraction):
        self.calls.append(("marked", fraction, seed))
        return torch.zeros(0, dtype=torch.long), torch.zeros(0), torch.zeros(0)

    def train(self, run, indices, marked):
        self.calls.append(("train", run["pair"]["name"], run["fraction"], run["seed"]))
        return None, {"test_accuracy": 0.9}


def test_the_plan_runs_seed_zero_of_every_pair_first_and_the_deep_pairs_in_full(runner):
    run_suite, config = runner
    runs = run_suite.expand(config)
    assert len(runs) == 32 and len({run_suite.run_id(config, r) for r in runs}) == 32
    head = runs[: 2 * len(config["pairs"])]
    assert {(r["fraction"], r["seed"]) for r in head} == {(0.0, 0), (0.1, 0)}
    for pair in config["pairs"]:
        mine = {(r["fraction"], r["seed"]) for r in runs if r["pair"]["name"] == pair["name"]}
        expected = {(f, s) for f in (0.0, 0.05, 0.1, 0.2) for s in (0, 1, 2)} if pair.get("deep") else {(0.0, 0), (0.1, 0)}
        assert mine == expected, pair["name"]


def test_records_that_exist_are_skipped_and_max_runs_stops(runner, tmp_path):
    run_suite, config = runner
    runs = run_suite.expand(config)
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / f"{run_suite.run_id(config, runs[0])}.json").write_text("{}")
    stub = StubSuite()
    written = run_suite.run_suite(config, tmp_path, suite=stub, max_runs=2)
    assert stub.calls == [(r["pair"]["name"], r["fraction"], r["seed"]) for r in runs[1:3]]
    assert [p.name for p in written] == [f"{run_suite.run_id(config, r)}.json" for r in runs[1:3]]
    assert json.loads(written[0].read_text())["test_accuracy"] == 0.9

    again = StubSuite()
    run_suite.run_suite(config, tmp_path, suite=again, only=["convmixer-mixup_ema"], max_runs=1)
    first = next(r for r in runs[3:] if r["pair"]["name"] == "convmixer-mixup_ema")
    assert again.calls == [("convmixer-mixup_ema", first["fraction"], first["seed"])]
    with pytest.raises(SystemExit, match="unknown pairs"):
        run_suite.run_suite(config, tmp_path, suite=StubSuite(), only=["vgg-sgdd"])


def test_train_only_trains_every_suspect_and_tests_none(runner, tmp_path):
    run_suite, config = runner
    runs = run_suite.expand(config)
    stub = StubSuite()
    written = run_suite.run_suite(config, tmp_path, suite=stub, train_only=True)
    assert written == [] and not (tmp_path / "runs").exists()
    assert [c for c in stub.calls if c[0] == "train"] == [("train", r["pair"]["name"], r["fraction"], r["seed"])
                                                          for r in runs]
    assert not [c for c in stub.calls if c[0] not in ("train", "marked")]  # run_one (the tests) never called


def test_subsets_are_nested_marked_once_per_seed_with_keys_of_the_suites_own(runner, tmp_path, tiny_marker_file,
                                                                             monkeypatch):
    run_suite, config = runner
    config = {**config, "mark": {**config["mark"], "steps": 3}}  # fewer steps, same floor: a quicker test
    marker, _ = tiny_marker_file
    suite = run_suite.Suite(config, tmp_path)
    labels = torch.arange(300) % 10
    images = torch.randint(0, 256, (300, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    suite._data, suite._marker = {"owner": (images, labels)}, marker

    chosen = {f: suite.selection(0, f) for f in (0.05, 0.1, 0.2)}
    assert set(chosen[0.05].tolist()) < set(chosen[0.1].tolist()) < set(chosen[0.2].tolist())
    assert torch.bincount(labels[chosen[0.1]]).tolist() == [3] * 10
    assert not torch.equal(suite.selection(1, 0.1), chosen[0.1])

    top, top_images, top_psnr = suite.marked(0, 0.2)
    monkeypatch.setattr(run_suite, "mark", lambda *a, **k: pytest.fail("marked twice"))
    small, small_images, small_psnr = suite.marked(0, 0.05)
    assert torch.equal(top, chosen[0.2]) and torch.equal(small, chosen[0.05])
    rows = [top.tolist().index(i) for i in small.tolist()]
    assert torch.equal(small_images, top_images[rows]) and torch.equal(small_psnr, top_psnr[rows])
    assert float(top_psnr.min()) >= config["mark"]["min_psnr"] and not torch.equal(top_images, images[top])

    for seed in (0, 1, 2):
        assert run_suite.seed_of(config, "key", seed) != derive_seed("key", seed)
    key = suite.key(0)
    assert key.fingerprint != Key.generate(marker.info, seed=derive_seed("key", 0)).fingerprint
    saved = next((tmp_path / "cache" / "keys").glob("seed-0-*.key"))
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600 and Key.load(saved).fingerprint == key.fingerprint

"""The held-out suite's third-party training script: one step of every configured (arch, recipe) on tiny
synthetic data writes a loadable model whose head radioactive's white-box code finds; the suite's settings."""

from __future__ import annotations

import ast
import json
import math

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

import pytest
import torch
from helpers.heldout import HELDOUT, ROOT, load, suite_config, write_images
from safetensors.torch import load_file
from torch.utils.flop_counter import FlopCounterMode

from radioactive import Key, WhiteboxSettings, whitebox
from radioactive.nets import split_head
from radioactive.nets.archs import SmallCNN

PAIRS = suite_config()["pairs"]


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("heldout-data")
    return write_images(folder / "train.safetensors", 40, seed=0), write_images(folder / "test.safetensors", 20, seed=1)


@pytest.mark.parametrize("pair", PAIRS, ids=[p["name"] for p in PAIRS])
def test_one_step_writes_a_model_whose_head_the_whitebox_finds(pair, tiny_files, tiny_marker_file, tmp_path):
    train, archs = load("train"), load("archs")
    data, test = tiny_files
    out = tmp_path / "model.safetensors"
    record = train.main(["--arch", pair["arch"], "--recipe", pair["recipe"], "--data", str(data), "--test", str(test),
                         "--epochs", "1", "--seed", "3", "--out", str(out), "--max-steps", "1", "--threads", "1"])
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar == json.loads(json.dumps(record))
    assert (sidecar["steps"], sidecar["seed"], sidecar["recipe"], sidecar["train_images"]) == (1, 3, pair["recipe"], 40)
    assert 0 <= sidecar["test_accuracy"] <= 1 and sidecar["ema"] == (pair["recipe"] == "mixup_ema")

    model = archs.build(pair["arch"])
    torch.manual_seed(3)
    initial = archs.build(pair["arch"]).state_dict()
    state = load_file(str(out))
    model.load_state_dict(state)  # strict: every saved tensor is one of the network's, and none is missing
    assert any(not torch.equal(state[name], initial[name]) for name in initial)  # the step changed the weights
    model.eval()
    images = torch.rand(300, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    assert split_head(model, images[:4]).head_name == "head"
    marker, _ = tiny_marker_file
    verdict = whitebox(model, Key.generate(marker.info, seed=0), images, marker=marker,
                       settings=WhiteboxSettings(alignment="lstsq"))
    assert verdict.alignment["head"] == "head" and verdict.alignment["suspect_dim"] == model.head.in_features
    assert math.isfinite(verdict.log10_p) and verdict.log10_p <= 0


def test_the_third_party_code_does_not_use_radioactive():
    for name in ("train.py", "archs.py"):
        tree = ast.parse((HELDOUT / name).read_text())
        imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                    for alias in node.names}
        imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                     and node.module}
        assert "radioactive" not in imported and "torch" in imported, name


def test_the_suite_covers_four_families_and_three_recipes_at_most_twice_the_markers_cost():
    config, archs, train = suite_config(), load("archs"), load("train")
    assert len(config["pairs"]) >= 6 and sum(bool(p.get("deep")) for p in config["pairs"]) == 2
    assert len({archs.FAMILIES[p["arch"]] for p in config["pairs"]}) == 4
    assert {p["recipe"] for p in config["pairs"]} == set(train.RECIPES) == {"sgd", "adamw", "mixup_ema"}
    assert "cnn" not in {p["arch"] for p in config["pairs"]}

    def macs(net: torch.nn.Module) -> float:
        with FlopCounterMode(display=False) as counter:
            net(torch.rand(1, 1, 28, 28))
        return counter.get_total_flops() / 2

    budget = 2 * macs(SmallCNN())
    for arch in {p["arch"] for p in config["pairs"]}:
        assert macs(archs.build(arch)) <= budget, arch


def test_the_suite_marks_and_trains_its_reference_as_the_grid_does():
    config = suite_config()
    grid = tomllib.loads((ROOT / "configs" / "fashion-mnist.toml").read_text())
    assert config["mark"] == grid["mark"] and config["reference_train"] == grid["train"]
    assert config["epochs"] == grid["train"]["epochs"]
    assert (config["detect"]["reference_images"], config["detect"]["probes"], config["detect"]["num_controls"]) == (
        grid["detect"]["reference_images"], grid["detect"]["probes"], grid["detect"]["num_controls"])

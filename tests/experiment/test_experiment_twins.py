"""The paired-twin test in the experiment runner (``[twins] enabled = true``): twin marking of the marked
subset, the coin-chosen published set, the published test's probes kept plainly marked, and the recorded test."""

import dataclasses
import importlib.util
import math
from pathlib import Path

import pytest
import torch
from helpers.tiny import TINY_CNN
from scipy import stats

from radioactive.detect.twins import twin_pairs as remade_pairs
from radioactive.detect.twins import twins_test
from radioactive.errors import ConfigError
from radioactive.experiment import (
    Context,
    ModelSetting,
    config_from_dict,
    expand_grid,
    run_experiment,
    run_one,
)
from radioactive.experiment.twins import twin_pairs, twin_secret
from radioactive.twins import mark_twins

ROOT = Path(__file__).resolve().parents[2]


def _update_readme():
    spec = importlib.util.spec_from_file_location("update_readme_for_twins", ROOT / "scripts" / "update_readme.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def twins_config(**changes):
    base = dict(
        name="tiny-twins",
        fractions=(0.0, 0.5),
        seeds=(0,),
        models=(ModelSetting(mode="scratch", arch="cnn", kwargs=TINY_CNN),),
        mark={"steps": 2, "min_psnr": 30.0},
        train={"epochs": 1, "batch_size": 32, "flip": False},
        detect={"tests": ["whitebox", "blackbox", "published"], "reference_images": 16, "probes": 16,
                "num_controls": 3, "published_probes": 2, "reference_model": False},
        twins={"enabled": True},
    )
    base.update(changes)
    return config_from_dict(base)


def test_twins_grid_records_the_twins_test(tmp_path, toy_data, toy_marker):
    config = twins_config()
    records = run_experiment(config, tmp_path, marker=toy_marker, data=toy_data)
    assert [r["fraction"] for r in records] == [0.0, 0.5]
    for record in records:
        assert set(record["log10_p"]) == {"whitebox", "blackbox", "published", "twins-loss", "twins-margin"}
        # 0.5 of 20 images per class = 40 marked, less the published test's 2 probes per class: 32 pairs; the
        # 0 % run tests the same pairs, never published (a calibration check).
        assert record["twin_pairs"] == 32
        for name in ("twins-loss", "twins-margin"):
            verdict = record["verdicts"][name]
            assert verdict["test"] == name and verdict["counts"]["pairs"] == 32
            wins = verdict["counts"]["wins"]
            assert record["twin_win_rate"][name] == wins / 32
            # Exact: P(Binomial(32, 1/2) >= wins), in (0, 1].
            p = 10 ** record["log10_p"][name]
            assert 0 < p <= 1
            assert record["log10_p"][name] == pytest.approx(math.log10(stats.binom.sf(wins - 1, 32, 0.5)), abs=1e-9)
    summary = (tmp_path / "results.md").read_text()
    assert "twins-loss log10 p" in summary and "twins-margin log10 p" in summary
    # The README renders such a grid like the committed one, with the twins columns and their win rates.
    readme = _update_readme()
    lines = readme.grid(tmp_path, "Tiny grid", {"scratch-cnn": "cnn, from scratch, 1 epoch"})
    assert lines[0].startswith("**Tiny grid**") and "Paired twins" in lines[0]
    assert "paired twins loss (secret coin)" in lines[2] and "paired twins margin (secret coin)" in lines[2]
    marked = next(line for line in lines if line.startswith("| cnn, from scratch, 1 epoch | 50 %"))
    rate = records[1]["twin_win_rate"]["twins-margin"]
    assert f"{records[1]['log10_p']['twins-margin']:.2f} [" in marked and f"win rate {rate:.3f}" in marked


def test_readme_says_when_the_converged_grid_has_not_run(tmp_path, monkeypatch):
    readme = _update_readme()
    monkeypatch.setattr(readme, "CONVERGED", tmp_path / "missing")
    lines = readme.converged()
    assert "not yet run" in lines[0] and "configs/fashion-mnist-converged.toml" in lines[0]


def test_converged_config():
    from radioactive.experiment import dry_run, load_config

    config = load_config(ROOT / "configs" / "fashion-mnist-converged.toml")
    grid = load_config(ROOT / "configs" / "fashion-mnist.toml")
    assert dry_run(config)[0].startswith("fashion-mnist-converged: 12 runs")
    assert config.fractions == (0.0, 0.01, 0.05, 0.10) and config.seeds == (0, 1, 2)
    assert [(m.mode, m.arch) for m in config.models] == [("scratch", "resnet_narrow")]
    recipe = config.recipe(config.models[0])
    assert recipe.epochs >= 15 and recipe.schedule == "cosine" and recipe.flip and recipe.crop_padding > 0
    assert recipe.precision == "bfloat16"  # mixed precision, as a third party on a GPU trains
    # The grid's marking and tests, with the marking network in bf16 autocast (the same marks, 1.9x faster).
    assert config.mark_config() == dataclasses.replace(grid.mark_config(), precision="bf16")
    assert config.detect == grid.detect
    assert config.twins.enabled and {"loss", "margin"} <= set(config.twins.statistics)


def test_published_set_is_the_coin_twin_and_the_probes_stay_plain(tmp_path, toy_data, toy_marker):
    config = twins_config()
    context = Context(config, tmp_path, marker=toy_marker, data=toy_data)
    indices, published, psnr = context.marked_subset(0, 0.5)
    assert len(indices) == 40 and bool((psnr >= 30.0 - 1e-6).all())
    probes = context.published_probes(0)
    plain = {int(i) for i in context.published_choice(0)[1]}
    assert len(plain) == 8 and plain <= set(indices.tolist())
    # The published test's probes are published as plainly marked, in their streams of the full marking: the
    # same pixels the grid without twins publishes for them.
    rows = [indices.tolist().index(i) for i in sorted(plain)]
    assert torch.equal(published[rows], probes.published)
    without = Context(twins_config(twins={"enabled": False}), tmp_path / "plain", marker=toy_marker, data=toy_data)
    assert torch.equal(without.marked_subset(0, 0.5)[1][rows], probes.published)
    # Every other image is published as the twin its coin names (both twins remade here from scratch).
    secret, key = twin_secret(context, 0), context.key(0)
    twinned = [i for i in indices.tolist() if i not in plain]
    assert sorted(int(i) for i in secret.coins) == twinned
    images, labels = toy_data["owner"]
    ids = [str(i) for i in twinned]
    first, second = mark_twins(toy_marker, images[twinned], labels[twinned], key, secret, ids=ids,
                               config=config.mark_config())
    coins = torch.tensor([secret.coin(i) for i in ids])
    assert 0 < int(coins.sum()) < len(coins)
    expected = torch.where(coins.view(-1, 1, 1, 1).bool(), second.images, first.images)
    expected = (expected * 255).round().clamp(0, 255).to(torch.uint8)
    rows = [indices.tolist().index(i) for i in twinned]
    assert torch.equal(published[rows], expected)
    assert not torch.equal(published[rows], (first.images * 255).round().to(torch.uint8))


def test_twins_verdict_equals_the_stand_alone_test(tmp_path, toy_data, toy_marker):
    config = twins_config(detect={"tests": ["whitebox"], "reference_images": 16, "probes": 16, "num_controls": 3,
                                  "reference_model": False}, twins={"enabled": True, "statistics": ["margin"]})
    context = Context(config, tmp_path, marker=toy_marker, data=toy_data)
    spec = expand_grid(config)[1]
    record = run_one(spec, context, keep_model=True)
    assert record["twin_pairs"] == 40 and set(record["twin_win_rate"]) == {"twins-margin"}
    pairs = twin_pairs(context, 0, 0.5)
    # The cached twins are those detect --twins would remake from the key and the secret.
    images, labels = toy_data["owner"]
    wanted = [int(i) for i in pairs.ids]
    remade = remade_pairs(toy_marker, context.key(0), twin_secret(context, 0), images[wanted], labels[wanted],
                          pairs.ids, config=config.mark_config(), published=context.marked_subset(0, 0.5)[1])
    assert all(torch.equal(a, b) for a, b in zip(remade.twins, pairs.twins))
    assert remade.details["published_exact"] == 1.0
    model = record["_model"].eval()
    alone = twins_test(lambda x: model(x).detach(), remade, statistic="margin")
    assert record["log10_p"]["twins-margin"] == pytest.approx(alone.log10_p, abs=1e-12)


def test_twins_settings_and_run_ids():
    plain = twins_config(twins={"enabled": False})
    absent = config_from_dict({k: v for k, v in dict(
        name="tiny-twins", fractions=(0.0, 0.5), seeds=(0,),
        models=(ModelSetting(mode="scratch", arch="cnn", kwargs=TINY_CNN),), mark={"steps": 2, "min_psnr": 30.0},
        train={"epochs": 1, "batch_size": 32, "flip": False},
        detect={"tests": ["whitebox", "blackbox", "published"], "reference_images": 16, "probes": 16,
                "num_controls": 3, "published_probes": 2, "reference_model": False}).items()})
    # Disabled twins leave run ids as they were before [twins] existed; enabled ones change them.
    assert "twins" not in plain.to_dict()
    assert [r.run_id for r in expand_grid(plain)] == [r.run_id for r in expand_grid(absent)]
    enabled = twins_config()
    assert enabled.to_dict()["twins"] == {"enabled": True, "statistics": ["loss", "margin"], "spread": 0.5, "views": 0}
    assert not {r.run_id for r in expand_grid(enabled)} & {r.run_id for r in expand_grid(plain)}
    assert [r.run_id for r in expand_grid(config_from_dict(enabled.to_dict()))] == [
        r.run_id for r in expand_grid(enabled)]
    with pytest.raises(ConfigError, match="invalid \\[twins\\] setting"):
        twins_config(twins={"enabled": True, "statistic": "loss"})
    with pytest.raises(ConfigError, match="twins.statistics must name"):
        twins_config(twins={"enabled": True, "statistics": ["los"]})
    with pytest.raises(ConfigError, match="twins.spread"):
        twins_config(twins={"enabled": True, "spread": 0})
    with pytest.raises(ConfigError, match=r"\[twins\] needs a non-zero fraction"):
        twins_config(fractions=(0.0,))


def test_no_pairs_left_is_refused(tmp_path, toy_data, toy_marker):
    config = twins_config(detect={"tests": ["published"], "published_probes": 10, "num_controls": 3,
                                  "reference_images": 16, "probes": 16, "reference_model": False})
    context = Context(config, tmp_path, marker=toy_marker, data=toy_data)
    with pytest.raises(ConfigError, match="no twin pairs at fraction 0.5"):
        twin_pairs(context, 0, 0.0)

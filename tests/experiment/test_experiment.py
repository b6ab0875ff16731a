import json
import math

import pytest
import torch
from helpers.tiny import TINY_CNN

from radioactive.errors import ConfigError
from radioactive.experiment import (
    Context,
    ExperimentConfig,
    ModelSetting,
    aggregate,
    config_from_dict,
    dry_run,
    expand_grid,
    load_config,
    markdown_table,
    run_experiment,
    run_one,
)


def tiny_config(**changes):
    base = dict(
        name="tiny",
        fractions=(0.0, 0.25),
        seeds=(0,),
        models=(ModelSetting(mode="scratch", arch="cnn", kwargs=TINY_CNN), ModelSetting(mode="linear_probe")),
        mark={"steps": 2, "min_psnr": 30.0},
        train={"epochs": 1, "batch_size": 32, "flip": False},
        detect={"reference_images": 16, "probes": 16, "num_controls": 3, "reference_model": False},
    )
    base.update(changes)
    return config_from_dict(base)


def test_grid_expansion_and_hashes_are_stable():
    config = tiny_config(seeds=(0, 1))
    runs = expand_grid(config)
    assert len(runs) == 2 * 2 * 2
    assert len({r.run_id for r in runs}) == len(runs)
    assert [r.run_id for r in expand_grid(tiny_config(seeds=(0, 1)))] == [r.run_id for r in runs]
    changed = {r.run_id for r in expand_grid(tiny_config(seeds=(0, 1), mark={"steps": 3, "min_psnr": 30.0}))}
    assert not changed & {r.run_id for r in runs}
    # The experiment's name and the other cells of the grid do not change a run's identity.
    assert expand_grid(tiny_config(name="other", seeds=(0,)))[0].run_id == runs[0].run_id


def test_modes_and_archs_cartesian_and_errors():
    config = config_from_dict({"modes": ["scratch"], "archs": ["cnn", "resnet_narrow"]})
    assert [m.name for m in config.models] == ["scratch-cnn", "scratch-resnet_narrow"]
    with pytest.raises(ConfigError, match="unknown experiment settings"):
        config_from_dict({"fraction": [0.1]})
    with pytest.raises(ConfigError, match=r"fractions must lie in \[0, 1\]"):
        config_from_dict({"fractions": [5]})
    with pytest.raises(ConfigError, match="unknown training mode"):
        config_from_dict({"models": [{"mode": "pretrain"}]})
    with pytest.raises(ConfigError, match="unknown marking settings"):
        config_from_dict({"mark": {"stepz": 3}})
    with pytest.raises(ConfigError, match="unknown recipe fields"):
        config_from_dict({"train": {"epoch": 3}})
    with pytest.raises(ConfigError, match="unknown tests"):
        config_from_dict({"detect": {"tests": ["whitebox", "greybox"]}})


def test_shipped_configs_validate():
    for name in ("fashion-mnist.toml", "imagenet-resnet18.toml", "demo.toml"):
        config = load_config(f"configs/{name}")
        lines = dry_run(config)
        assert lines[0].startswith(config.name)
    fmnist = load_config("configs/fashion-mnist.toml")
    assert fmnist.fractions == (0.0, 0.01, 0.02, 0.05, 0.10, 0.20) and len(fmnist.seeds) == 3
    assert {m.mode for m in fmnist.models} == {"scratch", "linear_probe"}


def test_yaml_config(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text("name: y\nfractions: [0, 0.05]\nseeds: [1, 2]\nmodels:\n  - {mode: scratch, arch: resnet_narrow}\n")
    config = load_config(path)
    assert config.seeds == (1, 2) and config.models[0].arch == "resnet_narrow"
    with pytest.raises(ConfigError, match="must be .toml, .yaml or .yml"):
        (tmp_path / "grid.txt").write_text("x")
        load_config(tmp_path / "grid.txt")


def test_run_experiment_end_to_end_resumes(tmp_path, toy_data, toy_marker):
    config = tiny_config()
    data, marker = toy_data, toy_marker
    lines = []
    records = run_experiment(config, tmp_path, marker=marker, data=data, progress=lines.append)
    assert len(records) == 4 and len(list((tmp_path / "runs").glob("*.json"))) == 4
    key = Context(config, tmp_path / "fresh", marker=marker, data=data).key(0)
    for record in records:
        assert set(record["log10_p"]) == {"whitebox", "blackbox"}
        assert record["log10_p"] == {name: v["log10_p"] for name, v in record["verdicts"].items()}
        assert record["verdicts"]["blackbox"]["test"].startswith("blackbox-rank")
        assert record["key_fingerprint"] == key.fingerprint
        # The linear probe keeps the marker's features: the white-box test must see the identity alignment.
        if record["model"] == "linear_probe-marker":
            assert record["verdicts"]["whitebox"]["alignment"]["method"] == "identity"
            assert record["verdicts"]["whitebox"]["alignment"]["r2"] == pytest.approx(1.0, abs=1e-6)
        assert 0 <= record["test_accuracy"] <= 1
        assert record["marked_images"] == (20 if record["fraction"] == 0.25 else 0)
        if record["fraction"] > 0:
            assert record["psnr_min"] >= 30.0 - 1e-6
    table = (tmp_path / "results.md").read_text()
    assert "whitebox log10 p" in table and "linear_probe-marker" in table
    assert (tmp_path / "plot.png").stat().st_size > 1000
    summary = json.loads((tmp_path / "results.json").read_text())
    assert len(summary["rows"]) == 4
    # Rerun: everything is cached, nothing is recomputed.
    again = run_experiment(config, tmp_path, marker=marker, data=data, progress=lines.append)
    assert sum("cached" in line for line in lines) == 4
    assert [r["run_id"] for r in again] == [r["run_id"] for r in records]
    # Every seed of a run is derived from the grid seed: a fresh folder reproduces a record's p-values.
    spec = expand_grid(config)[-1]
    fresh = run_one(spec, Context(config, tmp_path / "fresh", marker=marker, data=data))
    assert fresh["log10_p"] == pytest.approx(records[-1]["log10_p"], abs=1e-9)


def test_nested_marked_subsets(tmp_path, toy_data, toy_marker):
    config = tiny_config(fractions=(0.1, 0.25, 0.5))
    context = Context(config, tmp_path, marker=toy_marker, data=toy_data)
    small, marked_small, _ = context.marked_subset(0, 0.25)
    large, marked_large, _ = context.marked_subset(0, 0.5)
    assert set(small.tolist()) <= set(large.tolist())
    rows = [large.tolist().index(i) for i in small.tolist()]
    assert torch.equal(marked_large[rows], marked_small)
    labels = context.data["owner"][1]
    assert torch.bincount(labels[large], minlength=4).tolist() == [10, 10, 10, 10]


def test_aggregate_and_table():
    records = [
        {"model": "m", "fraction": 0.1, "seed": s, "test_accuracy": 0.9 + s / 100, "psnr_min": 40.0,
         "psnr_mean": 42.0, "log10_p": {"whitebox": -s - 1.0}, "seconds": {"total": 10.0}}
        for s in range(3)
    ]
    rows = aggregate(records)
    assert rows[0]["whitebox_log10_p_median"] == -2.0
    assert rows[0]["whitebox_log10_p_range"] == [-3.0, -1.0]
    assert rows[0]["whitebox_detected"] == sum(-s - 1.0 <= math.log10(0.05) for s in range(3))
    text = markdown_table(rows, ["whitebox"])
    assert "-2.00 [-3.00, -1.00]" in text and "91.00 %" in text


def test_experiment_config_roundtrip():
    config = tiny_config()
    again = config_from_dict({k: v for k, v in config.to_dict().items()})
    assert isinstance(again, ExperimentConfig)
    assert [r.run_id for r in expand_grid(again)] == [r.run_id for r in expand_grid(config)]


def test_cli_experiment_dry_run(capsys):
    from radioactive.cli import main

    assert main(["experiment", "configs/imagenet-resnet18.toml", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "imagenet-resnet18: 12 runs" in out and "scratch-resnet18" in out


def test_cli_experiment_with_lock_runs_everything(tmp_path, monkeypatch, toy_data, toy_marker):
    import radioactive.experiment as experiment
    from radioactive.cli import main

    data, marker = toy_data, toy_marker
    real = experiment.run_experiment

    def with_toys(config, out, **kwargs):
        return real(config, out, marker=marker, data=data, **kwargs)

    monkeypatch.setattr(experiment, "run_experiment", with_toys)
    path = tmp_path / "tiny.yaml"
    path.write_text(
        "name: tiny\nfractions: [0, 0.25]\nseeds: [0]\n"
        "models: [{mode: scratch, arch: cnn, kwargs: {width: 4, feature_dim: 8}}]\n"
        "mark: {steps: 2, min_psnr: 30.0}\ntrain: {epochs: 1, batch_size: 32}\n"
        "detect: {reference_images: 16, probes: 16, num_controls: 3, reference_model: false}\n"
    )
    out = tmp_path / "out"
    assert main(["experiment", str(path), "--out", str(out), "--lock", str(tmp_path / "lock")]) == 0
    assert len(list((out / "runs").glob("*.json"))) == 2 and (out / "results.md").is_file()
    assert main(["experiment", str(path), "--out", str(out), "--aggregate-only"]) == 0


def test_gradient_test_and_blackbox_variants_share_one_collection(tmp_path, toy_data, toy_marker):
    from radioactive.detect import BlackboxSettings, Probes, blackbox
    from radioactive.detect.gradient import gradient_whitebox

    config = tiny_config(
        fractions=(0.25,), models=(ModelSetting(mode="scratch", arch="cnn", kwargs=TINY_CNN),),
        detect={"tests": ["whitebox", "gradient", "blackbox"], "reference_images": 16, "probes": 16,
                "num_controls": 3, "reference_model": False, "blackbox_variants": ["loss:perm", "margin:t"]},
    )
    context = Context(config, tmp_path, marker=toy_marker, data=toy_data)
    spec = expand_grid(config)[0]
    record = run_one(spec, context, keep_model=True)
    assert set(record["log10_p"]) == {"whitebox", "gradient", "blackbox", "blackbox-loss-perm", "blackbox-margin-t"}
    assert record["verdicts"]["blackbox-loss-perm"]["test"].startswith("blackbox-perm")
    model, key = record["_model"].eval(), context.key(spec.seed)

    def predict(images):
        with torch.no_grad():
            return model(images)

    # Each variant equals the stand-alone test with the same settings (the probes' markings are cached).
    probes = Probes(*context.probes())
    for name, statistic, combine in (("blackbox", "margin", "rank"), ("blackbox-loss-perm", "loss", "perm"),
                                     ("blackbox-margin-t", "margin", "t")):
        settings = BlackboxSettings(num_controls=3, statistic=statistic, combine=combine, mark=config.mark_config(),
                                    seed=spec.seed, cache_dir=context.cache / "probes")
        alone = blackbox(predict, key, probes, marker=context.marker, settings=settings)
        assert record["log10_p"][name] == pytest.approx(alone.log10_p, abs=1e-9)
    alone = gradient_whitebox(model, key, context.reference_images(), marker=context.marker, images_for="all")
    # float32 gradients summed in another order: equal to single precision, not bit for bit.
    assert record["log10_p"]["gradient"] == pytest.approx(alone.log10_p, rel=1e-5)


def test_bad_blackbox_variant_is_refused():
    with pytest.raises(ConfigError, match="black-box variant 'loss-perm'"):
        config_from_dict({"detect": {"blackbox_variants": ["loss-perm"]}})
    with pytest.raises(ConfigError, match="gradient_images"):
        config_from_dict({"detect": {"gradient_images": "some"}})


def test_published_probes_share_the_published_augmentation_streams(tmp_path, toy_data, toy_marker):
    """The control twins of published probes are marked with the streams the published images were marked
    with: re-marking the originals with the true key through the black-box path gives the published pixels."""
    from radioactive.detect import Probes
    from radioactive.detect.probes import marked_versions

    config = tiny_config(
        fractions=(0.0, 0.25, 0.5), models=(ModelSetting(mode="scratch", arch="cnn", kwargs=TINY_CNN),),
        detect={"tests": ["published"], "published_probes": 3, "num_controls": 3, "reference_images": 16,
                "probes": 16, "reference_model": False, "blackbox_variants": ["loss:perm"]},
    )
    context = Context(config, tmp_path, marker=toy_marker, data=toy_data)
    probes = context.published_probes(0)
    assert len(probes) == 12 and torch.bincount(probes.labels).tolist() == [3, 3, 3, 3]
    small, _, _ = context.marked_subset(0, 0.25)
    train_images = context.data["owner"][0]
    assert all(any(torch.equal(img, train_images[i]) for i in small.tolist()) for img in probes.images)
    key = context.key(0)
    _, remarked = next(marked_versions(context.marker, key, Probes(probes.images, probes.labels, ids=probes.ids),
                                       num_controls=1, config=config.mark_config(), seed=0))
    assert torch.equal(remarked, probes.published)
    # Default streams (0 .. N-1) would not reproduce them: the ids matter.
    _, wrong = next(marked_versions(context.marker, key, Probes(probes.images, probes.labels), num_controls=1,
                                    config=config.mark_config(), seed=0))
    assert not torch.equal(wrong, probes.published)
    records = [run_one(spec, context) for spec in expand_grid(config)[:2]]
    for record in records:
        assert set(record["log10_p"]) == {"published", "published-loss-perm"}
        assert record["verdicts"]["published"]["details"]["probe_source"] == "published"

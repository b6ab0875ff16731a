"""Several reference models in an experiment: configuration, seeds, caches, and the black-box record."""

import pytest
import torch

from radioactive.errors import ConfigError
from radioactive.experiment import Context, config_from_dict, derive_seed, expand_grid
from radioactive.experiment.config import DetectSettings
from radioactive.experiment.identity import content_hash
from radioactive.experiment.run import _detect
from radioactive.train import TrainRecipe


def _config(**detect):
    return config_from_dict({
        "name": "refs", "fractions": [0.0], "seeds": [0], "models": [{"mode": "scratch", "arch": "cnn"}],
        "mark": {"steps": 1, "min_psnr": 30.0}, "train": {"epochs": 1, "batch_size": 32, "flip": False},
        "detect": {"tests": ["blackbox"], "reference_images": 8, "probes": 16, "num_controls": 3, **detect},
    })


def test_new_keys_leave_old_run_ids_alone():
    assert "reference_models" not in DetectSettings().to_dict() and "reference_archs" not in DetectSettings().to_dict()
    plain = expand_grid(_config())[0].run_id
    assert expand_grid(_config(reference_models=1, reference_archs=[]))[0].run_id == plain
    several = _config(reference_models=3, reference_archs=["cnn", "mlp"])
    assert expand_grid(several)[0].run_id != plain
    assert several.detect.to_dict()["reference_archs"] == ["cnn", "mlp"]
    assert several.detect.reference_arch_list() == ["cnn", "mlp", "cnn"]
    assert _config(reference_models=2).detect.reference_arch_list() == ["cnn", "cnn"]
    assert _config(reference_model=False).detect.reference_arch_list() == []


@pytest.mark.parametrize("detect, match", [
    ({"reference_models": 0}, "reference_models must be an integer >= 1"),
    ({"reference_models": True}, "reference_models must be an integer >= 1"),
    ({"reference_models": 2, "reference_archs": ["cnn", "mlp", "cnn"]}, "3 reference_archs for reference_models = 2"),
    ({"reference_model": False, "reference_models": 3}, "need reference_model = true"),
])
def test_bad_reference_settings_are_refused(detect, match):
    with pytest.raises(ConfigError, match=match):
        _config(**detect)


def test_reference_seeds_are_distinct_and_the_first_is_the_single_ones():
    assert derive_seed("reference_models", 0) == derive_seed("reference_model") == 99_991
    seeds = [derive_seed("reference_models", i) for i in range(5)]
    assert len(set(seeds)) == 5


def test_references_are_trained_once_each_and_all_enter_the_test(tmp_path, toy_data, toy_marker):
    config = _config(reference_models=2)
    context = Context(config, tmp_path, marker=toy_marker, data=toy_data)
    first, second = context.reference_models()
    assert first is context.reference_model(0) and second is context.reference_model(1)
    assert not torch.equal(first.state_dict()["1.fc.weight"], second.state_dict()["1.fc.weight"])  # own seeds
    # The first reference keeps the single reference model's cache name (a cache made before still serves).
    recipe = TrainRecipe.from_dict({**config.train, "mode": "scratch"})
    single = content_hash({"arch": "cnn", "recipe": recipe.to_dict(), "data": context.train_fingerprint()})
    assert (tmp_path / "cache" / f"reference-{single}.safetensors").is_file()
    assert len(list((tmp_path / "cache").glob("reference-*.safetensors"))) == 2
    spec = expand_grid(config)[0]
    verdicts = _detect(spec, context, first)
    details = verdicts["blackbox"].details
    assert verdicts["blackbox"].test.endswith("-did") and details["reference_models"] == 2
    assert set(details["reference_alone"]) >= {"log10_p_upper", "log10_p_lower", "extreme", "per_reference"}


def test_reference_fit_leaves_old_run_ids_alone_and_names_its_variants():
    plain = expand_grid(_config())[0].run_id
    assert expand_grid(_config(reference_fit="mean"))[0].run_id == plain
    matched = _config(reference_fit="matched", blackbox_variants=["loss:perm", "margin:perm:mean"])
    assert expand_grid(matched)[0].run_id != plain
    assert matched.detect.variant_names() == [
        ("blackbox", "margin", "rank", "matched"), ("blackbox-loss-perm", "loss", "perm", "matched"),
        ("blackbox-margin-perm-mean", "margin", "perm", "mean")]


@pytest.mark.parametrize("detect", [{"reference_fit": "median"}, {"blackbox_variants": ["margin:perm:median"]},
                                    {"blackbox_variants": ["margin:perm:matched:x"]}])
def test_bad_reference_fits_are_refused(detect):
    with pytest.raises(ConfigError, match="black-box variant"):
        _config(**detect)


def test_a_matched_variant_is_recorded_beside_the_main_test(tmp_path, toy_data, toy_marker):
    config = _config(reference_models=2, combine="perm", blackbox_variants=["margin:perm:matched"])
    context = Context(config, tmp_path, marker=toy_marker, data=toy_data)
    verdicts = _detect(expand_grid(config)[0], context, context.reference_model(0))
    assert verdicts["blackbox"].test == "blackbox-perm-did"
    matched = verdicts["blackbox-margin-perm-matched"]
    assert matched.test == "blackbox-perm-matched" and matched.details["reference_fit"] == "matched"
    assert matched.log10_p != verdicts["blackbox"].log10_p

"""configs/demo.toml states what `radioactive demo` runs: the same configuration as demo_config()'s defaults."""

from pathlib import Path

from radioactive.demo import demo_config
from radioactive.experiment import load_config

ROOT = Path(__file__).resolve().parents[2]


def test_demo_toml_is_the_demo_configuration():
    assert load_config(ROOT / "configs" / "demo.toml").to_dict() == demo_config().to_dict()


def test_demo_precisions_reach_the_recipe_and_the_marking_and_float32_writes_none():
    config = demo_config()  # the defaults: bfloat16 mixed-precision training, bf16 marking network
    assert config.recipe(config.models[0]).precision == "bfloat16"
    assert config.mark_config().precision == "bf16"
    # float32 writes no precision, so such a demo's run ids and reference names are those of before the option.
    full = demo_config(precision="float32", mark_precision="fp32").to_dict()
    assert "precision" not in full["train"] and "precision" not in full["mark"]
    assert full != config.to_dict()


def test_the_demo_defaults_find_their_shipped_references_and_control(tmp_path, monkeypatch):
    """The demo trains only its suspect: its 4 references and its default seed's clean control are package data
    under the names the experiment cache gives them (scripts/ship_demo_references.py). A change of the defaults
    that is not shipped again fails here instead of silently costing the demo minutes."""
    import pytest

    from radioactive.experiment import Context, derive_seed
    from radioactive.fmnist import find_fashion_mnist
    from radioactive.zoo import shipped_model

    try:
        find_fashion_mnist()
    except Exception:
        pytest.skip("Fashion-MNIST not installed")
    config = demo_config()
    context = Context(config, tmp_path)
    monkeypatch.setattr("radioactive.experiment.context.fit", lambda *a, **k: pytest.fail("a reference was trained"))
    models = context.reference_models()
    assert len(models) == 4 and not list(tmp_path.glob("cache/reference-*"))
    name = context.clean_model_name(config.models[0], derive_seed("control_training", config.seeds[0]))
    assert shipped_model(name) is not None


def test_the_demo_describes_its_training_precision():
    from radioactive.demo import describe

    trainer = next(line for line in describe(demo_config()) if line.startswith("trainer:"))
    assert "4 epochs (SGD, cosine, crop + flip, bfloat16 mixed precision)" in trainer
    full = next(line for line in describe(demo_config(precision="float32")) if line.startswith("trainer:"))
    assert "bfloat16" not in full and "(SGD, cosine, crop + flip)" in full

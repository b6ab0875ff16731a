"""configs/demo.toml states what `radioactive demo` runs: the same configuration as demo_config()'s defaults."""

from pathlib import Path

from radioactive.demo import demo_config
from radioactive.experiment import load_config

ROOT = Path(__file__).resolve().parents[2]


def test_demo_toml_is_the_demo_configuration():
    assert load_config(ROOT / "configs" / "demo.toml").to_dict() == demo_config().to_dict()


def test_demo_precisions_reach_the_recipe_and_the_marking_and_float32_keeps_the_old_configuration():
    config = demo_config(precision="bfloat16", mark_precision="bf16")
    assert config.recipe(config.models[0]).precision == "bfloat16"
    assert config.mark_config().precision == "bf16"
    # The float32 defaults write no precision, so the run ids and shipped reference names stay those of before.
    default = demo_config(precision="float32", mark_precision="fp32").to_dict()
    assert "precision" not in default["train"] and "precision" not in default["mark"]
    assert default == demo_config().to_dict() != config.to_dict()

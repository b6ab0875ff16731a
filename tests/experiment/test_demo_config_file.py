"""configs/demo.toml states what `radioactive demo` runs: the same configuration as demo_config()'s defaults."""

from pathlib import Path

from radioactive.demo import demo_config
from radioactive.experiment import load_config

ROOT = Path(__file__).resolve().parents[2]


def test_demo_toml_is_the_demo_configuration():
    assert load_config(ROOT / "configs" / "demo.toml").to_dict() == demo_config().to_dict()

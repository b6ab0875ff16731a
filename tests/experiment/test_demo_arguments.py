"""The demo refuses a suspect trained for no epoch (nothing to detect) at once, naming the setting, whether it comes
from the command line, :func:`radioactive.demo.demo_config` or a configuration handed to ``run_demo``."""

import pytest

from radioactive.cli import EXIT_USAGE, main
from radioactive.demo import demo_config, run_demo
from radioactive.errors import ConfigError


def test_cli_demo_refuses_zero_epochs_naming_the_flag(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo"), "--epochs", "0"]) == EXIT_USAGE
    assert "--epochs must be at least 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()


@pytest.mark.parametrize("epochs", [0, -2])
def test_demo_config_refuses_fewer_than_one_epoch(epochs):
    with pytest.raises(ConfigError, match=rf"epochs must be at least 1.*got {epochs}"):
        demo_config(epochs=epochs)


def test_run_demo_refuses_a_configuration_without_training_before_any_work(tmp_path):
    from dataclasses import replace

    config = demo_config(epochs=1)
    config = replace(config, train={**config.train, "epochs": 0})
    with pytest.raises(ConfigError, match=r"train\.epochs must be at least 1.*got 0"):
        run_demo(tmp_path / "demo", config=config)
    assert not (tmp_path / "demo").exists()

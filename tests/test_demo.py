import json
from dataclasses import replace

import pytest
from test_experiment import TINY, tiny_marker, toy_splits

from radioactive.demo import demo_config, format_side_by_side, run_demo
from radioactive.experiment import ModelSetting
from radioactive.nets import load_checkpoint


def test_demo_on_tiny_data_writes_report_and_models(tmp_path):
    config = demo_config(fraction=0.25, epochs=1, probes=16, num_controls=3, reference_images=16)
    config = replace(config, models=(ModelSetting(arch="cnn", kwargs=TINY),), mark={"steps": 2, "min_psnr": 30.0},
                     train={"epochs": 1, "batch_size": 32})
    lines = []
    result = run_demo(tmp_path, config=config, marker=tiny_marker(), data=toy_splits(), progress=lines.append)
    assert result.report.is_file() and "Radioactive data" in result.report.read_text()
    for name in ("control", "suspect"):
        for test in ("whitebox", "blackbox"):
            assert (tmp_path / "report" / name / test / "index.html").is_file()
        model, spec, extra = load_checkpoint(result.models[name])
        assert extra["kind"] == name and spec.num_classes == 4
    assert result.records["suspect"]["marked_images"] == 20 and result.records["control"]["marked_images"] == 0
    assert (tmp_path / "report" / "samples.png").is_file()
    assert (tmp_path / "key.safetensors").stat().st_mode & 0o077 == 0
    table = format_side_by_side(result)
    assert "clean control" in table and "whitebox test" in table and "blackbox test" in table
    summary = json.loads((tmp_path / "report" / "demo.json").read_text())
    assert set(summary["runs"]) == {"control", "suspect"}
    assert lines and all(isinstance(line, str) for line in lines)


@pytest.mark.slow
def test_demo_end_to_end_on_a_fashion_mnist_subset(tmp_path):
    """mark -> train -> detect with the real marker on 3,000 Fashion-MNIST images (about a minute)."""
    from radioactive.fmnist import find_fashion_mnist
    from radioactive.train import DEFAULT_MARKER_NAME, _repo_markers

    try:
        find_fashion_mnist()
    except Exception:
        pytest.skip("Fashion-MNIST not installed")
    if not (_repo_markers() / DEFAULT_MARKER_NAME).is_file():
        pytest.skip("committed marker markers/fmnist-cnn.safetensors not present")
    config = demo_config(fraction=0.2, epochs=1, probes=100, num_controls=3, reference_images=300,
                         train_images=3000)
    config = replace(config, mark={"steps": 20})
    result = run_demo(tmp_path, config=config)
    for name in ("control", "suspect"):
        # One epoch on 3,000 images: about 0.55 measured here; chance is 0.10, so 0.45 shows that it learned.
        assert result.records[name]["test_accuracy"] > 0.45
        assert set(result.records[name]["log10_p"]) == {"whitebox", "blackbox"}
    assert result.records["suspect"]["marked_images"] == 600
    assert result.records["suspect"]["psnr_min"] >= 40.0 - 1e-6
    assert result.report.is_file()

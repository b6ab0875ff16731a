"""The public surface: names a user imports from the package root must not disappear, and ``mark`` is the
function even after the ``radioactive.mark`` submodule has been imported."""

import importlib
import re
from pathlib import Path

import torch

import radioactive

# The product's main operations; internals (split_head, load_suspect, NetSpec) live in their modules.
PUBLIC = {"Key", "MarkerInfo", "Marker", "MarkConfig", "MarkResult", "mark", "mark_dataset", "open_source",
          "load_labelled", "fashion_mnist_splits", "default_marker", "whitebox", "blackbox", "WhiteboxSettings",
          "BlackboxSettings", "Verdict", "ClassScore", "Probes", "RadioactiveError", "TwinSecret", "mark_twins"}
INTERNAL = {"split_head", "load_suspect", "NetSpec", "random_key", "collect"}


def test_public_names_exist_and_are_listed():
    assert PUBLIC == set(radioactive.__all__) - {"__version__"}
    assert not INTERNAL & set(radioactive.__all__)
    for name in PUBLIC:
        assert getattr(radioactive, name) is not None
    importlib.import_module("radioactive.mark")
    from radioactive import mark

    assert callable(mark) and not isinstance(mark, type(radioactive))


def test_readme_quickstart_runs(tmp_path, monkeypatch):
    """The README's Python quickstart, on 16 images, with the marker itself standing in for the suspect and the
    reference."""
    from radioactive.mark import psnr

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    code = re.search(r"## Quickstart\n\n```python\n(.*?)```", readme, re.S).group(1)
    code = code.replace("[:256]", "[:16]")
    code = code.replace("# a third party trains", "suspect = references = marker.model  # a third party trains")
    code = code.replace('data["holdout"][0]', 'data["holdout"][0][:300]')
    # a small black-box audit: 20 probes, 3 control sets, 2 marking steps (the flow, not its power)
    code = code.replace("[:400]", "[:20]").replace("num_controls=20", "num_controls=3")
    code = code.replace("MarkConfig(min_psnr=40)", "MarkConfig(min_psnr=40, steps=2)")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    torch.manual_seed(0)
    exec(compile(code, "README quickstart", "exec"), namespace)
    assert (tmp_path / "owner.key").stat().st_mode & 0o777 == 0o600
    originals = namespace["images"][:16].float() / 255
    assert float(psnr(namespace["published"], originals).min()) >= 40.0
    verdict = namespace["verdict"]
    assert verdict.key_fingerprint == namespace["key"].fingerprint
    assert verdict.test == "blackbox-perm-matched" and verdict.counts["controls"] == 3  # the default fit

"""Custom architectures on the command line (issue 14, item 5): ``--arch package.module:callable`` imports the
user's own module (from the current folder or sys.path, or a file path) to build the network that safe weights
are loaded into; a weights file never names code that runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers.detect_files import write_detect_files
from safetensors.torch import save_file

from radioactive.cli import main
from radioactive.errors import ConfigError, ModelLoadError
from radioactive.nets import load_checkpoint, load_suspect, make_spec, save_checkpoint, state_dict_sha256

# The user's module: the built-in cnn of the tiny marker (width 4, 16 features) with its own normalisation
# inside, so that safe weights planted with the key's carriers make the white-box test fire.
USER_MODULE = '''
import torch
from torch import nn
from radioactive.nets.archs import SmallCNN

class Scaled(nn.Module):
    def __init__(self, num_classes, in_channels=1):
        super().__init__()
        self.net = SmallCNN(num_classes=num_classes, in_channels=in_channels, width=4, feature_dim=16)
        self.seen_channels = in_channels

    def forward(self, x):
        return self.net((x - 0.5) / 0.5)

def build(num_classes, in_channels):
    return Scaled(num_classes, in_channels)

def build_wide(num_classes):
    return Scaled(num_classes + 1)

def broken(num_classes, in_channels):
    raise RuntimeError("my network needs a GPU")

def not_a_module(num_classes):
    return {"layers": 3}

NOT_CALLABLE = 7
'''


@pytest.fixture(scope="module")
def user_world(tmp_path_factory):
    """A user folder holding ``usernets.py`` and bare safetensors weights (no spec) of ``usernets:build``: the
    tiny suspect with carriers planted (``planted.safetensors``) and a clean copy (``clean.safetensors``)."""
    root = tmp_path_factory.mktemp("user-arch")
    write_detect_files(root, classes=10, per_class=4, planted=2.0)
    (root / "work").mkdir()
    (root / "work" / "usernets.py").write_text(USER_MODULE)
    for name, source in (("planted", "suspect"), ("clean", "marker")):
        model, _, _ = load_checkpoint(root / f"{source}.safetensors")
        state = {f"net.{k}": v.contiguous() for k, v in model[1].state_dict().items()}
        save_file(state, str(root / "work" / f"{name}.safetensors"))  # bare weights: no architecture recorded
    return root


def _whitebox(root, model, *more):
    return ["detect", "--key", str(root / "key.safetensors"), "--marker", str(root / "marker.safetensors"),
            "--model", str(root / "work" / model), "--reference", str(root / "ref"), "--cache-dir", "", *more]


def test_whitebox_through_a_user_module_in_the_current_folder(user_world, monkeypatch):
    """`radioactive detect --arch usernets:build` run from the user's folder (not on sys.path) loads the safe
    weights into the user's network: the planted suspect is detected, the clean one is not, and the verdict
    names exactly the weights that were saved."""
    root = user_world
    monkeypatch.chdir(root / "work")
    assert str(root / "work") not in sys.path
    assert main(_whitebox(root, "planted.safetensors", "--arch", "usernets:build", "--json", "p.json")) == 0
    planted = json.loads((root / "work" / "p.json").read_text())["verdict"]
    assert planted["log10_p"] < -5 and planted["alignment"]["method"] == "identity"
    weights = load_suspect(root / "work" / "planted.safetensors", arch=str(root / "work" / "usernets.py:build"),
                           num_classes=10)
    assert planted["model_sha256"] == state_dict_sha256(weights)
    assert main(_whitebox(root, "clean.safetensors", "--arch", "usernets:build", "--json", "c.json")) == 0
    assert json.loads((root / "work" / "c.json").read_text())["verdict"]["log10_p"] > -2
    assert str(root / "work") not in sys.path  # the current folder was on it only while importing


def test_file_path_form_and_the_console_script(user_world, tmp_path):
    """`path/to/file.py:callable` from anywhere, through the installed `radioactive` command."""
    root = user_world
    script = Path(sys.executable).with_name("radioactive")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "radioactive"]
    run = subprocess.run(command + _whitebox(root, "planted.safetensors", "--arch",
                                             str(root / "work" / "usernets.py") + ":build"),
                         cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)})
    assert run.returncode == 0, run.stderr
    assert "whitebox" in run.stdout and "identity" in run.stdout


def test_reference_arch_takes_a_user_module(user_world, monkeypatch):
    """The black-box test's --reference-arch builds the auditor's reference from the user's module too."""
    root = user_world
    monkeypatch.chdir(root / "work")
    args = ["detect", "--key", str(root / "key.safetensors"), "--marker", str(root / "marker.safetensors"),
            "--black-box", "--model", "planted.safetensors", "--arch", "usernets:build", "--reference-model",
            "clean.safetensors", "--reference-arch", "usernets:build", "--probes", str(root / "ref"),
            "--probes-per-class", "1", "--controls", "2", "--steps", "1", "--cache-dir", "", "--json", "b.json"]
    assert main(args) == 0
    assert json.loads((root / "work" / "b.json").read_text())["verdict"]["test"].endswith("-matched")


@pytest.mark.parametrize(("arch", "named"), [
    ("nosuchmodule_xyz:build", "no module named 'nosuchmodule_xyz'"),
    ("usernets:missing", "module 'usernets' has no attribute 'missing'"),
    ("usernets:NOT_CALLABLE", "'NOT_CALLABLE' is a int, not a callable"),
    ("usernets:broken", "broken(num_classes=10, in_channels=1) raised RuntimeError: my network needs a GPU"),
    ("usernets:not_a_module", "returned an object of type dict, not a torch.nn.Module"),
    ("usernets:build_wide", "do not fit the architecture"),
    ("nowhere/usernets.py:build", "does not exist"),
])
def test_user_arch_errors_are_one_line(user_world, monkeypatch, capsys, arch, named):
    root = user_world
    monkeypatch.chdir(root / "work")
    assert main(_whitebox(root, "planted.safetensors", "--arch", arch)) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert "Traceback" not in err and len(lines) == 1 and lines[0].startswith("radioactive detect: error: "), err
    assert named in lines[0], lines[0]


def test_a_checkpoint_never_names_the_code_that_runs(user_world, monkeypatch):
    """A checkpoint whose spec records `usernets:build` (as `train --arch usernets:build` writes) is loaded
    with that recorded spec only when the caller names the same architecture; otherwise it is refused."""
    root = user_world
    monkeypatch.chdir(root / "work")
    images = torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8)
    spec = make_spec("usernets:build", 10, images)
    assert (spec.source, spec.arch, spec.in_channels) == ("python", "usernets:build", 1)
    model = load_suspect(root / "work" / "planted.safetensors", arch="usernets:build", num_classes=10)
    save_checkpoint(model[1], root / "work" / "trained.safetensors", spec)
    with pytest.raises(ModelLoadError, match="never runs code a weights file names.*--arch usernets:build"):
        load_checkpoint(root / "work" / "trained.safetensors")
    with pytest.raises(ModelLoadError, match="never runs code"):
        load_suspect(root / "work" / "trained.safetensors")
    reloaded = load_suspect(root / "work" / "trained.safetensors", arch="usernets:build", num_classes=10)
    assert torch.equal(reloaded[0].mean, torch.tensor(spec.mean).view(1, -1, 1, 1))  # the recorded normalisation
    assert state_dict_sha256(reloaded[1]) == state_dict_sha256(model[1])
    _, again, _ = load_checkpoint(root / "work" / "trained.safetensors", user_arch="usernets:build")
    assert again == spec
    with pytest.raises(ConfigError, match="package.module:callable"):
        load_suspect(root / "work" / "planted.safetensors", arch="usernets:", num_classes=10)


def test_train_records_the_user_arch(user_world, monkeypatch, capsys):
    """`radioactive train --arch usernets:build` saves module:callable in the checkpoint's spec, and
    `detect --arch usernets:build` reloads it the same way (one tiny epoch)."""
    root = user_world
    monkeypatch.chdir(root / "work")
    out = root / "work" / "t.safetensors"
    assert main(["train", "--data", str(root / "ref"), "--out", str(out), "--arch", "usernets:build", "--epochs",
                 "1", "--batch-size", "20", "--device", "cpu"]) == 0
    _, spec, _ = load_checkpoint(out, user_arch="usernets:build")
    assert (spec.source, spec.arch) == ("python", "usernets:build")
    assert main(_whitebox(root, "t.safetensors", "--alpha", "0.5")) == 2
    assert "--arch usernets:build" in capsys.readouterr().err
    assert main(_whitebox(root, "t.safetensors", "--arch", "usernets:build")) == 0

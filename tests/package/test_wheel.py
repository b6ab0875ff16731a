"""The installed package carries the committed marker (issue 9, defect 4).

Before, the marker was found only from a source checkout (``parents[2] / "markers"``), so after a plain
``pip install .`` ``default_marker()`` silently trained another network and existing keys stopped
matching. Now it is package data, found through importlib.resources.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from radioactive.key import Key
from radioactive.nets import load_state_dict_file, state_dict_sha256

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "src" / "radioactive" / "markers" / "fmnist-cnn.safetensors"
MEMBER = "radioactive/markers/fmnist-cnn.safetensors"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built offline from a copy of the source (the checkout gets no build/ or egg-info)."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    out = tmp / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "--disable-pip-version-check", "-q", "-w", str(out), str(source)],
        check=True, capture_output=True, text=True,
    )
    (path,) = out.glob("radioactive-*.whl")
    return path


def test_wheel_ships_the_committed_marker(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        assert MEMBER in names, f"{MEMBER} missing from the wheel: {sorted(n for n in names if '/' in n)[:20]}"
        shipped = archive.read(MEMBER)
    assert hashlib.sha256(shipped).hexdigest() == hashlib.sha256(COMMITTED.read_bytes()).hexdigest()
    assert "radioactive/py.typed" in names


def test_default_marker_path_is_package_data():
    from radioactive.zoo import default_marker_path, default_marker_sha256

    path = default_marker_path()
    assert path.is_file() and path.parent.name == "markers" and path.parent.parent.name == "radioactive"
    assert default_marker_sha256() == state_dict_sha256(load_state_dict_file(COMMITTED)[0])


def _grey_tree(root: Path, classes: int = 2, per_class: int = 3) -> None:
    gen = np.random.default_rng(0)
    for label in range(classes):
        folder = root / f"class{label}"
        folder.mkdir(parents=True)
        for index in range(per_class):
            Image.fromarray(gen.integers(0, 256, (28, 28), dtype=np.uint8), mode="L").save(folder / f"{index}.png")


@pytest.mark.slow
def test_installed_wheel_runs_keygen_and_mark_from_elsewhere(wheel, tmp_path):
    """A fresh virtual environment with only the wheel of radioactive (its dependencies come from the
    project's environment through a .pth path entry: .pth files inside an appended path are not processed,
    so the editable install of the checkout does not leak in)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    # Installed before the dependencies' path is added, so pip sees no other radioactive.
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
         "--disable-pip-version-check", "-q", str(wheel)],
        check=True, capture_output=True, text=True,
    )
    purelib = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                  check=True, capture_output=True, text=True).stdout.strip())
    deps = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    (purelib / "radioactive-test-deps.pth").write_text("\n".join(sorted(deps)) + "\n")

    home = tmp_path / "home"  # no cached marker to fall back on
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(HOME=str(home), PYTHONNOUSERSITE="1", OMP_NUM_THREADS="1")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    where = subprocess.run(
        [str(python), "-c", "import radioactive, radioactive.zoo as z; print(radioactive.__file__); "
         "print(z.default_marker_path())"],
        cwd=elsewhere, env=env, check=True, capture_output=True, text=True,
    ).stdout.split()
    assert all(Path(p).is_relative_to(venv) for p in where), where
    assert not any(Path(p).is_relative_to(ROOT) for p in where), where

    _grey_tree(elsewhere / "photos")
    radioactive = str(venv / "bin" / "radioactive")

    def run(*args: str) -> None:
        done = subprocess.run([radioactive, *args], cwd=elsewhere, env=env, capture_output=True, text=True)
        assert done.returncode == 0, f"radioactive {args[0]} failed:\n{done.stdout}\n{done.stderr}"

    run("keygen", "--out", "owner.key", "--seed", "0")
    run("mark", "--key", "owner.key", "--data", "photos", "--fraction", "0.5", "--out", "published",
        "--steps", "3", "--device", "cpu", "--no-progress")

    key = Key.load(elsewhere / "owner.key")
    assert key.marker.weights_sha256 == state_dict_sha256(load_state_dict_file(COMMITTED)[0])
    published = elsewhere / "published"
    assert (published / "manifest.jsonl").is_file() and (published / "mark.json").is_file()
    assert len(list(published.rglob("*.png"))) == 6

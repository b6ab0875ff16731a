"""Files the detect command tests run on: a tiny marker, a key, a suspect and a class-subfolder tree of PNGs."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from helpers.tiny import plant_carriers, tiny_model, tiny_spec
from radioactive.key import Key
from radioactive.marker import Marker
from radioactive.nets import save_checkpoint

SPEC = tiny_spec(10, feature_dim=16)  # 28 x 28 grey inputs


def write_detect_files(folder: Path, *, classes: int, per_class: int, planted: float, images: str = "ref") -> Path:
    """``folder`` with ``marker.safetensors``, ``key.safetensors`` (seed 1), ``suspect.safetensors`` (the marker
    with ``planted`` times the carriers added to its classifier rows: 0 for a clean copy) and
    ``images/c<k>/<i>.png`` (seeded random 28 x 28 grey images)."""
    model = tiny_model(SPEC)
    save_checkpoint(model, folder / "marker.safetensors", SPEC)
    key = Key.generate(Marker.from_checkpoint(folder / "marker.safetensors").info, seed=1)
    key.save(folder / "key.safetensors")
    plant_carriers(model[1].fc, key, planted)
    save_checkpoint(model, folder / "suspect.safetensors", SPEC)
    generator = torch.Generator().manual_seed(2)
    for k in range(classes):
        (folder / images / f"c{k}").mkdir(parents=True)
        for i in range(per_class):
            pixels = torch.randint(0, 256, (28, 28), generator=generator, dtype=torch.uint8).numpy()
            Image.fromarray(pixels).save(folder / images / f"c{k}" / f"{i:02d}.png")
    return folder


def mark_whole(folder: Path, flags: list[str]) -> None:
    """Mark ``folder/src`` whole into ``folder/pub`` with the command line (the files of
    :func:`write_detect_files` with ``images="src"``; ``flags`` are the marking settings)."""
    from radioactive.cli import main

    assert main(["mark", "--key", str(folder / "key.safetensors"), "--marker", str(folder / "marker.safetensors"),
                 "--data", str(folder / "src"), "--fraction", "1", "--out", str(folder / "pub"), "--no-progress",
                 "--device", "cpu", *flags]) == 0


def blackbox_detect_args(folder: Path, per_class: int, *more: str) -> list[str]:
    """``detect``'s arguments for a black-box audit of ``folder``'s suspect on probes ``folder/src`` (``per_class``
    probes per class, 2 control sets, no cache), then ``more``."""
    return ["detect", "--key", str(folder / "key.safetensors"), "--marker", str(folder / "marker.safetensors"),
            "--model", str(folder / "suspect.safetensors"), "--black-box", "--probes", str(folder / "src"),
            "--probes-per-class", str(per_class), "--controls", "2", "--cache-dir", "", "--device", "cpu", *more]

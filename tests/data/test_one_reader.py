"""One image reader for every command (issue 9, defect 3).

``detect`` once decoded with its own reader (no EXIF rotation, alpha dropped, 16-bit saturated, TIFF accepted,
no pixel limit, nested folders turned into classes) and ``train`` with a third. Both now read through
:func:`radioactive.sources.load_labelled`, which decodes every file with :func:`radioactive.data.read_image`.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import radioactive.cli.train as cli_train
import radioactive.sources as sources
from radioactive.cli import main
from radioactive.data import read_image
from radioactive.errors import ImageReadError
from radioactive.sources import load_labelled

H, W = 8, 6  # every image decodes to 8 rows x 6 columns


def _awkward_tree(root):
    """An EXIF-rotated JPEG, a half-transparent RGBA PNG (in a nested folder) and a 16-bit PNG."""
    rng = np.random.default_rng(0)
    (root / "a" / "nested" / "deep").mkdir(parents=True)
    (root / "b").mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 6 x 8 (rows x columns), shown rotated by 90 degrees
    Image.fromarray(rng.integers(0, 256, (W, H, 3), dtype=np.uint8)).save(root / "a" / "rotated.jpg", exif=exif,
                                                                          quality=95)
    rgba = rng.integers(0, 120, (H, W, 4), dtype=np.uint8)
    rgba[..., 3] = 128  # dark pixels over a white background: compositing matters
    Image.fromarray(rgba, mode="RGBA").save(root / "a" / "nested" / "deep" / "alpha.png")
    Image.fromarray(rng.integers(30_000, 65_536, (H, W), dtype=np.uint16)).save(root / "b" / "sixteen.png")
    return ["a/nested/deep/alpha.png", "a/rotated.jpg", "b/sixteen.png"]


def test_every_file_decodes_as_data_read_image(tmp_path):
    files = _awkward_tree(tmp_path / "tree")
    assert Image.open(tmp_path / "tree" / "b" / "sixteen.png").mode.startswith("I")
    data = load_labelled(tmp_path / "tree")
    assert data.ids == files and data.classes == ["a", "b"]  # nested folders are not classes
    assert data.labels.tolist() == [0, 0, 1] and not data.marked
    assert data.images.shape == (3, 3, H, W)  # colour wins: the grey image is repeated to RGB
    for image, rel in zip(data.images, files, strict=True):
        expected = read_image(tmp_path / "tree" / rel)
        assert expected.shape[1:] == (H, W)
        assert torch.equal(image, expected.expand(3, -1, -1)), rel
    grey = load_labelled(tmp_path / "tree", channels=1)
    assert torch.equal(grey.images[2], read_image(tmp_path / "tree" / "b" / "sixteen.png"))
    # The decoding rules themselves, so that a reader that skips them cannot pass.
    raw16 = np.asarray(Image.open(tmp_path / "tree" / "b" / "sixteen.png")).astype(np.float64)
    assert torch.equal(grey.images[2, 0], torch.from_numpy(np.round(raw16 / 257).astype(np.uint8)))
    assert int(data.images[0].min()) >= 127  # half-transparent dark pixels composited onto white


@pytest.mark.parametrize("suffix", [".tif", ".tiff"])
def test_tiff_is_refused_naming_the_file(tmp_path, suffix):
    (tmp_path / "tree" / "a").mkdir(parents=True)
    Image.fromarray(np.zeros((H, W), dtype=np.uint8)).save(tmp_path / "tree" / "a" / f"scan{suffix}")
    Image.fromarray(np.zeros((H, W), dtype=np.uint8)).save(tmp_path / "tree" / "a" / "fine.png")
    with pytest.raises(ImageReadError, match=rf"a/scan\{suffix}: TIFF images are not accepted"):
        load_labelled(tmp_path / "tree")


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` grey pixels (its data is never reached)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


def test_pixel_limit_applies(tmp_path):
    (tmp_path / "tree" / "a").mkdir(parents=True)
    (tmp_path / "tree" / "a" / "bomb.png").write_bytes(_png_header_only(10_000, 7_000))
    with pytest.raises(ImageReadError, match="a/bomb.png: 10000x7000 = 70000000 pixels exceeds the limit"):
        load_labelled(tmp_path / "tree")


def test_train_reads_through_load_labelled(tmp_path, monkeypatch):
    assert not hasattr(cli_train, "read_dataset") and not hasattr(cli_train, "_fit_image")
    _awkward_tree(tmp_path / "tree")
    calls = []

    class Stop(Exception):
        pass

    def spy(spec, **options):
        calls.append((str(spec), options))
        raise Stop

    monkeypatch.setattr(sources, "load_labelled", spy)
    monkeypatch.setenv("RADIOACTIVE_DEBUG", "1")  # re-raise instead of the command line's bug report
    with pytest.raises(Stop):
        main(["train", "--data", str(tmp_path / "tree"), "--out", str(tmp_path / "m.safetensors"), "--size", "8",
              "--device", "cpu"])
    assert calls == [(str(tmp_path / "tree"), {"size": 8})]

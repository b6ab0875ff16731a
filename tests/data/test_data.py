import io
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from radioactive.data import decode_image, encode_png, read_image, write_png
from radioactive.errors import DatasetError, ImageReadError, ManifestError
from radioactive.sources import open_source


def _save(path, image, **kwargs):
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **kwargs)
    return path


def _grey(seed=0, size=(16, 12)):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, size[::-1], dtype=np.uint8), mode="L")


def test_modes_follow_one_rule(tmp_path):
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[0, 0, 3] = 255  # opaque red-ish pixel, the rest fully transparent
    out = read_image(_save(tmp_path / "a.png", Image.fromarray(rgba, mode="RGBA")))
    assert out.shape == (3, 4, 4) and out[:, 0, 0].tolist() == [200, 0, 0] and out[:, 1, 1].tolist() == [255] * 3
    la = Image.fromarray(np.stack([np.full((3, 3), 10, np.uint8), np.full((3, 3), 0, np.uint8)], -1), mode="LA")
    assert read_image(_save(tmp_path / "la.png", la)).unique().tolist() == [255]
    sixteen = Image.fromarray(np.array([[0, 65535], [25700, 257]], dtype=np.uint16))
    out16 = read_image(_save(tmp_path / "s.png", sixteen))
    assert out16.shape == (1, 2, 2) and out16.flatten().tolist() == [0, 255, 100, 1]
    palette = _grey().convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE)
    assert read_image(_save(tmp_path / "p.png", palette)).shape[0] == 1  # a grey palette stays grey
    colour = Image.fromarray(np.random.default_rng(1).integers(0, 256, (5, 6, 3), dtype=np.uint8))
    assert read_image(_save(tmp_path / "c.png", colour.convert("P"))).shape == (3, 5, 6)
    bilevel = _grey().convert("1")
    assert set(read_image(_save(tmp_path / "b.png", bilevel)).unique().tolist()) <= {0, 255}
    for suffix in ("bmp", "webp"):
        assert read_image(_save(tmp_path / f"x.{suffix}", colour)).shape == (3, 5, 6)
    assert read_image(_save(tmp_path / "g.jpg", _grey())).shape == (1, 12, 16)


def test_exif_orientation_is_applied(tmp_path):
    image = _grey(size=(20, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    path = _save(tmp_path / "r.jpg", image, exif=exif)
    assert read_image(path).shape == (1, 20, 10)
    source = open_source(_tree(tmp_path / "t", {"a": [("r.jpg", path.read_bytes())]}))
    assert source.header_size(source.items[0]) == (1, 20, 10)


def _tree(root, classes):
    for name, files in classes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for file, data in files:
            (root / name / file).write_bytes(data)
    return root


def _png_bytes(seed=0, size=(8, 8)):
    return encode_png(torch.from_numpy(np.array(_grey(seed, size))).unsqueeze(0))


def test_bad_files_name_themselves(tmp_path):
    good = _png_bytes()
    cases = {
        "empty.png": b"",
        "truncated.png": good[: len(good) // 2],
        "garbage.png": b"this is not an image at all",
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ImageReadError, match=name.replace(".", r"\.")):
            read_image(tmp_path / name)
    gif = io.BytesIO()
    _grey().save(gif, format="GIF")
    with pytest.raises(ImageReadError, match="GIF images are not accepted"):
        decode_image(gif.getvalue(), "x.gif")
    with pytest.raises(ImageReadError, match="exceeds the limit of 50"):
        decode_image(good, "big.png", max_pixels=50)
    with pytest.raises(ImageReadError, match="missing.png"):
        read_image(tmp_path / "missing.png")


def test_folder_source_classes_items_and_symlinks(tmp_path):
    root = _tree(tmp_path / "src", {"cat": [("1.png", _png_bytes(1)), ("notes.txt", b"x")],
                                    "dog": [("2.png", _png_bytes(2))]})
    (root / "dog" / "sub").mkdir()
    (root / "dog" / "sub" / "3.png").write_bytes(_png_bytes(3))
    outside = tmp_path / "secret.png"
    outside.write_bytes(_png_bytes(4))
    os.symlink(outside, root / "cat" / "escape.png")
    os.symlink(root / "dog" / "2.png", root / "cat" / "inside.png")
    source = open_source(root)
    assert source.classes == ["cat", "dog"]
    assert [(i.rel, i.label) for i in source.items] == [
        ("cat/1.png", 0), ("cat/escape.png", 0), ("cat/inside.png", 0), ("dog/2.png", 1), ("dog/sub/3.png", 1)]
    items = {i.rel: i for i in source.items}
    with pytest.raises(ImageReadError, match="escape.png: refused: a symbolic link leading outside"):
        source.read(items["cat/escape.png"])
    assert torch.equal(source.read(items["cat/inside.png"]), source.read(items["dog/2.png"]))
    image, label, rel = next(iter(source))
    assert image.dtype == torch.uint8 and image.shape == (1, 8, 8) and (label, rel) == (0, "cat/1.png")
    (tmp_path / "flat").mkdir()
    with pytest.raises(DatasetError, match="no class subfolders"):
        open_source(tmp_path / "flat")


def test_csv_and_jsonl_lists(tmp_path):
    _tree(tmp_path, {"imgs": [("a.png", _png_bytes(1)), ("b.png", _png_bytes(2))]})
    (tmp_path / "list.csv").write_text("path,label\nimgs/a.png,shirt\nimgs/b.png,bag\n")
    source = open_source(tmp_path / "list.csv")
    assert source.classes == ["bag", "shirt"] and [i.label for i in source.items] == [1, 0]
    assert source.read(source.items[0]).shape == (1, 8, 8)
    (tmp_path / "list.jsonl").write_text(json.dumps({"path": "imgs/a.png", "label": 2}) + "\n\n"
                                         + json.dumps({"path": "imgs/b.png", "label": 0}) + "\n")
    source = open_source(tmp_path / "list.jsonl")
    assert source.classes == ["0", "1", "2"] and [i.label for i in source.items] == [2, 0]


@pytest.mark.parametrize("name, text, message", [
    ("l.csv", "imgs/a.png,1\nimgs/b.png\n", "l.csv row 2: expected 'path,label'"),
    ("l.csv", "../x.png,1\n", "l.csv row 1: path '../x.png' escapes"),
    ("l.csv", "/etc/passwd,1\n", "escapes the dataset root"),
    ("l.csv", "a.png,1\na.png,2\n", "duplicate path"),
    ("l.csv", "a.png,1\nb.png,cat\n", "mix class names and numbers"),
    ("l.csv", "a.png,-1\n", "negative label"),
    ("l.jsonl", '{"path": "a.png", "label": 1}\n{"path": "b.png"\n', "l.jsonl line 2: not valid JSON"),
    ("l.jsonl", '{"path": "a.png"}\n', "line 1: expected an object with 'path' and 'label'"),
    ("l.jsonl", '{"path": "a.png", "label": null}\n', "line 1: missing or invalid label"),
])
def test_malformed_lists_name_the_row(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(ManifestError, match=message.replace("(", r"\(").replace(".", r"\.")):
        open_source(tmp_path / name)


def test_unknown_sources(tmp_path):
    with pytest.raises(DatasetError, match="no such folder"):
        open_source(tmp_path / "nope")
    (tmp_path / "x.txt").write_text("a,1")
    with pytest.raises(DatasetError, match=".csv or .jsonl"):
        open_source(tmp_path / "x.txt")


def test_write_png_roundtrip_is_atomic_and_public(tmp_path):
    image = torch.randint(0, 256, (3, 5, 7), dtype=torch.uint8)
    digest = write_png(tmp_path / "d" / "x.png", image)
    assert torch.equal(read_image(tmp_path / "d" / "x.png"), image)
    assert len(digest) == 64 and os.listdir(tmp_path / "d") == ["x.png"]
    assert os.stat(tmp_path / "d" / "x.png").st_mode & 0o044  # readable by others (umask permitting)
    with pytest.raises(ValueError, match="uint8"):
        encode_png(image.float())


def test_fashion_mnist_source():
    try:
        source = open_source("fashion-mnist:test")
    except DatasetError:
        pytest.skip("Fashion-MNIST not installed")
    assert len(source) == 10_000 and source.in_memory and source.classes[0] == "t-shirt"
    first = source.items[0]
    assert first.rel.startswith("test/") and first.rel.endswith(".png")
    assert source.read(first).shape == (1, 28, 28) and source.header_size(first) == (1, 28, 28)

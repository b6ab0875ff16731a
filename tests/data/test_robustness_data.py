"""Image files and image lists a user feeds to ``radioactive mark``: every odd input is decoded by one rule
or refused with an error naming the file (or the list row); nothing is skipped silently, nothing crashes."""

from __future__ import annotations

import io
import os
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from radioactive.data import decode_image, read_image
from radioactive.errors import DatasetError, ImageReadError, ManifestError
from radioactive.publish import output_names
from radioactive.sources import open_source


def _png(array: np.ndarray, **kwargs) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, **kwargs).save(buffer, format="PNG")
    return buffer.getvalue()


def _save(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


GREY = np.arange(48, dtype=np.uint8).reshape(6, 8)


def test_zero_byte_and_truncated_files_name_the_file():
    with pytest.raises(ImageReadError, match=r"cat/empty\.png: empty file"):
        decode_image(b"", "cat/empty.png")
    data = _png(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    jpeg = _save(Image.fromarray(GREY), "JPEG")
    for cut in (8, 33, len(data) // 3, len(data) // 2, len(data) - 40):
        with pytest.raises(ImageReadError, match=r"cat/cut\.png: cannot decode"):
            decode_image(data[:cut], "cat/cut.png")
    with pytest.raises(ImageReadError, match="cat/cut.jpg"):
        decode_image(jpeg[: len(jpeg) // 2], "cat/cut.jpg")


def test_wrong_extension_is_decoded_by_content_or_refused(tmp_path):
    (tmp_path / "png_named.jpg").write_bytes(_png(GREY))
    assert torch.equal(read_image(tmp_path / "png_named.jpg")[0], torch.from_numpy(GREY))
    (tmp_path / "text.png").write_text("hello, not an image")
    with pytest.raises(ImageReadError, match=r"text\.png: cannot decode"):
        read_image(tmp_path / "text.png")
    gif = _save(Image.fromarray(GREY), "GIF")
    with pytest.raises(ImageReadError, match=r"x\.png: GIF images are not accepted"):
        decode_image(gif, "x.png")
    tiff = _save(Image.fromarray(GREY), "TIFF")
    with pytest.raises(ImageReadError, match="TIFF images are not accepted"):
        decode_image(tiff, "x.png")


def test_decompression_bomb_is_refused_above_the_configured_limit(tmp_path):
    bomb = _png(np.zeros((3000, 3000), dtype=np.uint8))
    assert len(bomb) < 40_000  # tiny on disk, 9 megapixels decoded
    with pytest.raises(ImageReadError, match=r"bomb\.png: 3000x3000 = 9000000 pixels exceeds the limit of 1000000"):
        decode_image(bomb, "bomb.png", max_pixels=1_000_000)
    assert decode_image(bomb, "bomb.png", max_pixels=9_000_000).shape == (1, 3000, 3000)
    (tmp_path / "cls").mkdir()
    (tmp_path / "cls" / "bomb.png").write_bytes(bomb)
    source = open_source(tmp_path, max_pixels=1_000_000)
    with pytest.raises(ImageReadError, match="cls/bomb.png.*exceeds the limit"):
        list(source)
    with pytest.raises(DatasetError, match="max_pixels"):
        open_source(tmp_path, max_pixels=0)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


@pytest.mark.parametrize("size", [(2**31 - 1, 2**31 - 1), (1, 2**30), (100_000, 100_000)])
def test_huge_dimensions_in_the_header_are_refused_before_decoding(size):
    width, height = size
    header = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
    data = header + _chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + _chunk(b"IEND", b"")
    with pytest.raises(ImageReadError, match=r"huge\.png: .*(exceeds the limit|decompression bomb|cannot decode)"):
        decode_image(data, "huge.png")


def test_animated_images_are_refused():
    frames = [Image.fromarray(GREY), Image.fromarray(255 - GREY)]
    for fmt in ("PNG", "WEBP"):
        data = _save(frames[0], fmt, save_all=True, append_images=frames[1:], **({"lossless": True} if fmt == "WEBP" else {}))
        with pytest.raises(ImageReadError, match=r"anim\.img: animated image \(2 frames\)"):
            decode_image(data, "anim.img")


@pytest.mark.parametrize("orientation, shape", [(1, (1, 6, 8)), (3, (1, 6, 8)), (6, (1, 8, 6)), (8, (1, 8, 6))])
def test_exif_orientation_is_applied(orientation, shape):
    image = Image.fromarray(GREY)
    exif = image.getexif()
    exif[0x0112] = orientation
    decoded = decode_image(_save(image, "PNG", exif=exif), "o.png")
    assert decoded.shape == shape
    expected = {1: GREY, 3: np.rot90(GREY, 2), 6: np.rot90(GREY, -1), 8: np.rot90(GREY, 1)}[orientation]
    assert torch.equal(decoded[0], torch.from_numpy(expected.copy()))


def test_cmyk_16bit_alpha_palette_are_decoded_consistently():
    cmyk = decode_image(_save(Image.new("CMYK", (5, 4), (0, 255, 255, 0)), "JPEG", quality=100), "c.jpg")
    assert cmyk.shape == (3, 4, 5) and cmyk[0].float().mean() > 200 and cmyk[1].float().mean() < 60
    deep = np.full((4, 5), 65535, dtype=np.uint16)
    deep[0, 0] = 257 * 7
    decoded = decode_image(_png(deep), "d.png")
    assert decoded.shape == (1, 4, 5) and decoded.dtype == torch.uint8
    assert decoded[0, 0, 0] == 7 and decoded[0, 1, 1] == 255
    rgba = np.zeros((4, 5, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[0, :, 3] = 255
    composited = decode_image(_png(rgba), "a.png")
    assert composited.shape == (3, 4, 5)
    assert composited[:, 0, 0].tolist() == [200, 0, 0] and composited[:, 1, 0].tolist() == [255, 255, 255]
    grey_alpha = decode_image(_save(Image.fromarray(GREY).convert("LA"), "PNG"), "la.png")
    assert grey_alpha.shape == (1, 6, 8) and torch.equal(grey_alpha[0], torch.from_numpy(GREY))
    palette = decode_image(_save(Image.fromarray(GREY).convert("P"), "PNG"), "p.png")
    assert palette.shape == (1, 6, 8)
    bilevel = decode_image(_save(Image.fromarray(GREY > 20), "PNG"), "b.png")
    assert bilevel.shape == (1, 6, 8) and set(bilevel.unique().tolist()) <= {0, 255}


def _tree(root, names):
    for rel in names:
        path = root / rel if isinstance(rel, str) else root / os.fsdecode(rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_png(GREY))


def test_unusual_and_non_utf8_file_names(tmp_path):
    names = ["cat/with space.png", "cat/-leading-dash.png", "cat/#hash%20.png", "cat/ünïcödé.png",
             "cat/" + "x" * 200 + ".png", "dog/a,comma.png", 'dog/quote".png']
    _tree(tmp_path, names)
    raw = os.path.join(os.fsencode(tmp_path), b"dog", b"\xff\xfebad.png")
    with open(raw, "wb") as handle:
        handle.write(_png(GREY))
    source = open_source(tmp_path)
    rels = [rel for _, _, rel in source]
    assert len(rels) == len(names) + 1
    assert all(image.shape == (1, 6, 8) for image, _, _ in source)
    assert any("\udcff" in rel for rel in rels)


def test_symlinks_are_not_followed_out_of_the_source(tmp_path):
    outside = tmp_path / "secret.png"
    outside.write_bytes(_png(GREY))
    root = tmp_path / "src"
    _tree(root, ["cat/a.png"])
    (root / "cat" / "inside_link.png").symlink_to(root / "cat" / "a.png")
    (root / "cat" / "escape.png").symlink_to(outside)
    (root / "cat" / "dangling.png").symlink_to(tmp_path / "missing.png")
    source = open_source(root)
    results = {}
    for item in source.items:
        try:
            results[item.rel] = tuple(source.read(item).shape)
        except ImageReadError as exc:
            results[item.rel] = str(exc)
    assert results["cat/a.png"] == results["cat/inside_link.png"] == (1, 6, 8)
    assert "cat/escape.png: refused: a symbolic link leading outside" in results["cat/escape.png"]
    assert "cat/dangling.png: file does not exist or is a broken link" in results["cat/dangling.png"]


def test_case_insensitive_duplicates_are_refused(tmp_path):
    _tree(tmp_path, ["cat/Photo.png", "cat/photo.png", "dog/x.png"])
    source = open_source(tmp_path)
    with pytest.raises(DatasetError, match=r"(?i)cat/photo\.png.*differ only by case"):
        output_names(source, set())


def _list(tmp_path, name, text):
    _tree(tmp_path, ["img/a.png", "img/b.png"])
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("l.csv", "path,label\nimg/a.png\n", r"l\.csv row 2: expected 'path,label'"),
        ("l.csv", "img/a.png,0\n../etc/passwd.png,1\n", r"l\.csv row 2: path '\.\./etc/passwd\.png' escapes"),
        ("l.csv", "img/a.png,0\n/etc/passwd,1\n", r"row 2: path '/etc/passwd' escapes"),
        ("l.csv", "img/a.png,0\nimg/../../x.png,1\n", "row 2: path .* escapes"),
        ("l.csv", "img/a.png,0\nC:/x.png,1\n", "row 2: path .* escapes"),
        ("l.csv", "img/a.png,0\nimg/a.png,1\n", r"row 2: duplicate path 'img/a\.png' \(first at l\.csv row 1\)"),
        ("l.csv", "img/a.png,0\n./img/a.png,0\n", "row 2: duplicate path"),
        ("l.csv", "img/a.png,0\nimg/b.png,-1\n", "row 2: negative label -1"),
        ("l.csv", "img/a.png,0\nimg/b.png,99999999999\n", "row 2: label 99999999999 is out of range"),
        ("l.csv", "img/a.png,0\nimg/b.png,\n", "row 2: empty label"),
        ("l.csv", "img/a.png,cat\nimg/b.png,1\n", "mix class names and numbers"),
        ("l.csv", "img/a.png,0\n,1\n", "row 2: empty or invalid path"),
        ("l.jsonl", '{"path": "img/a.png", "label": 0}\n{"path": "img/b.png"\n', r"l\.jsonl line 2: not valid JSON"),
        ("l.jsonl", '{"path": "img/a.png", "label": 0}\n[1, 2]\n', "line 2: expected an object"),
        ("l.jsonl", '{"path": "img/a.png", "label": null}\n', "line 1: missing or invalid label"),
        ("l.jsonl", '{"path": "img/a.png", "label": true}\n', "line 1: missing or invalid label"),
        ("l.jsonl", '{"path": "../a.png", "label": 0}\n', "line 1: path .* escapes"),
        ("l.jsonl", '{"path": "img/a.png", "label": 1.5}\n', "line 1: .*label"),
        ("l.jsonl", '{"path": "img/a.png", "label": [1]}\n', "line 1: .*label"),
        ("l.csv", "", "empty"),
    ],
)
def test_malformed_lists_name_the_row(tmp_path, name, text, message):
    with pytest.raises((ManifestError, DatasetError), match=message):
        open_source(_list(tmp_path, name, text))


def test_list_with_missing_file_names_the_row_when_read(tmp_path):
    source = open_source(_list(tmp_path, "l.csv", "img/a.png,0\nimg/missing.png,1\n"))
    with pytest.raises(ImageReadError, match=r"img/missing\.png: file does not exist"):
        list(source)


def test_list_with_non_utf8_bytes_is_a_clear_error(tmp_path):
    path = tmp_path / "l.csv"
    path.write_bytes(b"img/\xff.png,0\n")
    with pytest.raises(DatasetError, match=r"l\.csv: cannot read the image list"):
        open_source(path)


def test_unicode_digit_labels_are_names_not_a_crash(tmp_path):
    """Found by bench_fuzz: '²'.isdigit() is True but int('²') raises; such a label is a class name."""
    listing = tmp_path / "list.csv"
    listing.write_text("path,label\na.png,0\nb.png,\u00b2\n", encoding="utf-8")
    with pytest.raises(ManifestError, match="mix class names and numbers"):
        open_source(listing)
    listing.write_text("path,label\na.png,\u00b2\nb.png,x\n", encoding="utf-8")
    assert sorted(open_source(listing).classes) == ["x", "\u00b2"]

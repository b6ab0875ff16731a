"""Fuzz targets and hypothesis strategies shared by tests/package/test_fuzz.py (short) and benchmarks/bench_fuzz.py.

Each target takes one generated input and returns normally or raises a ``radioactive.errors`` type; any
other exception is a crash. Inputs are mutations of valid seeds (byte flips, truncations, insertions,
splices) mixed with arbitrary bytes and structured garbage, so both the parsers' edges and their depths
are reached.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from hypothesis import strategies as st
from PIL import Image

from radioactive.data import decode_image
from radioactive.endpoint import Endpoint
from radioactive.key import Key, MarkerInfo
from radioactive.nets import NetSpec
from radioactive.sources import open_source

_WORK = Path(tempfile.mkdtemp(prefix="radioactive-fuzz-"))


def _image_seeds() -> list[bytes]:
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (9, 7, 3), dtype=np.uint8))
    seeds = []
    for image, fmt, kwargs in [
        (rgb, "PNG", {}), (rgb.convert("L"), "PNG", {}), (rgb.convert("RGBA"), "PNG", {}), (rgb.convert("P"), "PNG", {}),
        (Image.fromarray(np.full((4, 5), 4000, dtype=np.uint16)), "PNG", {}), (rgb, "JPEG", {"quality": 80}),
        (rgb.convert("CMYK"), "JPEG", {}), (rgb, "WEBP", {"lossless": True}), (rgb, "BMP", {}), (rgb, "GIF", {}),
        (rgb, "PNG", {"save_all": True, "append_images": [rgb.convert("L").convert("RGB")]}),
    ]:
        buffer = io.BytesIO()
        image.save(buffer, format=fmt, **kwargs)
        seeds.append(buffer.getvalue())
    return seeds


IMAGE_SEEDS = _image_seeds()


@st.composite
def mutated(draw, seeds: list[bytes]) -> bytes:
    """A seed with a few random edits, or arbitrary bytes."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=512))
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(0, 6))):
        action = draw(st.integers(0, 4))
        position = draw(st.integers(0, max(0, len(data) - 1)))
        if action == 0 and data:
            data[position] ^= 1 << draw(st.integers(0, 7))
        elif action == 1 and data:
            data[position] = draw(st.integers(0, 255))
        elif action == 2:
            data[position:position] = draw(st.binary(min_size=1, max_size=16))
        elif action == 3:
            del data[position : position + draw(st.integers(1, 64))]
        else:
            data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


def image_target(data: bytes) -> None:
    image = decode_image(data, "fuzz/case.png", max_pixels=4_000_000)
    assert image.dtype == torch.uint8 and image.dim() == 3 and image.shape[0] in (1, 3), image.shape


# -- manifest / image list ------------------------------------------------------------------------------
_PATHS = st.one_of(
    st.sampled_from(["img/a.png", "img/b.png", "./img/a.png", "../x.png", "/etc/passwd", "C:/x.png", "img\\a.png",
                     "", " ", "img/../img/a.png", "img//a.png", "\x00", "a\nb.png", "img/A.PNG"]),
    st.text(max_size=20),
)
_LABELS = st.one_of(
    st.integers(-3, 12), st.sampled_from(["cat", "dog", "", " ", "-1", "1.5", "nan", "0x1"]), st.text(max_size=6),
    st.floats(allow_nan=True), st.none(), st.booleans(), st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@st.composite
def image_list(draw) -> tuple[str, bytes]:
    """(suffix, file bytes) of a CSV or JSONL image list."""
    suffix = draw(st.sampled_from([".csv", ".jsonl"]))
    rows = draw(st.lists(st.tuples(_PATHS, _LABELS), max_size=6))
    if suffix == ".csv":
        lines = ["path,label"] if draw(st.booleans()) else []
        for path, label in rows:
            lines.append(draw(st.sampled_from([f"{path},{label}", f'"{path}",{label}', f"{path}", f"{path},{label},x"])))
        text = "\n".join(lines)
    else:
        lines = []
        for path, label in rows:
            row = {"path": path, "label": label}
            if draw(st.integers(0, 5)) == 0:
                row.pop(draw(st.sampled_from(["path", "label"])))
            lines.append(json.dumps(row) if draw(st.integers(0, 6)) else json.dumps(row)[: draw(st.integers(0, 12))])
        text = "\n".join(lines)
    data = text.encode("utf-8", "surrogatepass")
    if draw(st.integers(0, 7)) == 0:
        data = draw(mutated([data or b"x"]))
    return suffix, data


def _list_root() -> Path:
    root = _WORK / "lists"
    if not root.exists():
        (root / "img").mkdir(parents=True)
        for name in ("a.png", "b.png"):
            Image.fromarray(np.zeros((4, 4), dtype=np.uint8)).save(root / "img" / name)
    return root


def manifest_target(case: tuple[str, bytes]) -> None:
    suffix, data = case
    path = _list_root() / f"list{suffix}"
    path.write_bytes(data)
    source = open_source(path)
    assert len(source) == len({item.rel for item in source.items})
    for item in source.items:
        assert 0 <= item.label < len(source.classes)
        assert not item.rel.startswith("/") and ".." not in item.rel.split("/")


# -- key file -------------------------------------------------------------------------------------------
def _key_seed() -> bytes:
    path = _WORK / "seed.key"
    if not path.exists():
        info = MarkerInfo(NetSpec("cnn", 3), weights_sha256="ab" * 32, feature_dim=4)
        Key.generate(info, seed=1).save(path)
    return path.read_bytes()


KEY_SEEDS = [_key_seed()]
KEY_FINGERPRINT = Key.load(_WORK / "seed.key").fingerprint


@st.composite
def key_file(draw) -> bytes:
    data = draw(mutated(KEY_SEEDS))
    if draw(st.integers(0, 4)) == 0:  # a structured edit of the JSON header, length prefix kept consistent
        seed = KEY_SEEDS[0]
        size = int.from_bytes(seed[:8], "little")
        header = bytearray(seed[8 : 8 + size])
        position = draw(st.integers(0, len(header) - 1))
        header[position : position + 1] = draw(st.sampled_from([b'"', b"{", b"}", b"0", b"9" * 30, b"-", b"]", b""]))
        data = len(header).to_bytes(8, "little") + bytes(header) + seed[8 + size :]
    return data


def key_target(data: bytes) -> None:
    path = _WORK / "case.key"
    path.write_bytes(data)
    os.chmod(path, 0o600)
    key = Key.load(path)
    assert key.fingerprint == KEY_FINGERPRINT  # anything accepted is the original key


# -- black-box response ----------------------------------------------------------------------------------
_ENDPOINT = Endpoint("http://127.0.0.1:9/", timeout=1, retries=0)
_NUMBERS = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-(10**400), 10**400),
                     st.booleans(), st.none(), st.text(max_size=3))
_JSON = st.recursive(
    st.one_of(_NUMBERS),
    lambda inner: st.one_of(st.lists(inner, max_size=5),
                            st.dictionaries(st.sampled_from(["scores", "labels", "logits", "x"]), inner, max_size=3)),
    max_leaves=30,
)


@st.composite
def response(draw) -> tuple[bytes, int]:
    count = draw(st.integers(0, 4))
    kind = draw(st.integers(0, 5))
    if kind == 0:
        body = draw(st.binary(max_size=200))
    elif kind == 1:
        depth = draw(st.integers(1, 200_000))
        body = b"[" * depth + draw(st.sampled_from([b"", b"1", b"]" * depth]))
    elif kind == 2:
        rows = draw(st.lists(st.lists(_NUMBERS, min_size=1, max_size=4), max_size=5))
        body = json.dumps({draw(st.sampled_from(["scores", "labels", "probs"])): rows}).encode()
    else:
        body = json.dumps(draw(_JSON)).encode()
    return body, count


def response_target(case: tuple[bytes, int]) -> None:
    body, count = case
    array = _ENDPOINT._parse(body, count)
    assert array.dtype == np.float64 and array.shape[0] == count and np.isfinite(array).all()


TARGETS = {
    "image_reader": (image_target, mutated(IMAGE_SEEDS)),
    "manifest_parser": (manifest_target, image_list()),
    "key_loader": (key_target, key_file()),
    "blackbox_response": (response_target, response()),
}

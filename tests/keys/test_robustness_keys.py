"""Key files: truncated or tampered files are refused, loose permissions warn, nothing in them executes."""

from __future__ import annotations

import json
import os
import pickle
import stat
import struct
import warnings

import pytest
import torch

from radioactive.errors import KeyFileError
from radioactive.key import Key, MarkerInfo
from radioactive.nets import NetSpec


def _key(seed: int = 0) -> Key:
    return Key.generate(MarkerInfo(NetSpec("cnn", 4), weights_sha256="ab" * 32, feature_dim=16), seed=seed)


@pytest.fixture
def key_bytes(tmp_path) -> bytes:
    return _key().save(tmp_path / "orig.key").read_bytes()


def _write(tmp_path, data: bytes, name: str = "k.key"):
    path = tmp_path / name
    path.write_bytes(data)
    os.chmod(path, 0o600)
    return path


def test_every_truncation_is_refused(tmp_path, key_bytes):
    for cut in list(range(0, len(key_bytes), max(1, len(key_bytes) // 97))) + [len(key_bytes) - 1]:
        with pytest.raises(KeyFileError, match="k.key"):
            Key.load(_write(tmp_path, key_bytes[:cut]))


def test_every_byte_flip_is_refused_or_harmless(tmp_path, key_bytes):
    """Flipping any byte either makes the file refused or leaves the key identical (e.g. JSON whitespace)."""
    reference = Key.load(_write(tmp_path, key_bytes, "ref.key"))
    for position in range(0, len(key_bytes), 3):
        data = bytearray(key_bytes)
        data[position] ^= 0x20
        try:
            loaded = Key.load(_write(tmp_path, bytes(data)))
        except KeyFileError:
            continue
        assert loaded.fingerprint == reference.fingerprint
        assert torch.equal(loaded.carriers, reference.carriers)


def _header(data: bytes) -> tuple[dict, bytes]:
    size = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8 : 8 + size]), data[8 + size :]


def _with_header(header: dict, body: bytes) -> bytes:
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + body


@pytest.mark.parametrize("field", ["seed", "weights", "classes"])
def test_tampered_metadata_fails_the_fingerprint(tmp_path, key_bytes, field):
    header, body = _header(key_bytes)
    meta = header["__metadata__"]
    if field == "seed":
        meta["radioactive.seed"] = str(int(meta["radioactive.seed"]) + 1)
    else:
        info = json.loads(meta["radioactive.key"])
        if field == "weights":
            info["marker"]["weights_sha256"] = "cd" * 32
        else:
            info["metadata"] = {"note": "swapped"}
        meta["radioactive.key"] = json.dumps(info)
    with pytest.raises(KeyFileError, match="integrity"):
        Key.load(_write(tmp_path, _with_header(header, body)))


def test_replaced_carriers_with_recomputed_digest_must_be_unit(tmp_path, key_bytes):
    header, body = _header(key_bytes)
    doubled = torch.frombuffer(bytearray(body), dtype=torch.float64) * 2
    with pytest.raises(KeyFileError, match="unit vectors|integrity"):
        Key.load(_write(tmp_path, _with_header(header, doubled.numpy().tobytes())))


def test_malformed_headers_are_refused(tmp_path, key_bytes):
    header, body = _header(key_bytes)
    for broken in (
        {**header, "__metadata__": {}},
        {**header, "__metadata__": {**header["__metadata__"], "radioactive.key": "{not json"}},
        {**header, "__metadata__": {**header["__metadata__"], "radioactive.seed": "NaN"}},
        {"carriers": {**header["carriers"], "shape": [4, 17]}, "__metadata__": header["__metadata__"]},
    ):
        with pytest.raises(KeyFileError):
            Key.load(_write(tmp_path, _with_header(broken, body)))
    huge = struct.pack("<Q", 1 << 62) + b"{}"
    with pytest.raises(KeyFileError, match="truncated|malformed"):
        Key.load(_write(tmp_path, huge))


def test_pickle_in_place_of_a_key_never_runs(tmp_path):
    target = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(target), "w"))

    with pytest.raises(KeyFileError):
        Key.load(_write(tmp_path, pickle.dumps(Payload())))
    torch.save({"carriers": Payload()}, tmp_path / "t.key")
    os.chmod(tmp_path / "t.key", 0o600)
    with pytest.raises(KeyFileError):
        Key.load(tmp_path / "t.key")
    assert not target.exists()


def test_missing_directory_and_empty_paths_are_refused(tmp_path):
    with pytest.raises(KeyFileError, match="does not exist"):
        Key.load(tmp_path / "nope.key")
    with pytest.raises(KeyFileError, match="does not exist"):
        Key.load(tmp_path)
    with pytest.raises(KeyFileError):
        Key.load(_write(tmp_path, b""))


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o666])
def test_key_readable_by_others_warns(tmp_path, mode):
    path = _key().save(tmp_path / "k.key")
    os.chmod(path, mode)
    with pytest.warns(UserWarning, match=r"readable by other users.*chmod 600"):
        Key.load(path)


def test_private_key_loads_silently_and_is_saved_0600_under_any_umask(tmp_path):
    old = os.umask(0)
    try:
        path = _key().save(tmp_path / "k.key")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Key.load(path)

import os
import stat

import pytest
import torch

from radioactive.errors import KeyFileError, KeyMismatchError
from radioactive.key import Key, MarkerInfo, random_key
from radioactive.nets import NetSpec


def _info(sha: str = "a" * 64, dim: int = 32) -> MarkerInfo:
    return MarkerInfo(NetSpec("cnn", 10), weights_sha256=sha, feature_dim=dim)


def test_generate_is_seeded_unit_and_roundtrips(tmp_path):
    key = Key.generate(_info(), seed=3)
    assert key.carriers.shape == (10, 32) and key.carriers.dtype == torch.float64
    torch.testing.assert_close(key.carriers.norm(dim=1), torch.ones(10, dtype=torch.float64))
    assert torch.equal(Key.generate(_info(), seed=3).carriers, key.carriers)
    assert not torch.equal(Key.generate(_info(), seed=4).carriers, key.carriers)
    path = key.save(tmp_path / "key.safetensors")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    loaded = Key.load(path)
    assert torch.equal(loaded.carriers, key.carriers) and loaded.fingerprint == key.fingerprint
    assert loaded.fingerprint not in repr(key.carriers) and len(key.fingerprint) == 16


def test_controls_differ_from_key_and_each_other():
    key = Key.generate(_info(), seed=3)
    c0, c1 = key.control_carriers(0), key.control_carriers(1)
    assert torch.equal(c0, key.control_carriers(0))
    assert not torch.allclose(c0, c1) and not torch.allclose(c0, key.carriers)


def test_neutral_carriers_are_orthogonal_to_head():
    head = torch.randn(10, 32, dtype=torch.float64)
    key = Key.generate(_info(), seed=1, space="neutral", head_weight=head)
    assert key.null_dim == 22
    assert (head @ key.carriers.T).abs().max() < 1e-10
    assert (head @ key.control_carriers(5).T).abs().max() < 1e-10


def test_mismatched_marker_is_refused():
    key = Key.generate(_info(), seed=0)
    with pytest.raises(KeyMismatchError, match="weights sha256"):
        key.check_marker(_info(sha="b" * 64))


def test_tampered_key_is_refused(tmp_path):
    path = Key.generate(_info(), seed=0).save(tmp_path / "k.safetensors")
    data = bytearray(path.read_bytes())
    data[-9] ^= 0x01  # flip a bit inside the carriers
    os.chmod(path, 0o600)
    path.write_bytes(bytes(data))
    with pytest.raises(KeyFileError, match="integrity"):
        Key.load(path)
    (tmp_path / "t.safetensors").write_bytes(bytes(data[:50]))
    with pytest.raises(KeyFileError, match="truncated"):
        Key.load(tmp_path / "t.safetensors")


def test_key_is_never_overwritten(tmp_path):
    key = Key.generate(_info(), seed=0)
    key.save(tmp_path / "k")
    with pytest.raises(FileExistsError):
        key.save(tmp_path / "k")


def test_random_key_is_drawn_like_the_key():
    key = Key.generate(_info(), seed=3)
    other = random_key(key, 11)
    assert torch.equal(other.carriers, Key.generate(_info(), seed=11).carriers)  # the same draw as a new key
    assert other.marker == key.marker and other.space == "full" and other.fingerprint != key.fingerprint
    head = torch.randn(10, 32, dtype=torch.float64)
    neutral = Key.generate(_info(), seed=1, space="neutral", head_weight=head)
    drawn = random_key(neutral, 5)
    assert drawn.space == "neutral" and torch.equal(drawn.basis, neutral.basis) and drawn.null_dim == 22
    assert (head @ drawn.carriers.T).abs().max() < 1e-10
    assert not torch.allclose(random_key(neutral, 6).carriers, drawn.carriers)

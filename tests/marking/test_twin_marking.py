"""Paired twins (radioactive.twins): the secret, its file (owner-only, integrity-checked, never overwritten),
the twin directions, both twins within the PSNR floor, and publishing one twin per coin through mark_dataset."""

from __future__ import annotations

import json
import math
import stat

import pytest
import torch
from helpers.detect_files import write_detect_files
from helpers.tiny import tiny_marker, tiny_spec

from radioactive import Key, MarkConfig, TwinSecret, mark_twins
from radioactive.errors import ConfigError, KeyFileError, KeyMismatchError, OutputExistsError
from radioactive.manifest import read_manifest_rows, read_mark_record
from radioactive.marker import Marker
from radioactive.publish import mark_dataset
from radioactive.sources import load_labelled, open_source
from radioactive.twins import mark_twin, twin_secret_for

CONFIG = MarkConfig(steps=6, lr=0.03, eval_draws=0)


@pytest.fixture(scope="module")
def setup():
    marker = tiny_marker(tiny_spec(4, 16, feature_dim=12))
    key = Key.generate(marker.info, seed=0)
    images = torch.randint(0, 256, (10, 1, 16, 16), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    labels = torch.arange(10) % 4
    ids = [f"c{i % 4}/{i}.png" for i in range(10)]
    return marker, key, images, labels, ids


def test_secret_draws_balanced_coins_from_its_seed(setup):
    _, key, *_ = setup
    ids = [str(i) for i in range(4000)]
    secret = TwinSecret.generate(key, ids, seed=11)
    heads = sum(secret.coins.values())
    assert abs(heads - 2000) < 5 * math.sqrt(1000)  # 5 binomial sigmas
    assert TwinSecret.generate(key, ids, seed=11).coins == secret.coins
    assert TwinSecret.generate(key, ids, seed=12).coins != secret.coins
    assert TwinSecret.generate(key, ["a"]).seed != TwinSecret.generate(key, ["a"]).seed  # from the OS
    assert set(secret.describe()) == {"fingerprint", "key_fingerprint", "spread", "pairs"}


def test_secret_file_is_owner_only_checked_and_never_overwritten(setup, tmp_path):
    _, key, *_ = setup
    secret = TwinSecret.generate(key, ["a", "b", "c"], seed=5)
    path = secret.save(tmp_path / "s.twins.json")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = TwinSecret.load(path)
    assert again.coins == secret.coins and again.seed == 5 and again.fingerprint == secret.fingerprint
    with pytest.raises(OutputExistsError, match="never overwritten"):
        TwinSecret.generate(key, ["x"], seed=6).save(path)
    data = json.loads(path.read_text())
    data["coins"]["a"] ^= 1
    tampered = tmp_path / "t.json"
    tampered.write_text(json.dumps(data))
    tampered.chmod(0o600)
    with pytest.raises(KeyFileError, match="integrity"):
        TwinSecret.load(tampered)
    (tmp_path / "junk.json").write_text("{not json")
    (tmp_path / "junk.json").chmod(0o600)
    with pytest.raises(KeyFileError, match="malformed"):
        TwinSecret.load(tmp_path / "junk.json")
    with pytest.raises(KeyFileError, match="does not exist"):
        TwinSecret.load(tmp_path / "missing.json")
    path.chmod(0o644)
    with pytest.warns(UserWarning, match="readable by other users"):
        TwinSecret.load(path)


def test_bad_secrets_are_refused(setup):
    _, key, *_ = setup
    with pytest.raises(ConfigError, match="spread"):
        TwinSecret(key.fingerprint, 1, {}, spread=0.0)
    with pytest.raises(ConfigError, match="0 or 1"):
        TwinSecret(key.fingerprint, 1, {"a": 2})
    with pytest.raises(ConfigError, match="seed"):
        TwinSecret(key.fingerprint, -1, {})
    other = Key.generate(key.marker, seed=99)
    with pytest.raises(KeyMismatchError, match=other.fingerprint):
        TwinSecret.generate(key, ["a"]).check_key(other)


@pytest.mark.parametrize("space", ["full", "neutral"])
def test_twin_directions_keep_the_carrier_and_differ_by_a_secret_orthogonal_direction(setup, space):
    marker, _, _, labels, ids = setup
    key = Key.generate(marker.info, seed=3, space=space, head_weight=marker.split.weight())
    secret = TwinSecret.generate(key, ids, seed=4, spread=0.5)
    u = key.carriers[labels]
    v = secret.directions(key, ids, labels)
    assert torch.allclose(v.norm(dim=1), torch.ones(len(ids), dtype=torch.float64))
    assert (v * u).sum(1).abs().max() < 1e-12
    assert (v[0] @ v[1]).abs() < 0.99  # one direction per image
    for twin, sign in ((0, 1), (1, -1)):
        c = secret.twin_carriers(key, ids, labels, [twin] * len(ids))
        assert torch.allclose(c.norm(dim=1), torch.ones(len(ids), dtype=torch.float64))
        assert torch.allclose((c * u).sum(1), torch.full((len(ids),), 1 / math.sqrt(1.25), dtype=torch.float64))
        assert torch.allclose((c * v).sum(1), torch.full((len(ids),), sign * 0.5 / math.sqrt(1.25), dtype=torch.float64))
    if key.basis is not None:  # inside the key's carrier space
        assert torch.allclose(v @ key.basis @ key.basis.T, v, atol=1e-10)
    other = TwinSecret.generate(key, ids, seed=5)
    assert not torch.allclose(other.directions(key, ids, labels), v)


def test_both_twins_meet_the_floor_differ_and_do_not_depend_on_the_coins(setup):
    marker, key, images, labels, ids = setup
    secret = TwinSecret.generate(key, ids, seed=7)
    first, second = mark_twins(marker, images, labels, key, secret, ids=ids, config=CONFIG)
    assert float(first.psnr.min()) >= 40 and float(second.psnr.min()) >= 40
    assert ((first.images - second.images).abs().flatten(1).amax(1) > 0).all()
    # What mark_dataset publishes (batches mixing both twins) is bit for bit the twin the coin names.
    published = secret.mark_published(marker, images, labels, key, CONFIG, ids=ids, batch_size=len(ids))
    coins = torch.tensor([secret.coin(i) for i in ids]).view(-1, 1, 1, 1).bool()
    assert torch.equal(published.images, torch.where(coins, second.images, first.images))
    # Chunking does not change a twin.
    assert torch.equal(mark_twin(marker, images, labels, key, secret, ids=ids, twin=1, config=CONFIG,
                                 batch_size=3).images, second.images)
    # epsilon 0 gives back the originals for both twins (the reduction).
    still = mark_twins(marker, images, labels, key, secret, ids=ids, config=MarkConfig(epsilon=0, steps=2))
    assert all(torch.equal(torch.round(t.images * 255).to(torch.uint8), images) for t in still)


def test_mark_twin_refuses_bad_input(setup):
    marker, key, images, labels, ids = setup
    secret = TwinSecret.generate(key, ids, seed=7)
    with pytest.raises(ConfigError, match="one of each"):
        mark_twin(marker, images, labels[:3], key, secret, ids=ids, twin=0)
    with pytest.raises(ConfigError, match="0 or 1"):
        mark_twin(marker, images, labels, key, secret, ids=ids, twin=2)
    with pytest.raises(ConfigError, match="not marked with twins"):
        secret.mark_published(marker, images[:1], labels[:1], key, CONFIG, ids=["nope"])
    with pytest.raises(KeyMismatchError):
        mark_twins(marker, images, labels, Key.generate(key.marker, seed=9), secret, ids=ids, config=CONFIG)


def test_mark_dataset_publishes_one_twin_per_coin_and_records_only_the_fingerprint(tmp_path):
    tmp = write_detect_files(tmp_path, classes=3, per_class=6, planted=0.0, images="src")
    marker = Marker.from_checkpoint(tmp / "marker.safetensors")
    key = Key.load(tmp / "key.safetensors")
    source = open_source(tmp / "src")
    secret = twin_secret_for(source, key, fraction=0.5, seed=2, secret_seed=123456789012345)
    assert len(secret.coins) == 9
    mark_dataset(source, tmp / "pub", marker=marker, key=key, fraction=0.5, config=CONFIG, seed=2, progress=False,
                 twins=secret)
    record = read_mark_record(tmp / "pub")
    assert record["settings"]["twins"] == secret.describe()
    text = (tmp / "pub" / "mark.json").read_text() + (tmp / "pub" / "manifest.jsonl").read_text()
    assert "123456789012345" not in text and "coins" not in text
    rows = [row for row in read_manifest_rows(tmp / "pub") if row["marked"]]
    assert {row["source"] for row in rows} == set(secret.coins)
    published = load_labelled(tmp / "pub")
    originals = load_labelled(tmp / "src")
    ids = sorted(secret.coins)
    at = {ident: i for i, ident in enumerate(originals.ids)}
    rows = torch.tensor([at[i] for i in ids])
    twins = mark_twins(marker, originals.images[rows], originals.labels[rows], key, secret, ids=ids, config=CONFIG)
    where = {ident: i for i, ident in enumerate(published.ids)}
    for n, ident in enumerate(ids):
        expected = torch.round(twins[secret.coin(ident)].images[n] * 255).to(torch.uint8)
        assert torch.equal(published.images[where[ident]], expected), ident
    # A secret for another selection, or for another key, is refused before anything is written.
    wrong = twin_secret_for(source, key, fraction=0.25, seed=2)
    with pytest.raises(ConfigError, match="holds coins for"):
        mark_dataset(source, tmp / "other", marker=marker, key=key, fraction=0.5, config=CONFIG, seed=2,
                     progress=False, twins=wrong)
    assert not (tmp / "other").exists()
    stranger = TwinSecret.generate(Key.generate(key.marker, seed=77), ids, seed=1)
    with pytest.raises(KeyMismatchError):
        mark_dataset(source, tmp / "other", marker=marker, key=key, fraction=0.5, config=CONFIG, seed=2,
                     progress=False, twins=stranger)

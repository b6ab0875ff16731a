"""Several keys on one suspect: Holm's step-down (hand-computed values, the classical sequential procedure), and
per-key verdicts identical to the single-key tests' on a tiny model."""

import math

import numpy as np
import pytest
import torch
from helpers.tiny import plant_carriers, tiny_marker, tiny_model, tiny_spec

from radioactive.detect import (
    BlackboxSettings,
    KeyFamily,
    Probes,
    Verdict,
    WhiteboxSettings,
    blackbox,
    blackbox_keys,
    detect_keys,
    holm_adjust,
    whitebox,
    whitebox_keys,
)
from radioactive.errors import ConfigError
from radioactive.key import Key
from radioactive.mark import MarkConfig

SPEC = tiny_spec(4, 12, feature_dim=16)


def _verdict(p: float, name: str, alpha: float = 0.05) -> Verdict:
    log10_p = math.log10(p)
    return Verdict(test="whitebox", log10_p=log10_p, alpha=alpha, classes=(), z=0.0, key_fingerprint=name)


@pytest.mark.parametrize(("ps", "expected"), [
    ([0.01, 0.04, 0.03], [0.03, 0.06, 0.06]),  # sorted 0.01, 0.03, 0.04: 3 x 0.01, 2 x 0.03, max(0.06, 0.04)
    ([0.001, 0.5, 0.02, 0.012], [0.004, 0.5, 0.04, 0.036]),  # 4 x .001, 3 x .012, 2 x .02, max(.04, .5)
    ([0.01, 0.011], [0.02, 0.02]),  # the running maximum: 1 x 0.011 < 2 x 0.01
    ([0.6, 0.7], [1.0, 1.0]),  # capped at 1
    ([0.2], [0.2]),  # one key: no correction
])
def test_holm_hand_computed(ps, expected):
    assert np.allclose(10 ** holm_adjust(np.log10(ps)), expected, rtol=1e-12, atol=0)


def test_holm_in_log_space_far_below_doubles():
    adjusted = holm_adjust([-1000.0, -2.0, -math.inf])
    # sorted: -inf (x3), -1000 (x2), -2 (x1): running maximum -inf, -1000 + log10 2, -2
    assert adjusted[2] == -math.inf
    assert adjusted[0] == pytest.approx(-1000.0 + math.log10(2), abs=1e-12)
    assert adjusted[1] == -2.0


def test_holm_refuses_nan_and_empty():
    with pytest.raises(ValueError, match="must not be NaN"):
        holm_adjust([-1.0, float("nan")])
    with pytest.raises(ConfigError, match="at least one p-value"):
        holm_adjust([])


def test_holm_decisions_match_the_sequential_step_down():
    """Adjusted p <= alpha rejects exactly the hypotheses Holm's sequential procedure rejects: walk the sorted
    p-values, reject while p_(i) <= alpha / (m - i + 1), stop at the first that is not."""
    rng = np.random.default_rng(0)
    alpha = 0.05
    for _ in range(500):
        m = int(rng.integers(1, 8))
        ps = rng.uniform(0, 0.06, size=m) ** rng.uniform(0.5, 3)
        rejected = np.zeros(m, dtype=bool)
        for rank, index in enumerate(np.argsort(ps, kind="stable")):
            if ps[index] > alpha / (m - rank):
                break
            rejected[index] = True
        family = KeyFamily(tuple(_verdict(p, f"k{i}") for i, p in enumerate(ps)), alpha=alpha)
        assert list(family.detected) == rejected.tolist()


def test_family_decisions_and_record():
    family = KeyFamily((_verdict(0.01, "a"), _verdict(0.04, "b"), _verdict(0.03, "c")), alpha=0.05)
    # unadjusted, all three are <= 0.05; Holm keeps only the smallest
    assert family.detected == (True, False, False) and family.any_detected
    record = family.to_dict()
    assert record["detected_keys"] == ["a"] and record["keys"] == 3 and record["correction"] == "holm"
    assert [r["holm_p"] for r in record["results"]] == pytest.approx([0.03, 0.06, 0.06], rel=1e-12)
    assert [r["key_fingerprint"] for r in record["results"]] == ["a", "b", "c"]
    table = family.summary()
    assert "1 of 3 keys DETECTED" in table and "family-wise alpha = 0.05" in table
    rows = {line.split()[0]: line for line in table.splitlines() if line[:1] in "abc" and len(line.split()) > 4}
    assert rows["a"].endswith("DETECTED") and rows["b"].endswith("not detected")
    assert "0.06" in rows["b"] and "weak" in rows["b"]


def test_family_refuses_duplicates_and_nothing():
    with pytest.raises(ConfigError, match="key a is given twice"):
        KeyFamily((_verdict(0.01, "a"), _verdict(0.5, "a")))
    with pytest.raises(ConfigError, match="at least one verdict"):
        KeyFamily(())


@pytest.fixture(scope="module")
def setup():
    """A tiny marker, three keys, a suspect carrying key 0's carriers (planted), clean reference images."""
    with torch.random.fork_rng():
        marker = tiny_marker(SPEC)
        keys = [Key.generate(marker.info, seed=seed) for seed in (1, 2, 3)]
        suspect = tiny_model(SPEC).eval()
        plant_carriers(suspect[1].fc, keys[0], 3.0)
    gen = torch.Generator().manual_seed(4)
    reference = torch.randint(0, 256, (40, 1, 12, 12), generator=gen, dtype=torch.uint8)
    return marker, keys, suspect, reference


def test_whitebox_keys_equal_the_single_key_runs(setup):
    marker, keys, suspect, reference = setup
    settings = WhiteboxSettings(null_trials=5, null_seed=0, alpha=1e-3)
    family = whitebox_keys(suspect, keys, reference, marker=marker, settings=settings)
    singles = [whitebox(suspect, key, reference, marker=marker, settings=settings) for key in keys]
    assert [v.to_dict() for v in family.verdicts] == [v.to_dict() for v in singles]
    assert family.fingerprints == tuple(key.fingerprint for key in keys)
    assert family.holm_log10_p == tuple(holm_adjust([v.log10_p for v in singles]))
    assert family.detected == (True, False, False)  # the planted key only
    assert family.verdicts[0].log10_p < -6
    # one marker per key gives the same verdicts
    again = whitebox_keys(suspect, keys, reference, marker=[marker] * 3, settings=settings)
    assert [v.log10_p for v in again.verdicts] == [v.log10_p for v in singles]
    with pytest.raises(ConfigError, match="2 markers for 3 keys"):
        whitebox_keys(suspect, keys, reference, marker=[marker] * 2)


def test_blackbox_keys_equal_the_single_key_runs(setup):
    marker, keys, suspect, reference = setup
    gen = torch.Generator().manual_seed(5)
    probes = Probes(torch.randint(0, 256, (12, 1, 12, 12), generator=gen, dtype=torch.uint8), torch.arange(12) % 4)

    def predict(images):
        with torch.no_grad():
            return suspect(images)

    settings = BlackboxSettings(num_controls=3, combine="perm", mark=MarkConfig(steps=1, eval_draws=0))
    family = blackbox_keys(predict, keys[:2], probes, marker=marker, settings=settings)
    singles = [blackbox(predict, key, probes, marker=marker, settings=settings) for key in keys[:2]]
    assert [v.to_dict() for v in family.verdicts] == [v.to_dict() for v in singles]
    assert family.alpha == settings.alpha


def test_detect_keys_checks_duplicates_before_testing(setup):
    _, keys, _, _ = setup
    calls = []

    def test(key):
        calls.append(key.fingerprint)
        return _verdict(0.5, key.fingerprint)

    with pytest.raises(ConfigError, match=f"key {keys[0].fingerprint} is given twice"):
        detect_keys([keys[0], keys[1], keys[0]], test)
    assert calls == []
    family = detect_keys(keys[::-1], test, alpha=0.01)
    assert calls == [key.fingerprint for key in keys[::-1]] and family.alpha == 0.01
    with pytest.raises(ConfigError, match="at least one key"):
        detect_keys([], test)

import copy
import math

import numpy as np
import pytest
import torch
from helpers.calibration import assert_rate_within
from helpers.tiny import plant_carriers, tiny_marker, tiny_spec
from scipy import stats as sps

from radioactive import stats
from radioactive.detect import Verdict, WhiteboxSettings, align, whitebox
from radioactive.errors import ConfigError, DatasetError, KeyMismatchError
from radioactive.key import Key, random_key
from radioactive.marker import Marker
from radioactive.nets import NetSpec, build_from_spec

SPEC = tiny_spec(10, 16, width=8, feature_dim=32)


@pytest.fixture(scope="module")
def marker() -> Marker:
    return tiny_marker(SPEC)


@pytest.fixture(scope="module")
def reference() -> torch.Tensor:
    return torch.rand(120, 1, 16, 16, generator=torch.Generator().manual_seed(1))


def _suspect_with_carriers(marker: Marker, key: Key, beta: float) -> torch.nn.Module:
    model = copy.deepcopy(marker.model)
    for param in model.parameters():
        param.requires_grad_(False)
    plant_carriers(model[1].fc, key, beta)
    return model


@pytest.mark.parametrize("beta", [0.0, 0.05, 0.2, 1.0])
def test_positive_control_matches_analytic(marker, reference, beta):
    key = Key.generate(marker.info, seed=5)
    suspect = _suspect_with_carriers(marker, key, beta)
    verdict = whitebox(suspect, key, reference, marker=marker)
    assert verdict.alignment["method"] == "identity"
    assert verdict.alignment["r2_identity"] == pytest.approx(1.0)
    rows = suspect[1].fc.weight.detach().double()
    expected = (rows * key.carriers).sum(1) / rows.norm(dim=1)
    observed = np.array([c.cosine for c in verdict.classes])
    np.testing.assert_allclose(observed, expected.numpy(), atol=1e-12)
    expected_log10 = stats.fisher_log_sf(stats.cosine_log_sf(expected.numpy(), 32)) / math.log(10)
    assert verdict.log10_p == pytest.approx(expected_log10, rel=1e-9, abs=1e-12)
    if beta >= 1.0:
        assert verdict.detected and verdict.log10_p < -10
    assert isinstance(verdict, Verdict) and verdict.to_dict()["classes"][0]["cosine"] == observed[0]


def test_lstsq_alignment_recovers_a_rotation(marker, reference):
    """A suspect whose features are a rotation of the marker's, with rows rotated alike, aligns exactly."""
    key = Key.generate(marker.info, seed=6)
    rotation, _ = torch.linalg.qr(torch.randn(32, 32, generator=torch.Generator().manual_seed(2)))

    class Rotated(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = copy.deepcopy(marker.model)
            self.fc = torch.nn.Linear(32, 10)
            with torch.no_grad():
                rows = marker.split.head.weight + 0.5 * key.carriers.float()
                self.fc.weight.copy_(rows @ rotation.float())
                self.fc.bias.copy_(marker.split.head.bias)

        def forward(self, x):
            feats = self.inner[1].body(self.inner[0](x))
            return self.fc(feats @ rotation.float())

    verdict = whitebox(Rotated(), key, reference, marker=marker, settings=WhiteboxSettings(alignment="lstsq"))
    assert verdict.alignment["method"] == "lstsq"
    assert verdict.alignment["r2"] > 0.9999
    rows = (marker.split.head.weight.detach().double() + 0.5 * key.carriers)
    expected = (rows * key.carriers).sum(1) / rows.norm(dim=1)
    np.testing.assert_allclose([c.cosine for c in verdict.classes], expected.numpy(), atol=1e-4)


def test_align_function_exact():
    gen = torch.Generator().manual_seed(3)
    f_m = torch.randn(200, 8, generator=gen, dtype=torch.float64)
    mapping = torch.randn(8, 5, generator=gen, dtype=torch.float64)
    got, r2 = align(f_m, f_m @ mapping)
    torch.testing.assert_close(got, mapping)
    assert r2 == pytest.approx(1.0)
    with pytest.raises(ValueError, match="rows differ"):
        align(f_m, f_m[:10])


def test_clean_suspects_are_calibrated():
    """H0 through the whole test: 60 independently initialised suspects that never saw marks (least-squares
    alignment from their own features), each with its own key. Rows and keys both vary; the 600 per-class
    p-values are uniform (KS) and the false-positive rates stay within their binomial intervals, which a
    doubled rate would leave."""
    marker = tiny_marker(tiny_spec(10, 8, feature_dim=16))
    reference = torch.rand(48, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    class_p, combined_p = [], []
    for trial in range(60):
        torch.manual_seed(100 + trial)
        suspect = build_from_spec(NetSpec("mlp", 10, input_size=(8, 8), kwargs={"hidden": 12, "input_size": 8}))
        verdict = whitebox(suspect, Key.generate(marker.info, seed=trial), reference, marker=marker)
        assert verdict.alignment["method"] == "lstsq"
        class_p += [10 ** c.log10_p for c in verdict.classes]
        combined_p.append(10 ** verdict.log10_p)
    assert sps.kstest(class_p, "uniform").pvalue > 0.001
    for alpha in (0.05, 0.2):
        assert_rate_within(class_p, alpha, exact=True)
    assert_rate_within(combined_p, 0.3)


def test_class_neutral_key_uses_subspace_dimension(marker, reference):
    key = Key.generate(marker.info, seed=7, space="neutral", head_weight=marker.split.weight())
    verdict = whitebox(_suspect_with_carriers(marker, key, 0.3), key, reference, marker=marker)
    assert verdict.details["null_dim"] == key.null_dim == 22
    assert verdict.log10_p < -3


def test_class_count_mismatch_explains_and_class_map(marker, reference):
    key = Key.generate(marker.info, seed=8)
    other = build_from_spec(tiny_spec(5, 16, width=8, feature_dim=32))
    with pytest.raises(KeyMismatchError, match=r"key has 10 classes but the suspect's head has 5 outputs.*class_map"):
        whitebox(other, key, reference, marker=marker)
    verdict = whitebox(other, key, reference, marker=marker, settings=WhiteboxSettings(class_map={0: 0, 2: 1, 4: 2}))
    assert [c.index for c in verdict.classes] == [0, 2, 4]
    assert [c.output for c in verdict.classes] == [0, 1, 2]
    with pytest.raises(KeyMismatchError, match="output 7"):
        whitebox(other, key, reference, marker=marker, settings=WhiteboxSettings(class_map={0: 7}))


def test_marked_reference_refused_or_warned(marker, reference):
    key = Key.generate(marker.info, seed=9)
    marked = torch.zeros(len(reference), dtype=torch.bool)
    marked[3] = True
    with pytest.raises(DatasetError, match="1 of 120 reference images are marked"):
        whitebox(marker.model, key, reference, marker=marker, marked=marked)
    with pytest.warns(UserWarning, match="may not be calibrated"):
        whitebox(marker.model, key, reference, marker=marker, marked=marked,
                 settings=WhiteboxSettings(allow_marked=True))


def test_few_reference_images_warn(marker):
    key = Key.generate(marker.info, seed=10)
    with pytest.warns(UserWarning, match="only 20 reference images"):
        whitebox(marker.model, key, torch.rand(20, 1, 16, 16), marker=marker)


def test_bad_inputs(marker, reference):
    key = Key.generate(marker.info, seed=12)
    with pytest.raises(ConfigError, match=r"unknown alignment 'procrustes'; choose from \['auto', 'lstsq', 'identity'\]"):
        WhiteboxSettings(alignment="procrustes")
    with pytest.raises(DatasetError, match="empty"):
        whitebox(marker.model, key, torch.rand(0, 1, 16, 16), marker=marker)
    other_spec = tiny_spec(10, 16, feature_dim=32)
    foreign = Key.generate(Marker.from_model(build_from_spec(other_spec), other_spec).info, seed=1)
    with pytest.raises(KeyMismatchError, match="was made for marking network"):
        whitebox(marker.model, foreign, reference, marker=marker)


def test_null_trials_and_batches_and_mode_restored(marker, reference):
    key = Key.generate(marker.info, seed=13)
    suspect = _suspect_with_carriers(marker, key, 1.0)
    suspect.train()
    settings = WhiteboxSettings(null_trials=50, null_seed=1, batch_size=7)
    verdict = whitebox(suspect, key, reference, marker=marker, settings=settings)
    assert suspect.training
    nt = verdict.null_trials
    assert nt["trials"] == 50 and nt["rank"] == 1 and nt["empirical_p"] == pytest.approx(1 / 51)
    again = whitebox(suspect, key, list(torch.split(reference, 50)), marker=marker)
    assert again.log10_p == pytest.approx(verdict.log10_p, rel=1e-6)
    for seed, null_log10_p in list(zip(nt["seeds"], nt["null_log10_p"]))[:2]:  # each is a random key's test
        assert whitebox(suspect, random_key(key, seed), reference, marker=marker).log10_p == pytest.approx(null_log10_p)


def test_settings_are_validated_and_recorded():
    settings = WhiteboxSettings(input_size=24, class_map=[(0, 1), (1, 0)], transform=torch.sigmoid, null_seed=3)
    assert settings.input_size == (24, 24) and settings.class_map == ((0, 1), (1, 0))
    data = settings.to_dict()
    assert data["input_size"] == [24, 24] and data["class_map"] == [[0, 1], [1, 0]] and data["transform"] == "sigmoid"
    assert WhiteboxSettings().to_dict() == {
        "head": None, "alignment": "auto", "allow_marked": False, "input_size": None, "transform": None,
        "class_map": None, "alpha": 0.001, "batch_size": 256, "null_trials": 0, "null_seed": None,
    }
    for bad, match in (({"input_size": (0, 4)}, "input_size"), ({"batch_size": 0}, "batch_size"),
                       ({"null_trials": -1}, "null_trials"), ({"alpha": 0.0}, "alpha"),
                       ({"class_map": "0:1"}, "class_map"), ({"transform": 3}, "transform")):
        with pytest.raises(ConfigError, match=match):
            WhiteboxSettings(**bad)


def test_verdict_validation_and_formatting(marker, reference):
    key = Key.generate(marker.info, seed=14)
    verdict = whitebox(_suspect_with_carriers(marker, key, 3.0), key, reference, marker=marker)
    text = verdict.summary()
    assert "DETECTED" in text and key.fingerprint in text
    data = verdict.to_dict()
    assert data["detected"] is True and data["key_fingerprint"] == key.fingerprint and "carriers" not in str(data)
    with pytest.raises(ValueError, match="alpha"):
        Verdict(test="x", log10_p=-1.0, alpha=1.5, classes=(), z=0.0, key_fingerprint="k")
    from radioactive.detect import format_p

    assert format_p(-1087.25) == "10^-1087.2" or format_p(-1087.25) == "10^-1087.3"
    assert format_p(-1.0) == "0.1"


def test_cpu_layout_is_restored_and_view_models_work(marker, reference):
    """The channels-last speed-up never changes the caller's model and falls back for models using .view."""

    class ViewNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
            self.fc = torch.nn.Linear(4 * 16 * 16, 10)

        def forward(self, x):
            return self.fc(torch.relu(self.conv(x)).view(len(x), -1))

    key = Key.generate(marker.info, seed=15)
    model = ViewNet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    verdict = whitebox(model, key, torch.rand(1100, 1, 16, 16), marker=marker, settings=WhiteboxSettings(batch_size=500))
    assert verdict.alignment["suspect_dim"] == 1024
    assert model.conv.weight.is_contiguous()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.is_contiguous() for p in marker.model.parameters())

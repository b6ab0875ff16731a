"""The two-owner benchmark's pure pieces (``benchmarks/bench_two_owners.py``): disjoint owner subsets from the
experiment runner's nested selection, what each suspect trains on, and the summary. Its ``--smoke`` run takes
about 20 s of CPU (five tiny trainings, four markings), too slow for the suite; it is run by hand."""

from __future__ import annotations

import argparse
import importlib.util
import math
from pathlib import Path

import pytest
import torch

from radioactive.detect import KeyFamily, Verdict
from radioactive.detect.verdict import DEFAULT_ALPHA
from radioactive.experiment import Context

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_two_owners", ROOT / "benchmarks" / "bench_two_owners.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def bench_fractions() -> dict[str, float]:
    return {"A": 0.05, "B": 0.10}


def _args(smoke: bool) -> argparse.Namespace:
    return argparse.Namespace(config=str(ROOT / "configs" / "fashion-mnist.toml"), device="cpu", smoke=smoke,
                              arch="cnn" if smoke else "resnet_narrow", seeds=[0] if smoke else [0, 1, 2],
                              alpha=DEFAULT_ALPHA, fractions=dict(bench_fractions()))


def test_owner_subsets_are_disjoint_and_sized(bench, tmp_path):
    config = bench.make_config(_args(smoke=True))
    marker, data = bench.smoke_inputs()
    context = Context(config, tmp_path, marker=marker, data=data)
    first = context.selection(3, bench.FRACTIONS["A"])
    rest = bench.disjoint_rest(first, context.selection(3, bench.FRACTIONS["A"] + bench.FRACTIONS["B"]))
    labels = data["owner"][1]
    assert not set(first.tolist()) & set(rest.tolist())
    assert torch.bincount(labels[first]).tolist() == [5] * 4  # 5 % of 100 per class
    assert torch.bincount(labels[rest]).tolist() == [10] * 4  # the next 10 %
    assert bench.owner_seeds(3) == {"A": 3, "B": 1003}
    with pytest.raises(ValueError, match="not inside"):
        bench.disjoint_rest(torch.tensor([1, 99]), torch.tensor([1, 2, 3]))


def test_published_images_swap_in_only_the_named_owners(bench):
    images = torch.zeros(6, 1, 2, 2, dtype=torch.uint8)
    marks = {"A": (torch.tensor([0, 2]), torch.full((2, 1, 2, 2), 7, dtype=torch.uint8)),
             "B": (torch.tensor([5]), torch.full((1, 1, 2, 2), 9, dtype=torch.uint8))}
    firsts = {kind: bench.published_images(images, marks, owners)[:, 0, 0, 0].tolist()
              for kind, owners in bench.SUSPECTS.items()}
    assert firsts == {"both": [7, 0, 7, 0, 0, 9], "A-only": [7, 0, 7, 0, 0, 0], "B-only": [0, 0, 0, 0, 0, 9],
                      "neither": [0] * 6}
    assert int(images.sum()) == 0  # the clean split is left as it was


def _row(bench, kind: str, seed: int, white: tuple[float, float], black: tuple[float, float], randoms: list[float]):
    def family(ps):
        return KeyFamily(tuple(Verdict(test="t", log10_p=math.log10(p), alpha=1e-3, classes=(), z=0.0,
                                       key_fingerprint=f"k{i}") for i, p in enumerate(ps)), alpha=1e-3)

    return {"suspect": kind, "seed": seed, "whitebox": bench.family_row(family(white)),
            "blackbox": bench.family_row(family(black)),
            "random_keys": {"log10_p": [math.log10(p) for p in randoms]}}



def test_summary_counts_holm_decisions_and_checks_random_keys(bench):
    uniform = [(i + 0.5) / 40 for i in range(40)]
    rows = [_row(bench, "both", 0, (4e-4, 6e-4), (1e-5, 0.3), uniform[:20]),  # Holm: 2 x 4e-4, max(8e-4, 6e-4)
            _row(bench, "both", 1, (6e-4, 7e-4), (1e-5, 1e-5), uniform[20:]),  # 2 x 6e-4 > 1e-3: both missed
            _row(bench, "neither", 0, (0.5, 0.04), (0.2, 0.9), [])]
    assert rows[0]["whitebox"]["detected"] == {"A": True, "B": True}
    assert rows[0]["whitebox"]["holm_log10_p"]["B"] == pytest.approx(math.log10(8e-4))
    assert rows[1]["whitebox"]["detected"] == {"A": False, "B": False}  # unadjusted, both are <= 1e-3
    summary = bench.summarise(rows, 1e-3)
    both = summary["suspects"]["both"]
    assert both["whitebox"]["detected"] == {"A": 1, "B": 1} and both["whitebox"]["correct"] == 1
    assert both["blackbox"]["detected"] == {"A": 2, "B": 1} and both["blackbox"]["correct"] == 1
    assert both["whitebox"]["median_log10_p"]["A"] == pytest.approx((math.log10(4e-4) + math.log10(6e-4)) / 2)
    neither = summary["suspects"]["neither"]
    assert neither["whitebox"]["correct"] == 1 and neither["runs"] == 1
    assert "A-only" not in summary["suspects"]
    random = summary["random_keys"]
    assert random["count"] == 40 and random["fraction_at_most_0.05"] == pytest.approx(2 / 40)
    assert random["ks_uniform_p"] > 0.99  # an evenly spread sample
    table = bench.table(summary)
    assert "| both | blackbox | -5.00 (2/2) | -2.76 (1/2) | 1/2 |" in table


def test_config_is_the_grids_with_perm_did_and_the_default_alpha(bench):
    config = bench.make_config(_args(smoke=False))
    assert [m.arch for m in config.models] == ["resnet_narrow"] and config.seeds == (0, 1, 2)
    detect = config.detect
    assert (detect.statistic, detect.combine, detect.reference_model) == ("margin", "perm", True)
    assert detect.alpha == DEFAULT_ALPHA and detect.num_controls == 20 and detect.probes == 500
    assert config.mark_config().steps == 30 and config.recipe(config.models[0]).epochs == 3
    assert config.fractions == pytest.approx((0.05, 0.15))  # A's subset, then A's and B's (nested selection)
    with pytest.raises(SystemExit):
        bench.main(["--random-keys", "0"])
    for bad in (["0", "0.1"], ["0.6", "0.5"]):
        with pytest.raises(SystemExit):
            bench.main(["--fractions", *bad])

import json
import math

from radioactive import report
from radioactive.detect import ClassScore, Verdict


def _white() -> Verdict:
    classes = tuple(ClassScore(index=k, log10_p=-0.5 * k, z=0.3 * k, cosine=0.05 * k, output=k) for k in range(4))
    return Verdict(test="whitebox", log10_p=-1087.3, alpha=0.05, classes=classes, z=70.0, key_fingerprint="abcd",
                   model_sha256="f" * 64, counts={"classes": 4, "reference": 100},
                   alignment={"method": "identity", "reason": "requested", "r2": 1.0, "r2_identity": 1.0},
                   details={"null_dim": 32},
                   null_trials={"trials": 3, "rank": 1, "empirical_p": 0.25, "null_log10_p": [-0.1, -0.5, -0.2],
                                "null_fraction_below_alpha": 0.0, "seeds": [1, 2, 3]})


def _black() -> Verdict:
    classes = tuple(ClassScore(index=k, log10_p=-1.0, z=1.28, statistic=1.0 + k, controls=(0.1, 0.2, 0.3), count=5)
                    for k in range(3))
    return Verdict(test="blackbox-rank-did", log10_p=-2.0, alpha=0.01, classes=classes, z=2.3, key_fingerprint="abcd",
                   details={"statistic": "margin", "difference_in_differences": True})


def test_whitebox_report_and_json(tmp_path):
    page = report.write_report(_white(), tmp_path / "rep", command={"model": "m"})
    text = page.read_text()
    assert "DETECTED" in text and "10^-1087.3" in text and "null_density.png" in text and "null_trials.png" in text
    for name in ("null_density.png", "null_trials.png", "verdict.json"):
        assert (tmp_path / "rep" / name).stat().st_size > 1000 or name == "verdict.json"
    data = json.loads((tmp_path / "rep" / "verdict.json").read_text())
    assert data["verdict"]["log10_p"] == -1087.3 and data["verdict"]["p"] == 0.0
    assert data["command"] == {"model": "m"} and "torch" in data["versions"]


def test_blackbox_report(tmp_path):
    page = report.write_report(_black(), tmp_path)
    text = page.read_text()
    assert "DETECTED" in text and "blackbox.png" in text and "exchangeable" in text
    assert (tmp_path / "blackbox.png").stat().st_size > 1000


def test_json_handles_infinities(tmp_path):
    verdict = Verdict(test="whitebox", log10_p=-math.inf, alpha=0.05, classes=(), z=math.inf, key_fingerprint="k")
    report.write_json(verdict, tmp_path / "v.json")
    data = json.loads((tmp_path / "v.json").read_text())
    assert data["verdict"]["log10_p"] == "-inf"

"""The HTML report states the evidence level and the references-alone diagnostic."""

from radioactive import report
from radioactive.detect import ClassScore, Verdict


def _verdict(log10_p: float, extreme: bool) -> Verdict:
    classes = tuple(ClassScore(index=k, log10_p=-1.0, z=1.28, statistic=1.0 + k, controls=(0.1, 0.2, 0.3), count=5)
                    for k in range(3))
    alone = {"statistic": "margin", "references": 3, "log10_p_upper": -0.1, "log10_p_lower": -2.4 if extreme else -0.3,
             "extreme": extreme, "threshold": 0.05, "note": "shifted towards detection by this same draw"}
    return Verdict(test="blackbox-perm-did", log10_p=log10_p, alpha=1e-3, classes=classes, z=2.3, key_fingerprint="k",
                   details={"statistic": "margin", "difference_in_differences": True, "reference_alone": alone})


def test_report_states_level_and_an_extreme_reference(tmp_path):
    text = report.write_report(_verdict(-2.0, True), tmp_path / "a").read_text()
    assert "Evidence: <span style=\"color:#b26a00\">weak (p &lt;= 0.05)</span>" in text
    assert "NOT DETECTED at significance level 0.001" in text
    assert "3 reference model(s), margin" in text and "-2.40 (lower tail: dislikes it)" in text
    assert "<th>warning</th>" in text and "shifted towards detection by this same draw" in text
    calm = report.write_report(_verdict(-6.5, False), tmp_path / "b").read_text()
    assert "very strong (p &lt;= 1e-6)" in calm and ">DETECTED at significance level 0.001" in calm
    assert "reference alone" in calm and "<th>warning</th>" not in calm

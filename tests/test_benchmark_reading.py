"""mars_core.benchmark.reading: sentences generated from the tables, the comparison with the paper's numbers."""

from __future__ import annotations

import pandas as pd
import pytest

from mars_core.benchmark import reading as R
from tests.test_benchmark import bench_dir, result  # noqa: F401,F811  (fixtures)

def test_sentences_are_generated_from_the_numbers(result):
    boot = result.bootstrap
    r = boot[(boot["split"] == "test") & (boot["pairs"] == "random") & (boot["modality"] == "text")
             & (boot["metric"] == "sdr")].iloc[0]
    sent = R.change_sentence(boot, "smoke", "MARS-Sep plus", "test", "random", "text", "sdr")
    k = 3 if r["ci_high"] - r["ci_low"] < 0.02 else 2  # narrow intervals get a third decimal
    assert sent.startswith(f"At smoke size, MARS-Sep plus changes text-query SDR by {r['mean_diff']:+.{k}f} dB "
                           f"(95% CI [{r['ci_low']:+.{k}f}, {r['ci_high']:+.{k}f}])")
    verdict = "improvement" if r["ci_low"] > 0 else "degradation" if r["ci_high"] < 0 else "no detectable"
    assert verdict in sent
    assert R.change_sentence(boot, "smoke", "absent", "test", "random", "text", "sdr") is None
    lines = R.describe_results(result.summary, boot, "smoke")
    assert sent in lines and any("oracle IRM" in line for line in lines)


def test_paper_comparison_gains_and_agreement():
    boot = pd.DataFrame([
        {"split": "test", "pairs": "random", "system": "MARS-Sep paper", "modality": "text", "metric": "sdr",
         "mean_diff": 0.5, "ci_low": 0.1, "ci_high": 0.9},
        {"split": "test", "pairs": "random", "system": "MARS-Sep paper", "modality": "audio", "metric": "sdr",
         "mean_diff": -0.3, "ci_low": -0.6, "ci_high": 0.1},
        {"split": "test", "pairs": "random", "system": "aligned encoder, no RL", "modality": "text", "metric": "sdr",
         "mean_diff": -0.2, "ci_low": -0.5, "ci_high": 0.1},
    ])
    summary = pd.DataFrame([{"split": "test", "pairs": "random", "system": "supervised", "modality": "text",
                             "metric": "sdr", "mean": 4.0}])
    t = R.paper_comparison(summary, boot)
    text = t[(t["paper dataset"] == "VGGSound-clean+") & (t["query"] == "text") & (t["metric"] == "sdr")].iloc[0]
    assert text["paper gain"] == pytest.approx(6.91 - 6.70) and text["paper gain %"] == pytest.approx(21 / 6.70)
    assert text["agreement"] == "same sign, CI excludes 0" and text["paper gain in CI"] and text["our baseline"] == 4.0
    audio = t[(t["paper dataset"] == "VGGSound-clean+") & (t["query"] == "audio") & (t["metric"] == "sdr")].iloc[0]
    assert audio["agreement"] == "opposite sign"
    assert (t[t["paper dataset"] == "MUSIC-clean+"]["agreement"] == "not measured").all()
    lines = R.describe_paper_comparison(t)
    assert lines[0].startswith("Of 2 SDR comparisons our gain has the paper's sign in 1, an interval excluding 0 in "
                               "1, and the paper's gain lies inside our interval in 1")
    assert any("collapses in the paper but not here" in line for line in lines)  # -5.95 dB there, -0.20 dB here
    assert any("+0.21 dB" in line and "+0.50 dB" in line for line in lines)


@pytest.mark.parametrize("paper, ours, verdict", [
    (-5.95, -4.0, "collapses in both"), (-5.95, 0.0, "collapses in the paper but not here"),
    (0.01, -4.0, "collapses here but not in the paper"), (0.01, 0.5, "stays near the baseline in both"),
    (0.01, 2.0, "moves more here than in the paper")])
def test_ablation_verdicts(paper, ours, verdict):
    assert R._ablation_verdict(paper, ours) == verdict



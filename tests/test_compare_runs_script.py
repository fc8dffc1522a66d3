"""scripts/compare_runs.py: differences and interval coverage counted by hand on two tiny runs."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.repo_files import load_script


def _summary(means):
    return pd.DataFrame([{"split": "test", "pairs": "random", "system": s, "modality": q, "metric": "sdr", "mean": m}
                         for (s, q), m in means.items()])


def _boot(rows):
    return pd.DataFrame([{"split": "test", "pairs": "random", "system": s, "baseline": "supervised", "modality": q,
                          "metric": "sdr", "mean_diff": d, "ci_low": lo, "ci_high": hi} for s, q, d, lo, hi in rows])


def test_summary_differences_and_coverage_by_hand(tmp_path, capsys):
    mod = load_script("scripts/compare_runs.py")
    pub_s = _summary({("supervised", "text"): 5.0, ("rl", "text"): 5.2, ("rl", "image"): 4.0})
    re_s = _summary({("supervised", "text"): 5.0, ("rl", "text"): 5.5, ("rl", "image"): 3.9, ("new", "text"): 1.0})
    diff = mod.summary_differences(pub_s, re_s).set_index("system")
    assert diff.loc["supervised", "max_abs_diff"] == 0.0
    assert diff.loc["rl", "max_abs_diff"] == pytest.approx(0.3) and diff.loc["rl", "rows"] == 2
    assert "new" not in diff.index  # only in one run: left out
    pub_b = _boot([("rl", "text", 0.2, 0.1, 0.3), ("rl", "image", -0.1, -0.2, 0.0)])
    re_b = _boot([("rl", "text", 0.5, 0.4, 0.6), ("rl", "image", -0.2, -0.3, -0.1)])  # outside; on the edge: inside
    cov = mod.inside_intervals(pub_b, re_b).set_index("system")
    assert (cov.loc["rl", "inside"], cov.loc["rl", "rows"]) == (1, 2)
    table = mod.side_by_side(pub_b, re_b, "test", "random", "sdr", "supervised").set_index("system")
    assert table.loc["rl", "published"] == "+0.20* -0.10 . ." and table.loc["rl", "rerun"] == "+0.50* -0.20- . ."
    for name, (s, b) in {"pub": (pub_s, pub_b), "re": (re_s, re_b)}.items():
        (tmp_path / name).mkdir()
        s.to_csv(tmp_path / name / "summary.csv", index=False)
        b.to_csv(tmp_path / name / "bootstrap.csv", index=False)
    assert mod.main([str(tmp_path / "pub"), str(tmp_path / "re")]) == 0
    assert "+0.50* -0.20- . ." in capsys.readouterr().out
    assert mod.main([str(tmp_path / "pub"), str(tmp_path / "none")]) == 2

"""scripts/query_placement.py: the paired change split by where the query points, on a hand-made items table."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "query_placement.py"


@pytest.fixture(scope="module")
def qp():
    spec = importlib.util.spec_from_file_location("query_placement", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _items() -> pd.DataFrame:
    # four test items asked with an image: items 0, 1 have queries that read as their target, 2, 3 as another class
    rows = []
    targets = ["violin", "dog", "cello", "dog"]
    images = ["violin-test-0", "dog-test-0", "cello-test-0", "dog-test-1"]
    base_sdr, rl_sdr = [5.0, 3.0, -1.0, -2.0], [5.5, 3.5, -2.0, -4.0]
    for system, sdr in (("supervised", base_sdr), ("RL", rl_sdr)):
        for i in range(4):
            rows.append({"split": "test", "pairs": "random", "system": system, "modality": "image", "item": i,
                         "sdr": sdr[i], "si_sdri": sdr[i] + 1.0, "target": targets[i], "query_image_id": images[i],
                         "query_text": f"a {targets[i]}"})
            # a text row and a hard-pair row that must be ignored
            rows.append(dict(rows[-1], modality="text", sdr=99.0))
            rows.append(dict(rows[-2], pairs="hard", sdr=-99.0))
    return pd.DataFrame(rows)


def test_change_is_split_by_where_the_query_points(qp):
    nearest = {"violin-test-0": "violin", "dog-test-0": "dog", "cello-test-0": "violin", "dog-test-1": "cello"}
    t = qp.placement_table(_items(), nearest, ["RL"]).set_index("placement")
    # by hand: target items change +0.5, +0.5 (mean +0.5); other items -1, -2 (mean -1.5)
    assert t.loc["target", "n"] == 2 and t.loc["other", "n"] == 2
    assert t.loc["target", "sdr_change"] == pytest.approx(0.5) and t.loc["other", "sdr_change"] == pytest.approx(-1.5)
    assert t.loc["target", "ci_low"] == pytest.approx(0.5) and t.loc["target", "ci_high"] == pytest.approx(0.5)
    assert -2.0 <= t.loc["other", "ci_low"] <= -1.5 <= t.loc["other", "ci_high"] <= -1.0
    assert t.loc["target", "baseline_si_sdri"] == pytest.approx(5.0)  # (6 + 4) / 2
    assert t.loc["other", "baseline_si_sdri"] == pytest.approx(-0.5)  # (0 - 1) / 2
    assert set(t["split"]) == {"test"} and np.isfinite(t["ci_low"]).all()


def test_refusals(qp):
    items = _items()
    nearest = {"violin-test-0": "violin", "dog-test-0": "dog", "cello-test-0": "violin"}  # dog-test-1 missing
    with pytest.raises(ValueError, match="no nearest class"):
        qp.placement_table(items, nearest, ["RL"])
    nearest["dog-test-1"] = "dog"
    with pytest.raises(ValueError, match="no image rows of 'PPO'"):
        qp.placement_table(items, nearest, ["PPO"])
    with pytest.raises(ValueError, match="modality must be"):
        qp.placement_table(items, nearest, ["RL"], modality="audio")


def test_a_skipped_item_is_left_out(qp):
    items = _items()
    rl_item0 = ((items["system"] == "RL") & (items["modality"] == "image") & (items["pairs"] == "random")
                & (items["item"] == 0))
    items.loc[rl_item0, "sdr"] = np.nan
    nearest = {"violin-test-0": "violin", "dog-test-0": "dog", "cello-test-0": "violin", "dog-test-1": "cello"}
    t = qp.placement_table(items, nearest, ["RL"]).set_index("placement")
    assert t.loc["target", "n"] == 1 and t.loc["target", "sdr_change"] == pytest.approx(0.5)  # item 1 only
    assert t.loc["target", "baseline_si_sdri"] == pytest.approx(4.0)

"""mars_core.benchmark.placement (and scripts/query_placement.py): the paired change split by where the query
points, on a hand-made items table, and query_placement on the fake build's prompts placed by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import torch.nn.functional as F

from mars_core.benchmark import placement
from mars_core.data.manifest import read_table
from tests.test_query_diagnostics import _placed_text_bank


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


def test_change_is_split_by_where_the_query_points():
    nearest = {"violin-test-0": "violin", "dog-test-0": "dog", "cello-test-0": "violin", "dog-test-1": "cello"}
    t = placement.placement_table(_items(), nearest, ["RL"]).set_index("placement")
    # by hand: target items change +0.5, +0.5 (mean +0.5); other items -1, -2 (mean -1.5)
    assert t.loc["target", "n"] == 2 and t.loc["other", "n"] == 2
    assert t.loc["target", "sdr_change"] == pytest.approx(0.5) and t.loc["other", "sdr_change"] == pytest.approx(-1.5)
    assert t.loc["target", "ci_low"] == pytest.approx(0.5) and t.loc["target", "ci_high"] == pytest.approx(0.5)
    assert -2.0 <= t.loc["other", "ci_low"] <= -1.5 <= t.loc["other", "ci_high"] <= -1.0
    assert t.loc["target", "baseline_si_sdri"] == pytest.approx(5.0)  # (6 + 4) / 2
    assert t.loc["other", "baseline_si_sdri"] == pytest.approx(-0.5)  # (0 - 1) / 2
    assert set(t["split"]) == {"test"} and np.isfinite(t["ci_low"]).all()


def test_refusals():
    items = _items()
    nearest = {"violin-test-0": "violin", "dog-test-0": "dog", "cello-test-0": "violin"}  # dog-test-1 missing
    with pytest.raises(ValueError, match="no nearest class"):
        placement.placement_table(items, nearest, ["RL"])
    nearest["dog-test-1"] = "dog"
    with pytest.raises(ValueError, match="no image rows of 'PPO'"):
        placement.placement_table(items, nearest, ["PPO"])
    with pytest.raises(ValueError, match="modality must be"):
        placement.placement_table(items, nearest, ["RL"], modality="audio")


def test_a_skipped_item_is_left_out():
    items = _items()
    rl_item0 = ((items["system"] == "RL") & (items["modality"] == "image") & (items["pairs"] == "random")
                & (items["item"] == 0))
    items.loc[rl_item0, "sdr"] = np.nan
    nearest = {"violin-test-0": "violin", "dog-test-0": "dog", "cello-test-0": "violin", "dog-test-1": "cello"}
    t = placement.placement_table(items, nearest, ["RL"]).set_index("placement")
    assert t.loc["target", "n"] == 1 and t.loc["target", "sdr_change"] == pytest.approx(0.5)  # item 1 only
    assert t.loc["target", "baseline_si_sdri"] == pytest.approx(4.0)


def test_query_placement_reads_each_query_against_the_training_prompts(fake_build):
    # held-out prompts of class c placed nearer class c+1's training prompts (dog's nearer violin's): every test item
    # asked with a held-out prompt is "other"; items asked with a training prompt are "target"
    bank, classes, _ = _placed_text_bank(fake_build, lambda c, e: F.normalize(e[c] + 2 * e[(c + 1) % 4], dim=0))
    prompts = read_table(fake_build, "prompts")
    train = prompts[prompts["split_group"] == "train"].groupby("class_name")["text"].first()
    held = prompts[prompts["split_group"] != "train"].groupby("class_name")["text"].first()
    rows = []
    for i, (target, text) in enumerate([("violin", train["violin"]), ("dog", held["dog"]), ("cello", held["cello"])]):
        for system, sdr in (("supervised", 1.0), ("RL", 1.0 + i)):
            rows.append({"split": "test", "pairs": "random", "system": system, "modality": "text", "item": i,
                         "sdr": sdr, "si_sdri": 0.0, "target": target, "query_text": text})
    t = placement.query_placement(pd.DataFrame(rows), bank, fake_build, "smoke", ["RL"], modality="text")
    t = t.set_index("placement")
    assert t.loc["target", "n"] == 1 and t.loc["target", "sdr_change"] == pytest.approx(0.0)
    assert t.loc["other", "n"] == 2 and t.loc["other", "sdr_change"] == pytest.approx(1.5)  # (1 + 2) / 2
    assert set(classes) == {"violin", "cello", "trumpet", "dog"}

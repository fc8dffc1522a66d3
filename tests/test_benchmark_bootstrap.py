"""mars_core.benchmark.bootstrap: the paired bootstrap against hand-computed values and normal theory."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from mars_core import benchmark as B

def test_bootstrap_identical_systems_is_exactly_zero():
    x = np.random.default_rng(0).normal(size=50)
    items = pd.DataFrame({"split": "test", "pairs": "random", "modality": "text", "item": np.tile(np.arange(50), 2),
                          "system": ["supervised"] * 50 + ["A"] * 50, "sdr": np.tile(x, 2)})
    boot = B.paired_bootstrap(items, metrics=["sdr"], n_resamples=200)
    assert len(boot) == 1
    r = boot.iloc[0]
    assert r["mean_diff"] == 0.0 and r["ci_low"] == 0.0 and r["ci_high"] == 0.0 and r["n"] == 50


def test_bootstrap_constant_shift_and_normal_theory():
    rng = np.random.default_rng(1)
    mean, lo, hi = B.bootstrap_mean_ci(np.full(30, 1.5), 100, rng=0)
    assert math.isclose(mean, 1.5) and math.isclose(lo, 1.5) and math.isclose(hi, 1.5)
    d = rng.normal(0.3, 1.0, size=400)
    mean, lo, hi = B.bootstrap_mean_ci(d, 4000, 0.95, rng=2)
    assert mean == pytest.approx(d.mean(), abs=1e-12)
    half = 1.959964 * d.std(ddof=1) / np.sqrt(len(d))  # normal-theory half-width of a 95% interval
    assert lo == pytest.approx(mean - half, abs=0.15 * half) and hi == pytest.approx(mean + half, abs=0.15 * half)


def test_bootstrap_follows_the_documented_recipe():
    d = np.random.default_rng(3).normal(size=17)
    rng = np.random.default_rng(7)
    idx = rng.integers(0, 17, size=(500, 17))
    expected = np.quantile(d[idx].mean(axis=1), [0.05, 0.95])
    _, lo, hi = B.bootstrap_mean_ci(d, 500, 0.90, rng=np.random.default_rng(7))
    assert (lo, hi) == tuple(expected)


def test_bootstrap_is_paired_over_items():
    rng = np.random.default_rng(4)
    base = rng.normal(0.0, 10.0, size=40)            # items differ a lot ...
    sys_ = base + 0.2 + rng.normal(0, 0.05, size=40)  # ... the system adds 0.2 dB to each
    items = pd.DataFrame({"split": "test", "pairs": "random", "modality": "text", "item": np.tile(np.arange(40), 2),
                          "system": ["supervised"] * 40 + ["A"] * 40, "sdr": np.r_[base, sys_]})
    r = B.paired_bootstrap(items, metrics=["sdr"], n_resamples=1000).iloc[0]
    assert r["ci_low"] > 0.15 and r["ci_high"] < 0.25  # unpaired, the interval would be about +-4.4 dB wide


def test_bootstrap_edge_cases():
    assert all(math.isnan(v) for v in B.bootstrap_mean_ci(np.array([]), 10))
    assert B.bootstrap_mean_ci(np.array([2.5]), 10) == (2.5, 2.5, 2.5)
    with pytest.raises(ValueError):
        B.bootstrap_mean_ci(np.array([1.0, np.nan]), 10)
    with pytest.raises(ValueError):
        B.bootstrap_mean_ci(np.array([1.0]), 10, level=1.0)
    # a skipped (NaN) item drops its pair; no baseline -> an empty table with the columns
    items = pd.DataFrame({"split": "test", "pairs": "random", "modality": "text", "item": [0, 1, 2] * 2,
                          "system": ["supervised"] * 3 + ["A"] * 3, "sdr": [1.0, 2.0, 3.0, 2.0, np.nan, 5.0]})
    r = B.paired_bootstrap(items, metrics=["sdr"], n_resamples=50).iloc[0]
    assert r["n"] == 2 and r["mean_diff"] == pytest.approx(1.5)
    empty = B.paired_bootstrap(items[items["system"] == "A"], metrics=["sdr"])
    assert empty.empty and "ci_low" in empty.columns




def test_rl_systems_are_also_bootstrapped_against_each_control():
    from mars_core.benchmark.harness import control_bootstrap

    rows = []
    for i in range(6):
        for system, sdr in (("supervised", 1.0 + i), ("MARS-Sep plus", 1.5 + i), ("entropy only", 1.25 + i),
                            ("supervised (continued)", 2.0 + i), ("aligned encoder, no RL", 0.0)):
            rows.append({"split": "test", "pairs": "random", "system": system, "modality": "text", "item": i,
                         "sdr": sdr})
    boot = control_bootstrap(pd.DataFrame(rows), n_resamples=50)
    by = boot.set_index(["system", "baseline"])["mean_diff"]
    # constant paired differences by construction: the bootstrap mean is exact
    assert by[("MARS-Sep plus", "supervised")] == pytest.approx(0.5)
    assert by[("MARS-Sep plus", "entropy only")] == pytest.approx(0.25)
    assert by[("MARS-Sep plus", "supervised (continued)")] == pytest.approx(-0.5)
    assert ("aligned encoder, no RL", "entropy only") not in by.index  # only RL systems meet the controls
    assert ("entropy only", "supervised") in by.index  # every learned system meets the baseline

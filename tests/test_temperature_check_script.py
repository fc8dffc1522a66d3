"""scripts/temperature_check.py: its table (means and changes by hand) and argument checks; the sweep itself is
mars_core.evaluation.query_diagnostics.temperature_sweep's (tested with the diagnostics)."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.repo_files import load_script


def _script():
    return load_script("scripts/temperature_check.py")


def test_table_means_over_items_then_modalities_and_changes_from_t1():
    rows = [  # two items per (T, modality): the cell is their mean
        (1.0, "text", 1.0, 5.0), (1.0, "text", 3.0, 7.0), (1.0, "audio", 4.0, 8.0), (1.0, "audio", 4.0, 8.0),
        (1.5, "text", 3.0, 6.0), (1.5, "text", 3.0, 6.0), (1.5, "audio", 3.0, 9.0), (1.5, "audio", 5.0, 9.0),
    ]
    sweep = pd.DataFrame(rows, columns=["temperature", "modality", "si_sdri", "sdr"])
    t = _script().temperature_table(sweep)
    assert t.loc[1.0, ("si_sdri", "text")] == 2.0 and t.loc[1.0, ("si_sdri", "audio")] == 4.0
    assert t.loc[1.0, ("si_sdri", "mean")] == 3.0 and t.loc[1.5, ("si_sdri", "mean")] == 3.5
    assert t.loc[1.5, ("si_sdri", "change")] == 0.5 and t.loc[1.0, ("si_sdri", "change")] == 0.0
    assert t.loc[1.5, ("sdr", "mean")] == 7.5 and t.loc[1.5, ("sdr", "change")] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="no T = 1 row"):
        _script().temperature_table(sweep[sweep["temperature"] != 1.0])


def test_temperatures_must_be_positive():
    with pytest.raises(SystemExit, match="must be > 0"):
        _script().main(["--temperatures", "1.0", "0"])

"""Training curves for the notebooks: :func:`read_metrics` on crafted CSV files (values written by hand),
:func:`history_curves` on hand-made histories, and, on tiny supervised and RL runs, the frame rebuilt from the
returned history equals the one read from the ``metrics.csv`` the trainer wrote (the CSV writer formats floats
with ``repr``, which reads back to the same float, so the comparison is exact)."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

from mars_core.alignment.runner import run_alignment
from mars_core.config import get_profile
from mars_core.progress import (CURVES_FROM_HISTORY, history_curves, metrics_csv, read_metrics,
                                training_curves)
from mars_core.rl.trainer import train_rl
from mars_core.supervised import train_supervised
from tests.alignment_toys import CFG as ALIGN_CFG, SpectralToyEncoder, toy_data
from tests.one_thread import one_thread  # noqa: F401  (fixture)
from tests.test_queries import fake_bank
from tests.test_rl_rollout import smoke_stack, trained_looking_separator
from tests.test_rl_trainer import TINY as RL_TINY  # 4 steps, validation every 2
from tests.test_supervised import TINY  # 6 steps, validation every 3

SMOKE = get_profile("smoke")
NAN = math.nan


def _write(path, text: str):
    path.write_text(text, encoding="utf-8", newline="")
    return path


# --------------------------------------------------------------------------- read_metrics
def test_read_metrics_gives_numbers_and_nan_for_empty_cells(tmp_path):
    path = _write(tmp_path / "metrics.csv",
                  "step,loss,val_sdr\r\n0,,1.5\r\n1,0.25,\r\n2,0.125,-3e-05\r\n3,0.5")  # last line: a killed write
    got = read_metrics(path)
    want = pd.DataFrame({"step": [0, 1, 2], "loss": [NAN, 0.25, 0.125], "val_sdr": [1.5, NAN, -3e-05]})
    assert_frame_equal(got, want, check_exact=True)
    assert got["step"].dtype == "int64"


def test_read_metrics_names_the_file_when_missing_or_malformed(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"absent\.csv not found.*training_curves"):
        read_metrics(tmp_path / "absent.csv")
    with pytest.raises(ValueError, match=r"nostep\.csv is not a metrics CSV.*no 'step' column"):
        read_metrics(_write(tmp_path / "nostep.csv", "loss,lr\n0.1,0.2\n"))
    with pytest.raises(ValueError, match=r"text\.csv: column 'loss' holds 'abc' at step '2'"):
        read_metrics(_write(tmp_path / "text.csv", "step,loss\n1,0.5\n2,abc\n"))
    with pytest.raises(ValueError, match=r"halfstep\.csv: every row needs an integer step"):
        read_metrics(_write(tmp_path / "halfstep.csv", "step,loss\n1.5,0.5\n"))


# --------------------------------------------------------------------------- history_curves
def test_history_curves_places_validations_on_their_step_rows():
    """Hand-made RL-like history: steps 0..2 (indices), validations after 0 and 2 steps done."""
    h = {"step": [0, 1, 2], "loss": [0.5, 0.25, 0.125], "lr": [1e-3, 1e-3, 5e-4], "val_step": [0, 2],
         "val_sdr": [1.0, 2.0], "best_step": 2, "wall_s": 3.0, "source": "x/final.pt", "preset": "plus",
         "terms": ["a", "b", "c"]}  # scalars, strings and a list of names are not curves
    want = pd.DataFrame({"step": [0, 1, 2, 3], "loss": [NAN, 0.5, 0.25, 0.125], "lr": [NAN, 1e-3, 1e-3, 5e-4],
                         "val_sdr": [1.0, NAN, 2.0, NAN]})
    assert_frame_equal(history_curves(h), want, check_exact=True)
    # alignment stages count steps done in history["step"] already
    a = {"step": [1, 2], "loss": [0.5, 0.25], "val_step": [0, 2], "val_loss": [3.0, 2.0]}
    want = pd.DataFrame({"step": [0, 1, 2], "loss": [NAN, 0.5, 0.25], "val_loss": [3.0, NAN, 2.0]})
    assert_frame_equal(history_curves(a, step_is_index=False), want, check_exact=True)


def test_training_curves_prefers_the_run_folder_csv(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    h = {"step": [0], "loss": [0.5], "val_step": [1], "val_sdr": [2.0], "source": str(run / "final.pt")}
    from_history = pd.DataFrame({"step": [1], "loss": [0.5], "val_sdr": [2.0]})
    got = training_curves(h)  # no metrics.csv yet
    assert got.attrs["source"] == CURVES_FROM_HISTORY and metrics_csv(h) is None
    assert_frame_equal(got, from_history, check_exact=True)
    _write(run / "metrics.csv", "step,loss,val_sdr\n1,0.75,4.0\n")  # other numbers: the CSV is what is read
    assert metrics_csv(h) == run / "metrics.csv"
    got = training_curves(h)
    assert got.attrs["source"] == str(run / "metrics.csv") and got["loss"].tolist() == [0.75]
    # a shipped checkpoint has no run folder, even with a metrics.csv lying beside it
    _write(tmp_path / "metrics.csv", "step,loss\n1,9.0\n")
    shipped = dict(h, source=str(tmp_path / "separator_cpu.pt"))
    assert metrics_csv(shipped) is None and training_curves(shipped).attrs["source"] == CURVES_FROM_HISTORY
    assert training_curves(shipped, tmp_path / "metrics.csv")["loss"].tolist() == [9.0]  # an explicit path wins


# --------------------------------------------------------------------------- the trainers' CSV = the history
def _same_frames(run_dir, history):
    from_csv = read_metrics(run_dir / "metrics.csv")
    rebuilt = history_curves(history)
    assert list(rebuilt.columns) == list(from_csv.columns)
    for column in from_csv.columns:  # column by column, exact (repr round-trips a float), NaN == NaN
        assert_frame_equal(rebuilt[[column]], from_csv[[column]], check_exact=True)
    assert training_curves(dict(history, source=str(run_dir / "final.pt"))).attrs["source"] == str(
        run_dir / "metrics.csv")


def test_supervised_csv_equals_the_curves_of_its_history(fake_build, tmp_path, one_thread):
    bank = fake_bank(fake_build, SMOKE.separator.query_dim)
    _, history = train_supervised(SMOKE, bank, TINY, run_dir=tmp_path, build_dir=fake_build, progress=False)
    _same_frames(tmp_path, history)
    frame = history_curves(history)
    assert frame["step"].tolist() == list(range(1, TINY.steps + 1))  # steps done, as the CSV counts
    assert frame["val_sdr"].notna().tolist() == [False, False, True, False, False, True]  # eval_every=3


def test_rl_csv_equals_the_curves_of_its_history(fake_build, tmp_path, one_thread):
    stack, rbank = smoke_stack(str(fake_build))
    _, history = train_rl(SMOKE, RL_TINY, separator=trained_looking_separator(), stack=stack, reward_bank=rbank,
                          bank=fake_bank(fake_build, SMOKE.separator.query_dim), build_dir=fake_build, judge=None,
                          run_dir=tmp_path, progress=False)
    _same_frames(tmp_path, history)
    frame = history_curves(history)
    assert frame["step"].tolist() == [0, 1, 2, 3, 4]  # the validation before training has a row of its own
    assert frame["val_sdr"].notna().tolist() == [True, False, True, False, True] and frame["loss"].isna()[0]


def test_alignment_stage_csvs_equal_the_curves_of_their_histories(fake_build, tmp_path, one_thread):
    """The alignment stages count steps done in ``history["step"]``; a stage's CSV puts ``val_loss`` first (its
    step-0 row), so the columns are compared by name."""
    out = run_alignment(SpectralToyEncoder(), toy_data(fake_build), ALIGN_CFG, tmp_path)
    for stage, h in out["history"].items():
        from_csv = read_metrics(tmp_path / f"metrics_{stage}.csv")
        rebuilt = history_curves(h, step_is_index=False)
        assert sorted(rebuilt.columns) == sorted(from_csv.columns) and "val_loss" in from_csv, stage
        assert_frame_equal(rebuilt[from_csv.columns], from_csv, check_exact=True)
        assert rebuilt["step"].tolist() == list(range(ALIGN_CFG.steps_per_stage + 1)), stage

"""Progress lines (cadence, ETA by hand with a fake clock, silencing) and the metrics CSV (contents,
new columns, killed writes, resume truncation), then the CSV each trainer writes in its run folder."""

from __future__ import annotations

import csv
import io
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing import event_accumulator, plugin_event_accumulator
from tensorboard.util import tensor_util

from mars_core.config import get_profile
from mars_core.alignment.anchor import AnchorConfig, MLBPAnchor
from mars_core.alignment.anchor_fit import train_mlbp
from mars_core import progress
from mars_core.progress import (CsvLog, Progress, default_every, format_duration, format_value, last_row,
                                 tensorboard_dir)
from mars_core.rl.bookkeeping import STEP_KEYS
from mars_core.rl.trainer import train_rl
from mars_core.supervised import train_supervised
from tests.test_anchor_fit import _synthetic
from tests.test_queries import fake_bank
from tests.test_rl_rollout import smoke_stack, trained_looking_separator
from tests.test_rl_trainer import TINY as RL_TINY  # 4 steps, validation every 2, last.pt every step
from tests.test_supervised import TINY

SMOKE = get_profile("smoke")


class FakeClock:
    """A clock that says what the test sets."""

    def __init__(self, t: float = 0.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def _steps(text: str) -> list[int]:
    return [int(m) for m in re.findall(r"\] step (\d+)/", text)]


def _read(path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    """``{tag: [(step, value), ...]}`` of the event files in ``log_dir``, as TensorBoard's EventAccumulator reads them."""
    acc = event_accumulator.EventAccumulator(str(log_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _ui_scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    """The same through the accumulator of TensorBoard's web app (which ignores the first session start of a run)."""
    acc = plugin_event_accumulator.EventAccumulator(str(log_dir))
    acc.Reload()
    return {tag: [(e.step, float(tensor_util.make_ndarray(e.tensor_proto))) for e in acc.Tensors(tag)]
            for tag in acc.Tags()["tensors"]}


# --------------------------------------------------------------------------- formatting
def test_durations_and_values_by_hand():
    assert [format_duration(s) for s in (0, 42, 59.4, 62, 145, 3600, 7509)] == \
        ["0s", "42s", "59s", "1m02s", "2m25s", "1h00m00s", "2h05m09s"]
    assert format_duration(math.nan) == "?" and format_duration(math.inf) == "?"
    assert [format_value(v) for v in (0.123, 3.01, 12345.678, 7, "s2", True)] == \
        ["0.123", "3.01", "1.235e+04", "7", "s2", "True"]
    assert [default_every(n) for n in (1, 10, 11, 25, 400)] == [1, 1, 2, 3, 40]


# --------------------------------------------------------------------------- lines
def test_line_and_eta_by_hand():
    clock, out = FakeClock(100.0), io.StringIO()
    p = Progress(400, "demo", every=40, every_s=None, stream=out, clock=clock)
    clock.t = 162.0  # 120 steps in 62 s: ETA = 280 x 62 / 120 = 144.7 s
    p.update(120, loss=0.123, val_sdr=3.01)
    p.close()
    assert out.getvalue() == "[demo] step 120/400 (30%) loss 0.123 val_sdr 3.01 | elapsed 1m02s, ETA 2m25s\n"


def test_resumed_run_estimates_from_its_own_steps():
    clock, out = FakeClock(0.0), io.StringIO()
    p = Progress(400, "r", every=100, every_s=None, initial=100, stream=out, clock=clock)
    assert math.isnan(p.eta_s())  # no step of this session yet
    clock.t = 50.0  # 100 steps of this session in 50 s; 200 left: 100 s
    p.update(200, loss=1.5)
    assert out.getvalue().endswith("(50%) loss 1.5 | elapsed 50s, ETA 1m40s\n")
    clock.t = 150.0
    p.update(400)
    assert out.getvalue().splitlines()[-1].endswith("(100%) loss 1.5 | elapsed 2m30s, ETA 0s")


def test_cadence_every_n_and_the_last_step():
    out = io.StringIO()
    with Progress(10, "c", every=3, every_s=None, stream=out, clock=FakeClock()) as p:
        for done in range(1, 11):
            p.update(done, loss=float(done))
    assert _steps(out.getvalue()) == [3, 6, 9, 10]
    out = io.StringIO()
    with Progress(25, "d", every_s=None, stream=out, clock=FakeClock()) as p:  # default: ceil(25 / 10) = 3
        for done in range(1, 26):
            p.update(done)
    assert _steps(out.getvalue()) == [3, 6, 9, 12, 15, 18, 21, 24, 25]


def test_a_run_stopped_early_prints_its_last_step_once():
    out = io.StringIO()
    with Progress(10, "s", every=3, every_s=None, stream=out, clock=FakeClock()) as p:
        for done in range(1, 5):
            p.update(done)
    assert _steps(out.getvalue()) == [3, 4]
    out = io.StringIO()
    with Progress(10, "s", every=3, every_s=None, stream=out, clock=FakeClock()) as p:
        for done in range(1, 7):
            p.update(done)
    assert _steps(out.getvalue()) == [3, 6]  # step 6 already has its line
    out = io.StringIO()
    with Progress(10, "s", every=3, every_s=None, initial=10, stream=out, clock=FakeClock()):
        pass  # a finished run called again: nothing to report
    assert out.getvalue() == ""


def test_time_cadence_with_a_fake_clock():
    clock, out = FakeClock(), io.StringIO()
    p = Progress(100, "t", every=1000, every_s=60, stream=out, clock=clock)
    for done in range(1, 9):
        clock.t = 25.0 * done  # lines when >= 60 s since the last: t = 75 (step 3), 150 (step 6)
        p.update(done)
    assert _steps(out.getvalue()) == [3, 6]


def test_metrics_are_remembered_until_replaced():
    out = io.StringIO()
    p = Progress(4, "m", every=1, every_s=None, stream=out, clock=FakeClock())
    p.update(1, loss=1.0)
    p.update(2, loss=0.5, val_sdr=2.0)
    p.update(3, loss=0.25)
    lines = out.getvalue().splitlines()
    assert "loss 1 |" in lines[0] and "loss 0.5 val_sdr 2 |" in lines[1] and "loss 0.25 val_sdr 2 |" in lines[2]


def test_quiet_and_disabled(monkeypatch):
    monkeypatch.setenv("MARS_QUIET", "1")  # silences the lines
    out = io.StringIO()
    p = Progress(2, "q", every=1, stream=out, clock=FakeClock())
    p.update(1), p.update(2), p.close()
    assert out.getvalue() == ""
    monkeypatch.setenv("MARS_QUIET", "0")
    p = Progress(2, "q", every=1, stream=out, clock=FakeClock(), enabled=False)  # a trainer's progress=False
    assert p.bar.disable
    p.update(1), p.update(2), p.close()
    assert out.getvalue() == ""


@pytest.mark.parametrize("env, bar_disabled, lines", [({}, False, ["[q] step 2/2"]),
                                                      ({"TQDM_DISABLE": "1"}, True, ["[q] step 2/2"]),
                                                      ({"MARS_QUIET": "1"}, False, [])])
def test_who_silences_what_in_a_fresh_process(env, bar_disabled, lines, tmp_path):
    """tqdm reads TQDM_* when it is imported, so each case runs in its own interpreter."""
    code = ("import sys; from mars_core.progress import Progress\n"
            "p = Progress(2, 'q', every=1, every_s=None); p.update(2); print(int(p.bar.disable)); p.close()")
    clean = {k: v for k, v in os.environ.items() if k not in ("TQDM_DISABLE", "MARS_QUIET")}
    res = subprocess.run([sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1], timeout=60)
    assert res.returncode == 0, res.stderr
    *printed, disabled = res.stdout.splitlines()
    assert disabled == str(int(bar_disabled))
    assert [ln.split(" (")[0] for ln in printed] == lines
    assert ("q:" in res.stderr) == (not bar_disabled)  # the bar itself, on stderr


@pytest.mark.parametrize("kw, match", [({"every": 0}, "every"), ({"every_s": 0}, "every_s"),
                                       ({"initial": -1}, "initial")])
def test_bad_arguments_name_themselves(kw, match):
    with pytest.raises(ValueError, match=match):
        Progress(10, "x", **kw)


# --------------------------------------------------------------------------- CSV
def test_csv_rows_read_back_with_the_csv_module(tmp_path):
    path = tmp_path / "run" / "metrics.csv"
    log = CsvLog(path, fields=("loss", "lr"))
    assert path.read_text() == "step,loss,lr\n"  # a fresh run: the header at once
    log.log(1, loss=0.1, lr=1e-3)
    log.log(2, loss=0.30000000000000004, lr=2.5e-4)
    rows = _read(path)
    assert rows == [{"step": "1", "loss": "0.1", "lr": "0.001"},
                    {"step": "2", "loss": "0.30000000000000004", "lr": "0.00025"}]
    assert float(rows[1]["loss"]) == 0.1 + 0.2  # full precision: the exact float comes back


def test_new_keys_widen_the_header_and_earlier_rows_stay_empty_there(tmp_path):
    path = tmp_path / "metrics.csv"
    log = CsvLog(path)
    log.log(0, val_sdr=1.5)
    log.log(1, loss=0.5)
    log.log(2, loss=0.25, val_sdr=2.0)
    with open(path, newline="") as fh:
        lines = list(csv.reader(fh))
    assert lines == [["step", "val_sdr", "loss"], ["0", "1.5", ""], ["1", "", "0.5"], ["2", "2.0", "0.25"]]


def test_resume_truncates_rows_past_the_resumed_step(tmp_path):
    path = tmp_path / "metrics.csv"
    log = CsvLog(path, fields=("loss",))
    for s in range(0, 8):
        log.log(s, loss=s / 10)
    log = CsvLog(path, resume_step=4, fields=("loss",))  # the checkpoint holds 4 steps
    for s in (5, 6):
        log.log(s, loss=s / 10, extra=1)
    rows = _read(path)
    assert [r["step"] for r in rows] == ["0", "1", "2", "3", "4", "5", "6"]
    assert [r["loss"] for r in rows] == ["0.0", "0.1", "0.2", "0.3", "0.4", "0.5", "0.6"]
    assert [r["extra"] for r in rows] == [""] * 5 + ["1", "1"]
    CsvLog(path, fields=("loss",))  # a fresh run (resume_step 0) starts over
    assert _read(path) == []


def test_a_killed_write_leaves_a_readable_file_and_resume_drops_the_torn_row(tmp_path):
    path = tmp_path / "metrics.csv"
    log = CsvLog(path, fields=("loss",))
    log.log(1, loss=0.5)
    log.log(2, loss=0.25)
    with open(path, "a") as fh:
        fh.write("3,0.12")  # killed in the middle of row 3 (no newline)
    assert [r["step"] for r in _read(path)[:2]] == ["1", "2"]
    CsvLog(path, resume_step=10, fields=("loss",)).log(3, loss=0.125)
    assert _read(path) == [{"step": "1", "loss": "0.5"}, {"step": "2", "loss": "0.25"},
                           {"step": "3", "loss": "0.125"}]


def test_last_row_takes_validation_keys_only_at_their_step():
    h = {"step": [0, 1], "loss": [0.5, 0.25], "val_step": [0, 2], "val_sdr": [1.0, 2.0]}
    assert last_row(h, ("loss",), ("val_sdr",), at=2) == {"loss": 0.25, "val_sdr": 2.0}
    assert last_row(h, ("loss",), ("val_sdr",), at=1) == {"loss": 0.25}
    assert last_row({"loss": [], "val_step": []}, ("loss", "absent"), ("val_sdr",), at=0) == {}


def test_no_path_writes_nothing(tmp_path):
    log = CsvLog(None, resume_step=3)
    log.log(1, loss=1.0)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- TensorBoard
def test_tensorboard_gets_every_number_of_each_row_at_its_step(tmp_path):
    path = tmp_path / "run" / "metrics.csv"
    log = CsvLog(path, fields=("loss",))
    log.log(0, val_sdr=1.5)
    log.log(1, loss=0.5, grad_norm=torch.tensor(3.0), lr=np.float64(0.25), note="warmup", ok=True)
    log.log(2, loss=float("nan"), grad_norm=2, val_sdr=2.75)  # NaN: left out of TensorBoard, kept in the CSV
    log.close()
    assert tensorboard_dir(path) == tmp_path / "run" / "tb" / "metrics"
    assert _scalars(tmp_path / "run" / "tb" / "metrics") == {  # values exact in float32
        "val_sdr": [(0, 1.5), (2, 2.75)], "loss": [(1, 0.5)], "grad_norm": [(1, 3.0), (2, 2.0)], "lr": [(1, 0.25)]}
    assert _read(path)[2]["loss"] == "nan"


def test_resume_shows_each_step_once_and_a_fresh_run_starts_over(tmp_path):
    path = tmp_path / "metrics.csv"
    log = CsvLog(path, fields=("loss",))
    for s in range(8):
        log.log(s, loss=s / 8, val=s + 0.5)  # k/8 and k + 0.5: exact in float32
    log.close()
    log = CsvLog(path, resume_step=4)  # the checkpoint holds 4 steps; steps 5-7 were logged after it
    for s in (5, 6):
        log.log(s, loss=10.0 * s)
    log.close()
    want = {"loss": [(0, 0.0), (1, 0.125), (2, 0.25), (3, 0.375), (4, 0.5), (5, 50.0), (6, 60.0)],
            "val": [(0, 0.5), (1, 1.5), (2, 2.5), (3, 3.5), (4, 4.5)]}
    assert _scalars(tensorboard_dir(path)) == want
    assert _ui_scalars(tensorboard_dir(path)) == want
    log = CsvLog(path)  # a fresh run (resume_step 0): the old event files go, like the old rows
    log.log(1, loss=0.75)
    log.close()
    assert _scalars(tensorboard_dir(path)) == {"loss": [(1, 0.75)]}
    assert len(list(tensorboard_dir(path).iterdir())) == 1


def test_without_tensorboard_the_csv_is_written_and_one_warning_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # "import torch.utils.tensorboard" fails
    monkeypatch.setattr(progress, "_tb_warned", False)
    with pytest.warns(UserWarning) as caught:
        for name in ("a.csv", "b.csv"):
            log = CsvLog(tmp_path / name, fields=("loss",))
            log.log(1, loss=0.5)
            log.close()
    assert len(caught) == 1 and "pip install" in str(caught[0].message) and "tensorboard" in str(caught[0].message)
    assert _read(tmp_path / "a.csv") == _read(tmp_path / "b.csv") == [{"step": "1", "loss": "0.5"}]
    assert not (tmp_path / "tb").exists()


def test_tensorboard_false_writes_the_csv_only(tmp_path):
    CsvLog(tmp_path / "m.csv", tensorboard=False).log(1, loss=0.5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.csv"]


# --------------------------------------------------------------------------- a trainer's metrics.csv
def test_supervised_run_folder_holds_its_history_as_csv_after_a_resume(fake_build, tmp_path, capsys):
    bank = fake_bank(fake_build, SMOKE.separator.query_dim)
    run = tmp_path / "run"
    train_supervised(SMOKE, bank, TINY, run_dir=run, build_dir=fake_build, stop_after=3)  # checkpointed at step 3
    assert [r["step"] for r in _read(run / "metrics.csv")] == ["1", "2", "3"]
    with open(run / "metrics.csv", "a") as fh:
        fh.write("4,0.9,0.1,1.0,,\n")  # a row past the checkpoint (as from a run killed after logging it)
    _, h = train_supervised(SMOKE, bank, TINY, run_dir=run, build_dir=fake_build)  # resumes from step 3
    rows = _read(run / "metrics.csv")
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6]  # each step once
    assert [float(r["loss"]) for r in rows] == h["loss"] and [float(r["lr"]) for r in rows] == h["lr"]
    val = [(int(r["step"]), float(r["val_sdr"])) for r in rows if r["val_sdr"]]
    assert val == list(zip(h["val_step"], h["val_sdr"]))  # validation every 3 steps (TINY.eval_every)
    assert _steps(capsys.readouterr().out)[-1] == 6  # the plain line of the last step
    tb = _scalars(run / "tb" / "metrics")  # TensorBoard: each step once, values as float32
    assert tb["loss"] == [(s, float(np.float32(v))) for s, v in zip(range(1, 7), h["loss"])]
    assert tb["val_sdr"] == [(s, float(np.float32(v))) for s, v in zip(h["val_step"], h["val_sdr"])]


def test_rl_run_folder_csv_starts_with_the_initial_validation_and_survives_a_resume(tmp_path, fake_build):
    stack, rbank = smoke_stack(str(fake_build))
    kw = dict(stack=stack, bank=fake_bank(fake_build, SMOKE.separator.query_dim), reward_bank=rbank,
              build_dir=fake_build, judge=None, progress=False, run_dir=tmp_path)
    train_rl(SMOKE, RL_TINY, separator=trained_looking_separator(), stop_after=3, **kw)
    with open(tmp_path / "metrics.csv", "a") as fh:
        fh.write("4" + "," * (len(STEP_KEYS) + 2) + "\n")  # a stale row past the checkpoint at step 3
    _, h = train_rl(SMOKE, RL_TINY, separator=trained_looking_separator(), **kw)
    rows = _read(tmp_path / "metrics.csv")
    assert [int(r["step"]) for r in rows] == [0, 1, 2, 3, 4]
    assert rows[0]["reward_mean"] == "" and float(rows[0]["val_sdr"]) == h["val_sdr"][0]
    assert [float(r["reward_mean"]) for r in rows[1:]] == h["reward_mean"]
    assert [int(r["step"]) for r in rows if r["val_sdr"]] == h["val_step"] == [0, 2, 4]


def test_anchor_csv_holds_its_history(tmp_path):
    torch.manual_seed(0)
    hist = train_mlbp(MLBPAnchor(16, rank=8), _synthetic(32, seed=1), AnchorConfig(rank=8, steps=6, batch_size=8),
                      val=_synthetic(16, seed=2), eval_every=4, metrics_csv=tmp_path / "m.csv")
    rows = _read(tmp_path / "m.csv")
    assert [int(r["step"]) for r in rows] == [0, 1, 2, 3, 4, 5, 6]
    assert [float(r["gap"]) for r in rows[1:]] == hist["gap"]
    assert [(int(r["step"]), float(r["val_gap"])) for r in rows if r["val_gap"]] == \
        list(zip(hist["val_step"], hist["val_gap"])) == list(zip([0, 4, 6], hist["val_gap"]))

"""RL bookkeeping (mars_core.rl.bookkeeping): the stats row by hand, when validation is due, keep-best, and
last.pt / metrics.csv written only at the steps the config says."""

from __future__ import annotations

import csv
import math
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

from mars_core.checkpoints import load_checkpoint
from mars_core.rl.advantages import EMABaseline
from mars_core.rl.bookkeeping import STEP_KEYS, VAL_KEYS, RunLog, StepResult, step_row
from mars_core.rl.update import PPO_STATS
from tests.test_rl_trainer import TINY


def test_step_row_by_hand():
    rewards = torch.tensor([[1.0, 3.0], [2.0, 2.0]])  # mean 2; population std sqrt(2/4); group stds 1 and 0
    terms = {"semantic": torch.tensor([[0.5, 0.1], [0.2, 0.2]]), "signal": torch.zeros(2, 2),
             "contamination": torch.full((2, 2), 0.25), "residual": torch.tensor([[0.3, -0.1], [0.0, 0.2]])}
    ro = SimpleNamespace(rewards=rewards, terms=terms, timings={"policy": 0.1, "rollout": 0.2, "reward": 0.3})
    stats = {**{k: float(i) for i, k in enumerate(PPO_STATS)}, "skipped_updates": 0.0}
    adv = torch.tensor([[-1.0, 1.0], [0.0, 0.0]])
    row = step_row(7, 2e-4, StepResult(30.0, ro, adv, 0.5, stats, 0.4))
    assert set(row) == set(STEP_KEYS) | {"reward_residual"}
    assert (row["step"], row["kappa"], row["lr"], row["frac_zero_std"], row["t_update"]) == (7, 30.0, 2e-4, 0.5, 0.4)
    assert row["reward_mean"] == pytest.approx(2.0) and row["reward_std"] == pytest.approx(math.sqrt(0.5))
    assert row["reward_group_std"] == pytest.approx(0.5)
    assert row["reward_semantic"] == pytest.approx(0.25) and row["reward_contamination"] == pytest.approx(0.25)
    assert row["reward_residual"] == pytest.approx(0.1)
    assert row["adv_mean"] == pytest.approx(0.0, abs=1e-7) and row["adv_std"] == pytest.approx(math.sqrt(0.5))
    assert row["entropy"] == stats["entropy_loss"] and row["loss"] == stats["loss"]  # the entropy term, renamed
    assert (row["t_policy"], row["t_rollout"], row["t_reward"]) == (0.1, 0.2, 0.3)


def test_validation_due_keep_best_and_checkpoints(tmp_path):
    cfg = replace(TINY, steps=5, eval_every=2, ckpt_every=2)
    model = torch.nn.Linear(2, 1, bias=False)
    opt, ema = torch.optim.SGD(model.parameters(), lr=0.1), EMABaseline()
    log = RunLog(tmp_path / "run", {"kind": "test"}, cfg)
    assert log.resume(model, opt, ema=ema) == 0  # no last.pt yet
    assert [d for d in range(1, 6) if log.validation_due(d)] == [2, 4, 5]  # every eval_every, and the last step
    log.log_val(0, {"sdr": 9.0, "si_sdri": 0.0, "semantic": math.nan})  # the start: logged, never selected
    (tmp_path / "run").mkdir()
    log.open(end=3, title="test", progress=False)  # stopped after 3 of 5 steps
    row = dict.fromkeys(STEP_KEYS, 0.0)
    for done, sdr in ((1, None), (2, 3.0), (3, None)):
        with torch.no_grad():
            model.weight.fill_(float(done))
        log.log_step(dict(row, step=done - 1))
        if sdr is not None:
            log.log_val(done, {"sdr": sdr, "si_sdri": 1.0, "semantic": math.nan}, model)
        log.end_step(done, model, opt, ema=ema)
        saved = tmp_path / "run" / "last.pt"
        if done == 1:
            assert not saved.exists()  # ckpt_every=2
    assert load_checkpoint(saved)["step"] == 3  # the last step of a stopped run is checkpointed
    with open(tmp_path / "run" / "metrics.csv") as f:
        assert [r["step"] for r in csv.DictReader(f)] == ["0", "1", "2", "3"]
    out, h = log.finish(model)
    assert (h["best_step"], h["best_sdr"], h["steps_done"], h["val_step"]) == (2, 3.0, 3, [0, 2])
    assert set(VAL_KEYS) <= set(h) and len(h["step"]) == 3
    assert out.weight.flatten().tolist() == [3.0, 3.0]  # stopped early: the last weights, not the best

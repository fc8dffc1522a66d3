"""The bookkeeping of an RL run, apart from the algorithm (as CleanRL keeps logging apart from the
update): the per-step stats row, the history, ``metrics.csv``, the progress bar, wall time,
keep-best and the resumable ``last.pt``.

``last.pt`` (model, optimiser, EMA baseline, step, history, best weights, RNG state, run config) is
written atomically every ``ckpt_every`` steps and at the last step of a call.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from ..config import RLConfig
from ..progress import CsvLog, Progress, last_row
from ..runs import TrainState, keep_if_best, resume_last, save_last
from .rollout import Rollout

STEP_KEYS = ("step", "kappa", "lr", "reward_mean", "reward_std", "reward_group_std", "reward_semantic",
             "reward_signal", "reward_contamination", "adv_mean", "adv_std", "frac_zero_std", "loss", "pg_loss",
             "entropy", "kl_loss", "approx_kl", "clipfrac", "ratio_mean", "grad_norm", "t_policy", "t_rollout",
             "t_reward", "t_update", "skipped_updates")
"""Per-step entries of ``history`` (PPO statistics are means over the step's updates that ran; NaN when all
were skipped; ``skipped_updates``: updates skipped for non-finite values, :attr:`RLConfig.max_skipped_updates`)."""
OPTIONAL_STEP_KEYS = {"reward_residual": "lambda_res"}
"""Per-step entries that came after runs existed: each is in a run's ``history`` and ``metrics.csv`` only when the
:class:`~mars_core.config.RLConfig` field it names is not 0 (so cached and resumed runs made before it keep the
:data:`STEP_KEYS` they were written with)."""
VAL_KEYS = ("val_step", "val_sdr", "val_si_sdri", "val_semantic")
"""Per-validation entries of ``history`` (``val_semantic`` is NaN without a judge)."""


@dataclass
class StepResult:
    """What one RL step produced: its rollout, advantages ``(N, G)``, PPO statistics and timings."""

    kappa: float
    ro: Rollout
    adv: torch.Tensor
    frac_zero: float
    stats: dict[str, float]
    t_update: float


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[Any, float]:
    """``(fn(), seconds)``; on CUDA the device is synchronised before the clock stops."""
    t = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out, time.perf_counter() - t


def step_row(step: int, lr: float, s: StepResult) -> dict[str, float]:
    """The :data:`STEP_KEYS` row of one step, with ``reward_residual`` (:data:`OPTIONAL_STEP_KEYS`)."""
    r, terms, stats = s.ro.rewards.cpu(), s.ro.terms, s.stats
    return {"step": step, "kappa": s.kappa, "lr": lr, "reward_mean": r.mean().item(),
            "reward_std": r.std(unbiased=False).item(), "reward_group_std": r.std(1, unbiased=False).mean().item(),
            "reward_semantic": terms["semantic"].mean().item(), "reward_signal": terms["signal"].mean().item(),
            "reward_contamination": terms["contamination"].mean().item(),
            "reward_residual": terms["residual"].mean().item(), "adv_mean": s.adv.mean().item(),
            "adv_std": s.adv.std(unbiased=False).item(), "frac_zero_std": s.frac_zero, "entropy": stats["entropy_loss"],
            "t_policy": s.ro.timings["policy"], "t_rollout": s.ro.timings["rollout"],
            "t_reward": s.ro.timings["reward"], "t_update": s.t_update,
            **{k: stats[k] for k in ("loss", "pg_loss", "kl_loss", "approx_kl", "clipfrac", "ratio_mean", "grad_norm",
                                     "skipped_updates")}}


class RunLog:
    """History, keep-best, ``metrics.csv``, the progress bar, wall time and ``last.pt`` of one RL run.

    ``run_dir`` ``None``: nothing is written. ``writes=False`` (the ranks other than 0 under torchrun): ``last.pt``
    is read to resume, but nothing is written or shown. Steps count steps done (0 = the starting point).
    """

    def __init__(self, run_dir: str | os.PathLike | None, run_cfg: dict, cfg: RLConfig, writes: bool = True):
        self.last = Path(run_dir) / "last.pt" if run_dir is not None else None
        self.run_cfg, self.cfg, self.writes = run_cfg, cfg, writes
        self.step_keys = STEP_KEYS + tuple(k for k, field in OPTIONAL_STEP_KEYS.items() if getattr(cfg, field, 0))
        self.start, self.st = 0, TrainState({k: [] for k in self.step_keys + VAL_KEYS})

    @property
    def history(self) -> dict:
        return self.st.history

    def resume(self, model: torch.nn.Module, opt: torch.optim.Optimizer, ema) -> int:
        """Load ``last.pt`` when there is one (it must hold the same run); return the steps already done."""
        if self.last is not None and self.last.exists():
            self.start, self.st = resume_last(self.last, self.run_cfg, model, opt, "an RL run", ema=ema)
        return self.start

    def log_val(self, step: int, v: dict[str, float], model: torch.nn.Module | None = None) -> None:
        """Append a validation; with ``model``, keep its weights when its SDR is the best so far."""
        h = self.st.history
        h["val_step"].append(step), h["val_sdr"].append(v["sdr"]), h["val_si_sdri"].append(v["si_sdri"])
        h["val_semantic"].append(v["semantic"])
        if model is not None:
            keep_if_best(self.st, v["sdr"], step, model)

    def open(self, end: int, title: str, progress: bool) -> None:
        """Start the progress bar, ``metrics.csv`` (its step-0 row on a fresh run) and the clock."""
        self.end = end
        self.prog = Progress(self.cfg.steps, title, show=("reward_mean", "loss", "val_sdr"), initial=self.start,
                             enabled=progress and self.writes)
        self.csv = CsvLog(self.last.with_name("metrics.csv") if self.last is not None and self.writes else None,
                          resume_step=self.start, fields=self.step_keys[1:] + VAL_KEYS[1:])
        if self.start == 0:
            self.csv.log(0, **last_row(self.st.history, (), VAL_KEYS[1:], at=0))
        self.t0 = time.perf_counter()

    def log_step(self, row: dict[str, float]) -> None:
        for key in self.step_keys:
            self.st.history[key].append(row[key])

    def validation_due(self, done: int) -> bool:
        return done % self.cfg.eval_every == 0 or done == self.cfg.steps

    def end_step(self, done: int, model: torch.nn.Module, opt: torch.optim.Optimizer, ema) -> None:
        """Log the step's row (csv, progress) and checkpoint when due."""
        logged = last_row(self.st.history, self.step_keys[1:], VAL_KEYS[1:], at=done)
        self.csv.log(done, **logged)
        self.prog.update(done, **logged)
        if self.last is not None and (done % self.cfg.ckpt_every == 0 or done == self.end):
            self.st.wall_s += time.perf_counter() - self.t0
            self.t0 = time.perf_counter()
            if self.writes:
                save_last(self.last, self.run_cfg, done, model, opt, self.st, ema=ema)

    def finish(self, model: torch.nn.Module) -> tuple[torch.nn.Module, dict]:
        """Close the bar; load the best weights when the run is complete and ``cfg.select`` is ``"val"`` (``writes``:
        rank 0, which validates; the other ranks keep the last weights; ``"last"`` keeps them everywhere);
        ``(eval-mode cpu model, history)``, whose ``selected_step`` is the step of the returned weights."""
        self.prog.close()
        st = self.st
        st.wall_s += time.perf_counter() - self.t0
        history = dict(st.history, best_step=st.best_step, best_sdr=st.best_sdr, wall_s=st.wall_s,
                       steps_done=self.end, preset=self.cfg.preset, selected_step=self.end)
        if self.end == self.cfg.steps and st.best_state is not None and self.writes and self.cfg.select == "val":
            model.load_state_dict(st.best_state)
            history["selected_step"] = st.best_step
        return model.cpu().eval(), history

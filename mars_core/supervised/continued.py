"""The control 'supervised (continued)': the supervised start trained on by supervision with an RL run's budget.

A gain of RL over its supervised start only counts if more supervised training from the same start, for the same
number of optimiser updates, does not give it too (docs/method.md section 8). :func:`continued_config` turns an
:class:`~mars_core.config.RLConfig` into that budget:

* updates = ``steps x ppo_epochs x minibatches`` (every PPO minibatch is one optimiser update);
* mixtures per update = ``batch_mixtures / minibatches`` (at least 1: what one PPO minibatch holds);
* the same trainable weights (``trainable``: ``head`` = last up-convolution and query fusion), optimiser,
  learning rate (constant, no warm-up: RL starts at its full rate), weight decay and clipping;
* validation as often (every ``eval_every`` RL steps, converted to updates) on as many val mixtures, keeping the
  best, as RL does; the Query-Mixup training queries and augmentation of the profile's supervised recipe.

:func:`load_or_continue` caches the run like :func:`~mars_core.supervised.store.load_or_train`
(``$MARS_DATA/runs/supervised_continued/<profile>-<hash>/final.pt``, keyed by the start's weights as well).
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import torch

from ..config import Profile, RLConfig, SupervisedConfig, get_profile
from ..queries import QueryBank
from ..runs import config_hash, encoder_fingerprint, runs_dir
from ..separator import QuerySeparator
from .store import load_separator, save_separator
from .trainer import run_config, train_supervised


def continued_config(profile: str | Profile | None, rl: RLConfig) -> SupervisedConfig:
    """The supervised config with ``rl``'s budget (module docstring)."""
    prof = get_profile(profile)
    per_step = rl.ppo_epochs * rl.minibatches
    return replace(prof.supervised, steps=rl.steps * per_step, batch_mixtures=max(1, rl.batch_mixtures // rl.minibatches),
                   optimizer=rl.optimizer, lr=rl.lr, weight_decay=rl.weight_decay, warmup_steps=0, final_lr_ratio=1.0,
                   grad_clip=rl.grad_clip, eval_every=rl.eval_every * per_step, val_mixtures=rl.val_mixtures,
                   ckpt_every=rl.ckpt_every * per_step, seed=rl.seed, trainable=rl.trainable)


def load_or_continue(profile: str | Profile | None, start: QuerySeparator, rl: RLConfig, *, bank: QueryBank,
                     run_root: str | os.PathLike | None = None, build_dir: str | os.PathLike | None = None,
                     retrain: bool = False, progress: bool = True,
                     device: str | torch.device | None = None) -> tuple[QuerySeparator, dict]:
    """The start trained on with :func:`continued_config`, trained only if no run with the same key exists.

    Returns:
        ``(model, history)``; ``history["source"]`` names the file, ``history["start"]`` the start's weight key.
    """
    prof = get_profile(profile)
    cfg = continued_config(prof, rl)
    start_key = encoder_fingerprint(start)[:16]
    run_cfg = dict(run_config(prof, cfg, bank), init=start_key)
    run_dir = Path(run_root or runs_dir("supervised_continued")) / f"{prof.name}-{config_hash(run_cfg)}"
    final = run_dir / "final.pt"
    if not retrain and final.exists():
        model, blob = load_separator(final)
        if blob["config"] == run_cfg:
            return (model.to(device) if device is not None else model), dict(blob["history"], source=str(final))
    model, history = train_supervised(prof, bank, cfg, run_dir=run_dir, resume=not retrain, build_dir=build_dir,
                                      progress=progress, device=device, init=start)
    history = dict(history, start=start_key)
    save_separator(final, model, run_cfg=run_cfg, history=history)
    return model, dict(history, source=str(final))

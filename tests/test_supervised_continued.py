"""The control 'supervised (continued)': the RL budget as a supervised config, head-only training from a start."""

from __future__ import annotations

from dataclasses import replace

import torch

from mars_core.config import RLConfig, get_profile
from mars_core.separator import new_separator
from mars_core.supervised.continued import continued_config, load_or_continue
from tests.test_queries import fake_bank

SMOKE = get_profile("smoke")


def test_budget_by_hand():
    rl = RLConfig(steps=200, batch_mixtures=4, ppo_epochs=2, minibatches=2, lr=2e-4, optimizer="adamw",
                  weight_decay=0.01, eval_every=25, ckpt_every=25, val_mixtures=50, trainable="head", seed=3)
    cfg = continued_config("cpu", rl)
    # 200 RL steps x 2 epochs x 2 minibatches = 800 updates of 4 / 2 = 2 mixtures; validation every 25 x 4 = 100
    assert (cfg.steps, cfg.batch_mixtures, cfg.eval_every, cfg.ckpt_every) == (800, 2, 100, 100)
    assert (cfg.lr, cfg.optimizer, cfg.weight_decay, cfg.warmup_steps, cfg.final_lr_ratio) == (2e-4, "adamw", 0.01, 0, 1.0)
    assert (cfg.trainable, cfg.seed, cfg.val_mixtures) == ("head", 3, 50)
    cpu = get_profile("cpu").supervised  # the training recipe's queries stay the profile's
    assert (cfg.query, cfg.query_noise, cfg.pure_query_prob) == (cpu.query, cpu.query_noise, cpu.pure_query_prob)
    assert continued_config("cpu", replace(rl, minibatches=8)).batch_mixtures == 1


def test_head_only_continuation_keeps_the_trunk_and_caches(fake_build, tmp_path):
    bank = fake_bank(fake_build, SMOKE.separator.query_dim)
    start = new_separator(SMOKE, seed=7, query_init_std=1.0)
    rl = RLConfig(steps=2, batch_mixtures=2, ppo_epochs=1, minibatches=1, lr=1e-2, eval_every=1, ckpt_every=1,
                  val_mixtures=2, trainable="head")
    before = {k: v.clone() for k, v in start.state_dict().items()}
    model, hist = load_or_continue(SMOKE, start, rl, bank=bank, run_root=tmp_path, build_dir=fake_build,
                                   progress=False)
    head = set(start.head_parameter_names())
    after = model.state_dict()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved and moved <= head  # only head weights moved; trunk weights and batch-norm statistics did not
    assert all(torch.equal(before[k], v) for k, v in start.state_dict().items())  # the start is untouched
    assert all(p.requires_grad for p in model.parameters())
    again, hist2 = load_or_continue(SMOKE, start, rl, bank=bank, run_root=tmp_path, build_dir=fake_build,
                                    progress=False)
    assert hist2["source"] == hist["source"] and all(torch.equal(after[k], v) for k, v in again.state_dict().items())

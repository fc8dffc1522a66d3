"""RL under torchrun (gloo on CPU): two ranks with per-rank batch B train the one-process RL run with batch 2B.

Oracles: the one-process trainer (:func:`mars_core.rl.trainer.train_rl`, no process group) with the global batch,
from the same separator and seed; the one-process batch itself for the ranks' shares of a step.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from mars_core import distributed
from mars_core.audio import FrontEnd
from mars_core.checkpoints import load_checkpoint
from mars_core.config import RLConfig, get_profile
from mars_core.data.mixing import MixtureDataset
from mars_core.rl.rollout import rl_batch
from mars_core.rl.trainer import check_ranks, load_or_train_rl, train_rl
from tests.conftest import make_fake_build
from tests.one_thread import one_thread  # noqa: F401  (autouse: one torch thread)
from tests.test_distributed import _free_port, _join
from tests.test_queries import fake_bank
from tests.test_rl_rollout import smoke_stack, trained_looking_separator

SMOKE = get_profile("smoke")
WORLD = 2
# global batch 4 = 2 ranks x 2. HEAD: the plus preset's shape (head only, group advantages, AdamW, 2 epochs of 2
# minibatches). ALL: every weight, the EMA baseline with batch normalisation of the advantages (batch-level
# statistics), 3 minibatches of 4 mixtures (sizes 2, 1, 1: in some a rank holds none), SGD, a KL term.
HEAD = RLConfig(steps=4, batch_mixtures=4, group_size=2, ppo_epochs=2, minibatches=2, lambda_sig=0.5, lambda_neg=0.5,
                eval_every=2, val_mixtures=2, ckpt_every=1, trainable="head", kappa=30.0, kappa_end=30.0)
ALL = replace(HEAD, steps=3, eval_every=3, trainable="all", advantage="ema", group_size=1, minibatches=3,
              optimizer="sgd", lr=1e-2, kl_coef=0.05)
CONFIGS = {"head": HEAD, "all": ALL}


def _env(build):
    stack, rbank = smoke_stack(str(build))
    return dict(stack=stack, reward_bank=rbank, bank=fake_bank(build, SMOKE.separator.query_dim), build_dir=build,
                judge=None, progress=False)


def _rank(r, world, port, build, tmp):
    _join(r, world, port)
    try:
        env = _env(build)
        for name, cfg in CONFIGS.items():
            run = tmp / f"two-{name}"
            if name == "head":  # stopped after step 2 (checkpointed), then started again: every rank resumes last.pt
                train_rl(SMOKE, cfg, separator=trained_looking_separator(), run_dir=run, stop_after=2, **env)
            model, history = train_rl(SMOKE, cfg, separator=trained_looking_separator(), run_dir=run, **env)
            torch.save({"model": model.state_dict(), "history": history}, tmp / f"{name}-rank{r}.pt")
    finally:
        distributed.teardown()


@pytest.fixture(scope="module")
def two_ranks(fake_build, tmp_path_factory):
    """Both configurations trained by two spawned gloo ranks; their outputs (read back from files)."""
    tmp = tmp_path_factory.mktemp("rl_ranks")
    mp.spawn(_rank, args=(WORLD, _free_port(), fake_build, tmp), nprocs=WORLD, join=True)
    return tmp


# --------------------------------------------------------------------------- no processes
def test_rank_shares_make_the_one_process_rl_batch(fake_build):
    env = _env(fake_build)
    ds = MixtureDataset("train", SMOKE, n_items=8, build_dir=fake_build, load_images=False)
    fe = FrontEnd(SMOKE.audio)
    args = (ds, env["bank"], env["reward_bank"], env["stack"], fe, 1, 4, "mixup", 0)
    whole = rl_batch(*args)
    shares = [rl_batch(*args, part=slice(0, 2)), rl_batch(*args, part=slice(2, 4))]
    for key in ("features", "queries", "mixtures", "sources", "z", "z_neg"):
        value = getattr(whole, key)
        # the same items through the same float32 ops (an STFT per item, a query per row): equal up to a few ulps
        torch.testing.assert_close(torch.cat([getattr(s, key) for s in shares]), value, rtol=1e-6, atol=1e-6)
    assert all(s.n_mixtures == 2 for s in shares)
    aug = dict(query_noise=2.0, pure_query_prob=0.5)  # the augmentation draws of the whole step, then each share's rows
    whole = rl_batch(*args, **aug)
    shares = [rl_batch(*args, part=slice(0, 2), **aug), rl_batch(*args, part=slice(2, 4), **aug)]
    torch.testing.assert_close(torch.cat([s.queries for s in shares]), whole.queries, rtol=1e-6, atol=1e-6)


def test_a_batch_the_ranks_cannot_share_is_refused(monkeypatch):
    monkeypatch.setattr(distributed, "world_size", lambda: 3)
    with pytest.raises(ValueError, match="batch_mixtures=4 is not a multiple of the 3 ranks"):
        check_ranks(HEAD)
    with pytest.raises(ValueError, match="pathwise"):
        check_ranks(replace(HEAD, batch_mixtures=3, estimator="pathwise", reward_segments=0))
    monkeypatch.setattr(distributed, "world_size", lambda: 1)
    check_ranks(HEAD)  # one process: anything check_config accepts


# --------------------------------------------------------------------------- two gloo ranks
UPDATE_RTOL = {"head": 2e-4, "all": 1e-2}
"""How far each weight tensor's update (w - w0) may be from the one-process update, relative to its norm.

Nothing is drawn differently: the ranks take the one-process mixtures, Query-Mixup weights, masks (sampled from the
gathered P_old) and minibatches. What differs is the order of float32 sums: the U-Net on 2 mixtures instead of 4,
a minibatch's loss as two weighted rank means, gradients summed over ~1e5 bins per rank then averaged (relative
errors ~sqrt(n) eps ~ 1e-5). Measured, each tensor's update differs by at most 1.0e-5 of its norm (head, AdamW,
4 steps; 3.8e-5 for the command's 2 smoke steps, where each minibatch is one mixture on one rank) and 2.0e-3 (every weight, SGD, 3 steps: the smallest updates, the trunk's biases, amplified as later
rollouts start from weights a few 1e-5 apart). Checked by hand when this test was written: each of three mistakes
in what is shared fails it (advantages from the rank's own rewards, the ranks' minibatch shares averaged without
their weights n_r W / n, masks drawn from the rank's own P_old)."""


def _csv_steps(path) -> list[int]:
    with open(path, newline="") as f:
        return [int(r["step"]) for r in csv.DictReader(f)]


@pytest.mark.parametrize("name", list(CONFIGS))
def test_two_ranks_train_the_one_process_rl_run(two_ranks, fake_build, tmp_path, name):
    cfg = CONFIGS[name]
    one, h_one = train_rl(SMOKE, cfg, separator=trained_looking_separator(), run_dir=tmp_path / "one",
                          **_env(fake_build))
    ranks = [torch.load(two_ranks / f"{name}-rank{r}.pt") for r in range(WORLD)]
    last_one = load_checkpoint(tmp_path / "one" / "last.pt")
    last_two = load_checkpoint(two_ranks / f"two-{name}" / "last.pt")
    assert last_two["config"] == last_one["config"] and last_two["step"] == cfg.steps  # the same run (same key)

    # step 0, before any update: the whole batch's rewards and advantages (the same masks; rewards of waveforms
    # rebuilt by the same per-item ops): a few float32 ulps
    h_two = ranks[0]["history"]
    for key in ("reward_mean", "reward_std", "reward_group_std", "reward_signal", "reward_contamination", "adv_std"):
        torch.testing.assert_close(h_two[key][0], h_one[key][0], rtol=1e-5, atol=1e-7, msg=key)
    # the step's PPO statistics are global (every rank's share, weighted): measured within 2.5e-5 (a mean over
    # updates whose later ones start from weights a few 1e-5 apart); a per-rank statistic is off by 10% or more
    for key in ("loss", "grad_norm", "approx_kl"):
        torch.testing.assert_close(h_two[key][0], h_one[key][0], rtol=2e-4, atol=0.0, msg=key)
    assert h_two["val_step"] == h_one["val_step"] and h_two["best_step"] == h_one["best_step"]
    torch.testing.assert_close(torch.tensor(h_two["val_sdr"]), torch.tensor(h_one["val_sdr"]), rtol=1e-4, atol=1e-4)

    w0 = trained_looking_separator().state_dict()
    moved = 0
    for k, ref in one.state_dict().items():
        if ref.is_floating_point():
            step_one, step_two = ref - w0[k], ranks[0]["model"][k] - w0[k]
            assert (step_two - step_one).norm() <= UPDATE_RTOL[name] * step_one.norm() + 1e-12, k
            moved += bool(step_one.norm() > 0)
    assert moved >= (6 if name == "head" else 20)  # the weights trained (head: fusion and last layer)
    # every rank applied the same averaged gradient: rank 1 holds rank 0's last weights bit for bit
    for k, w in last_two["model"].items():
        assert torch.equal(ranks[1]["model"][k], w), k
    assert _csv_steps(two_ranks / f"two-{name}" / "metrics.csv") == list(range(cfg.steps + 1))  # rank 0 wrote it once


def test_torchrun_command_trains_the_one_process_rl_run(tmp_path, monkeypatch):
    data = tmp_path / "data"
    make_fake_build(data / "benchmark" / "smoke")
    env = dict(os.environ, MARS_DATA=str(data), OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).parents[1]))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
           "-m", "mars_core.rl", "--profile", "smoke", "--device", "cpu", "--steps", "2", "--no-eval"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert done.stdout.count("RL separator (plus") == 1  # rank 0 alone reports
    (run,) = (data / "runs" / "rl").iterdir()
    assert (run / "final.pt").is_file() and _csv_steps(run / "metrics.csv") == [0, 1, 2]

    # oracle: one process, batch 2, from the supervised separator, query bank and reward stack the command left
    # (rank 0 built them first, rank 1 read them; the supervised stage trained under torchrun too, and its ranks
    # other than 0 hold its last weights, not the best: train_rl starts every rank from rank 0's separator);
    # a fresh run root, so it trains
    monkeypatch.setenv("MARS_DATA", str(data))
    one, _ = load_or_train_rl(SMOKE, "plus", config=replace(SMOKE.rl, steps=2), run_root=tmp_path / "one",
                              progress=False, device="cpu")
    (run_one,) = (tmp_path / "one").iterdir()
    assert run_one.name == run.name  # the same run key
    two = load_checkpoint(run / "final.pt")
    w0 = load_checkpoint(next((data / "runs" / "supervised").iterdir()) / "final.pt")["model"]
    moved = 0
    for k, ref in one.state_dict().items():
        step_one, step_two = ref - w0[k], two["model"][k] - w0[k]
        if not step_one.any():  # the frozen trunk (trainable='head'): untouched on both sides
            assert torch.equal(two["model"][k], ref), k
            continue
        # UPDATE_RTOL's reasoning; measured at most 3.8e-5 here (query_proj.weight)
        assert (step_two - step_one).norm() <= UPDATE_RTOL["head"] * step_one.norm(), k
        moved += 1
    assert moved >= 6

"""Several ranks (torchrun, DDP, gloo on CPU): two ranks with per-rank batch B train the one-process run with batch 2B.

Oracles: the one-process trainer with the global batch (an independent run, no process group), and the
one-process batch itself for the ranks' shares of a step; plain ``BatchNorm2d`` for the global batch norm.
"""

from __future__ import annotations

import csv
import os
import socket
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
from mars_core.config import SupervisedConfig, get_profile
from mars_core.encoders.load import load_query_encoder
from mars_core.queries import load_or_build_query_bank
from mars_core.separator import new_separator
from mars_core.supervised import supervised_loss, train_supervised, training_batch
from mars_core.supervised.trainer import TrainingData
from tests.conftest import make_fake_build
from tests.test_queries import fake_bank

SMOKE = get_profile("smoke")
# global batch 4 = 2 ranks x 2; every query draw in use (Query-Mixup, pure queries, query noise, hard pairs)
CFG = SupervisedConfig(steps=4, batch_mixtures=4, warmup_steps=1, eval_every=2, val_mixtures=2, ckpt_every=2,
                       query_noise=0.5, pure_query_prob=0.5, hard_pair_prob=0.5)
WORLD = 2


@pytest.fixture(scope="module")
def bank(fake_build):
    return fake_bank(fake_build, SMOKE.separator.query_dim)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _join(r: int, world: int, port: int) -> None:
    """What torchrun does for rank ``r``: its environment, then :func:`distributed.init` (gloo on a CPU)."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(r), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(r), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    assert distributed.init("cpu")


def _first_gradient(model, bank, build, part=None):
    """Loss and gradients of step 0's batch (``part``: this rank's share through DDP)."""
    batch = training_batch(TrainingData(SMOKE, CFG, build), bank, FrontEnd(SMOKE.audio), 0, CFG,
                           **({} if part is None else {"part": part}))
    forward = distributed.data_parallel(model, lambda m, b: supervised_loss(m, b, CFG.loss))
    loss = (forward or (lambda b: supervised_loss(model, b, CFG.loss)))(batch)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def _train_rank(r, world, port, bank, build, run_dir, out_dir):
    _join(r, world, port)
    try:
        model = distributed.sync_batchnorm(new_separator(SMOKE, CFG.seed, CFG.query_init_std)).train()
        loss, grads = _first_gradient(model, bank, build, distributed.part(CFG.batch_mixtures))
        torch.save({"loss": loss, "grads": grads}, out_dir / f"grad{r}.pt")
        # killed after step 2 (a clean stop at a checkpoint), then started again: every rank resumes last.pt
        train_supervised(SMOKE, bank, CFG, run_dir=run_dir, build_dir=build, stop_after=2, progress=False)
        model, history = train_supervised(SMOKE, bank, CFG, run_dir=run_dir, build_dir=build, progress=False)
        torch.save({"model": model.state_dict(), "loss": history["loss"], "bn": type(model.unet.input_norm).__name__},
                   out_dir / f"rank{r}.pt")
    finally:
        distributed.teardown()


def _batchnorm_rank(r, world, port, x, out_dir):
    _join(r, world, port)
    try:
        bn = distributed.sync_batchnorm(torch.nn.Sequential(torch.nn.BatchNorm2d(3))).train()
        part = x[distributed.part(x.shape[0])].clone().requires_grad_(True)
        y = bn(part)
        (y * torch.arange(1.0, 1 + y.numel()).reshape(y.shape).roll(r)).sum().backward()  # rank-dependent weights
        torch.save({"y": y.detach(), "dx": part.grad, "mean": bn[0].running_mean, "var": bn[0].running_var},
                   out_dir / f"bn{r}.pt")
    finally:
        distributed.teardown()


def _spawn(fn, *args) -> None:
    mp.spawn(fn, args=(WORLD, _free_port(), *args), nprocs=WORLD, join=True)


# --------------------------------------------------------------------------- no processes
def test_rank_shares_make_the_one_process_batch(fake_build, bank):
    ds, fe = TrainingData(SMOKE, CFG, fake_build), FrontEnd(SMOKE.audio)
    for step in (0, 3):
        whole = training_batch(ds, bank, fe, step, CFG)
        shares = [training_batch(ds, bank, fe, step, CFG, part=slice(0, 2)),
                  training_batch(ds, bank, fe, step, CFG, part=slice(2, 4))]
        for key, value in whole.items():
            assert value.shape[0] == 4 and all(s[key].shape[0] == 2 for s in shares), key
            # the same items through the same float32 ops (an STFT per item): equal up to a few ulps
            torch.testing.assert_close(torch.cat([s[key] for s in shares]), value, rtol=1e-6, atol=1e-6)


def test_part_refuses_a_batch_the_ranks_cannot_share(monkeypatch):
    monkeypatch.setattr(distributed, "world_size", lambda: 3)
    with pytest.raises(ValueError, match="batch_mixtures=4 is not a multiple of the 3 ranks"):
        distributed.part(4)


def test_without_torchrun_nothing_is_distributed(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert not distributed.init("cpu") and distributed.world_size() == 1 and distributed.is_main()
    assert distributed.part(4) == slice(0, 4)
    assert distributed.data_parallel(torch.nn.Linear(1, 1), lambda m, x: x) is None
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(ValueError, match="MASTER_ADDR"):
        distributed.init("cpu")


def test_rl_under_torchrun_refuses_a_batch_the_ranks_cannot_share(tmp_path):
    # RL runs under torchrun (tests/test_rl_distributed.py); 2 ranks and a global batch of 3 are named at once,
    # before any encoder loads or any file is written
    env = dict(os.environ, MARS_DATA=str(tmp_path), OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).parents[1]))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
           "-m", "mars_core.rl", "--profile", "smoke", "--device", "cpu", "--set", "batch_mixtures=3"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "batch_mixtures=3 is not a multiple of the 2 ranks" in done.stderr, done.stderr[-3000:]
    assert not any(tmp_path.iterdir())  # nothing built, trained or written


# --------------------------------------------------------------------------- two gloo ranks
def test_global_batchnorm_is_batchnorm_of_the_whole_batch(tmp_path):
    x = torch.randn(4, 3, 5, 2, generator=torch.Generator().manual_seed(0)) * 3 + 1
    _spawn(_batchnorm_rank, x, tmp_path)
    ranks = [torch.load(tmp_path / f"bn{r}.pt") for r in range(WORLD)]
    ref = torch.nn.BatchNorm2d(3).train()  # oracle: torch's BatchNorm2d on all 4 items
    xr = x.clone().requires_grad_(True)
    y = ref(xr)
    weights = [torch.arange(1.0, 1 + y[:2].numel()).reshape(y[:2].shape).roll(r) for r in range(WORLD)]
    (y * torch.cat(weights)).sum().backward()
    # float32 sums over 20-40 values of size ~1: a few ulps (1e-6 relative), an absolute floor for values near 0
    torch.testing.assert_close(torch.cat([o["y"] for o in ranks]), y.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.cat([o["dx"] for o in ranks]), xr.grad, rtol=1e-5, atol=1e-4)
    for o in ranks:
        torch.testing.assert_close(o["mean"], ref.running_mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(o["var"], ref.running_var, rtol=1e-5, atol=1e-6)


def test_two_ranks_train_the_one_process_run(fake_build, bank, tmp_path):
    _spawn(_train_rank, bank, fake_build, tmp_path / "two", tmp_path)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]

    # step 0: DDP's average of the ranks' gradients is the gradient of the mean loss over all 4 mixtures, and the
    # mean of the ranks' losses that loss. Float32 sums over ~1e5 terms in another order: relative errors of
    # sqrt(n) eps ~ 1e-5, so 1e-4 of each tensor's norm (a per-rank batch norm or a summed loss is off by O(1)).
    loss_one, grad_one = _first_gradient(new_separator(SMOKE, CFG.seed, CFG.query_init_std).train(), bank, fake_build)
    firsts = [torch.load(tmp_path / f"grad{r}.pt") for r in range(WORLD)]
    torch.testing.assert_close((firsts[0]["loss"] + firsts[1]["loss"]) / 2, loss_one, rtol=1e-5, atol=0.0)
    for name, g in grad_one.items():
        for o in firsts:
            assert (o["grads"][name] - g).norm() <= 1e-4 * g.norm() + 1e-12, name

    one, h_one = train_supervised(SMOKE, bank, CFG, run_dir=tmp_path / "one", build_dir=fake_build, progress=False)
    last_one = load_checkpoint(tmp_path / "one" / "last.pt")
    last_two = load_checkpoint(tmp_path / "two" / "last.pt")
    assert last_two["step"] == CFG.steps and last_two["config"] == last_one["config"]  # the same run (same key)
    h_two = last_two["history"]
    # the logged loss is the mean over both ranks' items; the gradient norm is the one-process one at step 0.
    # Step 0's loss is the same weights' loss summed in another order (1e-5 as above). Later steps start from weights
    # that differ as said below (Adam's random-sign steps on noise-level gradients, 0.5% of the update apart at step
    # 3), which moved the loss by 1.1e-5 relative on a fresh machine (torch 2.13, 2026-12-07; below 1e-5 before); 1e-3
    # allows that on any CPU and is still far below what a wrong average or a per-rank batch norm does (O(1)).
    torch.testing.assert_close(h_two["loss"][0], h_one["loss"][0], rtol=1e-5, atol=0.0)
    torch.testing.assert_close(torch.tensor(h_two["loss"]), torch.tensor(h_one["loss"]), rtol=1e-3, atol=0.0)
    torch.testing.assert_close(h_two["grad_norm"][0], h_one["grad_norm"][0], rtol=1e-5, atol=0.0)
    # After 4 Adam steps: Adam moves every weight by about lr per step whatever the size of its gradient, so a
    # weight whose gradient is at the float-noise level above takes steps of random sign. Measured: each
    # tensor's update (w - w0) differs from the one-process update by at most 4% of its norm (median 0.2%);
    # with a per-rank batch norm instead of the global one it differs by 120% (median) to 255%.
    w0 = new_separator(SMOKE, CFG.seed, CFG.query_init_std).state_dict()
    for name, ref in last_one["model"].items():
        if ref.is_floating_point():
            step_one, step_two = ref - w0[name], last_two["model"][name] - w0[name]
            assert (step_two - step_one).norm() <= 0.1 * step_one.norm() + 1e-12, name
    assert last_two["history"]["val_step"] == h_one["val_step"] == [2, 4]
    # rank 1 holds rank 0's weights (DDP) and its batch norm is plain again once training returns
    for name, w in last_two["model"].items():
        assert torch.equal(ranks[1]["model"][name], w), name
    assert [o["bn"] for o in ranks] == ["BatchNorm2d", "BatchNorm2d"]
    with open(tmp_path / "two" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]  # rank 0 alone wrote it, the resumed rows once


def _csv_steps(path: Path) -> list[int]:
    with open(path, newline="") as f:
        return [int(r["step"]) for r in csv.DictReader(f)]


def test_torchrun_command_trains_the_one_process_run(tmp_path, monkeypatch):
    data = tmp_path / "data"
    make_fake_build(data / "benchmark" / "smoke")
    env = dict(os.environ, MARS_DATA=str(data), OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).parents[1]))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
           "-m", "mars_core.supervised", "--profile", "smoke", "--device", "cpu", "--steps", "2", "--no-eval",
           "--out", str(tmp_path / "sep.pt")]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert done.stdout.count("separator from") == 1 and done.stdout.count("-> ") == 1  # rank 0 alone reports
    (run,) = (data / "runs" / "supervised").iterdir()
    assert _csv_steps(run / "metrics.csv") == [1, 2] and (run / "final.pt").is_file()

    # oracle: the trainer in this process, batch 4, with the query bank the command built (rank 0, then read by rank 1)
    monkeypatch.setenv("MARS_DATA", str(data))
    bank = load_or_build_query_bank(load_query_encoder(SMOKE), SMOKE, progress=False)
    cfg = replace(SMOKE.supervised, steps=2)
    one, _ = train_supervised(SMOKE, bank, cfg, build_dir=data / "benchmark" / "smoke", progress=False)
    two = load_checkpoint(tmp_path / "sep.pt")
    assert (two["config"]["supervised"]["steps"], two["config"]["supervised"]["batch_mixtures"]) == (2, 4)
    w0 = new_separator(SMOKE, cfg.seed, cfg.query_init_std).state_dict()
    for name, ref in one.state_dict().items():
        if ref.is_floating_point():  # the tolerance of test_two_ranks_train_the_one_process_run
            step_one, step_two = ref - w0[name], two["model"][name] - w0[name]
            assert (step_two - step_one).norm() <= 0.1 * step_one.norm() + 1e-12, name

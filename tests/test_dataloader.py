"""DataLoader workers for the supervised mixtures (``SupervisedConfig.num_workers``), and ``--workers``/``--compile``.

Oracles: the in-process stream (``training_batch``, the loop ``num_workers=0`` runs, unchanged), and the
:class:`~mars_core.data.mixing.MixtureDataset` items themselves (indexed by hand: item ``s B + j`` is mixture ``j``
of step ``s``). Workers only move where the items are read, so every comparison is exact (``torch.equal``).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from mars_core import precision
from mars_core.audio import FrontEnd
from mars_core.config import SupervisedConfig, get_profile
from mars_core.runs import config_hash
from mars_core.separator import multi_query_logits, new_separator
from mars_core.supervised import cli, check_config, run_config, supervised_loss, train_supervised, training_batch
from mars_core.supervised.loader import StepMixtures, load_step, step_loader
from mars_core.supervised.loss import MultiQueryLogits
from mars_core.supervised.trainer import TrainingData, batch_from_mixtures, loss_forward
from tests.one_thread import one_thread  # noqa: F401  (fixture)
from tests.test_queries import fake_bank

SMOKE = get_profile("smoke")
# every draw of a step in use: Query-Mixup, pure queries, query noise, hard pairs (a per-step share of them)
CFG = SupervisedConfig(steps=5, batch_mixtures=4, warmup_steps=1, eval_every=5, val_mixtures=2, ckpt_every=2,
                       query_noise=0.5, pure_query_prob=0.5, hard_pair_prob=0.5)


@pytest.fixture(scope="module")
def bank(fake_build):
    return fake_bank(fake_build, SMOKE.separator.query_dim)


def _loaded(ds, steps: range, workers: int, part: slice = slice(0, 4)) -> list[StepMixtures]:
    return list(step_loader(ds, CFG.batch_mixtures, steps, part, workers))


def _assert_equal_batches(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for key in want:
        assert got[key].dtype == want[key].dtype and torch.equal(got[key], want[key]), key


# --------------------------------------------------------------------------- the stream
def test_worker_mixtures_are_the_dataset_items(fake_build):
    """Oracle: the random-pair items indexed by hand (no hard pairs: mixture j of step s is item s B + j)."""
    cfg = replace(CFG, hard_pair_prob=0.0)
    ds = TrainingData(SMOKE, cfg, fake_build)
    got = list(step_loader(ds, 4, range(0, 3), slice(0, 4), 2))
    assert [m.step for m in got] == [0, 1, 2]
    for m in got:
        items = [ds.random[m.step * 4 + j] for j in range(4)]
        assert torch.equal(m.mixture, torch.from_numpy(np.stack([it["mixture"] for it in items])))
        assert torch.equal(m.sources, torch.from_numpy(np.stack([it["sources"] for it in items])))
        assert m.hard == [False] * 4 and [it["clip_ids"] for it in m.items] == [it["clip_ids"] for it in items]
        assert not m.mixture.is_pinned()  # a CPU run: nothing pinned


def test_two_workers_give_the_in_process_batches(fake_build, bank):
    ds, fe = TrainingData(SMOKE, CFG, fake_build), FrontEnd(SMOKE.audio)
    loaded = _loaded(ds, range(CFG.steps), 2)
    assert [m.step for m in loaded] == list(range(CFG.steps))
    assert any(any(m.hard) for m in loaded) and not all(all(m.hard) for m in loaded)  # both sets in use
    for m in loaded:
        want = ds.step_items(m.step)  # oracle of the (dataset, item) pairs: TrainingData in this process
        assert all(d is dw for (d, _), (dw, _) in zip(m.pairs(ds), want, strict=True))
        assert [(it["index"], it["clip_ids"]) for it in m.items] == [(it["index"], it["clip_ids"]) for _, it in want]
        _assert_equal_batches(batch_from_mixtures(ds, m, bank, fe, CFG), training_batch(ds, bank, fe, m.step, CFG))


def test_resumed_stream_and_rank_shares(fake_build, bank):
    """A loader started at step 3 (a resumed run) and one loading a rank's share: the in-process batches."""
    ds, fe = TrainingData(SMOKE, CFG, fake_build), FrontEnd(SMOKE.audio)
    for m in _loaded(ds, range(3, CFG.steps), 1):
        _assert_equal_batches(batch_from_mixtures(ds, m, bank, fe, CFG), training_batch(ds, bank, fe, m.step, CFG))
    for m in _loaded(ds, range(0, 2), 2, part=slice(2, 4)):  # rank 1 of 2
        want = training_batch(ds, bank, fe, m.step, CFG, part=slice(2, 4))
        assert m.mixture.shape[0] == 2
        _assert_equal_batches(batch_from_mixtures(ds, m, bank, fe, CFG), want)


def test_loader_pins_for_cuda_only(fake_build):
    ds = TrainingData(SMOKE, CFG, fake_build)
    assert step_loader(ds, 4, range(2), slice(0, 4), 1, "cuda").pin_memory
    assert not step_loader(ds, 4, range(2), slice(0, 4), 1, "cpu").pin_memory
    with pytest.raises(ValueError, match="num_workers must be an integer >= 1.*0 reads the mixtures"):
        step_loader(ds, 4, range(2), slice(0, 4), 0)
    if torch.cuda.is_available():  # on a GPU machine: pinning keeps the values
        m = load_step(ds, 0, 4, slice(0, 4))
        pinned = m.pin_memory()
        assert pinned.mixture.is_pinned() and torch.equal(pinned.mixture, m.mixture)


# --------------------------------------------------------------------------- training
def test_workers_train_the_in_process_weights_and_resume_exactly(fake_build, bank, tmp_path):
    cfg = replace(CFG, steps=4)
    ref, h_ref = train_supervised(SMOKE, bank, cfg, build_dir=fake_build, progress=False)  # oracle: 0 workers
    two = replace(cfg, num_workers=2)
    # killed cleanly after step 2, then resumed (the loader starts at step 2)
    train_supervised(SMOKE, bank, two, run_dir=tmp_path, build_dir=fake_build, stop_after=2, progress=False)
    got, h_got = train_supervised(SMOKE, bank, two, run_dir=tmp_path, build_dir=fake_build, progress=False)
    assert h_got["loss"] == h_ref["loss"] and h_got["grad_norm"] == h_ref["grad_norm"]
    for name, w in ref.state_dict().items():
        assert torch.equal(got.state_dict()[name], w), name


def test_num_workers_is_checked_and_not_in_the_run_key(fake_build, bank):
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="num_workers must be an integer >= 0"):
            check_config(replace(CFG, num_workers=bad))
    keys = {config_hash(run_config(SMOKE, replace(CFG, num_workers=n), bank)) for n in (0, 3)}
    assert len(keys) == 1  # a run read by workers is the same run (cached runs, shipped checkpoints)
    assert "num_workers" not in run_config(SMOKE, CFG, bank)["supervised"]


# --------------------------------------------------------------------------- --compile and --workers
def test_compiled_forward_is_the_eager_loss(fake_build, bank, monkeypatch):
    """``compile_forward`` routes the loss through ``maybe_compile(MultiQueryLogits(model))``; a stand-in
    ``torch.compile`` that adds 1 to the logits proves the path is taken (oracle: the loss of logits + 1)."""
    batch = training_batch(TrainingData(SMOKE, CFG, fake_build), bank, FrontEnd(SMOKE.audio), 0, CFG)
    model = new_separator(SMOKE, 0).train()
    assert loss_forward(model, CFG, "cpu", compile_forward=False) is None  # the plain path, unchanged
    monkeypatch.setattr(torch, "compile", lambda module, **k: (lambda f, q: module(f, q) + 1.0))
    forward = loss_forward(model, CFG, "cpu", compile_forward=True)
    shifted = lambda f, q: multi_query_logits(model, f, q) + 1.0  # noqa: E731
    torch.testing.assert_close(forward(batch), supervised_loss(model, batch, CFG.loss, shifted), rtol=0, atol=0)
    assert list(MultiQueryLogits(model).parameters()) == list(model.parameters())  # no weights of its own


def test_cli_passes_workers_and_compile(monkeypatch):
    seen = {}

    def fake_train(args, prof, cfg, device):
        seen.update(cfg=cfg, compile=precision.compile_requested())
        return 0

    monkeypatch.setattr(cli, "_train_and_report", fake_train)
    try:
        assert cli.main(["--profile", "smoke", "--device", "cpu", "--workers", "2", "--compile"]) == 0
        assert seen["cfg"].num_workers == 2 and seen["compile"] is True
        assert cli.main(["--profile", "smoke", "--device", "cpu"]) == 0
        assert seen["cfg"].num_workers == SMOKE.supervised.num_workers == 0 and seen["compile"] is False
        with pytest.raises(SystemExit):
            cli.main(["--profile", "smoke", "--device", "cpu", "--workers", "-1"])
    finally:
        precision.set_compile(False)

"""Supervised training: schedule, batches, losses, shared U-Net pass, exact resume, load_or_train."""

from __future__ import annotations

import math
import zlib
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mars_core.audio import FrontEnd
from mars_core.checkpoints import load_checkpoint, save_checkpoint
from mars_core.config import SupervisedConfig, field_docs, get_profile
from mars_core.data.mixing import MixtureDataset
from mars_core.queries import item_queries
from mars_core.runs import config_hash
from mars_core.separator import multi_query_logits, new_separator
from mars_core.supervised import store, trainer
from mars_core.supervised import (check_config, load_or_train, load_separator, lr_factor, make_optimizer, run_config,
                                  save_separator, supervised_loss, train_supervised, training_batch)
from tests.test_queries import fake_bank

SMOKE = get_profile("smoke")
TINY = SupervisedConfig(steps=6, batch_mixtures=2, warmup_steps=2, eval_every=3, val_mixtures=2, ckpt_every=2)


@pytest.fixture(scope="module")
def bank(fake_build):
    return fake_bank(fake_build, SMOKE.separator.query_dim)


def _train_ds(fake_build, cfg=TINY):
    return MixtureDataset("train", SMOKE, n_items=cfg.steps * cfg.batch_mixtures, build_dir=fake_build,
                          load_images=False)


# --------------------------------------------------------------------------- config and schedule
def test_every_supervised_field_has_a_docstring():
    docs = field_docs(SupervisedConfig)
    assert all(docs.get(f) for f in SupervisedConfig.__dataclass_fields__)
    full = get_profile("full").supervised
    assert (full.lr, full.warmup_steps, full.steps, full.final_lr_ratio, full.grad_clip) == (1e-3, 5000, 100_000, 0.1, 1.0)
    assert 2 * full.batch_mixtures == 128  # OmniSep's batch of 128 items


def test_lr_schedule_by_hand():
    cfg = SupervisedConfig(steps=14, warmup_steps=4, final_lr_ratio=0.1)
    assert [lr_factor(s, cfg) for s in (0, 1, 3)] == [0.25, 0.5, 1.0]
    assert lr_factor(4, cfg) == 1.0
    assert math.isclose(lr_factor(9, cfg), 1 - 0.9 * 5 / 10)
    assert math.isclose(lr_factor(14, cfg), 0.1) and math.isclose(lr_factor(30, cfg), 0.1)
    model = torch.nn.Linear(2, 1)
    opt, sched = make_optimizer(model, replace(cfg, lr=0.01))
    seen = []
    for _ in range(6):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    np.testing.assert_allclose(seen, [0.0025, 0.005, 0.0075, 0.01, 0.01, 0.0091])
    assert isinstance(make_optimizer(model, replace(cfg, optimizer="adamw"))[0], torch.optim.AdamW)


@pytest.mark.parametrize("field, value, match", [
    ("optimizer", "sgd", "optimizer"), ("loss", "mse", "loss"), ("query", "video", "query"),
    ("steps", 0, "steps"), ("final_lr_ratio", 0.0, "final_lr_ratio"),
])
def test_bad_config_is_refused(field, value, match):
    with pytest.raises(ValueError, match=match):
        check_config(replace(TINY, **{field: value}))


def test_bank_dimension_must_match_separator(fake_build):
    with pytest.raises(ValueError, match="query_dim=128"):
        train_supervised(SMOKE, fake_bank(fake_build, 64), TINY, build_dir=fake_build, progress=False)


# --------------------------------------------------------------------------- batches and losses
def test_training_batch_targets_and_queries(fake_build, bank):
    ds, fe = _train_ds(fake_build), FrontEnd(SMOKE.audio)
    step = 2
    batch = training_batch(ds, bank, fe, step, TINY)
    b, k = TINY.batch_mixtures, SMOKE.data.n_sources
    f, t = SMOKE.audio.n_freq_warped, SMOKE.audio.n_frames
    assert batch["features"].shape == (b, 1, f, t) and batch["targets"].shape == (b, k, f, t)
    assert batch["queries"].shape == (b, k, 128)
    items = [ds[step * b + j] for j in range(b)]  # the step's mixtures: a pure function of the step
    oracle = torch.stack([fe.oracle_masks(it["sources"], it["mixture"], "ibm") for it in items]).float()
    torch.testing.assert_close(batch["targets"], oracle)
    # Query-Mixup weights from item_rng(seed, "query-mixup", step), re-derived here
    rng = np.random.default_rng([TINY.seed, zlib.crc32(b"query-mixup"), step])
    w = rng.uniform(0, 1, size=(b * k, 3))
    w /= w.sum(1, keepdims=True)
    refs = [r for it in items for r in item_queries(ds, it)]
    for i, ref in enumerate(refs):
        e = [bank.get("image", [ref.image_id])[0], bank.get("text", [ref.text])[0], bank.get("audio", list(ref.audio_ids))[0]]
        expected = sum(wi * ei for wi, ei in zip(w[i], e))
        torch.testing.assert_close(batch["queries"].reshape(b * k, -1)[i], expected.float())
    again = training_batch(ds, bank, fe, step, TINY)
    assert all(torch.equal(batch[key], again[key]) for key in batch)
    assert not torch.equal(batch["features"], training_batch(ds, bank, fe, step + 1, TINY)["features"])


def test_losses_by_hand(fake_build, bank):
    ds, fe = _train_ds(fake_build), FrontEnd(SMOKE.audio)
    model = new_separator(SMOKE, 1).eval()
    batch = training_batch(ds, bank, fe, 0, TINY)
    with torch.no_grad():
        z = multi_query_logits(model, batch["features"], batch["queries"]).double()
        p, m = torch.sigmoid(z), batch["targets"].double()
        w = torch.log(1 + batch["mix_mag"].double()).clamp(1e-3, 10).expand_as(p)
        bce = (-w * (m * torch.log(p) + (1 - m) * torch.log(1 - p))).mean()
        assert math.isclose(supervised_loss(model, batch, "bce").item(), bce.item(), rel_tol=1e-5)
        batch_l1 = training_batch(ds, bank, fe, 0, replace(TINY, loss="l1"))
        irm = torch.stack([fe.oracle_masks(ds[j]["sources"], ds[j]["mixture"], "irm") for j in range(2)]).double()
        l1 = (w * (p - irm).abs()).mean()
        assert math.isclose(supervised_loss(model, batch_l1, "l1").item(), l1.item(), rel_tol=1e-5)


# --------------------------------------------------------------------------- the loop
def _weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _assert_same(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.fixture
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: bit-exact reductions in both runs
    yield
    torch.set_num_threads(n)


def test_resumed_run_reaches_the_same_weights(fake_build, bank, tmp_path, monkeypatch, one_thread):
    straight, h_straight = train_supervised(SMOKE, bank, TINY, run_dir=tmp_path / "a", build_dir=fake_build,
                                            progress=False)
    final_straight = load_checkpoint(tmp_path / "a" / "last.pt")
    assert final_straight["step"] == 6 and h_straight["steps_done"] == 6
    assert h_straight["val_step"] == [3, 6] and len(h_straight["loss"]) == 6

    # run 2: killed in the middle of step 3 (last.pt holds step 2), then started again
    real = trainer.training_batch
    state = {"killed": False}

    def dying(ds, bank_, fe, step, cfg, device="cpu"):
        if step == 3 and not state["killed"]:
            state["killed"] = True
            raise KeyboardInterrupt("killed")
        return real(ds, bank_, fe, step, cfg, device)

    monkeypatch.setattr(trainer, "training_batch", dying)
    with pytest.raises(KeyboardInterrupt):
        train_supervised(SMOKE, bank, TINY, run_dir=tmp_path / "b", build_dir=fake_build, progress=False)
    assert load_checkpoint(tmp_path / "b" / "last.pt")["step"] == 2
    torch.manual_seed(12345)  # a resumed process starts with other global RNG state
    resumed, h_resumed = train_supervised(SMOKE, bank, TINY, run_dir=tmp_path / "b", build_dir=fake_build,
                                          progress=False)
    _assert_same(_weights(straight), _weights(resumed))  # best-validation weights
    _assert_same(final_straight["model"], load_checkpoint(tmp_path / "b" / "last.pt")["model"])  # last weights
    assert h_resumed["loss"] == h_straight["loss"] and h_resumed["val_sdr"] == h_straight["val_sdr"]
    assert h_resumed["best_step"] == h_straight["best_step"]

    # run 3: stop_after (a clean stop at a checkpoint), then resume
    train_supervised(SMOKE, bank, TINY, run_dir=tmp_path / "c", build_dir=fake_build, stop_after=4, progress=False)
    third, _ = train_supervised(SMOKE, bank, TINY, run_dir=tmp_path / "c", build_dir=fake_build, progress=False)
    _assert_same(_weights(straight), _weights(third))

    with pytest.raises(ValueError, match="another configuration"):
        train_supervised(SMOKE, bank, replace(TINY, lr=5e-4), run_dir=tmp_path / "a", build_dir=fake_build,
                         progress=False)


def test_best_checkpoint_is_the_best_validation_step(fake_build, bank, tmp_path, monkeypatch):
    scores = iter([1.0, 5.0, 2.0])
    snapshots = {}

    def fake_validate(model, val, fe, batch_size=16):
        s = next(scores)
        snapshots[s] = _weights(model)
        return {"sdr": s, "si_sdri": 0.0}

    monkeypatch.setattr(trainer, "validate", fake_validate)
    cfg = replace(TINY, steps=6, eval_every=2)
    model, history = train_supervised(SMOKE, bank, cfg, build_dir=fake_build, progress=False)
    assert history["val_step"] == [2, 4, 6] and history["best_step"] == 4 and history["best_sdr"] == 5.0
    _assert_same(_weights(model), snapshots[5.0])


# --------------------------------------------------------------------------- saving and load_or_train
def test_save_and_load_separator(tmp_path, bank):
    model = new_separator(SMOKE, 3)
    run_cfg = run_config(SMOKE, TINY, bank)
    save_separator(tmp_path / "s.pt", model, run_cfg=run_cfg, history={"loss": [1.0]})
    loaded, blob = load_separator(tmp_path / "s.pt")
    _assert_same(_weights(model), _weights(loaded))
    assert blob["key"] == config_hash(run_cfg) and blob["history"] == {"loss": [1.0]} and not loaded.training
    save_checkpoint(tmp_path / "other.pt", kind="minibind")
    with pytest.raises(ValueError, match="not a separator checkpoint"):
        load_separator(tmp_path / "other.pt")


def test_config_hash_changes_with_config_and_queries(fake_build, bank):
    base = config_hash(run_config(SMOKE, TINY, bank))
    assert config_hash(run_config(SMOKE, TINY, bank)) == base
    assert config_hash(run_config(SMOKE, replace(TINY, lr=2e-3), bank)) != base
    assert config_hash(run_config(SMOKE, TINY, fake_bank(fake_build, 128, seed=1))) != base


def test_load_or_train_trains_once(fake_build, bank, tmp_path, monkeypatch):
    monkeypatch.setenv("MARS_CHECKPOINTS", str(tmp_path / "none"))
    real = store.train_supervised
    calls = []

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(store, "train_supervised", counted)
    cfg = replace(TINY, steps=2, eval_every=2)
    kw = dict(bank=bank, run_root=tmp_path, build_dir=fake_build, progress=False)
    first, h1 = load_or_train(SMOKE, cfg, **kw)
    second, h2 = load_or_train(SMOKE, cfg, **kw)
    assert len(calls) == 1 and h2["source"] == h1["source"]
    assert h1["source"].endswith(f"smoke-{config_hash(run_config(SMOKE, cfg, bank))}/final.pt")
    _assert_same(_weights(first), _weights(second))
    load_or_train(SMOKE, replace(cfg, lr=2e-3), **kw)
    assert len(calls) == 2


# --------------------------------------------------------------------------- the cost benchmark
def _bench():
    from tests.repo_files import load_script

    return load_script("benchmarks/bench_train_step.py")


def test_bench_measures_a_step_and_reports_ratios():
    bench = _bench()
    row = bench.measure("supervised", "smoke", 1, "cpu", warmup=0, repeats=1)
    assert row["items"] == 2 and row["params_M"] == pytest.approx(0.48, abs=0.01)
    assert row["s_per_step"] > 0 and row["steps_per_s"] == pytest.approx(1 / row["s_per_step"])
    assert row["peak_MB"] > 50 and row["step_MB"] >= 0
    rows = [dict(row, step="supervised", s_per_step=2.0), dict(row, step="rl", s_per_step=5.0),
            dict(row, step="rl", profile="cpu", s_per_step=1.0)]
    ratios = bench.table(rows)["x_supervised"].tolist()
    assert ratios[:2] == [1.0, 2.5] and math.isnan(ratios[2])  # no supervised row for that profile

"""Supervised training stays finite or stops clearly: config values are checked by name, a non-finite loss
or gradient norm skips the update (weights and optimiser bit-equal) and is counted, and too many skips raise."""

from __future__ import annotations

import math
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch

from mars_core.config import SupervisedConfig, get_profile
from mars_core.runs import config_hash
from mars_core.supervised import check_config, cli, run_config, store, train_supervised, trainer
from mars_core.supervised.trainer import make_optimizer, train_step
from tests.test_queries import fake_bank

SMOKE = get_profile("smoke")
TINY = SupervisedConfig(steps=6, batch_mixtures=2, warmup_steps=2, eval_every=3, val_mixtures=2, ckpt_every=2)
NAN, INF = float("nan"), float("inf")


# --------------------------------------------------------------------------- config
@pytest.mark.parametrize("field, value", [
    ("lr", NAN), ("lr", INF), ("lr", 0.0), ("lr", -1e-3), ("lr", "1e-3"),
    ("grad_clip", NAN), ("grad_clip", 0.0), ("final_lr_ratio", NAN), ("final_lr_ratio", 0.0),
    ("final_lr_ratio", 1.5), ("weight_decay", -0.1), ("weight_decay", INF), ("query_init_std", NAN),
    ("query_init_std", -1.0), ("steps", 0), ("steps", 2.5), ("steps", True), ("batch_mixtures", 0),
    ("eval_every", 0), ("ckpt_every", -1), ("val_mixtures", 0), ("warmup_steps", -1), ("warmup_steps", 1.0),
    ("max_skipped_updates", -1), ("seed", 0.5), ("optimizer", "sgd"), ("loss", "mse"), ("query", "video"),
])
def test_bad_value_is_refused_naming_its_field(field, value):
    with pytest.raises(ValueError, match=rf"^{field} must"):
        check_config(replace(TINY, **{field: value}))


def test_profile_configs_and_edge_values_pass():
    for name in ("smoke", "cpu", "full"):
        check_config(get_profile(name).supervised)
    check_config(replace(TINY, final_lr_ratio=1.0, warmup_steps=0, weight_decay=0.0, max_skipped_updates=0, seed=-3))


def test_cli_refuses_a_bad_value_before_loading_anything(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--profile", "smoke", "--steps", "0", "--no-eval"])
    assert exc.value.code == 2 and "steps must be an integer >= 1, got 0" in capsys.readouterr().err


def test_max_skipped_updates_leaves_the_run_key_unchanged():
    bank = type("Bank", (), {"key": {"encoder": "x"}})()
    run = run_config(SMOKE, TINY, bank)
    assert "max_skipped_updates" not in run["supervised"]
    assert config_hash(run_config(SMOKE, replace(TINY, max_skipped_updates=0), bank)) == config_hash(run)
    assert config_hash(run_config(SMOKE, replace(TINY, lr=2e-3), bank)) != config_hash(run)


def test_shipped_separator_config_still_matches_the_profile():
    path = Path(__file__).resolve().parents[1] / "checkpoints" / "separator_cpu.pt"
    if not path.is_file():
        pytest.skip(f"{path} not shipped in this checkout")
    _, ckpt = store.load_separator(path)
    # oracle: the training config recorded in the shipped file; fields that change no result (max_skipped_updates,
    # num_workers) and later fields at their defaults (trainable "all") are not recorded
    expected = {k: v for k, v in asdict(get_profile("cpu").supervised).items()
                if k not in ("max_skipped_updates", "num_workers") and not (k == "trainable" and v == "all")}
    assert ckpt["config"]["supervised"] == expected


# --------------------------------------------------------------------------- the step
def _setup(cfg: SupervisedConfig):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    opt, sched = make_optimizer(model, cfg)
    batch = {"x": torch.randn(4, 3)}
    history = {k: [] for k in trainer.HISTORY_KEYS}
    return model, opt, sched, batch, history


def _snapshot(model, opt):
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    state = {i: {k: (v.clone() if torch.is_tensor(v) else v) for k, v in s.items()}
             for i, s in enumerate(opt.state.values())}
    return weights, state


def _assert_bit_equal(a, b):
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], dict):
            _assert_bit_equal(a[k], b[k])
        else:
            assert torch.equal(torch.as_tensor(a[k]), torch.as_tensor(b[k])), k


@pytest.mark.parametrize("poison", ["nan loss", "inf loss", "inf gradient"])
def test_non_finite_step_leaves_weights_and_optimiser_bit_equal(monkeypatch, poison):
    cfg = replace(TINY, lr=0.1, warmup_steps=0)
    model, opt, sched, batch, history = _setup(cfg)
    bad, hooks = {"on": False}, []

    def loss_fn(m, b, kind):
        loss = (m(b["x"]) ** 2).mean()
        if bad["on"] and poison == "inf gradient":
            loss = loss + 0 * m.weight.sum()
            hooks.append(m.weight.register_hook(lambda g: g * INF))  # finite loss, infinite gradient
            return loss
        return loss * (NAN if poison == "nan loss" else INF) if bad["on"] else loss

    monkeypatch.setattr(trainer, "supervised_loss", loss_fn)
    train_step(model, opt, sched, batch, cfg, history, 0)  # a clean step: Adam has moments now
    before = _snapshot(model, opt)
    bad["on"] = True
    train_step(model, opt, sched, batch, cfg, history, 1)
    _assert_bit_equal(_snapshot(model, opt)[0], before[0])
    _assert_bit_equal(_snapshot(model, opt)[1], before[1])
    assert history["skipped_updates"] == [0, 1] and history["step"] == [0, 1]
    assert not (math.isfinite(history["loss"][1]) and math.isfinite(history["grad_norm"][1]))
    bad["on"] = False  # non-vacuous
    for h in hooks:
        h.remove()
    # a clean step does move the weights
    train_step(model, opt, sched, batch, cfg, history, 2)
    assert not torch.equal(model.weight, before[0]["weight"])
    assert history["skipped_updates"] == [0, 1, 0]


def test_more_skips_than_the_limit_raise_with_the_step(monkeypatch):
    cfg = replace(TINY, max_skipped_updates=2)
    model, opt, sched, batch, history = _setup(cfg)
    monkeypatch.setattr(trainer, "supervised_loss", lambda m, b, kind: m(b["x"]).sum() * NAN)
    train_step(model, opt, sched, batch, cfg, history, 0)
    train_step(model, opt, sched, batch, cfg, history, 1)  # 2 skips: at the limit, not past it
    with pytest.raises(FloatingPointError, match=r"supervised step 2: 3 steps skipped .* max_skipped_updates=2"):
        train_step(model, opt, sched, batch, cfg, history, 2)
    model, opt, sched, batch, history = _setup(cfg)
    with pytest.raises(FloatingPointError, match="supervised step 0: 1 steps skipped"):
        train_step(model, opt, sched, batch, replace(cfg, max_skipped_updates=0), history, 0)


def test_training_loop_counts_a_poisoned_step_and_stays_finite(fake_build, monkeypatch):
    bank = fake_bank(fake_build, SMOKE.separator.query_dim)
    real = trainer.supervised_loss
    calls = []

    def poisoned(model, batch, kind):  # the second step's loss is NaN
        calls.append(1)
        loss = real(model, batch, kind)
        return loss * NAN if len(calls) == 2 else loss

    monkeypatch.setattr(trainer, "supervised_loss", poisoned)
    model, history = train_supervised(SMOKE, bank, TINY, build_dir=fake_build, device="cpu", progress=False)
    assert history["skipped_updates"] == [0, 1, 0, 0, 0, 0]
    assert all(torch.isfinite(v).all() for v in model.state_dict().values())

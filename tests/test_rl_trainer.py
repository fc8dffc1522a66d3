"""RL trainer (train_rl, load_or_train_rl): history, exact resume, best-by-val-SDR, the paper preset, load_or_train_rl."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import replace

import pytest
import torch

from mars_core.checkpoints import load_checkpoint
from mars_core.config import RLConfig, get_profile, rl_preset
from mars_core.rl import trainer as tr
from mars_core.rl import update
from mars_core.rl.bookkeeping import STEP_KEYS, VAL_KEYS
from mars_core.rl.config import check_config
from mars_core.rl.trainer import train_rl
from mars_core.supervised import load_separator
from tests.test_queries import fake_bank
from tests.test_rl_rollout import smoke_stack, trained_looking_separator
from tests.test_supervised import _assert_same, _weights

SMOKE = get_profile("smoke")
TINY = RLConfig(steps=4, batch_mixtures=2, group_size=2, ppo_epochs=2, minibatches=2, lambda_sig=0.5, lambda_neg=0.5,
                eval_every=2, val_mixtures=2, ckpt_every=1)
TIME_KEYS = ("t_policy", "t_rollout", "t_reward", "t_update")


@pytest.fixture(scope="module")
def env(fake_build):
    stack, rbank = smoke_stack(str(fake_build))
    return {"stack": stack, "reward_bank": rbank, "bank": fake_bank(fake_build, SMOKE.separator.query_dim),
            "build_dir": fake_build}


def _train(env, cfg=TINY, separator=None, **kw):
    kw = dict(dict(stack=env["stack"], bank=env["bank"], reward_bank=env["reward_bank"], build_dir=env["build_dir"],
                   judge=None, progress=False), **kw)
    return train_rl(SMOKE, cfg, separator=separator or trained_looking_separator(), **kw)


def _strip_times(h: dict) -> dict:
    """History without wall-clock entries, and without the judge score (NaN here: NaN != NaN)."""
    return {k: v for k, v in h.items() if k not in TIME_KEYS + ("wall_s", "val_semantic")}


@pytest.fixture
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # bit-exact reductions in both runs
    yield
    torch.set_num_threads(n)


# --------------------------------------------------------------------------- a run refuses bad settings at the start
def test_group_of_one_with_group_advantages_is_refused_with_the_reason(env):
    with pytest.raises(ValueError, match="every advantage would be 0"):
        check_config(replace(TINY, group_size=1))
    with pytest.raises(ValueError, match="advantage='ema'"):
        _train(env, replace(TINY, group_size=1))


def test_bank_dimension_must_match_separator(env, fake_build):
    with pytest.raises(ValueError, match="query_dim=128"):
        _train(env, bank=fake_bank(fake_build, 64))


# --------------------------------------------------------------------------- the loop
def test_resumed_run_reaches_the_same_weights_and_history(env, tmp_path, monkeypatch, one_thread):
    start = trained_looking_separator()
    before = _weights(start)
    straight, h1 = _train(env, separator=start, run_dir=tmp_path / "a")
    _assert_same(before, _weights(start))  # the caller's separator is not trained in place
    assert set(STEP_KEYS + VAL_KEYS) <= set(h1) and all(len(h1[k]) == 4 for k in STEP_KEYS)
    assert h1["val_step"] == [0, 2, 4] and h1["steps_done"] == 4 and h1["preset"] == "plus"
    assert h1["step"] == [0, 1, 2, 3] and all(math.isnan(v) for v in h1["val_semantic"])  # no judge
    assert all(g > 0 for g in h1["grad_norm"]) and all(0 <= c <= 1 for c in h1["clipfrac"])
    assert all(v >= 0 for k in TIME_KEYS for v in h1[k])
    assert any(r != 0 for r in h1["reward_signal"]) and any(r != 0 for r in h1["reward_contamination"])
    assert not _weights(straight).keys() - before.keys()
    assert any(not torch.equal(before[k], v) for k, v in _weights(straight).items())  # it trained
    last_a = load_checkpoint(tmp_path / "a" / "last.pt")

    # run 2: killed while building step 2's batch (last.pt holds step 2), then started again
    real = tr.rl_batch
    state = {"killed": False}

    def dying(ds, bank, rbank, stack, fe, step, *args, **kw):
        if step == 2 and not state["killed"]:
            state["killed"] = True
            raise KeyboardInterrupt("killed")
        return real(ds, bank, rbank, stack, fe, step, *args, **kw)

    monkeypatch.setattr(tr, "rl_batch", dying)
    with pytest.raises(KeyboardInterrupt):
        _train(env, separator=start, run_dir=tmp_path / "b")
    assert load_checkpoint(tmp_path / "b" / "last.pt")["step"] == 2
    torch.manual_seed(999)  # another process: other global RNG state
    resumed, h2 = _train(env, separator=start, run_dir=tmp_path / "b")
    _assert_same(_weights(straight), _weights(resumed))
    last_b = load_checkpoint(tmp_path / "b" / "last.pt")
    _assert_same(last_a["model"], last_b["model"])
    _assert_same(last_a["optimizer"]["state"][0], last_b["optimizer"]["state"][0])
    assert _strip_times(h1) == _strip_times(h2)

    # run 3: a clean stop after 1 step, then resume
    _train(env, separator=start, run_dir=tmp_path / "c", stop_after=1)
    third, h3 = _train(env, separator=start, run_dir=tmp_path / "c")
    _assert_same(_weights(straight), _weights(third))
    with pytest.raises(ValueError, match="another configuration"):
        _train(env, replace(TINY, lr=1e-3), separator=start, run_dir=tmp_path / "a")


def _scripted_validation(scores, snapshots):
    """A validate_rl that returns the next of ``scores`` and keeps the weights it saw under that score."""
    scores = iter(scores)

    def fake_validate(model, rv, fe):
        s = next(scores)
        snapshots[s] = _weights(model)
        return {"sdr": s, "si_sdri": 0.0, "semantic": float("nan")}

    return fake_validate


def test_best_weights_are_the_best_validation_step(env, monkeypatch):
    snapshots = {}  # step 0 (the supervised start) is logged but never selected
    monkeypatch.setattr(tr, "validate_rl", _scripted_validation([50.0, 1.0, 5.0, 2.0], snapshots))
    model, h = _train(env, replace(TINY, steps=6, eval_every=2, lambda_sig=0.0))
    assert h["val_step"] == [0, 2, 4, 6] and h["val_sdr"] == [50.0, 1.0, 5.0, 2.0]
    assert h["best_step"] == 4 and h["best_sdr"] == 5.0 and h["selected_step"] == 4
    _assert_same(_weights(model), snapshots[5.0])
    # select='last': the same validations, the last step's weights (validated at step 6) whatever their score
    snapshots = {}
    monkeypatch.setattr(tr, "validate_rl", _scripted_validation([50.0, 1.0, 5.0, 2.0], snapshots))
    last, h = _train(env, replace(TINY, steps=6, eval_every=2, lambda_sig=0.0, select="last"))
    assert h["best_step"] == 4 and h["selected_step"] == 6
    _assert_same(_weights(last), snapshots[2.0])


def test_paper_preset_runs_with_one_sample_and_the_ema_baseline(env, tmp_path):
    cfg = replace(rl_preset(SMOKE, "paper"), steps=3, batch_mixtures=2, eval_every=3, val_mixtures=2, ckpt_every=3)
    model, h = _train(env, cfg, run_dir=tmp_path)
    assert h["preset"] == "paper" and h["reward_group_std"] == [0.0] * 3  # groups of one
    # one epoch of one minibatch: old policy = current policy at the gradient, ratio exactly 1
    assert max(h["approx_kl"]) < 1e-7 and h["clipfrac"] == [0.0] * 3
    assert h["frac_zero_std"] == [0.0] * 3 and all(abs(s - 1.0) < 1e-3 for s in h["adv_std"])  # batch-normalised
    # the EMA baseline in last.pt, recomputed from the logged batch means (decay 0.92)
    b = h["reward_mean"][0]
    for r in h["reward_mean"][1:]:
        b = 0.92 * b + 0.08 * r
    assert load_checkpoint(tmp_path / "last.pt")["ema"]["value"] == pytest.approx(b, rel=1e-5)


def test_group_advantages_have_zero_mean_per_step(env):
    _, h = _train(env, replace(TINY, steps=2, eval_every=2, lambda_sig=0.0, lambda_neg=0.0))
    assert all(abs(m) < 1e-5 for m in h["adv_mean"])  # GRPO: zero mean within every group
    assert h["reward_contamination"] == [0.0, 0.0] and h["reward_signal"] == [0.0, 0.0]


def test_no_advantage_ablation_trains_only_the_regularisers(env):
    """advantage='none': zero advantages, so with no entropy bonus (and no weight decay or KL) nothing moves;
    with the entropy bonus alone the proposals move towards 1/2 (the Beta entropy is largest there)."""
    start = trained_looking_separator()
    cfg = replace(TINY, steps=2, eval_every=2, advantage="none", ent_coef=0.0, kl_coef=0.0, weight_decay=0.0)
    same, h = _train(env, cfg, separator=start)
    assert h["adv_mean"] == [0.0, 0.0] and h["adv_std"] == [0.0, 0.0] and h["frac_zero_std"] == [1.0, 1.0]
    assert all(torch.equal(a, b) for a, b in zip(start.state_dict().values(), same.state_dict().values()))
    moved, _ = _train(env, replace(cfg, ent_coef=1.0, trainable="head"), separator=start)
    g = torch.Generator().manual_seed(0)
    x, q = torch.randn(3, 1, *SMOKE_FT, generator=g), torch.randn(3, SMOKE.separator.query_dim, generator=g)
    with torch.no_grad():
        spread = [(m.eval()(x, q) - 0.5).abs().mean().item() for m in (start, moved)]
    assert spread[1] < spread[0]


# --------------------------------------------------------------------------- load_or_train_rl
def test_load_or_train_rl_trains_once_per_config(env, tmp_path, monkeypatch):
    """The caching logic, with the profile's encoder, bank, supervised model and stack replaced by small ones."""
    start = trained_looking_separator()
    monkeypatch.setattr(tr, "load_query_encoder", lambda prof: None)
    monkeypatch.setattr(tr, "load_or_build_query_bank", lambda enc, prof, progress=True, rebuild=False: env["bank"])
    monkeypatch.setattr(tr, "load_or_train", lambda prof, bank, progress=True: (start, {"source": "sup.pt"}))
    stacks = {True: env["stack"], False: dataclasses.replace(env["stack"], aligned=False, key="base")}
    monkeypatch.setattr(tr, "load_reward_stack", lambda prof, aligned=True, progress=True: stacks[aligned])
    calls = []
    real = tr.train_rl

    def counted(*args, **kw):
        calls.append(kw["run_dir"])
        return real(*args, **dict(kw, reward_bank=env["reward_bank"], build_dir=env["build_dir"], judge=None))

    monkeypatch.setattr(tr, "train_rl", counted)
    cfg = replace(TINY, steps=2, eval_every=2, ckpt_every=2)
    first, h1 = tr.load_or_train_rl(SMOKE, "plus", run_root=tmp_path, progress=False, config=cfg)
    second, h2 = tr.load_or_train_rl(SMOKE, "plus", run_root=tmp_path, progress=False, config=cfg)
    assert len(calls) == 1 and h1["source"] == h2["source"] and h2["supervised_source"] == "sup.pt"
    assert calls[0].name.startswith("smoke-plus-") and h1["source"] == str(calls[0] / "final.pt")
    _assert_same(_weights(first), _weights(second))
    model, blob = load_separator(h1["source"])
    assert blob["config"]["rl"]["steps"] == 2 and blob["config"]["aligned"] is True
    tr.load_or_train_rl(SMOKE, "plus", aligned=False, run_root=tmp_path, progress=False, config=cfg)
    assert len(calls) == 2 and calls[1] != calls[0]  # another reward stack: another run


# --------------------------------------------------------------------------- trainable="head"
SMOKE_FT = (SMOKE.audio.n_freq_warped, SMOKE.audio.n_frames)


def test_head_training_leaves_the_trunk_bit_identical_and_moves_the_head(env):
    start = trained_looking_separator()
    model, h = _train(env, replace(TINY, steps=2, eval_every=2, trainable="head"), separator=start)
    head = set(start.head_parameter_names())
    before, after = dict(start.named_parameters()), dict(model.named_parameters())
    assert all(torch.equal(before[n], after[n]) for n in before if n not in head)
    assert any(not torch.equal(before[n], after[n]) for n in head)
    # its first update sees the same policy as training every weight: same loss and ratio 1
    _, h_all = _train(env, replace(TINY, steps=1, eval_every=1), separator=start)
    _, h_head = _train(env, replace(TINY, steps=1, eval_every=1, trainable="head"), separator=start)
    assert h_head["reward_mean"] == h_all["reward_mean"]
    with pytest.raises(ValueError, match="trainable must be"):
        check_config(replace(TINY, trainable="decoder"))


# --------------------------------------------------------------------------- non-finite values
def _poison_rewards(monkeypatch, at_step: int) -> None:
    """Make one reward NaN in the rollout of ``at_step`` (rollouts run once per step, from step 0)."""
    real, calls = tr.rollout, {"n": 0}

    def poisoned(*args, **kw):
        ro = real(*args, **kw)
        if calls["n"] == at_step:
            ro.rewards[0, 0] = float("nan")
        calls["n"] += 1
        return ro

    monkeypatch.setattr(tr, "rollout", poisoned)


def test_nan_reward_skips_the_step_with_the_weights_unchanged(env, tmp_path, monkeypatch, one_thread):
    start = trained_looking_separator()
    _train(env, separator=start, run_dir=tmp_path / "a", stop_after=1)
    after_step0 = load_checkpoint(tmp_path / "a" / "last.pt")
    _poison_rewards(monkeypatch, at_step=1)
    _, h = _train(env, separator=start, run_dir=tmp_path / "b", stop_after=2)
    after_step1 = load_checkpoint(tmp_path / "b" / "last.pt")
    n_updates = TINY.ppo_epochs * TINY.minibatches
    assert h["skipped_updates"] == [0.0, float(n_updates)] and after_step1["step"] == 2
    assert math.isnan(h["reward_mean"][1]) and math.isnan(h["loss"][1]) and math.isfinite(h["loss"][0])
    _assert_same(after_step0["model"], after_step1["model"])  # the skipped step changed no weight
    _assert_same(after_step0["optimizer"]["state"][0], after_step1["optimizer"]["state"][0])  # nor Adam's state
    # more skipped updates than allowed: a clear error, and last.pt keeps the last good step
    _poison_rewards(monkeypatch, at_step=1)
    cfg = replace(TINY, max_skipped_updates=n_updates - 1)
    with pytest.raises(FloatingPointError, match=rf"max_skipped_updates={n_updates - 1}.*1 of \d+ rewards not finite"):
        _train(env, cfg, separator=start, run_dir=tmp_path / "c", stop_after=2)
    assert load_checkpoint(tmp_path / "c" / "last.pt")["step"] == 1


def test_nan_loss_skips_that_update_only(env, monkeypatch):
    real, calls = update.ppo_loss, {"n": 0}

    def nan_first(*args, **kw):
        loss, stats = real(*args, **kw)
        calls["n"] += 1
        if calls["n"] == 1:
            return loss * float("nan"), dict(stats, loss=float("nan"))
        return loss, stats

    monkeypatch.setattr(update, "ppo_loss", nan_first)
    model, h = _train(env, replace(TINY, steps=1, eval_every=1))
    assert h["skipped_updates"] == [1.0] and math.isfinite(h["loss"][0])  # the mean of the 3 updates that ran
    assert all(torch.isfinite(v).all() for v in model.state_dict().values() if v.is_floating_point())
    with pytest.raises(FloatingPointError, match="loss nan"):
        calls["n"] = 0
        _train(env, replace(TINY, steps=1, eval_every=1, max_skipped_updates=0))


# --------------------------------------------------------------------------- estimator options (RLConfig)
@pytest.mark.parametrize("options", [dict(reward_segments=4), dict(reward_segments=4, advantage="loo"),
                                     dict(estimator="pathwise"), dict(advantage="loo")])
def test_estimator_options_train_end_to_end(env, options):
    start = trained_looking_separator()
    before = _weights(start)
    model, h = _train(env, replace(TINY, steps=2, eval_every=2, **options), separator=start)
    assert all(math.isfinite(v) for k in ("loss", "pg_loss", "grad_norm", "reward_mean", "adv_std") for v in h[k])
    assert h["skipped_updates"] == [0.0, 0.0]
    assert any(not torch.equal(a, b) for a, b in zip(before.values(), _weights(model).values()))  # it learned something


def test_residual_term_is_logged_only_by_runs_that_have_it(env, tmp_path):
    """reward_residual (OPTIONAL_STEP_KEYS) is in the history and metrics.csv of a run with lambda_res > 0, finite and
    not 0, and in neither for a run without it: runs cached or resumed from before the term keep their columns."""
    import pandas as pd

    _, h = _train(env, replace(TINY, steps=2, eval_every=2, lambda_res=1.0, lambda_sig=0.0), run_dir=tmp_path / "res")
    assert len(h["reward_residual"]) == 2 and all(math.isfinite(v) and v != 0 for v in h["reward_residual"])
    assert "reward_residual" in pd.read_csv(tmp_path / "res" / "metrics.csv").columns
    _, h0 = _train(env, replace(TINY, steps=1, eval_every=1), run_dir=tmp_path / "plain")
    assert "reward_residual" not in h0 and "reward_residual" not in pd.read_csv(tmp_path / "plain" / "metrics.csv")


def test_dense_preset_trains_without_calling_the_reward_encoder(env, monkeypatch):
    """The dense preset's reward is the segment SI-SDR alone: the reward encoder's audio tower is never run (an
    encoder call raises here), the reported semantic/contamination rewards are 0 and the head still moves; with the
    query augmentation and same-family pairs on (TrainingData) as well."""
    dense = rl_preset("smoke", "dense")
    cfg = replace(TINY, steps=2, eval_every=2, reward_segments=dense.reward_segments, segment_terms=dense.segment_terms,
                  lambda_sem=dense.lambda_sem, lambda_sig=dense.lambda_sig, lambda_neg=dense.lambda_neg,
                  ent_coef=dense.ent_coef, kl_coef=dense.kl_coef,
                  query_noise=1.0, pure_query_prob=0.5, hard_pair_prob=1.0)  # cpu's dense has the supervised recipe's

    def no_call(*a, **k):
        raise AssertionError("the dense reward must not embed waveforms")

    monkeypatch.setattr(env["stack"].encoder, "embed_audio", no_call)
    start = trained_looking_separator()
    before = _weights(start)
    model, h = _train(env, cfg, separator=start)
    assert h["reward_semantic"] == [0.0, 0.0] and h["reward_contamination"] == [0.0, 0.0]
    assert all(math.isfinite(v) and v != 0 for v in h["reward_signal"])
    assert any(not torch.equal(a, b) for a, b in zip(before.values(), _weights(model).values()))


def test_training_data_draws_same_family_pairs_only_when_asked(fake_build):
    """The scripts and the trainer share one dataset factory: random pairs (a MixtureDataset of steps x batch items) at
    hard_pair_prob 0, and at 1 every step's mixtures pair two classes of one family (the catalog's family_of)."""
    from mars_core.data.mixing import MixtureDataset

    plain = tr.training_data(SMOKE, replace(TINY, steps=3), fake_build)
    assert isinstance(plain, MixtureDataset) and len(plain) == 3 * TINY.batch_mixtures
    hard = tr.training_data(SMOKE, replace(TINY, steps=3, hard_pair_prob=1.0), fake_build)
    for step in range(3):
        for ds, item in hard.step_items(step):
            assert len({ds.family_of[c] for c in item["classes"]}) == 1


def test_adaptation_split_draws_other_mixtures_of_that_split(fake_build):
    """train_split='test_timbre': the RL mixtures come from that split, drawn with the seed data.seed + 1, so item i is
    not the benchmark's evaluation item i (same split, seed data.seed; oracle: the datasets built by hand)."""
    from mars_core.data.mixing import MixtureDataset

    cfg = replace(TINY, steps=3, train_split="test_timbre", lambda_sig=0.0)
    ds = tr.training_data(SMOKE, cfg, fake_build)
    assert isinstance(ds, MixtureDataset) and ds.split == "test_timbre" and len(ds) == 3 * TINY.batch_mixtures
    assert ds.seed == SMOKE.data.seed + tr.ADAPTATION_SEED_OFFSET != SMOKE.data.seed
    same = MixtureDataset("test_timbre", SMOKE, n_items=len(ds), build_dir=fake_build, load_images=False,
                          seed=SMOKE.data.seed + 1)
    evals = MixtureDataset("test_timbre", SMOKE, n_items=len(ds), build_dir=fake_build, load_images=False)
    for i in range(len(ds)):
        assert torch.equal(torch.as_tensor(ds[i]["mixture"]), torch.as_tensor(same[i]["mixture"]))
    assert any(not torch.equal(torch.as_tensor(ds[i]["mixture"]), torch.as_tensor(evals[i]["mixture"]))
               for i in range(len(ds)))


# --------------------------------------------------------------------------- --compile
@pytest.mark.parametrize("trainable", ["head", "all"])
def test_compile_routes_the_trunk_passes_through_torch_compile(env, monkeypatch, one_thread, trainable):
    """``--compile``: the rollout's old-policy trunk (and, when every weight trains, the update's trunk) go through
    ``torch.compile``. A stand-in compile that counts calls and computes the module itself proves the path: one
    old-policy pass per step, one model pass per minibatch update (``ppo_epochs x minibatches``) when the whole
    network trains and none when only the head does (it reuses the rollout's trunk), and the same weights as the
    eager run (oracle: the run without ``--compile``)."""
    from mars_core import precision
    from mars_core.rl.rollout import Trunk

    start = trained_looking_separator()
    cfg = replace(TINY, steps=2, eval_every=2, trainable=trainable)
    eager, _ = _train(env, cfg, separator=start)
    calls: dict[str, int] = {}

    def fake_compile(module, **kw):
        assert isinstance(module, Trunk)
        role = "old" if not any(p.requires_grad for p in module.parameters()) else "model"

        def run(x):
            calls[role] = calls.get(role, 0) + 1
            return module(x)
        return run

    monkeypatch.setattr(torch, "compile", fake_compile)
    precision.set_compile(True)
    try:
        compiled, _ = _train(env, cfg, separator=start)
    finally:
        precision.set_compile(False)
    updates = cfg.steps * cfg.ppo_epochs * cfg.minibatches
    assert calls == ({"old": 2} if trainable == "head" else {"old": 2, "model": updates})
    _assert_same(_weights(eager), _weights(compiled))

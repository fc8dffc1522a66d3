"""RL config (mars_core.rl.config): the presets' documented values and every invalid field refused by name."""

from __future__ import annotations

import dataclasses
from dataclasses import replace

import pytest

from mars_core.config import RLConfig, field_docs, get_profile, rl_preset
from mars_core.rl.config import check_config
from tests.test_rl_trainer import TINY


def test_every_rl_field_has_a_docstring_and_the_presets():
    docs = field_docs(RLConfig)
    assert all(docs.get(f.name) for f in dataclasses.fields(RLConfig))
    d = RLConfig()
    assert (d.kappa, d.clip_eps, d.ent_coef, d.kl_coef, d.ppo_epochs, d.ema_decay, d.lr, d.weight_decay) == \
        (9.0, 0.2, 0.1, 0.01, 2, 0.92, 2e-4, 0.01)  # docs/method.md sections 4-6
    for name, g in (("smoke", 4), ("cpu", 4), ("full", 8)):
        plus = rl_preset(name, "plus")
        assert (plus.preset, plus.group_size, plus.ppo_epochs, plus.advantage) == ("plus", g, 2, "group")
        assert (plus.trainable, plus.kappa, plus.kappa_end, plus.ent_coef, plus.lambda_sig, plus.lambda_neg) == \
            ("head", 30.0, 30.0, 0.01, 1.0, 0.5)
        paper = rl_preset(name, "paper")
        assert (paper.group_size, paper.ppo_epochs, paper.minibatches, paper.advantage) == (1, 1, 1, "ema")
        assert (paper.lambda_sig, paper.lambda_neg, paper.ent_coef, paper.trainable, paper.kappa) == \
            (0.0, 0.0, 0.1, "all", 9.0)
        assert paper.steps == plus.steps and paper.batch_mixtures == plus.batch_mixtures
        dense = rl_preset(name, "dense")  # plus rewarded by 64 segment SI-SDRs alone, no entropy/KL terms
        assert (dense.reward_segments, dense.segment_terms, dense.lambda_sem, dense.lambda_sig, dense.lambda_neg,
                dense.ent_coef, dense.kl_coef) == (64, "signal", 0.0, 1.0, 0.0, 0.0, 0.0)
        for c in (plus, paper, dense):  # clean training queries, random pairs (the options measured no better)
            assert (c.query_noise, c.pure_query_prob, c.hard_pair_prob) == (0.0, 0.0, 0.0)
        assert replace(dense, preset="plus", reward_segments=0, segment_terms="all", lambda_sem=1.0, lambda_neg=0.5,
                       ent_coef=0.01, kl_coef=0.01) == plus  # nothing else differs (same budget as plus)
        check_config(plus), check_config(paper), check_config(dense)
    assert 2 * rl_preset("full").batch_mixtures == 128  # the paper's batch of 128 items
    with pytest.raises(ValueError, match="unknown RL preset"):
        rl_preset("smoke", "grpo")


@pytest.mark.parametrize("field, value, match", [
    ("advantage", "gae", "advantage must be"), ("steps", 0, "steps"), ("group_size", 0, "group_size"),
    ("minibatches", 3, "cannot exceed batch_mixtures"), ("kappa", 0.0, "kappa"), ("kappa_schedule", "exp", "kappa_schedule"),
    ("query", "video", "query"), ("ema_decay", 1.0, "ema_decay"), ("lambda_neg", -1.0, "lambda_neg"), ("clip_eps", 0.0, "clip_eps"),
    ("optimizer", "adam", "optimizer must be"), ("advantage", "zero", "'group', 'loo', 'ema' or 'none'"),
    ("estimator", "reinforce", "estimator must be 'score' or 'pathwise'"), ("reward_segments", -1, "reward_segments"),
    ("reward_segments", 2.0, "reward_segments must be an integer"), ("lambda_sem", -0.5, "lambda_sem"),
    ("query_noise", -1.0, "query_noise"), ("pure_query_prob", 1.5, "pure_query_prob must be"),
    ("hard_pair_prob", -0.1, "hard_pair_prob must be"),
])
def test_bad_config_is_refused(field, value, match):
    with pytest.raises(ValueError, match=match):
        check_config(replace(TINY, **{field: value}))


@pytest.mark.parametrize("field, value", [
    ("kappa", float("nan")), ("kappa", 0.0), ("kappa", -1.0), ("kappa", float("inf")), ("kappa_end", float("nan")),
    ("lr", float("nan")), ("lr", float("inf")), ("grad_clip", float("nan")), ("clip_eps", 1.0),
    ("clip_eps", float("nan")), ("ema_decay", float("nan")), ("ent_coef", float("nan")), ("kl_coef", float("inf")),
    ("weight_decay", -0.1), ("steps", 2.5), ("max_skipped_updates", -1), ("reward_batch_size", float("nan")),
])
def test_non_finite_or_out_of_range_values_are_refused_naming_the_field(field, value):
    with pytest.raises(ValueError, match=rf"^{field} must be .*got {value!r}"):
        check_config(replace(TINY, **{field: value}))


def test_estimator_options_keep_the_method_by_default_and_refuse_what_cannot_work():
    d = RLConfig()
    assert (d.advantage, d.reward_segments, d.estimator) == ("group", 0, "score")  # today's behaviour
    check_config(replace(TINY, advantage="loo"))
    check_config(replace(TINY, reward_segments=8))
    check_config(replace(TINY, estimator="pathwise", lambda_sig=1.0))
    with pytest.raises(ValueError, match="group_size=1 with advantage='loo'"):
        check_config(replace(TINY, advantage="loo", group_size=1))
    with pytest.raises(ValueError, match="lambda_sig=0 it has nothing to differentiate"):
        check_config(replace(TINY, estimator="pathwise", lambda_sig=0.0))
    with pytest.raises(ValueError, match="set reward_segments=0"):
        check_config(replace(TINY, estimator="pathwise", lambda_sig=1.0, reward_segments=4))
    with pytest.raises(ValueError, match="every reward weight is 0"):
        check_config(replace(TINY, lambda_sem=0.0, lambda_sig=0.0, lambda_neg=0.0))
    check_config(replace(TINY, lambda_sem=0.0, lambda_sig=0.0, lambda_neg=0.0, advantage="none"))  # a control
    with pytest.raises(ValueError, match="applies to Query-Mixup training"):
        check_config(replace(TINY, query="text", pure_query_prob=0.5))


def test_adaptation_split_is_reference_free_or_refused():
    """train_split: 'train' is the method; another split of the build trains without references, so every setting that
    would read the clean sources there is refused with the field to change, and an unknown split is refused."""
    assert RLConfig().train_split == "train"
    free = replace(TINY, train_split="test_timbre", lambda_sig=0.0)
    check_config(free)
    check_config(replace(free, advantage="none"))  # the entropy-only control on the same mixtures
    check_config(replace(TINY, train_split="val", lambda_sig=0.0))
    with pytest.raises(ValueError, match=r"train_split must be one of .*got 'tset'"):
        check_config(replace(TINY, train_split="tset"))
    with pytest.raises(ValueError, match="set lambda_sig=0"):
        check_config(replace(free, lambda_sig=1.0))
    with pytest.raises(ValueError, match="set lambda_sig=0"):
        check_config(replace(free, estimator="pathwise", lambda_sig=1.0))
    with pytest.raises(ValueError, match="hard_pair_prob draws same-family pairs"):
        check_config(replace(free, hard_pair_prob=0.5))
    # the signal term against the remainder (mixture less the other items' estimates) reads no clean source
    remainder = replace(free, lambda_sig=1.0, signal_reference="remainder", lambda_sem=0.0, reward_segments=4,
                        segment_terms="signal")
    check_config(remainder)
    check_config(replace(remainder, estimator="pathwise", reward_segments=0))  # differentiates the same reference
    with pytest.raises(ValueError, match="select must be 'val' or 'last', got 'best'"):
        check_config(replace(TINY, select="best"))
    with pytest.raises(ValueError, match="signal_reference must be 'source' or 'remainder', got 'clean'"):
        check_config(replace(TINY, signal_reference="clean"))


def test_fields_added_later_keep_old_run_keys_at_their_default():
    """lambda_sem, query_noise, pure_query_prob, hard_pair_prob, train_split, lambda_res, signal_reference and select came after RL runs existed: at their defaults they are
    not in the run config (so those runs' keys stay), and any other value is, so it makes another run."""
    from mars_core.rl.config import ADDED_FIELDS, run_config
    from mars_core.runs import config_hash

    stack = type("Stack", (), {"key": "s", "aligned": True})()
    plus = rl_preset("smoke", "plus")
    run = run_config(get_profile("smoke"), plus, "start", "bank", stack)
    assert set(ADDED_FIELDS) == {"lambda_sem", "query_noise", "pure_query_prob", "hard_pair_prob", "train_split",
                                 "lambda_res", "signal_reference", "select"}
    assert all(getattr(RLConfig(), k) == v for k, v in ADDED_FIELDS.items())
    assert set(run["rl"]) == {f.name for f in dataclasses.fields(RLConfig)} - set(ADDED_FIELDS)
    for field, value in (("lambda_sem", 0.0), ("query_noise", 2.0), ("pure_query_prob", 0.5), ("hard_pair_prob", 0.25),
                         ("train_split", "test_timbre"), ("lambda_res", 1.0),
                         ("signal_reference", "remainder"), ("select", "last")):
        moved = run_config(get_profile("smoke"), replace(plus, **{field: value}), "start", "bank", stack)
        assert moved["rl"][field] == value and config_hash(moved) != config_hash(run)

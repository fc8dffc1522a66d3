"""encoders/load.py: which encoder each profile hands out, and what happens when a shipped file is missing.

Oracles: the documented fallbacks (smoke: a seeded untrained MiniBind of the right sizes, built here
independently with the documented seeds 0 and 1234; cpu: the query encoder's error is not swallowed,
the judge is left out), and the judge's independence from the query encoder.
"""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch

from mars_core.config import get_profile
from mars_core.encoders import load
from mars_core.encoders.judge import judge_encoder_config
from mars_core.encoders.minibind import MiniBind


def _missing(profile=None, role="reward"):
    raise FileNotFoundError(f"no shipped {role} MiniBind (test)")


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_shipped_judge_and_query_encoder_are_different_models_in_eval_mode():
    enc, judge = load.load_query_encoder("smoke"), load.load_judge("smoke")
    assert not enc.training and not judge.training
    assert judge.encoder_config == judge_encoder_config("smoke") != enc.encoder_config
    assert not _same_weights(enc, judge)


def test_smoke_without_shipped_files_gets_seeded_untrained_stand_ins(monkeypatch):
    monkeypatch.setattr(load, "load_shipped", _missing)
    smoke = get_profile("smoke")
    with pytest.warns(UserWarning, match="untrained seeded MiniBind"):
        enc = load.load_query_encoder("smoke")
    assert _same_weights(enc, MiniBind(smoke.encoder, smoke.audio.sample_rate, seed=0)) and not enc.training
    with pytest.warns(UserWarning, match="untrained seeded judge"):
        judge = load.load_judge("smoke")
    want = MiniBind(judge_encoder_config("smoke"), smoke.audio.sample_rate, seed=1234)
    assert _same_weights(judge, want) and not judge.training


def test_cpu_without_shipped_files_raises_for_the_query_encoder_and_leaves_the_judge_out(monkeypatch):
    monkeypatch.setattr(load, "load_shipped", _missing)
    with pytest.raises(FileNotFoundError, match="no shipped reward MiniBind"):
        load.load_query_encoder("cpu")
    with pytest.warns(UserWarning, match="semantic score is left out"):
        assert load.load_judge("cpu") is None


def test_unknown_encoder_kind_is_refused_by_name():
    smoke = get_profile("smoke")
    prof = get_profile("smoke", encoder=dataclasses.replace(smoke.encoder, kind="clap"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback is tried
        with pytest.raises(ValueError, match="'clap'"):
            load.load_query_encoder(prof)

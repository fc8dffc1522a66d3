"""The reward-hacking probe: Wilson intervals, rates by hand, and the whole probe with a crafted encoder."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import scipy.stats
import torch
import torch.nn as nn
import torch.nn.functional as F

from mars_core.config import PLUS, get_profile
from mars_core.alignment.stack import RewardStack
from mars_core.evaluation.evaluate import load_eval_set
from mars_core.metrics import SI_SDR_EPS
from mars_core.rl.hacking import (CANDIDATE_KINDS, NEAR_SILENCE_GAIN, RewardVariant,
                                  candidate_outputs, candidate_rewards, hack_summary, hacking_probe, hacking_table,
                                  probe_inputs, reward_variants, wilson_interval)
from tests.test_queries import fake_bank
from tests.test_rl_rewards import MeanAnchor

SR = 8000
LENGTH = 1024
SMOKE = get_profile("smoke")


# --------------------------------------------------------------------------- Wilson interval
def test_wilson_interval_by_hand_and_against_scipy():
    z = 1.959963984540054  # the 97.5 % normal quantile
    # k = 5, n = 10: centre (0.5 + z^2/20) / (1 + z^2/10) = 0.5; half-width z sqrt(0.025 + z^2/400) / (1 + z^2/10)
    half = z * math.sqrt(0.025 + z * z / 400) / (1 + z * z / 10)
    assert half == pytest.approx(0.263406909, abs=1e-8)
    lo, hi = wilson_interval(5, 10)
    assert (lo, hi) == (pytest.approx(0.5 - half, abs=1e-12), pytest.approx(0.5 + half, abs=1e-12))
    # k = 0: [0, z^2 / (n + z^2)]; k = n: [n / (n + z^2), 1]
    assert wilson_interval(0, 10) == (0.0, pytest.approx(z * z / (10 + z * z), abs=1e-12))
    assert wilson_interval(10, 10) == (pytest.approx(10 / (10 + z * z), abs=1e-12), 1.0)
    for k, n in ((0, 12), (1, 12), (3, 200), (10, 200), (117, 200), (200, 200)):
        ci = scipy.stats.binomtest(k, n).proportion_ci(0.95, method="wilson")
        assert wilson_interval(k, n) == (pytest.approx(ci.low, abs=1e-9), pytest.approx(ci.high, abs=1e-9))
    ci90 = scipy.stats.binomtest(7, 40).proportion_ci(0.90, method="wilson")
    assert wilson_interval(7, 40, 0.90) == (pytest.approx(ci90.low, abs=1e-9), pytest.approx(ci90.high, abs=1e-9))
    for bad in ((3, 2), (-1, 5), (0, 0)):
        with pytest.raises(ValueError, match="0 <= k <= n"):
            wilson_interval(*bad)
    with pytest.raises(ValueError, match="level"):
        wilson_interval(1, 2, 1.5)


# --------------------------------------------------------------------------- rates by hand
def test_hacking_table_rates_by_hand():
    t = lambda *v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    rewards = {"r": {
        "oracle_irm": t(1.0, 2.0, 3.0, 4.0),
        "target": t(2.0, 1.0, 3.0, 5.0),  # >= oracle on items 0, 2, 3
        "mixture": t(0.0, 2.0, 5.0, 1.0),  # >= on items 1 (a tie counts), 2
        "silence": t(0.0, 0.0, 0.0, 0.0),  # never
        "target_x10": t(3.0, 2.5, 1.0, 6.0),  # >= on 0, 1, 3; the clean target was below the oracle only on 1
        "oracle_x0.1": t(1.00005, 2.5, 2.0, 4.5),  # above the oracle by more than GAIN_TOL on 1, 3 (item 0: rounding)
    }}
    tab = hacking_table(rewards).set_index("candidate")
    # the oracle is the reference, not a row
    assert list(tab.index) == ["target", "mixture", "silence", "target_x10", "oracle_x0.1"]
    assert tab["rate"].tolist() == [0.75, 0.5, 0.0, 0.75, 0.75]
    assert tab["k"].tolist() == [3, 2, 0, 3, 3] and set(tab["n"]) == {4}
    assert tab.loc["target_x10", "gain_rate"] == 0.25 and tab.loc["oracle_x0.1", "gain_rate"] == 0.5
    assert tab[["gain_rate"]].loc[["target", "mixture", "silence"]].isna().all().all()
    # hack_rate: `rate` for hacks, `gain_rate` for scaled copies, none for the clean target
    assert math.isnan(tab.loc["target", "hack_rate"])
    assert tab.loc[["mixture", "silence", "target_x10", "oracle_x0.1"], "hack_rate"].tolist() == [0.5, 0.0, 0.25, 0.5]
    np.testing.assert_allclose(tab["mean_margin"], [0.25, -0.5, -2.5, 0.625, 0.0000125], rtol=0, atol=1e-12)
    lo, hi = wilson_interval(2, 4)
    assert tab.loc["mixture", "ci_low"] == pytest.approx(lo) and tab.loc["mixture", "ci_high"] == pytest.approx(hi)
    summary = hack_summary(tab.reset_index()).iloc[0]
    assert summary["worst_candidate"] in ("mixture", "oracle_x0.1") and summary["worst_hack_rate"] == 0.5
    assert not summary["passes"]
    ok = {"r": {"oracle_irm": t(1.0, 1.0), "mixture": t(0.0, 0.5), "silence": t(-1.0, 0.0)}}
    assert hack_summary(hacking_table(ok))["passes"].tolist() == [True]
    with pytest.raises(ValueError, match="oracle_irm"):
        hacking_table({"r": {"mixture": t(1.0)}})
    with pytest.raises(ValueError, match="shape"):
        hacking_table({"r": {"oracle_irm": t(1.0, 2.0), "mixture": t(1.0)}})


def test_candidate_outputs():
    g = torch.Generator().manual_seed(0)
    tgt, itf = torch.randn(3, LENGTH, generator=g), 2.0 * torch.randn(3, LENGTH, generator=g)
    mix, oracle = tgt + itf, tgt + 0.3 * itf
    c = candidate_outputs(mix, tgt, itf, oracle)
    assert list(c) == list(CANDIDATE_KINDS)
    assert torch.equal(c["silence"], torch.zeros(3, LENGTH)) and torch.equal(c["mixture"], mix)
    torch.testing.assert_close(c["near_silence"], NEAR_SILENCE_GAIN * mix)
    torch.testing.assert_close(c["target_x0.1"], 0.1 * tgt) and torch.testing.assert_close(c["target_x10"], 10 * tgt)
    torch.testing.assert_close(c["oracle_x0.1"], 0.1 * oracle)
    rms = lambda x: np.sqrt((x.double().numpy() ** 2).mean(-1))  # noqa: E731
    np.testing.assert_allclose(rms(c["target_at_mixture_level"]), rms(mix), rtol=1e-6)
    np.testing.assert_allclose(c["target_at_mixture_level"].numpy() / tgt.numpy(),
                               np.broadcast_to((rms(mix) / rms(tgt))[:, None], tgt.shape), rtol=1e-5)
    with pytest.raises(ValueError, match=r"\(N, samples\)"):
        candidate_outputs(mix, tgt[:2], itf, oracle)


# --------------------------------------------------------------------------- a crafted reward, rates by hand
C = 0.5
"""The crafted encoder's constant third coordinate: it makes the embedding depend on gain."""


def _basis():
    """Two orthonormal, zero-mean signals: 250 Hz sine and cosine over 1024 samples at 8 kHz (32 whole periods)."""
    t = np.arange(LENGTH) / SR
    u, v = np.sin(2 * np.pi * 250 * t), np.cos(2 * np.pi * 250 * t)
    return u / np.linalg.norm(u), v / np.linalg.norm(v)


class ProjectionEncoder(nn.Module):
    """``phi(x) = normalize([<x, u>, <x, v>, C])``: a waveform's target and interferer coordinates and a constant."""

    sample_rate = SR

    def embed_audio(self, waveforms, sample_rate, *, batch_size=32, resample=False):
        u, v = (torch.tensor(b, dtype=torch.float64) for b in _basis())
        w = waveforms.double()
        feats = torch.stack([w @ u, w @ v, torch.full((w.shape[0],), C, dtype=torch.float64)], dim=-1)
        return F.normalize(feats, dim=-1).float()


# items: target a u, interferer b v, anchor z = n([1, 0, w]), interferer anchor e2
A = np.array([1.0, 1.0, 1.0, 1.0, 2.0, 0.5])
B = np.array([1.0, 2.0, 0.5, 1.0, 1.0, 1.0])
W = np.array([0.0, 0.0, 0.0, 3.0, 3.0, 0.0])
ORACLE_LEAK = 0.3  # the "oracle" output keeps 0.3 of the interferer


def _crafted_items():
    u, v = _basis()
    tgt = torch.tensor(A[:, None] * u, dtype=torch.float32)
    itf = torch.tensor(B[:, None] * v, dtype=torch.float32)
    z = F.normalize(torch.tensor(np.stack([np.ones(6), np.zeros(6), W], 1), dtype=torch.float32), dim=-1)
    z_neg = torch.tensor([[0.0, 1.0, 0.0]] * 6)
    return tgt, itf, z, z_neg


def _expected_rewards(lambda_sig: float, lambda_neg: float) -> dict[str, np.ndarray]:
    """Closed form: each candidate's coordinates ``(p, q)`` on (u, v), its cosines to z and e2, and its SI-SDR
    against ``a u`` from the textbook formula with the energy floor ``eps``: ``alpha = p a / (a^2 + eps)``,
    ``SI-SDR = 10 log10((alpha^2 a^2 + eps) / ((p - alpha a)^2 + q^2 + eps))``, clamped to [-30, 30]; silence -30."""
    g = np.sqrt(A**2 + B**2) / A  # the target's gain to the mixture's RMS (u, v orthonormal: |mix|^2 = a^2 + b^2)
    coords = {
        "oracle_irm": (A, ORACLE_LEAK * B), "target": (A, 0 * B), "mixture": (A, B), "silence": (0 * A, 0 * B),
        "near_silence": (1e-4 * A, 1e-4 * B), "interferer": (0 * A, B), "target_x0.1": (0.1 * A, 0 * B),
        "target_x10": (10 * A, 0 * B), "target_at_mixture_level": (g * A, 0 * B),
        "oracle_x0.1": (0.1 * A, 0.1 * ORACLE_LEAK * B),
    }
    out = {}
    for name, (p, q) in coords.items():
        norm = np.sqrt(p**2 + q**2 + C**2)
        semantic = (p + W * C) / norm / np.sqrt(1 + W**2)
        contamination = q / norm
        alpha = p * A / (A**2 + SI_SDR_EPS)
        ratio = (alpha**2 * A**2 + SI_SDR_EPS) / ((p - alpha * A) ** 2 + q**2 + SI_SDR_EPS)
        sdr = np.where((p == 0) & (q == 0), -30.0, np.clip(10 * np.log10(ratio), -30, 30))
        out[name] = semantic + lambda_sig * sdr / 10 - lambda_neg * contamination
    return out


def test_probe_rates_with_a_crafted_reward_by_hand():
    tgt, itf, z, z_neg = _crafted_items()
    cands = candidate_outputs(tgt + itf, tgt, itf, tgt + ORACLE_LEAK * itf)
    variants = [RewardVariant("semantic"), RewardVariant("semantic - contamination", {"lambda_neg": 0.5}),
                RewardVariant("plus", {"lambda_sig": 1.0, "lambda_neg": 0.5})]
    stack = RewardStack(ProjectionEncoder(), MeanAnchor(), aligned=True, key="crafted")
    rewards = candidate_rewards(stack, SR, cands, z, z_neg, tgt, variants, batch_size=4)  # 2 batches: 4 + 2
    tab = hacking_table(rewards).set_index(["variant", "candidate"])
    for v in variants:
        exp = _expected_rewards(v.weights.get("lambda_sig", 0.0), v.weights.get("lambda_neg", 0.0))
        for name, r in exp.items():
            np.testing.assert_allclose(rewards[v.name][name].numpy(), r, atol=2e-5, err_msg=f"{v.name} {name}")
            if name != "oracle_irm":
                assert tab.loc[(v.name, name), "rate"] == np.mean(r >= exp["oracle_irm"]), (v.name, name)
    # by hand: with the semantic reward, silence (phi = e3) beats the oracle exactly where the anchor leans on
    # e3 (w = 3: items 3, 4): cos 3/sqrt(10) = 0.949 against 2.5/(1.158 sqrt(10)) = 0.683 and 0.531
    assert tab.loc[("semantic", "silence"), "k"] == 2
    # the mixture never does (same u coordinate, larger norm); nor does anything under plus's SI-SDR term,
    # where the clean target and its scaled copies (+30 dB) always beat the oracle (10 log10(a^2 / 0.09 b^2))
    assert tab.loc[("semantic", "mixture"), "k"] == 0
    plus = tab.loc["plus"]
    assert plus.loc[["mixture", "silence", "near_silence", "interferer"], "k"].tolist() == [0, 0, 0, 0]
    assert plus.loc[["target", "target_x0.1", "target_x10", "target_at_mixture_level"], "rate"].tolist() == [1.0] * 4
    assert plus.loc[["target_x0.1", "target_x10", "target_at_mixture_level"], "gain_rate"].tolist() == [0.0] * 3
    # gain hacking: where the anchor leans on the gain-carried e3 (items 3, 4) 0.1 x the oracle output is
    # closer to it (cos (0.1 + 1.5) / (0.511 sqrt(10)) = 0.990 > 0.683), also under plus (SI-SDR ties, less
    # contamination): a mask scaled down by 10 would earn more; nowhere else
    for v in ("semantic", "plus"):
        assert tab.loc[(v, "oracle_x0.1"), "gain_k"] == 2
    summary = hack_summary(tab.reset_index()).set_index("variant").loc["plus"]
    assert not summary["passes"] and summary["worst_candidate"] == "oracle_x0.1"


# --------------------------------------------------------------------------- variants and the whole probe
def test_reward_variants_follow_the_presets():
    vs = {v.name: dict(v.weights) for v in reward_variants("cpu")}
    assert list(vs) == ["semantic", "semantic - contamination", "plus", "paper"]
    assert vs["semantic"] == {} and vs["semantic - contamination"] == {"lambda_neg": PLUS["lambda_neg"]}
    assert vs["plus"] == {"lambda_sig": PLUS["lambda_sig"], "lambda_neg": PLUS["lambda_neg"]}
    assert vs["paper"] == {"lambda_sig": 0.0, "lambda_neg": 0.0}  # docs/method.md section 5: the semantic reward alone


def test_hacking_probe_on_the_benchmark_test_mixtures(fake_build):
    enc = ProjectionEncoderAnyLength()
    stack = RewardStack(enc, MeanAnchor(), aligned=True, key="crafted")
    bank = fake_bank(fake_build, 3)
    inp = probe_inputs(SMOKE, stack, bank, "test", n_items=5, build_dir=fake_build)
    es = load_eval_set(SMOKE, "test", 5, build_dir=fake_build)
    assert torch.equal(inp.mixtures, es.mixtures) and torch.equal(inp.targets, es.sources[:, 0])
    assert torch.equal(inp.interferers, es.sources[:, 1])
    assert inp.z.shape == inp.z_neg.shape == (5, 3)
    tab = hacking_probe(SMOKE, stack=stack, bank=bank, n_items=5, build_dir=fake_build)
    assert isinstance(tab, pd.DataFrame) and len(tab) == 4 * (len(CANDIDATE_KINDS) - 1)
    assert set(tab["n"]) == {5} and tab["rate"].between(0, 1).all()
    assert (tab["ci_low"] <= tab["rate"]).all() and (tab["rate"] <= tab["ci_high"]).all()
    # the paper preset's reward is the semantic reward: identical rows
    sem, pap = (tab[tab["variant"] == v].reset_index(drop=True) for v in ("semantic", "paper"))
    pd.testing.assert_frame_equal(sem.drop(columns="variant"), pap.drop(columns="variant"))


class ProjectionEncoderAnyLength(ProjectionEncoder):
    """:class:`ProjectionEncoder` on the first ``LENGTH`` samples of longer waveforms."""

    def embed_audio(self, waveforms, sample_rate, *, batch_size=32, resample=False):
        return super().embed_audio(waveforms[:, :LENGTH], sample_rate, batch_size=batch_size, resample=resample)

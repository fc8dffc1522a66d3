"""The gradient diagnostics: the exact gradient against finite differences, the first-update
gradient against REINFORCE written with torch.distributions."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch
from torch.distributions import Beta

from mars_core.config import RLConfig
from mars_core.rl.advantages import group_advantages
from mars_core.rl.diagnostics import (cosine, exact_gradient, exact_reward_gradient, first_update_gradient, flat,
                                      mode_candidate_terms, mode_encoder_reward, mode_si_sdr, trainer_update_gradient)
from mars_core.rl.rollout import proposal_from_trunk, reconstruct_group
from mars_core.rl.rewards import RewardModel
from mars_core.rl.rollout import rollout
from mars_core.rl.update import trainable_parameters
from tests.test_rl_rollout import SMOKE, _batch, parts, trained_looking_separator  # noqa: F401  (fixture)
from tests.tolerances import EPS32


def central_difference(params, d: torch.Tensor, value, eps: float = 1e-3) -> float:
    """``(f(w + eps d) - f(w - eps d)) / 2 eps`` of ``value()`` along the flat direction ``d`` of ``params``, which are
    restored afterwards."""
    def shift(t):
        with torch.no_grad():
            off = 0
            for p in params:
                p.add_(t * d[off:off + p.numel()].reshape(p.shape))
                off += p.numel()

    shift(eps)
    up = float(value())
    shift(-2 * eps)
    down = float(value())
    shift(eps)
    return (up - down) / (2 * eps)


def test_cosine_by_hand():
    assert cosine(torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0])) == pytest.approx(2**-0.5)
    assert cosine(torch.zeros(3), torch.ones(3)) == 0.0


def test_exact_gradient_matches_central_differences(parts):
    model = trained_looking_separator(1)
    params = trainable_parameters(model, "head")
    batch = _batch(parts)
    g, value = exact_gradient(model, params, batch, parts["fe"])
    assert value == pytest.approx(mode_si_sdr(model, batch, parts["fe"]).item())
    d = torch.randn(g.numel(), generator=torch.Generator().manual_seed(0))
    d = d / d.norm()
    slope = central_difference(params, d, lambda: mode_si_sdr(model, batch, parts["fe"]).double().item())
    assert float(g @ d) == pytest.approx(slope, rel=0.05, abs=1e-3)


def test_exact_reward_gradient_is_the_reward_models_reward_of_the_mode_and_its_derivative(parts):
    """The mode's encoder reward equals what the trainer's RewardModel (no gradient, its own code path) gives the
    mode's waveforms, and its gradient in the head's weights matches central differences of that value (float32
    encoder: 5 % of the slope or 1e-4 absolute; the step 1e-3 keeps the cosines' curvature below that)."""
    model = trained_looking_separator(2)
    params = trainable_parameters(model, "head")
    batch = _batch(parts)
    rm = RewardModel(parts["stack"], SMOKE.audio.sample_rate, lambda_neg=0.5)
    value = mode_encoder_reward(model, batch, parts["fe"], rm, 1.0, 0.5).item()
    with torch.no_grad():
        P = proposal_from_trunk(model, model.unet.trunk(batch.features), batch.queries)
        wav = reconstruct_group(parts["fe"], P.reshape(batch.n_mixtures, -1, *P.shape[-2:]), batch.mixtures)
        r, terms = rm(wav.reshape(batch.n_items, -1), batch.z, batch.z_neg)
    assert value == pytest.approx(r.mean().item(), abs=1e-5)
    assert mode_encoder_reward(model, batch, parts["fe"], rm, 1.0, 0.0).item() == pytest.approx(
        terms["semantic"].mean().item(), abs=1e-5)
    g, v = exact_reward_gradient(model, params, batch, parts["fe"], rm, 1.0, 0.5)
    assert v == pytest.approx(value, abs=1e-6) and torch.isfinite(g).all() and g.norm() > 0
    # half along g, half along a random direction: a random direction alone sees a slope of |g| / sqrt(dim), about 1e-5
    r = torch.randn(g.numel(), generator=torch.Generator().manual_seed(1))
    d = g / g.norm() + r / r.norm()
    d = d / d.norm()
    slope = central_difference(params, d, lambda: mode_encoder_reward(model, batch, parts["fe"], rm, 1.0, 0.5).item())
    assert abs(float(g @ d)) > 1e-2  # a slope the tolerance cannot hide
    assert float(g @ d) == pytest.approx(slope, rel=0.05, abs=1e-4)


def test_mode_candidate_terms_are_the_reward_models_terms_of_the_mode_and_the_consistency_by_hand(parts):
    """mode_candidate_terms (differentiable) equals what the trainer's RewardModel (its own no-gradient path) gives
    the mode's waveforms for the semantic, contamination and residual terms; the consistency is
    -|sum_k y_k - x|^2 / |x|^2 computed here from the same waveforms; the residual's gradient matches central
    differences (tolerances as in the exact reward gradient's test)."""
    model = trained_looking_separator(4)
    params = trainable_parameters(model, "head")
    batch = _batch(parts)
    values = mode_candidate_terms(model, batch, parts["fe"], RewardModel(parts["stack"], SMOKE.audio.sample_rate))
    with torch.no_grad():
        P = proposal_from_trunk(model, model.unet.trunk(batch.features), batch.queries)
        wav = reconstruct_group(parts["fe"], P.reshape(batch.n_mixtures, -1, *P.shape[-2:]), batch.mixtures)
        mix = batch.mixtures.repeat_interleave(wav.shape[1], dim=0)
        rm = RewardModel(parts["stack"], SMOKE.audio.sample_rate, lambda_neg=1.0, lambda_res=1.0)
        _, terms = rm(wav.reshape(batch.n_items, -1), batch.z, batch.z_neg, mixtures=mix)
    for name in ("semantic", "contamination", "residual"):
        got = values[name] if name != "residual" else values["residual_interferer"] - values["residual_target"]
        assert got.item() == pytest.approx(terms[name].mean().item(), abs=1e-5), name
    x = batch.mixtures.double()
    err = ((wav.double().sum(1) - x) ** 2).sum(-1) / (x**2).sum(-1)
    assert values["consistency"].item() == pytest.approx(-err.mean().item(), rel=1e-4, abs=1e-6)
    value = lambda: (lambda v: v["residual_interferer"] - v["residual_target"])(  # noqa: E731
        mode_candidate_terms(model, batch, parts["fe"], rm))
    g = flat(torch.autograd.grad(value(), params))
    r = torch.randn(g.numel(), generator=torch.Generator().manual_seed(2))
    d = g / g.norm() + r / r.norm()
    d = d / d.norm()
    slope = central_difference(params, d, lambda: value().item())
    assert abs(float(g @ d)) > 5e-3  # 50x the absolute tolerance below
    assert float(g @ d) == pytest.approx(slope, rel=0.05, abs=1e-4)


def test_first_update_gradient_is_reinforce_with_group_advantages(parts):
    """-grad of the PPO loss at ratio 1 = mean over bins and samples of A * grad log Beta(m; 1 + kappa P, 1 + kappa (1 - P))."""
    model = trained_looking_separator(2)
    params = trainable_parameters(model, "head")
    batch = _batch(parts)
    rm = RewardModel(parts["stack"], SMOKE.audio.sample_rate, lambda_sig=1.0, lambda_neg=0.5)
    kappa, G = 9.0, 4
    ours = first_update_gradient(model, params, batch, parts["fe"], rm, kappa, G, seed=5)
    ro = rollout(model, batch, parts["fe"], rm, kappa, G, seed=5)  # the same masks and rewards
    adv, _ = group_advantages(ro.rewards)
    # the reference in float64 (a double copy of the model; the same masks and advantages): only ours is rounded
    model64 = copy.deepcopy(model).double()
    queries = batch.queries.double().reshape(-1, batch.queries.shape[-1])
    P = model64(batch.features.double().repeat_interleave(batch.queries.shape[1], 0), queries)
    m = ro.masks.double().clamp(1e-6, 1 - 1e-6)
    logp = Beta(1 + kappa * P.unsqueeze(1), 1 + kappa * (1 - P.unsqueeze(1))).log_prob(m)  # (N, G, F, T)
    surrogate = (adv.double()[:, :, None, None] * logp).mean()
    ref = flat(torch.autograd.grad(surrogate, trainable_parameters(model64, "head")))
    # each element is a mean of N G F T = 262144 float32 products (digamma terms, conv backward): its rounding
    # error is a few EPS32 times the gradient's norm (measured <= 4), however small the element itself is
    torch.testing.assert_close(ours.double(), ref, rtol=0, atol=32 * EPS32 * ref.norm().item())
    assert ref.norm() > 0


def test_trainer_update_gradient_is_the_first_update_plus_the_entropy_bonus(parts):
    """Oracle: first_update_gradient (REINFORCE with group advantages, itself checked against torch.distributions
    above) plus lambda_H times the gradient of the mean Beta entropy, written with torch.distributions; the trainer's
    path (folded head, minibatch_loss, advantages()) is another computation of the same thing."""
    model = trained_looking_separator(2)
    params = trainable_parameters(model, "head")
    batch = _batch(parts)
    rm = RewardModel(parts["stack"], SMOKE.audio.sample_rate, lambda_sig=1.0, lambda_neg=0.5)
    cfg = RLConfig(kappa=9.0, kappa_end=9.0, group_size=4, trainable="head", ent_coef=0.05, kl_coef=0.01,
                   lambda_sig=1.0, lambda_neg=0.5)
    ours = trainer_update_gradient(model, params, batch, parts["fe"], cfg, rm, seed=5)
    pg = first_update_gradient(model, params, batch, parts["fe"], rm, 9.0, 4, seed=5)
    P = model(batch.features.repeat_interleave(batch.queries.shape[1], 0), batch.queries.reshape(-1, batch.queries.shape[-1]))
    entropy = Beta(1 + 9.0 * P, 1 + 9.0 * (1 - P)).entropy().mean()
    ent = flat(torch.autograd.grad(entropy, params))  # the KL term's gradient is 0 at ratio 1 (its minimum)
    want = pg + 0.05 * ent
    torch.testing.assert_close(ours, want, rtol=0, atol=64 * EPS32 * want.norm().item())
    none = trainer_update_gradient(model, params, batch, parts["fe"], replace(cfg, advantage="none"), rm, seed=5)
    torch.testing.assert_close(none, 0.05 * ent, rtol=0, atol=64 * EPS32 * want.norm().item())

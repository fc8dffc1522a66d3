"""The pathwise estimator (mars_core.rl.pathwise): at a large concentration the sampled masks are the mode,
so its reward and gradient become the mode's (the limit kappa -> infinity, computed without sampling)."""

from __future__ import annotations

import torch

from mars_core.audio import FrontEnd
from mars_core.config import get_profile
from mars_core.rl.pathwise import pathwise_loss, pathwise_rewards
from mars_core.rl.rewards import signal_term
from mars_core.rl.rollout import reconstruct_group

SMOKE = get_profile("smoke")


def _problem():
    g = torch.Generator().manual_seed(0)
    fe = FrontEnd(SMOKE.audio)
    n_samples = SMOKE.audio.segment_samples
    sources = 0.1 * torch.randn(1, 2, n_samples, generator=g)
    mixtures = sources.sum(1)
    F, T = SMOKE.audio.n_freq_warped, 1 + n_samples // SMOKE.audio.hop_length
    P = (0.2 + 0.6 * torch.rand(2, F, T, generator=g)).requires_grad_(True)
    return fe, mixtures, sources, P


def test_pathwise_reward_and_gradient_tend_to_the_modes_as_kappa_grows():
    fe, mixtures, sources, P = _problem()
    mode_wav = reconstruct_group(fe, P.reshape(1, 2, *P.shape[1:]), mixtures).reshape(2, -1)
    mode_r = signal_term(mode_wav, sources.reshape(2, -1))
    (g_mode,) = torch.autograd.grad(mode_r.mean(), P)
    torch.manual_seed(0)
    r = pathwise_rewards(P, mixtures, sources, fe, 1e6, 2)  # per-bin std <= 0.5 / sqrt(1e6) = 5e-4
    assert r.shape == (2, 2)
    torch.testing.assert_close(r, mode_r[:, None].expand(2, 2), rtol=0, atol=2e-3)
    (g,) = torch.autograd.grad(r.mean(), P)
    assert torch.nn.functional.cosine_similarity(g.flatten(), g_mode.flatten(), dim=0) > 0.99
    torch.manual_seed(0)
    r30 = pathwise_rewards(P, mixtures, sources, fe, 30.0, 2)
    # at kappa 30 the samples are not the mode: mask noise ~ sqrt(1e6 / 30) = 180x larger moves the reward far more
    assert (r30 - mode_r[:, None]).abs().max() > 10 * (r - mode_r[:, None]).abs().max()


def test_pathwise_loss_terms():
    fe, mixtures, sources, P = _problem()
    torch.manual_seed(1)
    loss, stats = pathwise_loss(P.unsqueeze(1), P.detach().unsqueeze(1), mixtures, sources, fe, 30.0, 2,
                                lambda_sig=2.0, ent_coef=0.0, kl_coef=0.01)
    torch.manual_seed(1)
    r = pathwise_rewards(P, mixtures, sources, fe, 30.0, 2)
    assert abs(stats["pg_loss"] - (-2.0 * r.mean().item())) < 1e-6  # same seed, same samples
    assert abs(stats["kl_loss"]) < 1e-6 and stats["clipfrac"] == 0.0 and stats["ratio_mean"] == 1.0  # P == P_old
    loss.backward()
    assert P.grad is not None and torch.isfinite(P.grad).all() and P.grad.abs().sum() > 0

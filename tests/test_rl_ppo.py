"""Clipped surrogate and PPO loss (mars_core.rl.ppo) against hand cases and a toy Beta policy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mars_core.rl import policy
from mars_core.rl.advantages import group_advantages
from mars_core.rl.ppo import clipped_surrogate, ppo_loss
from tests import beta_reference as beta_ref  # torch.distributions.Beta: the oracle


def _grad_of_surrogate(ratio: float, adv: float, eps: float = 0.2) -> float:
    logratio = torch.tensor([np.log(ratio)], requires_grad=True)
    clipped_surrogate(logratio, torch.tensor([adv]), eps).sum().backward()
    return logratio.grad.item()


def test_clipped_surrogate_gradient_signs():
    assert _grad_of_surrogate(1.3, +1.0) == 0.0  # ratio > 1 + eps, A > 0: no push further up
    assert _grad_of_surrogate(0.7, -1.0) == 0.0  # ratio < 1 - eps, A < 0: no push further down
    # inside the trust region the loss is -A * ratio, so d/dlogratio = -A * ratio
    assert _grad_of_surrogate(1.1, +1.0) == pytest.approx(-1.1)
    assert _grad_of_surrogate(0.9, -1.0) == pytest.approx(0.9)
    # outside but on the "undo" side the gradient still flows
    assert _grad_of_surrogate(0.7, +1.0) == pytest.approx(-0.7)
    assert _grad_of_surrogate(1.3, -1.0) == pytest.approx(1.3)


def test_ppo_loss_value_and_diagnostics_by_hand():
    new = torch.log(torch.tensor([[[1.1, 1.5]], [[0.5, 1.0]]]))  # (batch 2, G 1, 2 bins), old logp 0
    old = torch.zeros_like(new)
    adv = torch.tensor([[1.0], [-2.0]])
    ent = torch.full((2, 1, 2), 0.5)
    kl = torch.full((2, 1, 2), 0.2)
    loss, stats = ppo_loss(new, old, adv, ent, kl, clip_eps=0.2, ent_coef=0.1, kl_coef=0.01)
    # item 1 (A=1): -1.1, -min(1.5, 1.2) = -1.2; item 2 (A=-2): max(1.0, 1.6) = 1.6, max(2, 2) = 2
    pg = np.mean([-1.1, -1.2, 1.6, 2.0])
    assert stats["pg_loss"] == pytest.approx(pg, abs=1e-6)
    assert loss.item() == pytest.approx(pg - 0.1 * 0.5 + 0.01 * 0.2, abs=1e-6)
    r = np.array([1.1, 1.5, 0.5, 1.0])
    assert stats["clipfrac"] == pytest.approx(0.5)
    assert stats["approx_kl"] == pytest.approx(np.mean((r - 1) - np.log(r)), abs=1e-6)
    with pytest.raises(ValueError, match="advantages must be"):
        ppo_loss(new, old, adv[:, 0], ent)


def test_grpo_loss_is_zero_at_start_but_its_gradient_is_not():
    """With ratio = 1 and zero-mean group advantages the loss is exactly 0; the gradient is A * grad log pi."""
    torch.manual_seed(0)
    theta = torch.zeros(1, 1, 4, requires_grad=True)
    P = torch.sigmoid(theta)
    masks = policy.sample_masks(P, 9.0, group_size=4)
    old = beta_ref.log_prob(P.detach(), masks, 9.0)
    adv, _ = group_advantages(torch.tensor([[1.0, 2.0, 3.0, 4.0]]))
    new = beta_ref.log_prob(P, masks, 9.0)
    pg = clipped_surrogate(new - old, adv[..., None, None], 0.2).mean()
    assert abs(pg.item()) < 1e-6
    pg.backward()
    assert theta.grad.abs().sum() > 1e-3


def test_toy_beta_policy_learns_a_known_best_mask():
    """A policy over 8 bins, rewarded by closeness to a known binary mask, learns it with our update."""
    torch.manual_seed(0)
    target = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0])
    theta = torch.zeros(4, 1, 8, requires_grad=True)  # 4 items, each its own logits
    opt = torch.optim.Adam([theta], lr=0.1)
    kappa, G = 9.0, 8
    reward = lambda m: 1.0 - (m - target).abs().mean(-1)  # in [0, 1]; 1 only for the best mask
    start = reward(torch.sigmoid(theta)).mean().item()
    for step in range(60):
        P_old = torch.sigmoid(theta).detach()
        masks = policy.sample_masks(P_old[:, 0], kappa, G)  # (4, G, 8)
        adv, _ = group_advantages(reward(masks))
        old_logp = beta_ref.log_prob(P_old, masks, kappa)
        for _ in range(2):  # PPO epochs over the same sample
            P = torch.sigmoid(theta)
            loss, stats = ppo_loss(beta_ref.log_prob(P, masks, kappa), old_logp, adv,
                                   beta_ref.entropy(P, kappa), beta_ref.kl(P, P_old, kappa), ent_coef=0.01)
            opt.zero_grad()
            loss.backward()
            opt.step()
    final = reward(policy.mode(torch.sigmoid(theta))).mean().item()
    assert start == pytest.approx(0.5)
    assert final > 0.9, f"mode reward {final:.3f} after 60 steps"


# --------------------------------------------------------------------------- finite far from the old policy
@pytest.mark.parametrize("logratio, adv, value, grad", [
    (30.0, +1.0, -1.2, 0.0),                         # clipped branch: -A (1 + eps), no gradient (as unbounded)
    (30.0, -1.0, np.exp(20.0), np.exp(20.0)),        # undo side: -A ratio, gradient kept at the bound
    (-30.0, -1.0, 0.8, 0.0),                         # clipped branch: -A (1 - eps), no gradient (as unbounded)
    (-30.0, +1.0, -np.exp(-20.0), -np.exp(-20.0)),   # unclipped but negligible either way
    (1000.0, -2.0, 2 * np.exp(20.0), 2 * np.exp(20.0)),
])
def test_surrogate_beyond_the_logratio_bound_by_hand(logratio, adv, value, grad):
    lr = torch.tensor([logratio], requires_grad=True)
    out = clipped_surrogate(lr, torch.tensor([adv]), 0.2)
    out.sum().backward()
    assert out.item() == pytest.approx(value, rel=1e-6) and lr.grad.item() == pytest.approx(grad, rel=1e-6)


def test_ppo_loss_stays_finite_far_from_the_old_policy_at_kappa_1e4():
    """Old policy mode 0.01, new 0.99, kappa 1e4: per-bin log-ratios of thousands, both signs of A."""
    kappa, bins = 1e4, 32
    torch.manual_seed(0)
    theta = torch.full((2, 1, 2 * bins), float(np.log(0.99 / 0.01)), requires_grad=True)  # sigmoid = 0.99
    P_old = torch.full((2, 1, 2 * bins), 0.01)
    a_old, b_old = policy.beta_params(P_old[:, :, :bins].expand(2, 2, bins), kappa)
    a_new, b_new = policy.beta_params(torch.full((2, 2, bins), 0.99), kappa)
    # half the bins sampled where the old policy puts its mass (log-ratio << 0), half where the new one does (>> 0)
    masks = policy.clamp_sample(torch.cat([policy.sample_beta(a_old, b_old),
                                           policy.sample_beta(a_new, b_new)], dim=-1))
    old_logp = beta_ref.log_prob(P_old, masks, kappa)
    P = torch.sigmoid(theta)
    new_logp = beta_ref.log_prob(P, masks, kappa)
    logratio = (new_logp - old_logp).detach()
    assert (logratio[..., :bins] < -1000).all() and (logratio[..., bins:] > 1000).all()
    assert torch.isinf(torch.exp(logratio)).any()  # the regime where an unbounded ratio overflows
    adv = torch.tensor([[1.0, -1.0], [-1.0, 1.0]])
    loss, stats = ppo_loss(new_logp, old_logp, adv, beta_ref.entropy(P, kappa), beta_ref.kl(P, P_old, kappa),
                           clip_eps=0.2, ent_coef=0.1, kl_coef=0.01)
    loss.backward()
    assert torch.isfinite(loss) and all(np.isfinite(v) for v in stats.values()), stats
    assert torch.isfinite(theta.grad).all() and theta.grad.abs().sum() > 0

"""Beta policy, advantages and the clipped surrogate against scipy, closed forms and hand cases."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.integrate
import scipy.stats
import torch

from mars_core.rl import policy
from mars_core.rl.advantages import EMABaseline, group_advantages
from mars_core.rl.ppo import clipped_surrogate, ppo_loss

P_VALUES = [0.0, 1e-7, 0.1, 0.5, 0.83, 1.0 - 1e-7, 1.0]


@pytest.mark.parametrize("kappa", [1.0, 9.0, 30.0])
def test_log_prob_matches_scipy(kappa):
    P = torch.tensor(P_VALUES)
    m = torch.tensor([0.05, 0.3, 0.5, 0.7, 0.95, 0.2, 0.6])
    ours = policy.log_prob(P, m, kappa).double().numpy()
    ref = scipy.stats.beta.logpdf(m.double().numpy(), 1 + kappa * np.array(P_VALUES), 1 + kappa * (1 - np.array(P_VALUES)))
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kappa", [1.0, 9.0, 30.0])
def test_entropy_matches_scipy(kappa):
    P = np.array(P_VALUES)
    ours = policy.entropy(torch.tensor(P_VALUES), kappa).double().numpy()
    np.testing.assert_allclose(ours, scipy.stats.beta.entropy(1 + kappa * P, 1 + kappa * (1 - P)), rtol=1e-4, atol=1e-5)


def test_kl_matches_numerical_integration():
    kappa = 9.0
    for p_new, p_old in [(0.3, 0.6), (0.0, 1.0), (0.9, 0.85), (0.5, 0.5)]:
        a1, b1 = 1 + kappa * p_new, 1 + kappa * (1 - p_new)
        a0, b0 = 1 + kappa * p_old, 1 + kappa * (1 - p_old)
        f = lambda x: scipy.stats.beta.pdf(x, a1, b1) * (scipy.stats.beta.logpdf(x, a1, b1) - scipy.stats.beta.logpdf(x, a0, b0))
        ref = scipy.integrate.quad(f, 0, 1, limit=200)[0]
        ours = policy.kl(torch.tensor([p_new]), torch.tensor([p_old]), kappa).item()
        assert ours == pytest.approx(ref, abs=1e-4)
        assert ours >= -1e-6


def test_mode_mean_and_std_closed_forms():
    kappa = 9.0
    for p in (0.0, 0.2, 0.5, 0.9, 1.0):
        a, b = 1 + kappa * p, 1 + kappa * (1 - p)
        grid = np.linspace(0, 1, 200001)
        assert grid[np.argmax(scipy.stats.beta.pdf(grid, a, b))] == pytest.approx(p, abs=1e-4)  # the mode is P
        mean, std = policy.mean_and_std(torch.tensor([p]), kappa)
        assert mean.item() == pytest.approx((1 + kappa * p) / (2 + kappa), abs=1e-6)
        assert std.item() == pytest.approx(scipy.stats.beta.std(a, b), abs=1e-6)
    # docs/method.md section 4: std about 0.144 at P = 0.5 and 0.083 at P in {0, 1} for kappa = 9
    assert policy.mean_and_std(torch.tensor([0.5]), 9.0)[1].item() == pytest.approx(0.144, abs=1e-3)
    assert policy.mean_and_std(torch.tensor([1.0]), 9.0)[1].item() == pytest.approx(0.083, abs=1e-3)
    assert torch.equal(policy.mode(torch.tensor([0.3])), torch.tensor([0.3]))


def test_samples_at_exactly_zero_or_one_have_finite_log_prob():
    P = torch.tensor([0.0, 1.0, 0.5, 1.0, 0.0])
    m = torch.tensor([0.0, 1.0, 0.0, 0.0, 1.0])
    lp = policy.log_prob(P, m, 9.0)
    assert torch.all(torch.isfinite(lp))
    # clamped to 1e-6: log Beta(1e-6; 1, 10) = log 10 + 9 log(1 - 1e-6)
    assert lp[0].item() == pytest.approx(np.log(10) + 9 * np.log1p(-1e-6), abs=1e-4)
    assert torch.all(torch.isfinite(policy.entropy(P, 9.0))) and torch.all(torch.isfinite(policy.kl(P, P.flip(0), 9.0)))
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        policy.log_prob(torch.tensor([1.2]), torch.tensor([0.5]), 9.0)


def test_sampling_statistics_and_shape():
    torch.manual_seed(0)
    P = torch.tensor([[[0.1, 0.5], [0.9, 1.0]]])  # (1, 2, 2)
    m = policy.sample_masks(P, 9.0, group_size=20000)
    assert m.shape == (1, 20000, 2, 2) and not m.requires_grad
    assert m.min() >= policy.SAMPLE_EPS and m.max() <= 1 - policy.SAMPLE_EPS
    mean, std = policy.mean_and_std(P, 9.0)
    torch.testing.assert_close(m.mean(1), mean, atol=3e-3, rtol=0)
    torch.testing.assert_close(m.std(1), std, atol=3e-3, rtol=0)


@pytest.mark.parametrize("a, b", [(1.0, 1.0), (1.0, 10.0), (10.0, 1.0), (1.3, 8.7), (16.0, 16.0), (1.0, 301.0), (250.0, 52.0)])
def test_sample_beta_matches_scipy(a, b):
    """The vectorised Marsaglia-Tsang sampler draws Beta(a, b): Kolmogorov-Smirnov against scipy's cdf,
    including a = 1 (P exactly 0) and large concentrations."""
    torch.manual_seed(1)
    x = policy.sample_beta(torch.full((40000,), a), torch.full((40000,), b))
    assert x.dtype == torch.float32 and torch.all((x >= 0) & (x <= 1))
    assert scipy.stats.kstest(x.double().numpy(), scipy.stats.beta(a, b).cdf).pvalue > 1e-3


def test_sample_beta_is_seeded_elementwise_and_checks_its_parameters():
    a = torch.tensor([[1.0, 2.0], [30.0, 1.0]])
    torch.manual_seed(3)
    first = policy.sample_beta(a, a.flip(1))
    torch.manual_seed(3)
    assert torch.equal(first, policy.sample_beta(a, a.flip(1)))
    # each element follows its own parameters: Beta(1000, 1) draws are near 1, Beta(1, 1000) near 0
    big = torch.tensor([1000.0, 1.0]).repeat(500)
    x = policy.sample_beta(big, big.flip(0))
    assert x[0::2].min() > 0.98 and x[1::2].max() < 0.02
    with pytest.raises(ValueError, match=">= 1"):
        policy.sample_beta(torch.tensor([0.5]), torch.tensor([2.0]))
    with pytest.raises(ValueError, match="shapes differ"):
        policy.sample_beta(torch.ones(2), torch.ones(3))


def test_group_advantages_hand_values_and_zero_mean():
    adv, frac = group_advantages(torch.tensor([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0]]))
    s = np.sqrt(2 / 3)  # population std of (1, 2, 3)
    np.testing.assert_allclose(adv[0].numpy(), [-1 / s, 0, 1 / s], rtol=1e-5)
    assert torch.equal(adv[1], torch.zeros(3)) and frac == 0.5
    rng = torch.Generator().manual_seed(0)
    adv, _ = group_advantages(torch.randn(16, 8, generator=rng))
    torch.testing.assert_close(adv.mean(1), torch.zeros(16), atol=1e-6, rtol=0)
    torch.testing.assert_close(adv.std(1, unbiased=False), torch.ones(16), atol=1e-4, rtol=0)
    single, frac1 = group_advantages(torch.tensor([[0.3], [0.7]]))  # groups of one carry no ranking
    assert torch.equal(single, torch.zeros(2, 1)) and frac1 == 1.0


def test_ema_baseline_paper_reading():
    ema = EMABaseline(decay=0.92)
    adv, _ = ema(torch.tensor([1.0, 3.0]))  # first batch: baseline = its mean 2
    np.testing.assert_allclose(adv.numpy(), [-1, 1], rtol=1e-5)
    assert ema.value == pytest.approx(2.0)
    adv, _ = ema(torch.tensor([4.0, 6.0]))  # b = 2: A = (2, 4) / std 1
    np.testing.assert_allclose(adv.numpy(), [2, 4], rtol=1e-5)
    assert ema.value == pytest.approx(0.92 * 2 + 0.08 * 5)
    equal, frac = ema(torch.tensor([7.0, 7.0]))
    assert torch.equal(equal, torch.zeros(2)) and frac == 1.0


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
    old = policy.log_prob(P.detach(), masks, 9.0)
    adv, _ = group_advantages(torch.tensor([[1.0, 2.0, 3.0, 4.0]]))
    new = policy.log_prob(P, masks, 9.0)
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
        old_logp = policy.log_prob(P_old, masks, kappa)
        for _ in range(2):  # PPO epochs over the same sample
            P = torch.sigmoid(theta)
            loss, stats = ppo_loss(policy.log_prob(P, masks, kappa), old_logp, adv,
                                   policy.entropy(P, kappa), policy.kl(P, P_old, kappa), ent_coef=0.01)
            opt.zero_grad()
            loss.backward()
            opt.step()
    final = reward(policy.mode(torch.sigmoid(theta))).mean().item()
    assert start == pytest.approx(0.5)
    assert final > 0.9, f"mode reward {final:.3f} after 60 steps"


def test_kappa_schedule():
    assert policy.kappa_schedule(5, 10) == 9.0
    assert policy.kappa_schedule(5, 10, start=4, end=12, kind="linear") == pytest.approx(8.0)
    assert policy.kappa_schedule(10, 10, start=4, end=12, kind="cosine") == pytest.approx(12.0)
    with pytest.raises(ValueError):
        policy.kappa_schedule(1, 10, start=1, end=2, kind="exp")


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
    old_logp = policy.log_prob(P_old, masks, kappa)
    P = torch.sigmoid(theta)
    new_logp = policy.log_prob(P, masks, kappa)
    logratio = (new_logp - old_logp).detach()
    assert (logratio[..., :bins] < -1000).all() and (logratio[..., bins:] > 1000).all()
    assert torch.isinf(torch.exp(logratio)).any()  # the regime where an unbounded ratio overflows
    adv = torch.tensor([[1.0, -1.0], [-1.0, 1.0]])
    loss, stats = ppo_loss(new_logp, old_logp, adv, policy.entropy(P, kappa), policy.kl(P, P_old, kappa),
                           clip_eps=0.2, ent_coef=0.1, kl_coef=0.01)
    loss.backward()
    assert torch.isfinite(loss) and all(np.isfinite(v) for v in stats.values()), stats
    assert torch.isfinite(theta.grad).all() and theta.grad.abs().sum() > 0


def test_ema_baseline_ignores_non_finite_rewards():
    ema = EMABaseline(decay=0.92)
    adv, frac = ema(torch.tensor([1.0, float("nan"), 3.0, float("inf")]))
    np.testing.assert_allclose(adv.numpy(), [-1, 0, 1, 0], rtol=1e-6)  # the finite ones as in the paper reading
    assert ema.value == pytest.approx(2.0) and ema.nonfinite == 2 and frac == 0.0
    adv, frac = ema(torch.tensor([float("nan"), float("nan")]))
    assert torch.equal(adv, torch.zeros(2)) and frac == 1.0 and ema.value == pytest.approx(2.0)
    adv, _ = ema(torch.tensor([4.0, 6.0]))  # b = 2 still: A = (2, 4) / std 1
    np.testing.assert_allclose(adv.numpy(), [2, 4], rtol=1e-5)
    assert ema.value == pytest.approx(0.92 * 2 + 0.08 * 5) and ema.nonfinite == 4
    restored = EMABaseline()
    restored.load_state_dict(ema.state_dict())
    assert (restored.value, restored.nonfinite) == (ema.value, 4)

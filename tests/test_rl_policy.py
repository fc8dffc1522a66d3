"""Beta policy (mars_core.rl.policy): sampling, mode/mean/std, kappa schedule, and the closed-form
log-density, entropy and KL, against scipy, numerical integration and torch.distributions.Beta
(tests/beta_reference.py, the oracle)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.integrate
import scipy.special
import scipy.stats
import torch

from mars_core.rl import policy
from mars_core.rl.policy import beta_entropy, beta_kl, beta_log_prob
from tests import beta_reference as beta_ref  # torch.distributions.Beta: the oracle

P_VALUES = [0.0, 1e-7, 0.1, 0.5, 0.83, 1.0 - 1e-7, 1.0]


@pytest.mark.parametrize("kappa", [1.0, 9.0, 30.0])
def test_log_prob_matches_scipy(kappa):
    P = torch.tensor(P_VALUES)
    m = torch.tensor([0.05, 0.3, 0.5, 0.7, 0.95, 0.2, 0.6])
    ours = beta_ref.log_prob(P, m, kappa).double().numpy()
    ref = scipy.stats.beta.logpdf(m.double().numpy(), 1 + kappa * np.array(P_VALUES), 1 + kappa * (1 - np.array(P_VALUES)))
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kappa", [1.0, 9.0, 30.0])
def test_entropy_matches_scipy(kappa):
    P = np.array(P_VALUES)
    ours = beta_ref.entropy(torch.tensor(P_VALUES), kappa).double().numpy()
    np.testing.assert_allclose(ours, scipy.stats.beta.entropy(1 + kappa * P, 1 + kappa * (1 - P)), rtol=1e-4, atol=1e-5)


def test_kl_matches_numerical_integration():
    kappa = 9.0
    for p_new, p_old in [(0.3, 0.6), (0.0, 1.0), (0.9, 0.85), (0.5, 0.5)]:
        a1, b1 = 1 + kappa * p_new, 1 + kappa * (1 - p_new)
        a0, b0 = 1 + kappa * p_old, 1 + kappa * (1 - p_old)
        f = lambda x: scipy.stats.beta.pdf(x, a1, b1) * (scipy.stats.beta.logpdf(x, a1, b1) - scipy.stats.beta.logpdf(x, a0, b0))
        ref = scipy.integrate.quad(f, 0, 1, limit=200)[0]
        ours = beta_ref.kl(torch.tensor([p_new]), torch.tensor([p_old]), kappa).item()
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
    lp = beta_ref.log_prob(P, m, 9.0)
    assert torch.all(torch.isfinite(lp))
    # clamped to 1e-6: log Beta(1e-6; 1, 10) = log 10 + 9 log(1 - 1e-6)
    assert lp[0].item() == pytest.approx(np.log(10) + 9 * np.log1p(-1e-6), abs=1e-4)
    assert torch.all(torch.isfinite(beta_ref.entropy(P, 9.0))) and torch.all(torch.isfinite(beta_ref.kl(P, P.flip(0), 9.0)))
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        beta_ref.log_prob(torch.tensor([1.2]), torch.tensor([0.5]), 9.0)


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
    """The sampler (torch's gamma variates since the Marsaglia-Tsang sampler was dropped, benchmarks/bench_beta.py)
    draws Beta(a, b): Kolmogorov-Smirnov against scipy's cdf, including a = 1 (P exactly 0) and large concentrations.
    No test pins a drawn value: switching samplers changed every RL random stream, not these statistics."""
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


def test_sample_beta_moves_only_by_rounding_when_its_parameters_do():
    """Reproducibility across CPUs (README, "Reproduced on a second machine"): concentrations that differ by float
    rounding (1e-7 relative, what another CPU's forward pass gives) draw, from the same seed, samples that differ by
    rounding too, never another sample: the gamma sampler's draws are continuous in their parameters and one bin's
    draw does not shift the others'. Bound: the concentrations move by at most 31 x 1e-7 and a draw's derivative in
    them is O(1 / kappa) at kappa 30, so about 1e-7, plus float32 rounding of x (6e-8): 1e-5 leaves a factor 50 for
    any CPU and is 1e4 below the distance between two different draws."""
    gen = torch.Generator().manual_seed(0)
    P = torch.rand(16384, generator=gen)
    alpha, beta = 1 + 30.0 * P, 1 + 30.0 * (1 - P)
    nudge = 1 + 1e-7 * torch.randn(2, 16384, generator=gen)
    torch.manual_seed(5)
    x = policy.sample_beta(alpha, beta)
    torch.manual_seed(5)
    y = policy.sample_beta(alpha * nudge[0], beta * nudge[1])
    assert (x - y).abs().max() < 1e-5
    torch.manual_seed(6)  # another seed: other draws (the bound above is not met by accident)
    assert (x - policy.sample_beta(alpha, beta)).abs().max() > 0.1


@pytest.mark.parametrize("a, b", [(1.0, 31.0), (16.0, 16.0), (271.0, 31.0)])
def test_sample_beta_mean_and_variance_match_the_beta_formulas(a, b):
    """Mean a / (a + b) and variance ab / ((a + b)^2 (a + b + 1)), within 5 standard errors of the sample
    (s.e. of the mean: sd / sqrt(n); of the variance: sqrt((m4 - var^2) / n), m4 the 4th central moment)."""
    n = 200_000
    torch.manual_seed(5)
    x = policy.sample_beta(torch.full((n,), a), torch.full((n,), b)).double()
    mean, var = a / (a + b), a * b / ((a + b) ** 2 * (a + b + 1))
    d = x - x.mean()
    m4 = (d**4).mean().item()
    assert abs(x.mean().item() - mean) < 5 * np.sqrt(var / n)
    assert abs(d.pow(2).mean().item() - var) < 5 * np.sqrt((m4 - var**2) / n) + 1e-9


def test_pathwise_gradient_of_a_linear_reward_is_its_analytic_expectation():
    """R(M) = sum_i w_i M_i with M_i ~ Beta(1 + kappa P_i, 1 + kappa (1 - P_i)): E[R] = sum_i w_i (1 + kappa P_i) / (2 + kappa),
    so dE[R]/dP_i = w_i kappa / (2 + kappa). Per-sample pathwise gradients (one row of P per draw) average to it
    within 5 standard errors of their own spread."""
    kappa, n = 30.0, 20_000
    P0 = torch.tensor([0.05, 0.3, 0.5, 0.9])
    w = torch.tensor([1.0, -2.0, 0.5, 3.0])
    torch.manual_seed(6)
    P = P0.repeat(n, 1, 1).requires_grad_(True)  # (n, 1, 4): each row its own leaf copy of P0
    masks = policy.rsample_masks(P, kappa, 1)  # (n, 1, 1, 4)
    (masks[:, 0, 0] * w).sum().backward()
    g = P.grad[:, 0].double()  # per-draw gradients (n, 4)
    expected = (w * kappa / (2 + kappa)).double()
    se = g.std(0) / np.sqrt(n)
    assert torch.all((g.mean(0) - expected).abs() < 5 * se + 1e-6), (g.mean(0), expected, se)
    assert masks.min() >= policy.SAMPLE_EPS and masks.max() <= 1 - policy.SAMPLE_EPS


def test_kappa_schedule():
    assert policy.kappa_schedule(5, 10) == 9.0
    assert policy.kappa_schedule(5, 10, start=4, end=12, kind="linear") == pytest.approx(8.0)
    assert policy.kappa_schedule(10, 10, start=4, end=12, kind="cosine") == pytest.approx(12.0)
    with pytest.raises(ValueError):
        policy.kappa_schedule(1, 10, start=1, end=2, kind="exp")


# --------------------------------------------------------------------------- Beta terms in closed form
@pytest.mark.parametrize("kappa", [1.0, 9.0, 30.0])
def test_closed_form_beta_terms_match_scipy_and_the_policy(kappa):
    P = torch.tensor([0.0, 1e-7, 0.1, 0.5, 0.83, 1.0 - 1e-7, 1.0]).reshape(7, 1, 1, 1)
    masks = torch.tensor([[0.05, 0.3], [0.5, 0.0], [0.7, 0.95], [0.2, 1.0], [0.6, 0.01], [0.99, 0.4], [0.5, 1e-9]])
    masks = masks.reshape(7, 2, 1, 1)
    a, b = (1 + kappa * P).double().numpy(), (1 + kappa * (1 - P)).double().numpy()
    m = masks.float().clamp(1e-6, 1 - 1e-6).double().numpy()  # clamped in float32, as the policy does
    np.testing.assert_allclose(beta_log_prob(P, masks, kappa).double().numpy(), scipy.stats.beta.logpdf(m, a, b),
                               rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(beta_log_prob(P, masks, kappa), beta_ref.log_prob(P, masks, kappa), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(beta_entropy(P, kappa).double().numpy(), scipy.stats.beta.entropy(a, b),
                               rtol=1e-4, atol=1e-5)
    P_old = P.flip(0)
    a0, b0 = (1 + kappa * P_old).double().numpy(), (1 + kappa * (1 - P_old)).double().numpy()
    lbeta = lambda x, y: scipy.special.betaln(x, y)  # noqa: E731
    psi = scipy.special.digamma
    kl_ref = lbeta(a0, b0) - lbeta(a, b) + (a - a0) * psi(a) + (b - b0) * psi(b) + (a0 - a + b0 - b) * psi(a + b)
    np.testing.assert_allclose(beta_kl(P, P_old, kappa).double().numpy(), kl_ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(beta_kl(P, P_old, kappa), beta_ref.kl(P, P_old, kappa), rtol=1e-4, atol=1e-5)
    assert torch.all(beta_kl(P, P, kappa).abs() < 1e-5)


def test_closed_form_beta_gradients_match_the_policy():
    P = torch.rand(3, 1, 4, 5, generator=torch.Generator().manual_seed(0)).clamp(0.01, 0.99)
    masks = policy.sample_masks(P[:, 0], 9.0, 4)
    grads = []
    for fns in ((beta_log_prob, beta_entropy, beta_kl), (beta_ref.log_prob, beta_ref.entropy, beta_ref.kl)):
        x = P.clone().requires_grad_()
        (fns[0](x, masks, 9.0).sum() + fns[1](x, 9.0).sum() + fns[2](x, P.flip(0), 9.0).sum()).backward()
        grads.append(x.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kappa", [9.0, 300.0])
def test_shared_update_terms_equal_scipy_and_their_gradients_the_policy(kappa):
    """beta_policy_terms (one lgamma / digamma evaluation for log-prob, entropy and KL) against
    scipy's values and against torch.distributions' gradients."""
    P = torch.tensor([0.0, 0.02, 0.5, 0.83, 1.0]).reshape(5, 1, 1, 1)
    masks = torch.tensor([[0.05, 0.3], [0.5, 1e-3], [0.7, 0.95], [0.2, 0.99], [0.6, 0.999]]).reshape(5, 2, 1, 1)
    P_old = torch.tensor([0.1, 0.0, 0.45, 0.9, 0.97]).reshape(5, 1, 1, 1)
    logp, ent, kl = policy.beta_policy_terms(P, *policy.mask_logs(masks), kappa, P_old)
    a, b = (1 + kappa * P).double().numpy(), (1 + kappa * (1 - P)).double().numpy()
    a0, b0 = (1 + kappa * P_old).double().numpy(), (1 + kappa * (1 - P_old)).double().numpy()
    m = masks.float().clamp(1e-6, 1 - 1e-6).double().numpy()
    np.testing.assert_allclose(logp.double().numpy(), scipy.stats.beta.logpdf(m, a, b), rtol=1e-4, atol=2e-3)
    np.testing.assert_allclose(ent.double().numpy(), scipy.stats.beta.entropy(a, b), rtol=1e-4, atol=1e-3)
    psi, lbeta = scipy.special.digamma, scipy.special.betaln
    kl_ref = lbeta(a0, b0) - lbeta(a, b) + (a - a0) * psi(a) + (b - b0) * psi(b) + (a0 - a + b0 - b) * psi(a + b)
    np.testing.assert_allclose(kl.double().numpy(), kl_ref, rtol=1e-4, atol=2e-3)
    assert policy.beta_policy_terms(P, *policy.mask_logs(masks), kappa)[2] is None
    grads = []
    for shared in (True, False):
        x = P.clamp(0.01, 0.99).clone().requires_grad_()
        if shared:
            lp, h, k = policy.beta_policy_terms(x, *policy.mask_logs(masks), kappa, P_old)
        else:
            lp, h, k = beta_ref.log_prob(x, masks, kappa), beta_ref.entropy(x, kappa), beta_ref.kl(x, P_old, kappa)
        (lp.sum() + h.sum() + k.sum()).backward()
        grads.append(x.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-3)

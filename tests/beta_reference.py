"""The test oracle for the Beta policy: ``torch.distributions.Beta`` (Dirichlet-based, independent of
the closed forms in :mod:`mars_core.rl.policy`), on the policy's own parameters and sample clamp."""

from __future__ import annotations

import torch
from torch.distributions import Beta, kl_divergence

from mars_core.rl.policy import beta_params, clamp_sample


def distribution(P: torch.Tensor, kappa: float) -> Beta:
    """The per-bin ``torch.distributions.Beta`` of a mask proposal."""
    return Beta(*beta_params(P, kappa), validate_args=False)


def log_prob(P: torch.Tensor, mask: torch.Tensor, kappa: float) -> torch.Tensor:
    """Per-bin ``log Beta(mask; alpha(P), beta(P))``; broadcasts ``P`` against ``mask``.

    Shape:
        P: ``(batch, 1, F, T)`` or ``(batch, G, F, T)``; mask: ``(batch, G, F, T)``; returns like mask.
    """
    return distribution(P, kappa).log_prob(clamp_sample(mask))


def entropy(P: torch.Tensor, kappa: float) -> torch.Tensor:
    """Per-bin differential entropy of the Beta policy (nats); same shape as ``P``."""
    return distribution(P, kappa).entropy()


def kl(P_new: torch.Tensor, P_old: torch.Tensor, kappa: float) -> torch.Tensor:
    """Per-bin ``KL(pi_new || pi_old)`` between the two Beta policies (closed form of torch.distributions)."""
    return kl_divergence(distribution(P_new, kappa), distribution(P_old, kappa))

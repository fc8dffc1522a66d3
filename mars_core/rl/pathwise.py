"""The pathwise (reparameterised) gradient of a differentiable reward (``RLConfig.estimator = "pathwise"``).

The score-function estimator differentiates ``log pi(M)`` and weighs it by the reward; the pathwise
estimator differentiates the reward itself through the sample. A Beta draw is a differentiable
function of its parameters and of noise (torch's ``Beta.rsample``, implicit reparameterisation of
the gamma variates), so with ``M = M(P, noise)``::

    grad_theta E_M[R(M)] = E_noise[ dR/dM . dM/dP . dP/dtheta ]

one backward pass per sample, no baseline, and a noise that does not grow with the number of bins.
Only the signal term is differentiable here (mask -> iSTFT -> clamped SI-SDR / 10,
:func:`~mars_core.rl.rewards.signal_term`); the semantic and contamination terms come from the
frozen encoder under ``no_grad`` and are left out. It is the reference the diagnostics compare the
score-function estimators with (``scripts/rl_gradient_check.py``).
"""

from __future__ import annotations

import torch

from ..audio import FrontEnd
from .policy import beta_entropy, beta_kl, rsample_masks
from .rewards import signal_term
from .rollout import reconstruct_group


def pathwise_rewards(P: torch.Tensor, mixtures: torch.Tensor, sources: torch.Tensor, fe: FrontEnd, kappa: float,
                     group_size: int) -> torch.Tensor:
    """Signal rewards of ``group_size`` reparameterised masks per item, differentiable in ``P``.

    Shape:
        P ``(N, F, T)`` with ``N = B K`` (item ``b K + k``); mixtures ``(B, samples)``; sources ``(B, K, samples)``;
        returns ``(N, G)`` float32.
    """
    n, b = int(P.shape[0]), int(mixtures.shape[0])
    masks = rsample_masks(P, kappa, group_size)  # (N, G, F, T)
    wav = reconstruct_group(fe, masks.reshape(b, n // b, group_size, *masks.shape[-2:]), mixtures)
    refs = sources.reshape(n, 1, -1).expand(-1, group_size, -1)
    return signal_term(wav.reshape(n * group_size, -1), refs.reshape(n * group_size, -1)).reshape(n, group_size)


def pathwise_loss(P: torch.Tensor, P_old: torch.Tensor, mixtures: torch.Tensor, sources: torch.Tensor, fe: FrontEnd,
                  kappa: float, group_size: int, lambda_sig: float, ent_coef: float,
                  kl_coef: float) -> tuple[torch.Tensor, dict[str, float]]:
    """``-lambda_sig mean(R) - ent_coef mean(entropy) + kl_coef mean(KL(pi || pi_old))`` with the statistics of
    :func:`~mars_core.rl.ppo.ppo_loss` (``pg_loss`` is the first term; ``approx_kl`` the exact mean KL, 0 without
    the KL term; no ratio is formed, so ``clipfrac`` is 0 and ``ratio_mean`` 1).

    Shape:
        P, P_old ``(N, 1, F, T)``; mixtures, sources as in :func:`pathwise_rewards`; the loss is a scalar.
    """
    rewards = pathwise_rewards(P[:, 0], mixtures, sources, fe, kappa, group_size)
    ent = beta_entropy(P, kappa)
    kl = beta_kl(P, P_old.detach(), kappa) if kl_coef > 0 else None
    pg_loss = -lambda_sig * rewards.mean()
    kl_loss = kl.mean() if kl is not None else torch.zeros((), device=P.device)
    loss = pg_loss - ent_coef * ent.mean() + kl_coef * kl_loss
    stats = {"loss": loss.item(), "pg_loss": pg_loss.item(), "entropy_loss": ent.mean().item(),
             "kl_loss": kl_loss.item(), "approx_kl": kl_loss.item(), "clipfrac": 0.0, "ratio_mean": 1.0}
    return loss, stats

"""The clipped PPO surrogate with per-bin ratios, entropy bonus and KL penalty (docs/method.md section 6).

For each bin of each sampled mask (CleanRL's names)::

    logratio = log pi_theta(M) - log pi_old(M)
    ratio    = exp(logratio)   (logratio bounded to [-20, 20], gradient passed through: below)
    pg_loss  = mean( max(-A * ratio, -A * clip(ratio, 1 - eps, 1 + eps)) )
    loss     = pg_loss - ent_coef * mean(entropy) + kl_coef * mean(KL(pi_theta || pi_old))

``max`` of the negated terms is ``-min`` of the surrogate terms: with ``A > 0`` the
objective stops rewarding increases of the ratio beyond ``1 + eps``; with ``A < 0`` it
stops rewarding decreases below ``1 - eps``. There the gradient of ``pg_loss`` is zero.

**Bounded ratio.** Per-bin log-ratios of a Beta policy grow with kappa: once the policy has
moved at kappa >= 1e3 a bin's ``logratio`` can exceed 88.7, where ``exp`` overflows float32.
Then ``-A * ratio`` is ``inf`` for ``A < 0`` (an infinite loss), and for ``A > 0`` the
backward pass of ``exp`` multiplies the clipped branch's zero gradient by ``inf`` (NaN
gradients). :func:`bounded_ratio` therefore evaluates ``exp`` at ``logratio`` clamped to
``[-LOGRATIO_BOUND, LOGRATIO_BOUND]`` (20: ratios in [2.1e-9, 4.9e8]) and passes the gradient
straight through the clamp. Case by case against the unbounded surrogate:

* ``|logratio| <= 20``: the same value and the same gradient, bit for bit;
* ``logratio > 20`` with ``A > 0`` and ``logratio < -20`` with ``A < 0``: the clipped branch is
  selected either way, so the value (``-A (1 +/- eps)``) is the same and the gradient is 0 in both;
* ``logratio > 20`` with ``A < 0``: the unclipped branch ``-A ratio`` is selected (PPO does *not*
  zero this gradient: it is what pulls a ratio that moved the wrong way back). The bounded
  version keeps its sign with magnitude ``|A| e^20`` instead of ``|A| ratio`` (``inf`` beyond
  88.7), and the global gradient-norm clip rescales it anyway. A plain ``clamp`` would give 0
  here, dropping exactly the most corrective gradients, which is why the gradient is passed through;
* ``logratio < -20`` with ``A > 0``: the unclipped branch again; the gradient is ``-A e^-20``
  instead of ``-A ratio``, both below ``2.1e-9 |A|``.

The diagnostics (``approx_kl``, ``clipfrac``, ``ratio_mean``) use the bounded ratio too.
"""

from __future__ import annotations

import torch

LOGRATIO_BOUND = 20.0
"""Per-bin log-ratios are clamped to [-20, 20] before ``exp`` (gradient passed through): module docstring."""


def bounded_ratio(logratio: torch.Tensor, bound: float = LOGRATIO_BOUND) -> torch.Tensor:
    """``exp(clamp(logratio, -bound, bound))`` whose gradient with respect to ``logratio`` is that value
    everywhere (straight through the clamp): finite for every finite ``logratio``.

    Shape: any; returns the same shape.
    """
    clamped = logratio.detach().clamp(-bound, bound)
    return torch.exp(clamped + (logratio - logratio.detach()))


def clipped_surrogate(logratio: torch.Tensor, advantages: torch.Tensor, clip_eps: float) -> torch.Tensor:
    """Per-element clipped policy-gradient loss ``max(-A r, -A clip(r, 1-eps, 1+eps))``.

    Shape:
        logratio: ``(batch, G, F, T)`` (or any shape); advantages broadcastable to it,
          e.g. ``(batch, G, 1, 1)``; returns the broadcast shape.
    """
    return _surrogate(bounded_ratio(logratio), advantages, clip_eps)


def _surrogate(ratio: torch.Tensor, advantages: torch.Tensor, clip_eps: float) -> torch.Tensor:
    pg_loss1 = -advantages * ratio
    pg_loss2 = -advantages * torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    return torch.max(pg_loss1, pg_loss2)


def ppo_loss(
    new_logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    entropy: torch.Tensor,
    kl: torch.Tensor | None = None,
    clip_eps: float = 0.2,
    ent_coef: float = 0.1,
    kl_coef: float = 0.01,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss and diagnostics for one minibatch.

    Shape:
        new_logp, old_logp: ``(batch, G, F, T)`` per-bin log-probs of the sampled masks.
        advantages: ``(batch, G)``, one per sampled mask, or per bin broadcastable to the log-probs (e.g.
          ``(batch, G, 1, T)``: dense segment rewards, :func:`~mars_core.rl.segments.bin_advantages`); fixed
          for the whole update.
        entropy: per-bin entropy of the current policy, e.g. ``(batch, 1, F, T)``.
        kl: per-bin ``KL(pi_theta || pi_old)`` or ``None`` (then no KL term).

    Returns:
        ``loss`` (scalar tensor) and ``stats``: ``pg_loss``, ``entropy_loss``, ``kl_loss``,
        ``approx_kl`` (k3 estimator ``(ratio - 1) - logratio``), ``clipfrac``, ``ratio_mean``.
    """
    if new_logp.shape != old_logp.shape:
        raise ValueError(f"log-prob shapes differ: {tuple(new_logp.shape)} vs {tuple(old_logp.shape)}")
    per_bin = advantages.dim() == new_logp.dim() and advantages.shape[:2] == new_logp.shape[:2] and all(
        a in (1, n) for a, n in zip(advantages.shape[2:], new_logp.shape[2:]))
    if advantages.shape != new_logp.shape[:2] and not per_bin:
        raise ValueError(f"advantages must be {tuple(new_logp.shape[:2])} (one per mask) or broadcast to "
                         f"{tuple(new_logp.shape)} (per bin), got {tuple(advantages.shape)}")
    logratio = new_logp - old_logp.detach()
    adv = advantages.detach() if per_bin else advantages.detach().reshape(*advantages.shape, *([1] * (new_logp.dim() - 2)))
    ratio = bounded_ratio(logratio)
    pg_loss = _surrogate(ratio, adv, clip_eps).mean()
    entropy_loss = entropy.mean()
    kl_loss = kl.mean() if kl is not None else torch.zeros((), device=new_logp.device)
    loss = pg_loss - ent_coef * entropy_loss + kl_coef * kl_loss
    with torch.no_grad():
        ratio, logratio = ratio.detach(), logratio.detach().clamp(-LOGRATIO_BOUND, LOGRATIO_BOUND)
        stats = {
            "loss": loss.item(),
            "pg_loss": pg_loss.item(),
            "entropy_loss": entropy_loss.item(),
            "kl_loss": kl_loss.item(),
            "approx_kl": ((ratio - 1) - logratio).mean().item(),
            "clipfrac": ((ratio - 1.0).abs() > clip_eps).float().mean().item(),
            "ratio_mean": ratio.mean().item(),
        }
    return loss, stats

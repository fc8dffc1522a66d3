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

**One pass per step of the formula.** :func:`ppo_loss` evaluates ``mean(max(-A r, -A clip(r)))`` and its gradient
with :class:`_ClippedSurrogateMean`, which writes the gradient out instead of letting autograd walk ``exp``,
both products, ``clamp`` and ``maximum`` (about 30 passes over the per-bin tensors become about 15; the update's
share of an RL step drops by a third). Same values, same gradient bit for bit: where ``max`` picks ``-A r``
strictly, or ``r`` lies inside the clip range (both branches equal, autograd gives each half), the gradient is
``(g (-A)) r`` with ``g`` the mean's ``1 / numel``; elsewhere it is 0 (``tests/test_rl_fast_paths.py`` compares
with the autograd form). A non-finite log-ratio takes the autograd form, so NaN and inf propagate as they did.
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


class _ClippedSurrogateMean(torch.autograd.Function):
    """``mean(_surrogate(bounded_ratio(logratio), advantages, clip_eps))`` with its gradient written out (module
    docstring), for a finite ``logratio``. Also returns the bounded ratio and the clamped log-ratio (no gradient)."""

    @staticmethod
    def forward(ctx, logratio: torch.Tensor, advantages: torch.Tensor, clip_eps: float):
        clamped = logratio.detach().clamp(-LOGRATIO_BOUND, LOGRATIO_BOUND)
        ratio = torch.exp(clamped)  # bounded_ratio's value: clamped + (logratio - logratio) is clamped when finite
        neg = -advantages
        pg1 = neg * ratio
        clipped = torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
        pg2 = neg * clipped
        pg_loss = torch.max(pg1, pg2).mean()
        # d max(pg1, pg2) / d ratio = -A where max takes pg1 alone, or both are equal inside the clip range
        # (half from each branch); 0 where it takes the clipped branch. Equal branches outside the range
        # mean A = 0, whose gradient is 0 either way, so 'pg1 >= pg2' is the whole condition
        keep = pg1 >= pg2
        ctx.save_for_backward(ratio, neg, keep)
        ctx.numel = ratio.numel()
        ctx.mark_non_differentiable(ratio, clamped)
        return pg_loss, ratio, clamped

    @staticmethod
    def backward(ctx, grad, _grad_ratio, _grad_clamped):
        ratio, neg, keep = ctx.saved_tensors
        g = grad / ctx.numel  # the mean's gradient per element, as autograd divides it
        d = (g * neg) * ratio  # the product's gradient (-A g), then exp's (times its result)
        return torch.where(keep, d, torch.zeros((), dtype=d.dtype, device=d.device)), None, None


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
    if bool(torch.isfinite(logratio.detach().sum())):  # every log-ratio finite: the written-out gradient
        pg_loss, ratio, clamped = _ClippedSurrogateMean.apply(logratio, adv, clip_eps)
    else:
        ratio = bounded_ratio(logratio)
        pg_loss = _surrogate(ratio, adv, clip_eps).mean()
        clamped = logratio.detach().clamp(-LOGRATIO_BOUND, LOGRATIO_BOUND)
    entropy_loss = entropy.mean()
    kl_loss = kl.mean() if kl is not None else torch.zeros((), device=new_logp.device)
    loss = pg_loss - ent_coef * entropy_loss + kl_coef * kl_loss
    with torch.no_grad():
        ratio = ratio.detach()
        excess = ratio - 1  # shared by approx_kl and clipfrac
        stats = {
            "loss": loss.item(),
            "pg_loss": pg_loss.item(),
            "entropy_loss": entropy_loss.item(),
            "kl_loss": kl_loss.item(),
            "approx_kl": (excess - clamped).mean().item(),
            "clipfrac": (excess.abs() > clip_eps).float().mean().item(),
            "ratio_mean": ratio.mean().item(),
        }
    return loss, stats

"""One PPO/GRPO update (docs/method.md section 6): the optimiser, the advantages of a batch, and
``ppo_epochs`` passes of the clipped surrogate over shuffled minibatches of one rollout.

Minibatches split the mixtures (all ``K`` items of a mixture share its U-Net pass), in an order
drawn from ``item_rng(seed, "rl-minibatch", step, epoch)``; advantages are computed once per batch
and never re-normalised per minibatch. Non-finite values are skipped, not stepped
(:attr:`RLConfig.max_skipped_updates`, :func:`check_skipped`). Several ranks (torchrun) run the one-process
minibatches, each on the mixtures of each minibatch that it holds, with gradients averaged over the ranks before
the clip and the step.
"""

from __future__ import annotations

import contextlib
import math

import torch

from .. import distributed
from ..config import RLConfig
from ..precision import autocast
from ..seeding import item_rng
from .advantages import EMABaseline, group_advantages, loo_advantages
from .head import folded_logits, head_input
from .pathwise import pathwise_loss
from .policy import beta_policy_terms
from .ppo import ppo_loss
from .rollout import Rollout, proposal_from_trunk, remainder_references
from .segments import bin_advantages, segment_advantages

PATHWISE_RANKS = ("estimator='pathwise' does not run under torchrun: each update draws reparameterised masks for "
                  "its whole minibatch, which no rank holds; run it as one process (python -m mars_core.rl ...)")
"""Why the pathwise estimator refuses several ranks."""

PPO_STATS = ("loss", "pg_loss", "entropy_loss", "kl_loss", "approx_kl", "clipfrac", "ratio_mean", "grad_norm")
"""What :func:`ppo_update` averages over a step's updates."""


def trainable_parameters(model: torch.nn.Module, trainable: str) -> list[torch.nn.Parameter]:
    """Set ``requires_grad`` for RL and return the trained parameters: all of them (``"all"``) or
    the last up-path layer and the query fusion (``"head"``, :meth:`QuerySeparator.head_parameter_names`)."""
    names = set(model.head_parameter_names()) if trainable == "head" else None
    params = []
    for n, p in model.named_parameters():
        p.requires_grad_(names is None or n in names)
        if p.requires_grad:
            params.append(p)
    return params


def make_optimizer(model: torch.nn.Module, cfg: RLConfig) -> torch.optim.Optimizer:
    """The RL optimizer over :func:`trainable_parameters`: AdamW, or SGD when ``cfg.optimizer == "sgd"``.

    Why SGD is offered: Adam divides every weight's step by the running size of its own gradient,
    so a weight whose policy gradient is almost pure sampling noise still moves by about ``lr``
    each update; with SGD a weight moves in proportion to its (clipped) gradient.
    """
    params = trainable_parameters(model, cfg.trainable)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def advantages(rewards: torch.Tensor, cfg: RLConfig, ema: EMABaseline | None) -> tuple[torch.Tensor, float]:
    """Advantages of one batch. Shape: rewards ``(N, G)`` -> ``(N, G)`` and ``frac_zero_std``; segment rewards
    ``(N, G, S)`` -> ``(N, G, S)``, each segment's ``G`` rewards normalised as one group ('group', 'loo'; 'ema' and
    'none' take every reward of the batch alike).

    ``advantage="none"`` returns zeros (``frac_zero_std`` 1): the policy-gradient term vanishes and
    what still trains is the entropy bonus and the KL term, the ablation that tells what the
    reward teaches from what the regularisers do. Non-finite rewards give zeros and ``frac_zero_std``
    NaN (:func:`ppo_update` then skips the step)."""
    if not torch.isfinite(rewards).all():  # the step is skipped (ppo_update); the EMA baseline is not touched
        return torch.zeros_like(rewards), float("nan")
    per_group = {"group": group_advantages, "loo": loo_advantages}.get(cfg.advantage)
    if per_group is not None:
        return segment_advantages(rewards, per_group) if rewards.dim() == 3 else per_group(rewards)
    if cfg.advantage == "none":
        return torch.zeros_like(rewards), 1.0
    return ema(rewards)


def minibatch_loss(model: torch.nn.Module, ro: Rollout, adv: torch.Tensor, mb: torch.Tensor,
                   cfg: RLConfig, fe=None, trunk=None) -> tuple[torch.Tensor, dict[str, float]]:
    """The clipped-surrogate loss (:func:`~mars_core.rl.ppo.ppo_loss`) of the mixtures ``mb`` of a rollout.

    With ``cfg.trainable == "head"`` the frozen trunk's output is taken from the rollout (it is the same
    for the old and the new policy), so only the last layer and the query fusion run: from the rollout's
    ``head_input`` (the head's parameter-free layers already applied) with the fusion folded into the
    convolution (:mod:`~mars_core.rl.head`: the same ``P`` up to float32 rounding) when it has one. Segment advantages
    ``(N, G, S)`` credit each bin with its frame's segment's (:func:`~mars_core.rl.segments.bin_advantages`).
    ``cfg.estimator == "pathwise"``: :func:`~mars_core.rl.pathwise.pathwise_loss` on fresh reparameterised
    masks of the current policy (``fe``, the front end, rebuilds their waveforms; ``adv`` is not used).
    ``trunk``: what computes ``model.unet.trunk`` when the whole network trains (a compiled
    :class:`~mars_core.rl.rollout.Trunk` of ``model`` under ``--compile``); ``None`` calls the model's own.

    Shape:
        adv ``(N, G)`` or ``(N, G, S)``; mb ``(b,)`` mixture indices; the loss is a scalar.
    """
    k = ro.queries.shape[1]
    trunk = trunk if trunk is not None else model.unet.trunk
    items = (mb[:, None] * k + torch.arange(k, device=mb.device)).reshape(-1)
    with autocast(ro.features.device):  # the forward pass only: log-densities, advantages and the loss stay fp32
        if ro.head_input is not None:  # the rollout's head is foldable (mars_core.rl.head)
            if cfg.trainable == "head":
                logits = folded_logits(model, ro.head_input, ro.queries[mb], rows=mb)
            else:
                logits = folded_logits(model, head_input(model, trunk(ro.features[mb])), ro.queries[mb])
            P = torch.sigmoid(logits).float().reshape(-1, 1, *logits.shape[-2:])  # (bK, 1, F, T)
        else:
            out = ro.trunk[mb] if cfg.trainable == "head" else trunk(ro.features[mb])
            P = proposal_from_trunk(model, out, ro.queries[mb]).float().unsqueeze(1)  # (bK, 1, F, T)
    if cfg.estimator == "pathwise":  # the signal term's references: the clean sources, or the old modes' remainders
        refs = (ro.batch.sources[mb] if cfg.signal_reference == "source" else
                remainder_references(fe, ro.P_old[items], ro.batch.mixtures[mb]).reshape(len(mb), k, -1))
        return pathwise_loss(P, ro.P_old[items].unsqueeze(1), ro.batch.mixtures[mb], refs, fe,
                             ro.kappa, ro.group_size, cfg.lambda_sig, cfg.ent_coef, cfg.kl_coef)
    new_logp, ent, kl_t = beta_policy_terms(P, ro.mask_logit[items], ro.mask_log1m[items], ro.kappa,
                                            ro.P_old[items].unsqueeze(1) if cfg.kl_coef > 0 else None)
    a = bin_advantages(adv[items], ro.frame_segment) if adv.dim() == 3 else adv[items]
    return ppo_loss(new_logp, ro.old_logp[items], a, ent, kl_t, clip_eps=cfg.clip_eps,
                    ent_coef=cfg.ent_coef, kl_coef=cfg.kl_coef)


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device):
    """The torch generator (and the device's) seeded with ``seed`` inside, restored after."""
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        yield


def _step(opt: torch.optim.Optimizer, loss: torch.Tensor, stats: dict[str, float], grad_clip: float) -> str:
    """Backward, clip, and step unless the loss or the gradient norm is not finite; ``""`` or why it was skipped."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    return _clip_and_step(opt, stats, grad_clip)


_RANK_STATS = ("loss", "pg_loss", "entropy_loss", "kl_loss", "approx_kl", "clipfrac", "ratio_mean")
"""The statistics of :func:`~mars_core.rl.ppo.ppo_loss`: each a mean over the minibatch's items."""


def _step_ranks(opt: torch.optim.Optimizer, model: torch.nn.Module, ro: Rollout, adv: torch.Tensor,
                mine: torch.Tensor, n_minibatch: int, cfg: RLConfig, trunk=None) -> tuple[str, dict[str, float]]:
    """One update of several ranks: this rank holds mixtures ``mine`` (local indices, maybe none) of a minibatch of
    ``n_minibatch`` mixtures of the whole batch.

    The rank's mean loss is weighted by ``w = n_r W / n`` (``n_r`` of the ``n`` mixtures here, ``W`` ranks), so the
    average of the ranks' gradients (:func:`mars_core.distributed.average_gradients`) is the gradient of the mean
    loss over the minibatch's ``n`` mixtures, and the statistics ``sum_r w_r stat_r / W`` its one-process values;
    then the one-process clip (of the global gradient's norm, the same on every rank) and step. Every rank makes the
    same skip decision: the loss and the gradient norm it tests are the global ones.
    """
    world = distributed.world_size()
    weight = len(mine) * world / n_minibatch
    opt.zero_grad(set_to_none=True)
    values = [0.0] * len(_RANK_STATS)
    if len(mine):
        loss, stats = minibatch_loss(model, ro, adv, mine.to(ro.features.device), cfg, trunk=trunk)
        (loss * weight).backward()
        values = [stats[k] * weight for k in _RANK_STATS]
    params = [p for g in opt.param_groups for p in g["params"]]
    distributed.average_gradients(params)
    stats = {k: v / world for k, v in zip(_RANK_STATS, distributed.total(values, ro.features.device))}
    return _clip_and_step(opt, stats, cfg.grad_clip), stats


def _clip_and_step(opt: torch.optim.Optimizer, stats: dict[str, float], grad_clip: float) -> str:
    """Clip the gradients' norm and step unless the loss or that norm is not finite (``stats["loss"]``; the norm is
    written to ``stats["grad_norm"]``); ``""`` or why it was skipped."""
    params = [p for g in opt.param_groups for p in g["params"]]
    stats["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, grad_clip))
    if not (math.isfinite(stats["loss"]) and math.isfinite(stats["grad_norm"])):
        opt.zero_grad(set_to_none=True)  # skipped: no step, so weights and optimiser state stay
        return f"loss {stats['loss']}" if not math.isfinite(stats["loss"]) else f"gradient norm {stats['grad_norm']}"
    opt.step()
    return ""


def ppo_update(model: torch.nn.Module, opt: torch.optim.Optimizer, ro: Rollout, adv: torch.Tensor, cfg: RLConfig,
               step: int, fe=None, trunk=None) -> dict[str, float]:
    """``ppo_epochs x minibatches`` clipped updates on one rollout; the mean of each statistic.

    ``cfg.estimator == "pathwise"`` needs ``fe`` (the front end); each update draws its reparameterised masks
    with the torch generator seeded from ``item_rng(cfg.seed, "rl-pathwise", step, epoch, minibatch)``. ``trunk``:
    as :func:`minibatch_loss`'s (used only when the whole network trains).

    Non-finite values (:attr:`RLConfig.max_skipped_updates`): when a reward is not finite no update
    runs; an update whose loss or gradient norm is not finite is skipped before ``opt.step`` (weights
    and optimiser state unchanged). ``skipped_updates`` counts them and ``skip_reason`` (a string,
    present only then) says what was not finite; the statistics are means over the updates that ran.

    Under torchrun (:mod:`mars_core.distributed`) ``ro`` and ``adv`` hold this rank's mixtures of the batch (its
    :func:`~mars_core.distributed.part`); the minibatches are the one-process run's, over the whole batch, and each
    rank trains on the mixtures of each that it holds (:func:`_step_ranks`); the statistics are the global ones.
    """
    world = distributed.world_size()
    bad = int((~torch.isfinite(ro.rewards)).sum())
    n_rewards = ro.rewards.numel()
    if world > 1:  # every rank skips the step together
        if cfg.estimator == "pathwise":
            raise ValueError(PATHWISE_RANKS)
        bad, n_rewards = (int(v) for v in distributed.total([bad, n_rewards], ro.features.device))
    if bad:
        return {**dict.fromkeys(PPO_STATS, float("nan")), "skipped_updates": float(cfg.ppo_epochs * cfg.minibatches),
                "skip_reason": f"{bad} of {n_rewards} rewards not finite"}
    adv = adv.to(ro.rewards.device)
    sums: dict[str, float] = {}
    n, skipped, reason = 0, 0, ""
    n_mix = ro.queries.shape[0]  # this rank's mixtures: n_mix r ... n_mix (r + 1) - 1 of the W n_mix of the batch
    first = distributed.rank() * n_mix
    for epoch in range(cfg.ppo_epochs):
        order = torch.as_tensor(item_rng(cfg.seed, "rl-minibatch", step, epoch).permutation(n_mix * world))
        for j, mb in enumerate(order.tensor_split(cfg.minibatches)):
            if world > 1:  # the one-process minibatch, each rank with the mixtures of it that it holds
                mine = mb[(mb >= first) & (mb < first + n_mix)] - first
                why, stats = _step_ranks(opt, model, ro, adv, mine, len(mb), cfg, trunk)
            elif cfg.estimator == "pathwise":
                seed = int(item_rng(cfg.seed, "rl-pathwise", step, epoch, j).integers(0, 2**63 - 1))
                with _seeded(seed, ro.features.device):
                    loss, stats = minibatch_loss(model, ro, adv, mb.to(ro.features.device), cfg, fe, trunk)
                why = _step(opt, loss, stats, cfg.grad_clip)
            else:
                loss, stats = minibatch_loss(model, ro, adv, mb.to(ro.features.device), cfg, trunk=trunk)
                why = _step(opt, loss, stats, cfg.grad_clip)
            if why:
                skipped += 1
                reason = reason or why
                continue
            for key, v in stats.items():
                sums[key] = sums.get(key, 0.0) + v
            n += 1
    out = {key: sums[key] / n if n else float("nan") for key in PPO_STATS}
    out["skipped_updates"] = float(skipped)
    if skipped:
        out["skip_reason"] = f"{reason} (epoch/minibatch update of step {step})"
    return out


def check_skipped(history: dict, stats: dict, cfg: RLConfig, step: int) -> None:
    """Raise ``FloatingPointError`` once more than ``cfg.max_skipped_updates`` updates were skipped in total
    (``history["skipped_updates"]`` already holds this step's count)."""
    total = int(sum(history["skipped_updates"]))
    if total > cfg.max_skipped_updates:
        raise FloatingPointError(
            f"RL step {step}: {total} updates skipped for non-finite values, more than max_skipped_updates="
            f"{cfg.max_skipped_updates} (this step: {stats.get('skip_reason', 'none')}). The weights are those "
            "before the skipped updates; last.pt holds the last checkpointed step. Lower lr or kappa, check the "
            "reward's inputs, or allow more skips (--set max_skipped_updates=N)")

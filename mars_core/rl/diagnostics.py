"""How good is the policy gradient? The exact gradient of what we evaluate, and the PPO/GRPO estimate.

At test time the separator acts with its mode ``P``. On a training batch the mean SI-SDR of the
mode's waveforms is differentiable in the weights (through the iSTFT), so its exact gradient
``g*`` is one backward pass away. RL never computes it: its update follows a sampling estimate
of the gradient of the *sampled* masks' expected reward. The cosine between the two says how
much of an update moves the quantity we evaluate (``scripts/rl_gradient_check.py`` prints it
per ``kappa``; notebook 04 discusses the numbers).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch

from ..alignment.stack import load_reward_stack
from ..audio import FrontEnd
from ..commands import start_command
from ..config import RLConfig, get_profile, rl_preset
from ..encoders.load import load_query_encoder
from ..metrics import si_sdr
from ..queries import load_or_build_query_bank
from ..seeding import seed_everything
from ..supervised import load_or_train, load_separator
from .advantages import EMABaseline, group_advantages
from .cli import parse_overrides
from .policy import beta_policy_terms
from .ppo import ppo_loss
from .rewards import RewardModel, interferer_cosine, reward_bank, target_cosine
from .rollout import RLBatch, proposal_from_trunk, reconstruct_group, rollout
from .update import advantages, minibatch_loss


@dataclass
class Setup:
    """What the RL sanity scripts start from: the profile, the preset's config, the query bank,
    the supervised separator, the reward stack with its bank, the front end and the reward model,
    the models on ``device``."""

    prof: Any
    cfg: Any
    bank: Any
    separator: torch.nn.Module
    stack: Any
    rbank: Any
    fe: FrontEnd
    reward_model: RewardModel
    device: torch.device = torch.device("cpu")


def setup_from_args(args) -> Setup:
    """:func:`load_setup` for parsed :func:`~mars_core.rl.cli.base_parser` options, after setting the threads and
    seeding everything with 0 (``--device`` resolved by :func:`mars_core.device.device_from_args`)."""
    _, device = start_command(args)
    seed_everything(0)
    return load_setup(args.profile, args.preset, parse_overrides(args.set), device=device,
                      separator_path=getattr(args, "separator", None),
                      aligned=not getattr(args, "unaligned_reward", False))


def load_setup(profile: str | None, preset: str = "plus", overrides: dict | None = None,
               device: str | torch.device = "cpu", separator_path: str | None = None, aligned: bool = True) -> Setup:
    """The cached models of ``profile`` and ``rl_preset(profile, preset)`` with ``overrides`` (RLConfig fields),
    the separator and the reward stack on ``device``. ``separator_path``: a separator checkpoint to start from
    as it is (:func:`~mars_core.supervised.store.load_separator`), instead of the profile's (which trains one
    when none matches the current supervised config). ``aligned=False``: the reward stack of the query encoder
    before progressive alignment (:func:`~mars_core.alignment.stack.load_reward_stack`)."""
    prof, device = get_profile(profile), torch.device(device)
    cfg = replace(rl_preset(prof, preset), **(overrides or {}))
    bank = load_or_build_query_bank(load_query_encoder(prof).to(device), prof, progress=False)
    if separator_path:
        separator = load_separator(separator_path, map_location=device)[0]
    else:
        separator, _ = load_or_train(prof, bank=bank, progress=False, device=device)
    stack = load_reward_stack(prof, aligned=aligned)
    stack.encoder.to(device), stack.anchor.to(device)
    rm = RewardModel.from_config(stack, prof.audio.sample_rate, cfg)
    return Setup(prof, cfg, bank, separator, stack, reward_bank(stack, prof, progress=False), FrontEnd(prof.audio), rm,
                 device)


def flat(tensors) -> torch.Tensor:
    """One flat vector of a sequence of tensors (e.g. per-parameter gradients)."""
    return torch.cat([t.reshape(-1) for t in tensors])


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine similarity of two flat vectors (0 when either is zero)."""
    return float(a @ b / (a.norm() * b.norm()).clamp_min(1e-30))


def mode_si_sdr(model: torch.nn.Module, batch: RLBatch, fe: FrontEnd) -> torch.Tensor:
    """Mean SI-SDR (dB, each item clamped to [-30, 30]) of the mode ``P``'s waveforms against the
    clean targets, differentiable in the model's weights. Shape: returns a scalar."""
    P = proposal_from_trunk(model, model.unet.trunk(batch.features), batch.queries)
    wav = reconstruct_group(fe, P.reshape(batch.n_mixtures, -1, *P.shape[-2:]), batch.mixtures)
    return si_sdr(wav.reshape(batch.n_items, -1), batch.sources.reshape(batch.n_items, -1)).clamp(-30, 30).mean()


def mode_embeddings(model: torch.nn.Module, batch: RLBatch, fe: FrontEnd, encoder, sample_rate: int) -> torch.Tensor:
    """``encoder``'s audio embedding of the mode ``P``'s waveforms, differentiable in the model's weights
    (:meth:`~mars_core.encoders.base.TriModalEncoder.embed_audio` with ``grad=True``). Shape: ``(N items, D)``."""
    P = proposal_from_trunk(model, model.unet.trunk(batch.features), batch.queries)
    wav = reconstruct_group(fe, P.reshape(batch.n_mixtures, -1, *P.shape[-2:]), batch.mixtures)
    return encoder.embed_audio(wav.reshape(batch.n_items, -1).float(), sample_rate, batch_size=batch.n_items,
                               grad=True, resample=int(sample_rate) != int(encoder.sample_rate)).float()


def mode_encoder_reward(model: torch.nn.Module, batch: RLBatch, fe: FrontEnd, reward_model: RewardModel,
                        lambda_sem: float, lambda_neg: float) -> torch.Tensor:
    """Mean encoder terms of the reward of the mode ``P``'s waveforms, differentiable in the model's weights:
    ``lambda_sem cos(phi_a(y_P), z*) - lambda_neg cos(phi_a(y_P), z-)`` (the interferers' cosines averaged), the
    reward model's encoder embedding with its gradient (:func:`mode_embeddings`). No reference is read.
    Shape: returns a scalar."""
    a = mode_embeddings(model, batch, fe, reward_model.stack.encoder, reward_model.sample_rate)
    value = lambda_sem * target_cosine(a, batch.z)
    if lambda_neg:
        value = value - lambda_neg * interferer_cosine(a, batch.z_neg)
    return value.mean()


def exact_reward_gradient(model: torch.nn.Module, params: list[torch.nn.Parameter], batch: RLBatch, fe: FrontEnd,
                          reward_model: RewardModel, lambda_sem: float, lambda_neg: float) -> tuple[torch.Tensor, float]:
    """``(g, value)``: the gradient of :func:`mode_encoder_reward` with respect to ``params`` (flat): where the
    encoder's reward itself points at the mode, with no sampling noise (what every estimator of it estimates, up to
    the gap between the sampled masks' objective and the mode's)."""
    value = mode_encoder_reward(model, batch, fe, reward_model, lambda_sem, lambda_neg)
    return flat(torch.autograd.grad(value, params)), value.item()


def exact_judge_gradient(model: torch.nn.Module, params: list[torch.nn.Parameter], batch: RLBatch, fe: FrontEnd,
                         judge, sample_rate: int, targets: torch.Tensor) -> tuple[torch.Tensor, float]:
    """``(g, value)``: the gradient in ``params`` (flat) of the mean ``cos(judge(y_P), targets)`` of the mode's
    waveforms, ``targets`` ``(N items, D)`` being the judge's embeddings of each item's prompt (the benchmark's
    semantic score / 100): where the judge's score points at the mode."""
    value = target_cosine(mode_embeddings(model, batch, fe, judge, sample_rate), targets).mean()
    return flat(torch.autograd.grad(value, params)), value.item()


def exact_gradient(model: torch.nn.Module, params: list[torch.nn.Parameter], batch: RLBatch,
                   fe: FrontEnd) -> tuple[torch.Tensor, float]:
    """``(g*, value)``: the gradient of :func:`mode_si_sdr` with respect to ``params`` (flat) and its value."""
    value = mode_si_sdr(model, batch, fe)
    return flat(torch.autograd.grad(value, params)), value.item()


def first_update_gradient(model: torch.nn.Module, params: list[torch.nn.Parameter], batch: RLBatch, fe: FrontEnd,
                          reward_model: RewardModel, kappa: float, group_size: int, seed: int,
                          trainable: str = "head") -> torch.Tensor:
    """The ascent direction of the first PPO update on a fresh rollout: ``-grad pg_loss`` at ratio 1
    with group advantages (no entropy or KL term), i.e. the GRPO policy-gradient estimate.

    The rollout's policy is ``model`` itself (the old policy at the first update); ``trainable``
    as in :class:`~mars_core.config.RLConfig` (``"head"`` reuses the rollout's trunk output)."""
    ro = rollout(model, batch, fe, reward_model, kappa, group_size, seed=seed)
    adv, _ = group_advantages(ro.rewards)
    trunk = ro.trunk if trainable == "head" else model.unet.trunk(ro.features)
    P = proposal_from_trunk(model, trunk, ro.queries).float().unsqueeze(1)
    logp, ent, _ = beta_policy_terms(P, ro.mask_logit, ro.mask_log1m, kappa)
    loss, _ = ppo_loss(logp, ro.old_logp, adv, ent, None, ent_coef=0.0, kl_coef=0.0)  # clipping is inactive at ratio 1
    return -flat(torch.autograd.grad(loss, params))


def trainer_update_gradient(model: torch.nn.Module, params: list[torch.nn.Parameter], batch: RLBatch, fe: FrontEnd,
                            cfg: RLConfig, reward_model: RewardModel, seed: int) -> torch.Tensor:
    """The ascent direction of the trainer's *own* first PPO update on a fresh rollout of the whole batch (one
    minibatch, ratio 1): ``cfg``'s reward (every term ``reward_model`` has), advantages, reward segments, entropy
    and KL terms through :func:`~mars_core.rl.update.minibatch_loss`, which is what a training step follows.
    :func:`first_update_gradient` is its policy-gradient term alone with group advantages.

    ``model`` is also the old policy (the first update); ``cfg.trainable`` must match ``params``."""
    ro = rollout(model, batch, fe, reward_model, cfg.kappa, cfg.group_size, seed=seed,
                 reward_segments=cfg.reward_segments, signal_reference=cfg.signal_reference)
    adv, _ = advantages(ro.rewards, cfg, EMABaseline(cfg.ema_decay) if cfg.advantage == "ema" else None)
    loss, _ = minibatch_loss(model, ro, adv, torch.arange(batch.n_mixtures, device=adv.device), cfg, fe)
    return -flat(torch.autograd.grad(loss, params))


CANDIDATE_TERMS = ("semantic", "contamination", "residual_interferer", "residual_target", "consistency", "remainder")
"""Reference-free terms of the mode that :func:`mode_candidate_terms` computes (none reads a clean source)."""


def mode_candidate_terms(model: torch.nn.Module, batch: RLBatch, fe: FrontEnd, reward_model: RewardModel
                         ) -> dict[str, torch.Tensor]:
    """Reference-free reward terms of the mode ``P``'s waveforms ``y_k`` (item k of a mixture ``x``), each the mean
    over items, differentiable in the model's weights; ``phi`` is the reward encoder's audio tower:

    * ``semantic`` ``cos(phi(y_k), z*_k)`` and ``contamination`` ``cos(phi(y_k), z-_k)`` (the reward's terms);
    * ``residual_interferer`` ``cos(phi(x - y_k), z-_k)``: what the estimate leaves behind should sound like the
      other sources; ``residual_target`` ``cos(phi(x - y_k), z*_k)``: it should not sound like the target;
    * ``consistency`` ``-|sum_k y_k - x|^2 / |x|^2``: the estimates of one mixture's K queries should add up to it
      (no encoder; ``RLBatch`` holds every source of a mixture as an item);
    * ``remainder`` ``clamp(SI-SDR(y_k, x - sum_{j != k} sg(y_j)), -30, 30) / 10``: the signal term with the mixture
      less the other items' estimates (held fixed, as an old policy's would be) in place of the clean source.

    Shape: returns scalars."""
    P = proposal_from_trunk(model, model.unet.trunk(batch.features), batch.queries)
    wav = reconstruct_group(fe, P.reshape(batch.n_mixtures, -1, *P.shape[-2:]), batch.mixtures)  # (B, K, samples)
    residual = batch.mixtures.unsqueeze(1) - wav
    enc, sr = reward_model.stack.encoder, reward_model.sample_rate
    both = torch.cat([wav.reshape(batch.n_items, -1), residual.reshape(batch.n_items, -1)]).float()
    emb = enc.embed_audio(both, sr, batch_size=both.shape[0], grad=True,
                          resample=int(sr) != int(enc.sample_rate)).float()
    a, r = emb[:batch.n_items], emb[batch.n_items:]
    err = (wav.sum(1) - batch.mixtures).pow(2).sum(-1) / batch.mixtures.pow(2).sum(-1).clamp_min(1e-12)
    fixed = wav.detach()
    remainder = batch.mixtures.unsqueeze(1) - (fixed.sum(1, keepdim=True) - fixed)  # x - the other items' estimates
    rem = si_sdr(wav.reshape(batch.n_items, -1), remainder.reshape(batch.n_items, -1)).clamp(-30, 30) / 10
    return {"semantic": target_cosine(a, batch.z).mean(), "contamination": interferer_cosine(a, batch.z_neg).mean(),
            "residual_interferer": interferer_cosine(r, batch.z_neg).mean(),
            "residual_target": target_cosine(r, batch.z).mean(), "consistency": -err.mean(),
            "remainder": rem.mean()}

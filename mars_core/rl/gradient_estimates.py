"""Gradient estimates of one batch's reward, for the gradient-cosine diagnostics (``scripts/rl_gradient_check.py``).

On a fixed batch, with the trunk frozen (RL's ``trainable="head"``) and the reward the differentiable
signal term ``r(y) = clamp(SI-SDR(y, y*), -30, 30) / 10``:

* :func:`exact_mode_gradient`: ``g* = grad_theta mean_i r(y(P_i))``, the mode's objective (what is evaluated);
* :func:`score_gradient`: the score-function estimate ``mean_{i,g,f,t} A_{igft} grad log pi(M_{igft})`` from
  ``N = items x G`` sampled masks, with group or leave-one-out advantages, one per mask or one per time segment
  (dense segment rewards, each bin credited with its frame's segment's advantage);
* :func:`pathwise_gradient`: ``grad_theta mean_{i,g} r(y(M_ig))`` with reparameterised masks (``Beta.rsample``).

``bins``: an optional boolean ``(F, T)`` subset of bins that are sampled (the others are held at their mode
``P`` and pass no gradient), which sets the mask dimension ``D`` of the square-root law
``cos(g, g*) ~ c sqrt(N)``, ``c ~ 1 / sqrt(D_eff)``; the exact gradient is then taken through those bins only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..audio import FrontEnd
from .advantages import group_advantages, loo_advantages
from .policy import beta_log_prob, rsample_masks, sample_masks
from .rewards import signal_term
from .rollout import RLBatch, proposal_from_trunk, reconstruct_group
from .segments import (bin_advantages, error_share_rewards, frame_segment_weights, frame_segments, per_segment,
                       segment_advantages)

ADVANTAGES = {"group": group_advantages, "loo": loo_advantages}


@dataclass
class HeadProblem:
    """A batch with the frozen trunk's output, the head's parameters and the front end.

    Shape: trunk ``(B, C, F/2, T/2)``; see :class:`~mars_core.rl.rollout.RLBatch` for the batch.
    """

    model: torch.nn.Module
    params: list[torch.nn.Parameter]
    batch: RLBatch
    trunk: torch.Tensor
    fe: FrontEnd

    @classmethod
    def build(cls, model: torch.nn.Module, params: list[torch.nn.Parameter], batch: RLBatch,
              fe: FrontEnd) -> "HeadProblem":
        with torch.no_grad():
            trunk = model.unet.trunk(batch.features)
        return cls(model, params, batch, trunk, fe)

    def proposal(self) -> torch.Tensor:
        """``P`` of every item with a graph to the head. Shape: ``(N, F, T)``."""
        return proposal_from_trunk(self.model, self.trunk, self.batch.queries).float()

    def waveforms(self, masks: torch.Tensor) -> torch.Tensor:
        """Shape: masks ``(N, G, F, T)`` -> ``(N, G, samples)``."""
        b, n = self.batch.n_mixtures, self.batch.n_items
        g = masks.shape[1]
        return reconstruct_group(self.fe, masks.reshape(b, n // b, g, *masks.shape[-2:]), self.batch.mixtures).reshape(n, g, -1)

    def rewards(self, wav: torch.Tensor, segments: int = 0) -> torch.Tensor:
        """Signal rewards. Shape: wav ``(N, G, samples)`` -> ``(N, G)``, or ``(N, G, S)`` with ``segments`` S."""
        n, g, length = wav.shape
        refs = self.batch.sources.reshape(n, 1, -1).expand(-1, g, -1).reshape(n * g, length)
        flat = wav.reshape(n * g, length)
        r = per_segment(signal_term, segments, flat, refs) if segments else signal_term(flat, refs)
        return r.reshape(n, g, *r.shape[1:])

    def error_shares(self, wav: torch.Tensor, segments: int) -> torch.Tensor:
        """Error-share segment rewards (:func:`~mars_core.rl.segments.error_share_rewards`). Shape: ``(N, G, S)``."""
        n = wav.shape[0]
        return error_share_rewards(wav, self.batch.sources.reshape(n, -1), segments)

    def grad(self, objective: torch.Tensor) -> torch.Tensor:
        """The flat gradient of a scalar with respect to the head's parameters."""
        return torch.cat([t.reshape(-1) for t in torch.autograd.grad(objective, self.params)])


def _held(P: torch.Tensor, masks: torch.Tensor, bins: torch.Tensor | None) -> torch.Tensor:
    """Masks on the sampled ``bins``, the mode ``P`` (no gradient) elsewhere."""
    if bins is None:
        return masks
    return torch.where(bins.to(masks.device), masks, P.detach().unsqueeze(1).expand_as(masks))


def exact_mode_gradient(pb: HeadProblem, bins: torch.Tensor | None = None) -> torch.Tensor:
    """``g*``: the gradient of the mean signal reward of the mode's waveforms (through ``bins`` only, if given)."""
    P = pb.proposal()
    if bins is not None:
        P = torch.where(bins.to(P.device), P, P.detach())
    return pb.grad(pb.rewards(pb.waveforms(P.unsqueeze(1))).mean())


def score_gradient(pb: HeadProblem, kappa: float, group_size: int, advantage: str = "group", segments: int = 0,
                   bins: torch.Tensor | None = None, segment_signal: str = "sisdr",
                   segment_credit: str = "centre") -> torch.Tensor:
    """The score-function (GRPO first-update) ascent direction from ``group_size`` masks per item, drawn from
    the global torch generator; ``segments`` S > 0 uses per-segment rewards and advantages: each segment's
    clamped SI-SDR (``segment_signal="sisdr"``) or its share of the error energy (``"error"``)."""
    P = pb.proposal()
    with torch.no_grad():
        masks = _held(P, sample_masks(P, kappa, group_size), bins)
        wav = pb.waveforms(masks)
        r = pb.error_shares(wav, segments) if segments and segment_signal == "error" else pb.rewards(wav, segments)
        fn = ADVANTAGES[advantage]
        if segments:
            adv, _ = segment_advantages(r, fn)
            t, hop, n_fft = masks.shape[-1], pb.fe.cfg.hop_length, pb.fe.cfg.n_fft
            frames = (frame_segment_weights(t, hop, n_fft, wav.shape[-1], segments) if segment_credit == "window"
                      else frame_segments(t, hop, wav.shape[-1], segments))
            a = bin_advantages(adv, frames)  # (N, G, 1, T)
        else:
            a = fn(r)[0][..., None, None]
    logp = beta_log_prob(P.unsqueeze(1), masks, kappa)
    if bins is not None:
        logp = logp * bins.to(logp)
    return pb.grad((a.to(logp) * logp).mean())


def pathwise_gradient(pb: HeadProblem, kappa: float, group_size: int, bins: torch.Tensor | None = None) -> torch.Tensor:
    """The pathwise ascent direction: the gradient of the mean signal reward of ``group_size``
    reparameterised masks per item (global torch generator)."""
    P = pb.proposal()
    return pb.grad(pb.rewards(pb.waveforms(_held(P, rsample_masks(P, kappa, group_size), bins))).mean())

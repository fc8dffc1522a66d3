"""Dense segment rewards (``RLConfig.reward_segments = S > 0``): one reward per time segment of a waveform.

A score-function gradient credits every bin of a sampled mask with the same scalar advantage, so its
noise grows with the number of bins it spreads one number over (the square-root law of
``scripts/rl_gradient_check.py``). Cutting each waveform into ``S`` equal time segments, rewarding each
segment, normalising each segment's rewards within its group and crediting each time-frequency bin
with the advantage of *its own* segment divides that dimension by about ``S``.

* Segment ``s`` of a waveform of ``L`` samples is samples ``[floor(s L / S), floor((s + 1) L / S))``
  (lengths differ by at most one sample; ``S = 1`` is the whole waveform).
* STFT frame ``t`` (centred, hop ``h``) is centred on sample ``t h`` and belongs to the segment of
  that sample (the last frames' centres, at or beyond ``L``, belong to the last segment).
* Per-segment rewards use the same terms as the whole-waveform reward: the clamped SI-SDR of the
  segment's samples, and the reward encoder's embedding of the segment's window.
"""

from __future__ import annotations

import math
from typing import Callable

import torch


def segment_bounds(n_samples: int, n_segments: int) -> torch.Tensor:
    """``S + 1`` boundaries ``floor(s L / S)``, ``s = 0 .. S``: segment ``s`` is ``[b[s], b[s + 1])``.

    Raises ``ValueError`` when a segment would be empty (more segments than samples).
    """
    if n_segments < 1:
        raise ValueError(f"reward_segments must be >= 1 here, got {n_segments}")
    if n_segments > n_samples:
        raise ValueError(f"reward_segments={n_segments} exceeds the waveform's {n_samples} samples; use fewer segments")
    return torch.div(torch.arange(n_segments + 1) * n_samples, n_segments, rounding_mode="floor")


def frame_segments(n_frames: int, hop_length: int, n_samples: int, n_segments: int) -> torch.Tensor:
    """The segment of each STFT frame: the segment holding the frame's centre sample ``t * hop_length``.

    Shape: returns ``(n_frames,)`` int64 in ``[0, n_segments)``.
    """
    bounds = segment_bounds(n_samples, n_segments)
    centres = (torch.arange(n_frames) * hop_length).clamp_max(n_samples - 1)
    return torch.bucketize(centres, bounds[1:], right=True).clamp_max(n_segments - 1)


def segment_windows(waveforms: torch.Tensor, n_segments: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The segments of every waveform, grouped by length: ``[(segment indices (k,), windows (..., k, length))]``.

    At most two groups (lengths ``floor(L / S)`` and ``floor(L / S) + 1``), so each group is one batched call.

    Shape:
        waveforms ``(..., L)``.
    """
    bounds = segment_bounds(int(waveforms.shape[-1]), n_segments)
    lengths = bounds[1:] - bounds[:-1]
    out = []
    for length in torch.unique(lengths).tolist():
        segs = (lengths == length).nonzero().squeeze(1)
        idx = (bounds[segs, None] + torch.arange(length)).to(waveforms.device)  # (k, length)
        out.append((segs, waveforms[..., idx]))
    return out


def per_segment(fn: Callable[..., torch.Tensor], n_segments: int, *waveforms: torch.Tensor) -> torch.Tensor:
    """``fn`` applied to each segment's window of the waveforms: ``fn(*windows)`` maps ``(M, length)``
    windows to ``(M,)`` or ``(M, D)`` values; the result is ``(N, S)`` or ``(N, S, D)``.

    Shape:
        waveforms: each ``(N, L)``, the same ``L``.
    """
    n = int(waveforms[0].shape[0])
    groups = [segment_windows(w, n_segments) for w in waveforms]
    out = None
    for parts in zip(*groups):
        segs = parts[0][0]
        wins = [w.reshape(n * len(segs), -1) for _, w in parts]
        vals = fn(*wins)
        vals = vals.reshape(n, len(segs), *vals.shape[1:])
        if out is None:
            out = vals.new_zeros(n, n_segments, *vals.shape[2:])
        out = out.index_copy(1, segs.to(vals.device), vals)  # out of place: keeps the graph of a differentiable fn
    return out


def segment_advantages(rewards: torch.Tensor, advantage_fn: Callable) -> tuple[torch.Tensor, float]:
    """Advantages of per-segment rewards, each segment normalised within its item's group.

    ``advantage_fn`` maps ``(n, G)`` rewards to ``((n, G) advantages, frac_zero_std)``
    (e.g. :func:`~mars_core.rl.advantages.group_advantages`); here it sees the ``N S`` groups
    ``rewards[i, :, s]``.

    Shape:
        rewards ``(N, G, S)``; returns ``(N, G, S)`` and the fraction of zero-spread groups.
    """
    n, g, s = rewards.shape
    adv, frac = advantage_fn(rewards.permute(0, 2, 1).reshape(n * s, g))
    return adv.reshape(n, s, g).permute(0, 2, 1).contiguous(), frac


def bin_advantages(adv: torch.Tensor, frame_segment: torch.Tensor) -> torch.Tensor:
    """Credit every time-frequency bin with the advantage of its frame's segment.

    Shape:
        adv ``(N, G, S)``; frame_segment ``(T,)`` (:func:`frame_segments`) or ``(T, S)`` weights
        (:func:`frame_segment_weights`: each frame credited with the weighted mean of its segments'); returns ``(N, G, 1, T)``
        (broadcast over the ``F`` frequency rows).
    """
    if frame_segment.dim() == 2:  # (T, S) weights (frame_segment_weights): each frame's share of each segment
        return (adv @ frame_segment.to(adv).T).unsqueeze(-2)
    return adv[..., frame_segment.to(adv.device)].unsqueeze(-2)


def error_share_rewards(estimates: torch.Tensor, references: torch.Tensor, n_segments: int) -> torch.Tensor:
    """Segment rewards that add up to the waveform's SI-SDR reward, to first order: a diagnostic of
    ``scripts/rl_gradient_check.py`` (estimator ``segments-error``), **not an RL option**: its cosine with the exact
    gradient was no better than per-segment SI-SDR's (0.42 against 0.51 per update at cpu size), and 800-update
    calibration runs following the trainer's update built on it (leave-one-out or group advantages, commits 0ba4d13 and
    bf93522, RLConfig.segment_signal, since removed) drove val SDR from 6.27 to 0.0 dB within 100 updates: crediting each segment's bins with a reward that also depends on the whole waveform's gain and
    projection (``alpha_g``, ``|t_g|^2``) is biased.

    For sample ``g`` of an item with clean target ``s`` (means removed, as in SI-SDR): ``alpha_g = <y_g, s> / |s|^2``,
    target part ``t_g = alpha_g s``, error ``e_g = y_g - t_g``, error-to-target ratio ``rho_g = |e_g|^2 / |t_g|^2``
    (``SI-SDR = -10 log10 rho``), ``rho_bar`` its mean over the item's group, and

        r_gk = -(|e_gk|^2 / |t_g|^2) / (ln(10) rho_bar)          (e_gk: the error's samples in segment k)

    ``sum_k r_gk = -rho_g / (ln(10) rho_bar)``, and since ``d(SI-SDR / 10) = -d rho / (ln(10) rho)``, it moves with
    ``SI-SDR(y_g, s) / 10`` to first order around the group: the segments *decompose* the waveform's reward, each
    weighted by its share of the error energy. Dividing by the sample's own ``|t_g|^2`` keeps every reward
    scale-invariant like SI-SDR: a quieter copy of an estimate earns exactly what the estimate earns (the error energy
    alone would reward shrinking the output towards silence). Per-segment SI-SDR instead
    gives a quiet segment the weight of a loud one and each segment its own gain, another objective
    (the ``segments`` estimator and ``RLConfig.reward_segments``).

    Shape:
        estimates ``(N, G, L)``; references ``(N, L)``; returns ``(N, G, S)`` float32.
    """
    if estimates.dim() != 3 or references.shape != (estimates.shape[0], estimates.shape[-1]):
        raise ValueError(f"estimates must be (N, G, L) and references (N, L), got {tuple(estimates.shape)} and "
                         f"{tuple(references.shape)}")
    y = estimates.double()
    s = references.double().unsqueeze(1)
    y = y - y.mean(-1, keepdim=True)
    s = s - s.mean(-1, keepdim=True)
    ss = (s * s).sum(-1, keepdim=True)
    alpha = (y * s).sum(-1, keepdim=True) / (ss + 1e-8)
    target = (alpha**2 * ss).clamp_min(1e-12)  # (N, G, 1) |t_g|^2
    err2 = (y - alpha * s) ** 2 / target  # (N, G, L): the error's energy per sample, relative to the target's
    rho_bar = err2.sum(-1).mean(1).clamp_min(1e-12)[:, None, None]  # (N, 1, 1) the group's mean rho
    shares = per_segment(lambda w: w.sum(-1), n_segments, err2.reshape(-1, err2.shape[-1]))  # (N G, S)
    return (-shares.reshape(*err2.shape[:2], n_segments) / (math.log(10.0) * rho_bar)).float()


def frame_segment_weights(n_frames: int, hop_length: int, n_fft: int, n_samples: int, n_segments: int) -> torch.Tensor:
    """How much of each STFT frame's resynthesis lands in each segment: the overlap-aware credit of a bin.

    Frame ``t`` (centred) writes samples ``t h - n_fft / 2 + j``, ``j < n_fft``, through the Hann analysis and
    synthesis windows, so a change of its bins moves those samples with weight ``hann(j)^2``. The weight of segment
    ``s`` is the part of that window inside the segment (samples outside ``[0, L)`` dropped), each row normalised to
    sum to 1. :func:`frame_segments` gives the whole frame to the segment of its centre instead; with segments as
    long as two hops, a frame centred on a boundary then credits one neighbour with what is half the other's.

    Shape: returns ``(n_frames, n_segments)`` float32, rows summing to 1.
    """
    bounds = segment_bounds(n_samples, n_segments)
    seg_of_sample = torch.bucketize(torch.arange(n_samples), bounds[1:], right=True)  # (L,)
    w = torch.hann_window(n_fft, periodic=True, dtype=torch.float64) ** 2
    pos = torch.arange(n_frames)[:, None] * hop_length - n_fft // 2 + torch.arange(n_fft)[None]  # (T, n_fft)
    inside = (pos >= 0) & (pos < n_samples)
    out = torch.zeros(n_frames, n_segments, dtype=torch.float64)
    out.scatter_add_(1, seg_of_sample[pos.clamp(0, n_samples - 1)], torch.where(inside, w.expand_as(pos), 0.0))
    return (out / out.sum(1, keepdim=True).clamp_min(1e-30)).float()

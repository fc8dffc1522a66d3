"""The reward of a separated waveform (docs/method.md section 5), batched over every sampled mask.

For an estimate ``y^`` of item ``i`` (float32, no gradient)::

    R = lambda_sem cos(phi_a(y^), z*_i)                       semantic term (the paper's reward; lambda_sem = 1)
        + lambda_sig * clamp(SI-SDR(y^, y*_i), -30, 30) / 10  signal term (ours; sees the ground truth)
        - lambda_neg * cos(phi_a(y^), z-_i)                   contamination penalty (ours)
        + lambda_res * (cos(phi_a(x - y^), z-_i) - cos(phi_a(x - y^), z*_i))   residual term (ours)

* ``phi_a`` is the frozen reward encoder's audio tower and ``z*_i`` the target anchor
  (:meth:`~mars_core.alignment.stack.RewardStack.target_anchor`: the MLBP fusion of the target's
  audio-query, text and image embeddings *in the reward encoder's space*). ``z-_i`` is the same
  anchor for the interferer's query material (the mean of the cosines if there are several).
* ``x`` is the mixture the estimate was taken from: the residual ``x - y^`` is what the mask left out, and it should
  sound like the other sources and not like the target. Like the semantic term it reads no clean source; its exact
  gradient at the mode agrees with SI-SDR's where the semantic term's does not (``scripts/rl_gradient_check.py
  --candidate-terms``, docs/method.md section 5).
* SI-SDR is in dB, clamped to ``[-30, 30]`` and divided by 10, so the term is O(1) like a
  cosine. A silent estimate (``sum |y^| <= 1e-5``, :func:`mars_core.metrics.is_silent`) gets the
  floor -30 dB: SI-SDR itself would call it 0 dB, better than most real estimates.
* Every term is finite for silent estimates: the encoder embeds silence like any waveform.
* With ``lambda_sem = lambda_neg = 0`` the reward is the signal term alone and the encoder is never
  called (the ``dense`` RL preset): the semantic and contamination terms are reported as 0.

Inputs go through :func:`mars_core.inputs.validate_audio`: float, finite, ``(N, samples)``; integer
PCM is refused (never rescaled silently). The references keep their own float dtype: only their
device follows the waveforms' (they used to be cast to the waveforms' dtype, which turned float
references into int16 zeros beside int16 waveforms, and rounded them beside float16 ones).

The anchors of a batch come from a **reward bank** (:func:`reward_bank`): the reward encoder's
embeddings of every prompt, image and clip of the benchmark, computed once and cached on disk
(:func:`~mars_core.queries.load_or_build_query_bank`), so a step embeds only the ``G x items``
waveforms, in one encoder call (``batch_size`` 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from ..inputs import validate_audio
from ..metrics import SI_SDR_EPS, SILENCE_L1, si_sdr
from ..queries import QueryBank, QueryRef, load_or_build_query_bank
from .segments import per_segment

SI_SDR_RANGE_DB = (-30.0, 30.0)
"""Clamp of the signal term's SI-SDR (dB); a silent estimate gets the lower end."""
SI_SDR_SCALE_DB = 10.0
"""The signal term is SI-SDR / this (dB), so 10 dB counts like a cosine of 1."""


def reward_bank(stack, profile, *, build_dir=None, progress: bool = True) -> QueryBank:
    """Every prompt, image and clip embedded by the reward encoder (cached on disk by its fingerprint)."""
    return load_or_build_query_bank(stack.encoder, profile, build_dir=build_dir, progress=progress)


def target_cosine(a: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """The semantic term ``cos(phi_a(y^), z*)`` of embeddings ``a`` (``(N, D)``, or ``(N, S, D)`` per segment) against
    each item's anchor ``z`` ``(N, D)``. Shape: returns ``a.shape[:-1]``."""
    return F.cosine_similarity(a, z.to(a).unsqueeze(1) if a.dim() == 3 else z.to(a), dim=-1, eps=1e-8)


def interferer_cosine(a: torch.Tensor, z_neg: torch.Tensor) -> torch.Tensor:
    """The contamination term: the mean cosine of embeddings ``a`` (``(N, D)`` or ``(N, S, D)``) with each item's
    interferer anchors ``z_neg`` (``(N, D)`` or ``(N, n_neg, D)``). Shape: returns ``a.shape[:-1]``."""
    zn = z_neg.to(a) if z_neg.dim() == 3 else z_neg.to(a).unsqueeze(1)  # (N, n_neg, D)
    if a.dim() == 3:
        zn = zn.unsqueeze(1)  # (N, 1, n_neg, D) against a (N, S, 1, D)
    return F.cosine_similarity(a.unsqueeze(-2), zn, dim=-1, eps=1e-8).mean(-1)


def anchors(stack, bank: QueryBank, refs: Sequence[QueryRef]) -> torch.Tensor:
    """``z*`` of each ref: ``stack.target_anchor(e_audio, e_text, e_image)`` from ``bank``'s embeddings
    (audio: the normalised mean over the ref's audio clips).

    Shape:
        returns ``(len(refs), D)`` float32, unit rows.
    """
    e_a = bank.mean("audio", [r.audio_ids for r in refs])
    e_t = bank.get("text", [r.text for r in refs])
    e_v = bank.get("image", [r.image_id for r in refs])
    first = next(stack.anchor.parameters(), None)
    device = first.device if first is not None else e_t.device
    return stack.target_anchor(e_a.to(device), e_t.to(device), e_v.to(device)).float()


def signal_term(estimates: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """``clamp(SI-SDR(estimate, reference), -30, 30) / 10``; silent estimates get ``-30 / 10``.

    Shape:
        estimates, references: ``(N, samples)``; returns ``(N,)`` float32.
    """
    lo, hi = SI_SDR_RANGE_DB
    value, est = _si_sdr_from_moments(estimates, references)
    silent = est.abs().sum(-1) <= SILENCE_L1
    value = torch.where(silent, torch.full_like(value, lo), value.clamp(lo, hi))
    return (value / SI_SDR_SCALE_DB).float()


def _si_sdr_from_moments(estimates: torch.Tensor, references: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`mars_core.metrics.si_sdr` (zero-mean, float64) from each pair's sums and 2 x 2 Gram matrix: one
    pass over the samples instead of about ten. With the centred moments ``ee = |e|^2``, ``es = <e, s>``,
    ``ss = |s|^2``: ``alpha = es / (ss + eps)``, ``|alpha s|^2 = alpha^2 ss`` and
    ``|e - alpha s|^2 = ee - 2 alpha es + alpha^2 ss`` (clamped at 0). The last difference cancels: in float64 it
    keeps about ``16 - SI-SDR / 10`` significant digits, 13 at the 30 dB clamp; above it the value is clamped anyway.
    Pairs of other shapes, and samples that are not finite, go to ``si_sdr`` itself, which names the problem.

    Shape:
        estimates, references: ``(N, samples)``; returns the SI-SDR ``(N,)`` float64 (dB) and the estimates as
        float64 ``(N, samples)``.
    """
    if estimates.shape != references.shape:
        return si_sdr(estimates.double(), references.double()), estimates.double()
    x = estimates.new_empty((*estimates.shape[:-1], 2, estimates.shape[-1]), dtype=torch.float64)  # (N, 2, samples)
    x[..., 0, :], x[..., 1, :] = estimates, references  # converted to float64 as they are copied
    sums = x.sum(-1)
    moments = x @ x.mT - sums.unsqueeze(-1) * sums.unsqueeze(-2) / x.shape[-1]
    if not bool(torch.isfinite(moments).all()):  # a NaN or inf sample: si_sdr raises naming the item
        return si_sdr(x[..., 0, :], x[..., 1, :]), x[..., 0, :]
    ee, es, ss = moments[..., 0, 0], moments[..., 0, 1], moments[..., 1, 1]
    alpha = es / (ss + SI_SDR_EPS)
    target = alpha * alpha * ss
    residual = (ee - 2.0 * alpha * es + target).clamp_min(0.0)
    return 10.0 * ((target + SI_SDR_EPS) / (residual + SI_SDR_EPS)).log10(), x[..., 0, :]


@dataclass
class RewardModel:
    """The reward of a batch of waveforms, with the terms it is made of.

    Attributes:
        stack: a :class:`~mars_core.alignment.stack.RewardStack` (frozen encoder and anchor).
        sample_rate: rate of the waveforms (resampled to the encoder's when they differ).
        lambda_sig, lambda_neg: weights of the signal and contamination terms (0: not computed).
        lambda_res: weight of the residual term (0: not computed; otherwise every call needs the mixtures).
        batch_size: waveforms per encoder call; 0 puts all of them in one call.
        segment_terms: with segments, ``"all"`` terms per segment or only the ``"signal"`` term
            (``RLConfig.segment_terms``; the encoder then embeds each whole waveform once).
        lambda_sem: weight of the semantic term (1: the method); with ``lambda_neg`` also 0 the encoder is
            not run at all.
    """

    stack: object
    sample_rate: int
    lambda_sig: float = 0.0
    lambda_neg: float = 0.0
    batch_size: int = 0
    segment_terms: str = "all"
    lambda_sem: float = 1.0
    lambda_res: float = 0.0

    @classmethod
    def from_config(cls, stack, sample_rate: int, cfg) -> "RewardModel":
        """The reward an :class:`~mars_core.config.RLConfig` asks for (its lambdas, reward batch size and
        segment terms)."""
        return cls(stack, int(sample_rate), cfg.lambda_sig, cfg.lambda_neg, cfg.reward_batch_size, cfg.segment_terms,
                   cfg.lambda_sem, cfg.lambda_res)

    @property
    def uses_encoder(self) -> bool:
        """Whether a reward needs the encoder's embedding (a semantic or contamination weight is not 0)."""
        return bool(self.lambda_sem or self.lambda_neg or self.lambda_res)

    @torch.no_grad()
    def embed(self, waveforms: torch.Tensor) -> torch.Tensor:
        """``phi_a`` of every waveform. Shape: ``(N, samples)`` -> ``(N, D)`` float32, unit rows."""
        enc = self.stack.encoder
        bs = self.batch_size or int(waveforms.shape[0])
        return enc.embed_audio(waveforms.float(), self.sample_rate, batch_size=bs,
                               resample=int(self.sample_rate) != int(enc.sample_rate)).float()

    def _embeddings(self, waveforms: torch.Tensor, segments: int) -> torch.Tensor:
        """``phi_a`` for the encoder terms: per segment's window with ``segment_terms="all"`` (``(N, S, D)``), else one
        embedding per waveform, repeated for each of its ``segments`` when there are any (``(N, [S,] D)``)."""
        if segments and self.segment_terms == "all":
            return per_segment(self.embed, segments, waveforms)
        a = self.embed(waveforms)
        return a.unsqueeze(1).expand(-1, segments, -1) if segments else a

    @torch.no_grad()
    def __call__(self, waveforms: torch.Tensor, z: torch.Tensor, z_neg: torch.Tensor | None = None,
                 references: torch.Tensor | None = None,
                 segments: int = 0, mixtures: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Rewards and their terms.

        ``segments`` S > 0: one reward per time segment (:mod:`~mars_core.rl.segments`): every term is
        computed on each segment's window (the encoder embeds each window, SI-SDR is the segment's), and
        the rewards and terms are ``(N, S)``; 0 (default): one reward per waveform.

        Shape:
            waveforms: ``(N, samples)``; z: ``(N, D)`` target anchors; z_neg: ``(N, D)`` or
            ``(N, n_neg, D)`` interferer anchors (needed when ``lambda_neg > 0``); references:
            ``(N, samples)`` clean targets (needed when ``lambda_sig > 0``); mixtures: ``(N, samples)``, the
            mixture of each waveform (needed when ``lambda_res > 0``).
            returns ``R (N,)`` float32 and ``{"semantic", "signal", "contamination", "residual"}`` each ``(N,)``
            (a term whose weight is 0 is reported as 0).
        """
        waveforms = torch.as_tensor(validate_audio(waveforms, "waveforms", ndim=2, layout="(N, samples)"))
        if waveforms.dim() != 2 or z.shape != (waveforms.shape[0], z.shape[-1]):
            raise ValueError(f"waveforms must be (N, samples) and z (N, D), got {tuple(waveforms.shape)}, "
                             f"{tuple(z.shape)}")
        if self.lambda_sig:
            if references is None:
                raise ValueError("lambda_sig > 0 needs the clean references")
            references = torch.as_tensor(validate_audio(references, "references", ndim=2, layout="(N, samples)"))
            if references.shape != waveforms.shape:
                raise ValueError(f"references {tuple(references.shape)} must have the waveforms' shape "
                                 f"{tuple(waveforms.shape)}")
        if self.lambda_res:
            if mixtures is None or z_neg is None:
                raise ValueError("lambda_res > 0 needs each waveform's mixture and the interferer anchors z_neg")
            mixtures = torch.as_tensor(validate_audio(mixtures, "mixtures", ndim=2, layout="(N, samples)"))
            if mixtures.shape != waveforms.shape:
                raise ValueError(f"mixtures {tuple(mixtures.shape)} must have the waveforms' shape "
                                 f"{tuple(waveforms.shape)}")
        seg = int(segments)
        if self.segment_terms not in ("all", "signal"):
            raise ValueError(f"segment_terms must be 'all' or 'signal', got {self.segment_terms!r}")
        if self.lambda_sem or self.lambda_neg:  # the estimate's embedding (the residual's is taken below)
            a = self._embeddings(waveforms, seg)  # (N, [S,] D)
            semantic = target_cosine(a, z)
        else:  # no term of the estimate's embedding
            semantic = waveforms.new_zeros((waveforms.shape[0], seg) if seg else (waveforms.shape[0],),
                                           dtype=torch.float32)
        zero = torch.zeros_like(semantic)
        signal, contamination, residual = zero, zero, zero
        if self.lambda_sig:
            # the device follows the waveforms, never the dtype (signal_term computes in float64)
            refs = references.to(waveforms.device)
            signal = (per_segment(signal_term, seg, waveforms, refs) if seg else signal_term(waveforms, refs))
            signal = signal.to(semantic)
        if self.lambda_neg:
            if z_neg is None:
                raise ValueError("lambda_neg > 0 needs the interferer anchors z_neg")
            contamination = interferer_cosine(a, z_neg)
        if self.lambda_res:
            r = self._embeddings(mixtures.to(waveforms) - waveforms, seg)
            residual = (interferer_cosine(r, z_neg) - target_cosine(r, z)).to(semantic)
        if not self.lambda_sem:
            semantic = zero  # a term whose weight is 0 is reported as 0
        reward = (self.lambda_sem * semantic + self.lambda_sig * signal - self.lambda_neg * contamination
                  + self.lambda_res * residual)
        return reward.float(), {"semantic": semantic.float(), "signal": signal.float(),
                                "contamination": contamination.float(), "residual": residual.float()}

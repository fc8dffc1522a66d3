"""The three alignment stages' objectives: S1 audio-text, S2 audio-audio, S3 audio-visual.

* :func:`s1_objective`  symmetric InfoNCE, audio clip <-> its class prompt (audio + text heads);
* :func:`s2_objective`  InfoNCE between two clips of one class, a triplet loss (anchor: a second
  clip of the class; positive: the target; negatives: the mixture containing the target and
  the interferer) and a clip-vs-augmentation consistency loss (audio head);
* :func:`s3_objective`  symmetric InfoNCE audio <-> image, plus an image-anchored triplet
  (positive: the clean target audio; negatives: the mixture and the interferer) (audio + vision heads).

Each objective is ``(ctx, batch, grad, generator) -> (loss or None, parts)``; with a trunk-feature
cache (``AlignmentConfig.pool_items``) only the heads run per step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

from ..encoders.base import TriModalEncoder, as_waveform_list
from ..encoders.preprocess import resample
from .config import AlignmentConfig
from .embedding import AlignmentBatch, augment_audio, embed_waveforms
from .losses import LogitScales, consistency_loss, symmetric_info_nce, triplet_loss


@dataclass
class StageContext:
    """Everything a stage objective reads besides the batch."""

    encoder: TriModalEncoder
    scales: LogitScales
    cfg: AlignmentConfig
    sample_rate: int
    cache: dict | None = None
    """Trunk-feature cache ``{(modality, role, key): features}`` (``cfg.pool_items``), or None."""


def _trunk(ctx: StageContext, modality: str, value: Any) -> Any:
    """Frozen features of ONE input through the interface's hooks (no gradient)."""
    enc = ctx.encoder
    with torch.no_grad():
        if modality == "audio":
            wave = as_waveform_list(value.unsqueeze(0))
            if ctx.sample_rate != enc.sample_rate:
                wave = [resample(w.float(), ctx.sample_rate, enc.sample_rate) for w in wave]
            inputs = enc.prepare_audio(wave)
        elif modality == "text":
            inputs = enc.prepare_text([value])
        else:
            inputs = enc.prepare_images([value]).to(enc.device, enc.dtype)
        return enc.trunk_features(modality, inputs)


def _embed_cached(
    ctx: StageContext, modality: str, role: str, values: Sequence, keys: Sequence, grad: Any
) -> torch.Tensor:
    """Heads on cached trunk features: ``normalize(head(trunk(x)))``, as ``TriModalEncoder.encode``."""
    feats = []
    for value, key in zip(values, keys):
        ck = (modality, role, key)
        if ck not in ctx.cache:
            ctx.cache[ck] = _trunk(ctx, modality, value)
        feats.append(ctx.cache[ck])
    with torch.enable_grad() if grad else torch.no_grad():
        return torch.cat([F.normalize(ctx.encoder.head_embeddings(modality, f).float(), dim=-1) for f in feats])


def _cached(ctx: StageContext, batch: AlignmentBatch, grad: Any) -> bool:
    return ctx.cache is not None and batch.keys is not None and grad is not True


def _audio(
    ctx: StageContext, batch: AlignmentBatch, roles: Sequence[str], grad: Any, generator=None
) -> list[torch.Tensor]:
    """Embed the batch's waveforms of each role (``target, query_audio, mixture, interferer, aug``).

    One encoder call for all roles, or per-item heads on cached trunk features (``aug``
    is then fixed per item: the first augmentation drawn is cached).
    """
    waves = []
    for role in roles:
        if role == "aug":
            gen = generator if generator is not None else torch.Generator().manual_seed(ctx.cfg.seed)
            waves.append(augment_audio(batch.target, gen, ctx.cfg))
        else:
            waves.append(getattr(batch, role))
    if _cached(ctx, batch, grad):
        return [_embed_cached(ctx, "audio", role, list(w), batch.keys, grad) for role, w in zip(roles, waves)]
    z = embed_waveforms(ctx.encoder, torch.cat(waves), ctx.sample_rate, grad, ctx.cfg.encode_batch_size)
    return list(z.split(len(batch)))


def _text(ctx: StageContext, batch: AlignmentBatch, grad: Any) -> torch.Tensor:
    if _cached(ctx, batch, grad):
        return _embed_cached(ctx, "text", "prompt", batch.text, batch.text, grad)  # keyed by the prompt itself
    return ctx.encoder.embed_text(batch.text, grad=grad, batch_size=ctx.cfg.encode_batch_size)


def _image(ctx: StageContext, batch: AlignmentBatch, grad: Any) -> torch.Tensor:
    if batch.images is None:
        raise ValueError("stage s3_audio_visual needs images: build the dataset with load_images=True")
    if _cached(ctx, batch, grad):
        return _embed_cached(ctx, "vision", "query_image", batch.images, batch.keys, grad)
    return ctx.encoder.embed_image(batch.images, grad=grad, batch_size=ctx.cfg.encode_batch_size)


def _sum(terms: dict[str, tuple[float, torch.Tensor]]) -> tuple[torch.Tensor | None, dict[str, float]]:
    loss, parts = None, {}
    for name, (w, value) in terms.items():
        parts[name] = float(value.detach())
        loss = w * value if loss is None else loss + w * value
    return loss, parts


def s1_objective(ctx: StageContext, batch: AlignmentBatch, grad: Any = "heads", generator=None):
    """S1: ``w_nce InfoNCE(phi_a(target), phi_t(prompt)) [+ w_tri Triplet(t, a, [mix, interferer])]``.

    The text-anchored triplet is ours and off by default (the paper's S1 is InfoNCE only).
    Returns ``(loss or None, parts)``.
    """
    c = ctx.cfg
    use_nce, use_tri = c.s1_nce_weight > 0, c.s1_triplet_weight > 0
    if not (use_nce or use_tri):
        return None, {}
    z = _audio(ctx, batch, ["target"] + (["mixture", "interferer"] if use_tri else []), grad)
    t = _text(ctx, batch, grad)
    terms = {}
    if use_nce:
        terms["s1_nce"] = (
            c.s1_nce_weight,
            symmetric_info_nce(z[0], t, ctx.scales("audio_text"), batch.labels.to(t.device)),
        )
    if use_tri:
        terms["s1_triplet"] = (c.s1_triplet_weight, triplet_loss(t, z[0], torch.stack(z[1:], dim=1), c.s1_margin))
    return _sum(terms)


def s2_objective(ctx: StageContext, batch: AlignmentBatch, grad: Any = "heads", generator=None):
    """S2: ``w_nce InfoNCE(a, q) + w_tri Triplet(q, a, [mix, interferer]) + w_cons (1 - cos(a, aug(a)))``.

    ``a`` = phi_a(target), ``q`` = phi_a(another clip of its class). The triplet is anchored
    on ``q`` (what the reward's anchor is built from), so it asks for the reward gap directly:
    ``cos(q, target) - cos(q, mixture) >= margin`` (and the same against the interferer).
    """
    c = ctx.cfg
    use_nce, use_tri, use_cons = c.s2_nce_weight > 0, c.s2_triplet_weight > 0, c.s2_consistency_weight > 0
    if not (use_nce or use_tri or use_cons):
        return None, {}
    roles = (
        ["target"] + (["query_audio"] if use_nce or use_tri else []) + (["mixture", "interferer"] if use_tri else [])
    )
    z = _audio(ctx, batch, roles + (["aug"] if use_cons else []), grad, generator)
    a, rest = z[0], z[1:]
    terms = {}
    if use_nce or use_tri:
        pos, rest = rest[0], rest[1:]
        if use_nce:
            terms["s2_nce"] = (
                c.s2_nce_weight,
                symmetric_info_nce(a, pos, ctx.scales("audio_audio"), batch.labels.to(a.device)),
            )
        if use_tri:
            negs, rest = torch.stack(rest[:2], dim=1), rest[2:]
            terms["s2_triplet"] = (c.s2_triplet_weight, triplet_loss(pos, a, negs, c.s2_margin))
    if use_cons:
        terms["s2_consistency"] = (c.s2_consistency_weight, consistency_loss(a, rest[0]))
    return _sum(terms)


def s3_objective(ctx: StageContext, batch: AlignmentBatch, grad: Any = "heads", generator=None):
    """S3: ``w_nce InfoNCE(phi_a(target), phi_v(image)) + w_tri Triplet(v, a, [mix, interferer])``."""
    c = ctx.cfg
    use_nce, use_tri = c.s3_nce_weight > 0, c.s3_triplet_weight > 0
    if not (use_nce or use_tri):
        return None, {}
    v = _image(ctx, batch, grad)
    z = _audio(ctx, batch, ["target"] + (["mixture", "interferer"] if use_tri else []), grad)
    terms = {}
    if use_nce:
        terms["s3_nce"] = (
            c.s3_nce_weight,
            symmetric_info_nce(z[0], v, ctx.scales("audio_image"), batch.labels.to(v.device)),
        )
    if use_tri:
        terms["s3_triplet"] = (c.s3_triplet_weight, triplet_loss(v, z[0], torch.stack(z[1:], dim=1), c.s3_margin))
    return _sum(terms)


OBJECTIVES: dict[str, Callable] = {
    "s1_audio_text": s1_objective,
    "s2_audio_audio": s2_objective,
    "s3_audio_visual": s3_objective,
}
"""Stage name -> objective ``(ctx, batch, grad, generator) -> (loss or None, parts)``."""

"""The judge: a second MiniBind, independent of the reward encoder, for the semantic score.

The paper scores separations with CLAP, a model that never produced a reward; scoring
with the reward encoder itself would hide reward hacking. Our judge is trained by the
same function (:func:`~mars_core.encoders.train.train_minibind`) but shares nothing else
with the reward MiniBind: another seed (initial weights, batches, augmentation), another
initialisation scheme (ViT truncated normal instead of Xavier) and other tower sizes.
Its embedding size equals the reward encoder's only for convenience.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Sequence

import torch

from ..config import EncoderConfig, Profile, get_profile
from ..metrics import semantic_score as metric_semantic_score
from .train_config import TrainConfig

JUDGE_SEED = 1234
"""Seed of the judge's weights and batches (the reward MiniBind uses TrainConfig.seed = 0)."""


_JUDGE_SIZES: dict[str, dict[str, int]] = {
    "smoke": dict(audio_width=80, audio_depth=3, audio_heads=4, vision_width=96, vision_depth=1, vision_heads=4,
                  text_width=48, text_depth=3, text_heads=4),
    "cpu": dict(audio_width=144, audio_depth=3, audio_heads=4, vision_width=128, vision_depth=2, vision_heads=4,
                text_width=64, text_depth=3, text_heads=4),
}
"""Tower sizes of the judge per profile (the reward sizes are in the profile's EncoderConfig)."""


def judge_encoder_config(profile: str | Profile | None = None) -> EncoderConfig:
    """The profile's encoder section with the judge's tower sizes and the truncated-normal init, and always its own
    vision transformer (``image_tower='vit'``): a judge sharing a pretrained image trunk with the reward encoder
    would not be independent of it.

    Raises:
        ValueError: a profile without a judge (``full``: use CLAP or another real model).
    """
    p = get_profile(profile)
    if p.name not in _JUDGE_SIZES:
        raise ValueError(f"no MiniBind judge for profile {p.name!r} (defined for {sorted(_JUDGE_SIZES)})")
    return replace(p.encoder, init="trunc_normal", image_tower="vit", **_JUDGE_SIZES[p.name])


def judge_train_config(profile: str | Profile | None = None, **overrides: Any) -> TrainConfig:
    """The profile's training config with the judge's seed, without image restyling or prompt recomposition
    (the shipped judges were trained before :func:`~mars_core.encoders.pairs.restyle_images` and
    :func:`~mars_core.encoders.pairs.recompose_prompt` existed and stay as they are)."""
    off = {"cartoon_prob": 0.0, "line_prob": 0.0, "prompt_recompose_prob": 0.0}
    return TrainConfig.for_profile(profile, **dict({"seed": JUDGE_SEED, **off}, **overrides))


@torch.no_grad()
def semantic_score(judge, waveforms: Any, sample_rate: int, texts: Sequence[str]) -> torch.Tensor:
    """CLAP-style score ``100 * cos(judge_audio(x_i), judge_text(t_i))`` per pair.

    Shape:
        waveforms: ``(N, T)`` or a list of N 1-D arrays; ``len(texts) == N``; returns ``(N,)``.

    Raises:
        ValueError: different numbers of waveforms and texts (and whatever the
            encoder raises: sample-rate mismatch, empty input, ...).
    """
    a = judge.embed_audio(waveforms, sample_rate)
    if len(texts) != a.shape[0]:
        raise ValueError(f"{a.shape[0]} waveforms but {len(texts)} texts")
    return metric_semantic_score(a, judge.embed_text(list(texts)))

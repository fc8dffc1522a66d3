"""The reward-hacking probe: the reward that degenerate and ideal outputs would get.

A reward is hackable when a silent or an all-pass (mixture) output scores as high as the
oracle ideal-ratio-mask estimate: the policy can then collect reward without separating.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import torch

from ..audio import FrontEnd
from ..config import get_profile
from ..encoders.base import TriModalEncoder
from .anchor import ANCHOR_KINDS, fuse_anchor
from .embedding import AlignmentBatch, embed_items, embed_waveforms, make_batch, take_items
from .losses import cosine


PROBE_OUTPUTS = ("silent", "mixture", "oracle_irm", "target", "interferer")
"""What :func:`reward_hacking_probe` rewards: a silent output, the all-pass output (the mixture),
the oracle ratio-mask estimate, the clean target and the interferer."""


def probe_outputs(batch: AlignmentBatch, front_end: FrontEnd, oracle_domain: str = "warped") -> dict[str, torch.Tensor]:
    """The waveforms of :data:`PROBE_OUTPUTS` for a batch: silence, the mixture, the oracle IRM estimate
    (``oracle_domain``: ``"warped"`` or ``"linear"``), the clean target and the interferer.

    Shape:
        each ``(B, T)`` float32, like ``batch.mixture``.
    """
    sources = torch.stack([batch.target, batch.interferer], dim=1)
    oracle = front_end.oracle_separate(sources, batch.mixture, kind="irm", domain=oracle_domain)[:, 0]
    return {
        "silent": torch.zeros_like(batch.mixture),
        "mixture": batch.mixture,
        "oracle_irm": oracle.float(),
        "target": batch.target,
        "interferer": batch.interferer,
    }


@torch.no_grad()
def reward_hacking_probe(
    encoder: TriModalEncoder,
    items: Any,
    *,
    profile: Any = None,
    anchor: str = "text",
    mlbp: Any = None,
    n_items: int | None = None,
    oracle_domain: str = "warped",
):
    """The reward ``R = cos(phi_a(y^), z*)`` that degenerate and ideal outputs would get.

    A reward is hackable when a silent or an all-pass (mixture) output scores as high as
    the oracle ideal-ratio-mask estimate: the policy can then collect reward without
    separating. ``frac_ge_oracle`` is the fraction of items where an output's reward is
    >= the oracle's.

    Args:
        items: a ``MixtureDataset`` (its profile is used) or a list of its items (pass ``profile``).
        anchor: ``"text"`` (item prompt), ``"audio"`` (query clip), or a fusion kind of
            :func:`~mars_core.alignment.anchor.fuse_anchor` (``mean``, ``max``, ``mlbp``).
        oracle_domain: ``"warped"`` (a separator-reachable mask) or ``"linear"``.

    Returns:
        DataFrame with one row per output of :data:`PROBE_OUTPUTS`:
        ``output, reward_mean, reward_std, frac_ge_oracle``.
    """
    if profile is None:
        if not hasattr(items, "profile"):
            raise ValueError("reward_hacking_probe: pass profile= when items is a list (a MixtureDataset carries it)")
        profile = items.profile
    prof = get_profile(profile)
    sr = prof.audio.sample_rate
    if anchor not in ("text", "audio") + ANCHOR_KINDS:
        raise ValueError(f"anchor must be 'text', 'audio' or one of {ANCHOR_KINDS}, got {anchor!r}")
    lst = take_items(items, n_items)
    b = make_batch(lst)
    with encoder.eval_mode():
        emb = embed_items(encoder, lst, sr)
        outputs = probe_outputs(b, FrontEnd(prof.audio), oracle_domain)
        z = {"text": emb.text, "audio": emb.query_audio}.get(anchor)
        if z is None:
            z = fuse_anchor(anchor, emb.query_audio, emb.text, emb.image, mlbp=mlbp)
        rewards = {k: cosine(embed_waveforms(encoder, w, sr), z) for k, w in outputs.items()}
    ref = rewards["oracle_irm"]
    return pd.DataFrame(
        [
            {
                "output": k,
                "reward_mean": float(r.mean()),
                "reward_std": float(r.std()) if len(r) > 1 else 0.0,
                "frac_ge_oracle": float((r >= ref).float().mean()),
            }
            for k, r in rewards.items()
        ]
    )

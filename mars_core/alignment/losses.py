"""The alignment losses: symmetric InfoNCE, the cosine triplet loss, the consistency loss,
and the learnable InfoNCE temperatures (one per modality pair).

The temperatures are owned here, not by the encoder: the encoders' own logit scales act
before the L2 normalisation of the interface and receive no gradient.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..encoders.contrastive import info_nce
from .config import PAIRS


def _check_pair(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(
            f"{what}: expected two (N, D) tensors of equal shape, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    if a.shape[0] == 0:
        raise ValueError(f"{what}: empty batch")


def symmetric_info_nce(
    a: torch.Tensor, b: torch.Tensor, logit_scale: torch.Tensor | float, labels: torch.Tensor | None = None
) -> torch.Tensor:
    """Symmetric (CLIP) InfoNCE between paired embeddings ``a_i <-> b_i``.

    ``l_ij = s cos(a_i, b_j)``; ``L = (InfoNCE(l) + InfoNCE(l^T)) / 2`` with the
    class-aware negatives of :func:`info_nce_from_logits` (same-class items in the
    batch are not negatives).

    Shape:
        a, b: ``(N, D)`` (normalised inside); labels ``(N,)``; returns a scalar.
    """
    _check_pair(a, b, "symmetric_info_nce")
    logits = logit_scale * F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T
    return info_nce(logits, labels)


def cosine_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``d(x, y) = 1 - cos(x, y)`` over the last axis (broadcasting). Shape: ``(..., D) -> (...)``."""
    return 1.0 - F.cosine_similarity(x, y, dim=-1, eps=1e-8)


def triplet_loss(anchor: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor, margin: float) -> torch.Tensor:
    """Triplet loss with a margin on cosine distances.

    ``L = mean_{i,k} max(0, d(a_i, p_i) - d(a_i, n_ik) + m)``, ``d = 1 - cos``: the
    positive must be closer to the anchor than every negative by at least ``m``.

    Shape:
        anchor, positive: ``(N, D)``; negatives ``(N, D)`` or ``(N, K, D)``; returns a scalar.
    """
    _check_pair(anchor, positive, "triplet_loss")
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    if negatives.ndim == 2:
        negatives = negatives.unsqueeze(1)
    if negatives.ndim != 3 or negatives.shape[0] != anchor.shape[0] or negatives.shape[2] != anchor.shape[1]:
        raise ValueError(
            f"negatives must be (N, D) or (N, K, D) with N, D = {tuple(anchor.shape)}, got {tuple(negatives.shape)}"
        )
    d_pos = cosine_distance(anchor, positive).unsqueeze(1)  # (N, 1)
    d_neg = cosine_distance(anchor.unsqueeze(1), negatives)  # (N, K)
    return F.relu(d_pos - d_neg + margin).mean()


def consistency_loss(z: torch.Tensor, z_aug: torch.Tensor) -> torch.Tensor:
    """Consistency between a clip and its augmentation: ``L = mean_i (1 - cos(z_i, z~_i))``.

    Shape:
        z, z_aug: ``(N, D)``; returns a scalar in ``[0, 2]``.
    """
    _check_pair(z, z_aug, "consistency_loss")
    return cosine_distance(z, z_aug).mean()


def cosine(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``cos(x, y)`` over the last axis (eps 1e-8). Shape: ``(..., D) -> (...)``."""
    return F.cosine_similarity(x, y, dim=-1, eps=1e-8)


class LogitScales(nn.Module):
    """Learnable InfoNCE logit scales ``s = min(exp(log_s), max_scale)``, one per modality pair."""

    def __init__(self, temperature_init: float = 0.07, learnable: bool = True, max_scale: float = 100.0):
        super().__init__()
        init = math.log(1.0 / temperature_init)
        self.log_scale = nn.ParameterDict({p: nn.Parameter(torch.tensor(init), requires_grad=learnable) for p in PAIRS})
        self.max_scale = max_scale

    def forward(self, pair: str) -> torch.Tensor:
        """The scale of ``pair`` (one of :data:`PAIRS`), a scalar tensor."""
        return self.log_scale[pair].exp().clamp(max=self.max_scale)

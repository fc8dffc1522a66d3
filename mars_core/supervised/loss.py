"""Supervised mask losses (docs/method.md section 3) and the loss of one training batch.

* Weighted binary cross-entropy on the ideal binary mask (CLIPSep / OmniSep):
  ``L = mean( w * BCE(P, M_gt) )`` with ``M_gt = 1[|S| > 0.5 |X|]`` and
  ``w = clamp(log(1 + |X|), 1e-3, 10)`` -- loud bins count more, silent bins almost not.
* The Sound-of-Pixels alternative: ratio mask ``clamp(|S| / |X|, 0, 1)`` with a weighted L1 loss.

All spectrograms are warped-domain magnitudes, shape ``(batch, F, T)``. Losses are computed in float32
(the forward pass may autocast to bf16 on a GPU: :func:`supervised_loss`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..audio import ideal_binary_mask, ideal_ratio_mask
from ..precision import autocast
from ..separator import QuerySeparator, multi_query_logits


def bce_weight(mix_mag: torch.Tensor) -> torch.Tensor:
    """``w = clamp(log(1 + |X|), 1e-3, 10)``. Shape: like ``mix_mag``."""
    return torch.log1p(mix_mag).clamp(1e-3, 10.0)


def weighted_bce(logits: torch.Tensor, target_mask: torch.Tensor, mix_mag: torch.Tensor) -> torch.Tensor:
    """Weighted BCE between mask logits ``z`` (``P = sigmoid(z)``) and a binary target.

    Computed from logits for numerical stability; equals
    ``mean(-w (M log P + (1 - M) log(1 - P)))``.

    Shape:
        logits, target_mask, mix_mag: ``(batch, F, T)``; returns a scalar.
    """
    if not (logits.shape == target_mask.shape == mix_mag.shape):
        raise ValueError(f"shapes differ: {tuple(logits.shape)}, {tuple(target_mask.shape)}, {tuple(mix_mag.shape)}")
    return F.binary_cross_entropy_with_logits(logits, target_mask, weight=bce_weight(mix_mag))


def weighted_l1(mask: torch.Tensor, target_mask: torch.Tensor, mix_mag: torch.Tensor) -> torch.Tensor:
    """Weighted L1 between a mask in [0, 1] and a ratio-mask target. Shape as :func:`weighted_bce`."""
    if not (mask.shape == target_mask.shape == mix_mag.shape):
        raise ValueError(f"shapes differ: {tuple(mask.shape)}, {tuple(target_mask.shape)}, {tuple(mix_mag.shape)}")
    return (bce_weight(mix_mag) * (mask - target_mask).abs()).mean()


def mask_targets(source_mag: torch.Tensor, mix_mag: torch.Tensor, kind: str = "ibm") -> torch.Tensor:
    """Training target for each source: ``"ibm"`` (for BCE) or ``"irm"`` (for L1)."""
    if kind == "ibm":
        return ideal_binary_mask(source_mag, mix_mag)
    if kind == "irm":
        return ideal_ratio_mask(source_mag, mix_mag)
    raise ValueError(f"kind must be 'ibm' or 'irm', got {kind!r}")


class MultiQueryLogits(nn.Module):
    """:func:`~mars_core.separator.multi_query_logits` of ``model`` as a module's forward: what ``--compile``
    compiles (:func:`mars_core.precision.maybe_compile`). Holds ``model`` (its parameters, no others).

    Shape: ``features (B, 1, F, T)``, ``queries (B, K, D)`` -> ``(B, K, F, T)`` logits.
    """

    def __init__(self, model: QuerySeparator):
        super().__init__()
        self.model = model

    def forward(self, features: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        return multi_query_logits(self.model, features, queries)


def supervised_loss(model: QuerySeparator, batch: dict, loss: str = "bce",
                    logits_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Weighted BCE on logits (``bce``) or weighted L1 on ``P`` (``l1``) over every item of the batch.

    The separator's forward pass runs under :func:`mars_core.precision.autocast` (bf16 on a CUDA GPU, a
    no-op on a CPU); its logits are cast to float32 before the loss, which is always computed in fp32.
    ``logits_fn(features, queries)`` replaces ``multi_query_logits(model, ...)`` (a compiled
    :class:`MultiQueryLogits` of ``model``).
    """
    with autocast(batch["features"].device):
        logits = (logits_fn(batch["features"], batch["queries"]) if logits_fn is not None
                  else multi_query_logits(model, batch["features"], batch["queries"]))
    logits = logits.float()
    mix = batch["mix_mag"].expand_as(logits)
    flat = lambda x: x.reshape(-1, *x.shape[-2:])  # noqa: E731
    if loss == "bce":
        return weighted_bce(flat(logits), flat(batch["targets"]), flat(mix))
    return weighted_l1(flat(torch.sigmoid(logits)), flat(batch["targets"]), flat(mix))

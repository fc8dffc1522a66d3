"""ImageBind's training objective: image-anchored, symmetric InfoNCE with class-level positives.

For a batch of ``B`` pairs ``(image_i, x_i)`` (``x`` = audio or text) with unit-norm image
embeddings ``q_i`` and postprocessed embeddings ``k_j = s * normalize(x_j)``, the logits are
``l_ij = q_i . k_j = s cos(q_i, x_j)`` and

    L = 1/2 [ mean_i -log softmax_j(l_ij)[i]  +  mean_j -log softmax_i(l_ij)[j] ],

with ``s = 1 / tau``: the audio tower's fixed scale 20 (tau = 0.05) and the text tower's
learnable scale (initialised at 1 / 0.07, clipped at 100), exactly what ImageBind's
postprocessors multiply in.

With only ~22 classes a batch holds several items of one class; the paper's InfoNCE
would push them apart as negatives. Here an off-diagonal pair of the **same class** is
neither positive nor negative: its logit is removed from both softmaxes (``labels=``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def same_class_mask(labels: torch.Tensor) -> torch.Tensor:
    """``True`` where ``i != j`` and ``labels[i] == labels[j]`` (the entries InfoNCE drops).

    Shape:
        labels: ``(B,)`` integer; returns ``(B, B)`` bool.
    """
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D (B,), got shape {tuple(labels.shape)}")
    same = labels[:, None] == labels[None, :]
    return same & ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)


def info_nce_from_logits(logits: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
    """One-directional InfoNCE with class-aware negatives, row ``i``'s positive at column ``i``.

    ``L = -1/N sum_i log( exp(l_ii) / sum_{j in D(i)} exp(l_ij) )`` with
    ``D(i) = {i} U {j : y_j != y_i}``: items of the same class as ``i`` (other than ``i``
    itself) are removed from the denominator, so they are neither positives nor
    negatives. Without ``labels`` every off-diagonal entry is a negative (plain InfoNCE).
    A row with no negative left contributes ``log 1 = 0``.

    Shape:
        logits: ``(N, N)`` (already multiplied by the logit scale); labels: ``(N,)``; returns a scalar.

    Raises:
        ValueError: non-square or empty logits, labels of another length.
    """
    if logits.ndim != 2 or logits.shape[0] != logits.shape[1] or logits.shape[0] == 0:
        raise ValueError(f"logits must be a non-empty square (N, N) matrix, got shape {tuple(logits.shape)}")
    n = logits.shape[0]
    if labels is not None:
        labels = torch.as_tensor(labels, device=logits.device)
        if labels.shape != (n,):
            raise ValueError(f"labels must have shape ({n},), got {tuple(labels.shape)}")
        logits = logits.masked_fill(same_class_mask(labels), float("-inf"))
    return F.cross_entropy(logits, torch.arange(n, device=logits.device))


def info_nce(logits: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE of a square logit matrix whose diagonal holds the positives:
    ``(info_nce_from_logits(l) + info_nce_from_logits(l^T)) / 2`` (rows: anchors -> others,
    columns: others -> anchors), same-class off-diagonal pairs masked out of both.

    Shape:
        logits: ``(B, B)``; labels: ``(B,)``; returns a scalar.
    """
    return 0.5 * (info_nce_from_logits(logits, labels) + info_nce_from_logits(logits.T, labels))


def retrieval_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of rows whose best column has the row's class (batch diagnostic).

    Shape:
        logits: ``(B, B)``; labels: ``(B,)``.
    """
    return (labels[logits.argmax(dim=1)] == labels).float().mean().item()

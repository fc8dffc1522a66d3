"""Embedding scores: the semantic score and the contamination score (cosines of encoder embeddings)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .checks import _as_float64, _check_finite, _is_torch


def _cosine(a: Any, b: Any, name_a: str, name_b: str) -> Any:
    """Row-wise cosine similarity after L2-normalising each row; broadcasts leading dims.

    Shape:
        a: ``(*batch, dim)``; b: ``(*batch, dim)`` or ``(dim,)``. Returns ``(*batch,)``.
    """
    if _is_torch(a) != _is_torch(b):
        raise TypeError(f"{name_a} and {name_b} must both be torch tensors or both be array-likes")
    if not _is_torch(a):
        a, b = _as_float64(a, name_a), _as_float64(b, name_b)
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(f"embedding sizes differ: {name_a} {tuple(a.shape)} vs {name_b} {tuple(b.shape)}")
    unit = []
    for x, name in ((a, name_a), (b, name_b)):
        _check_finite(x, name)
        norm = x.norm(dim=-1, keepdim=True) if _is_torch(x) else np.linalg.norm(x, axis=-1, keepdims=True)
        zero = (norm == 0).reshape(-1)
        if bool(zero.any()):
            row = int(np.argmax(zero.cpu().numpy() if _is_torch(zero) else zero))
            raise ValueError(f"{name}: row {row} has zero norm; its cosine is undefined")
        unit.append(x / norm)
    return (unit[0] * unit[1]).sum(-1)


def semantic_score(estimate_embeddings: Any, target_embeddings: Any) -> Any:
    """Semantic score ``100 * cos(e_est, e_target)`` (the paper's CLAP score, in percent).

    Use embeddings from an encoder *other* than the reward encoder (docs/method.md section 8).
    Rows are L2-normalised inside; a zero row raises ``ValueError``.

    Shape:
        estimate_embeddings: ``(batch, dim)``; target_embeddings: ``(batch, dim)`` or
        ``(dim,)`` (one query for all). Returns ``(batch,)``, torch for torch input.
    """
    return 100.0 * _cosine(estimate_embeddings, target_embeddings, "estimate_embeddings", "target_embeddings")


def contamination_score(estimate_embeddings: Any, target_embeddings: Any, interferer_embeddings: Any) -> dict:
    """How much the estimate sounds like the interferer, and the target-vs-interferer margin.

    Returns ``{"contamination": 100 * cos(e_est, e_interf),
    "margin": cos(e_est, e_target) - cos(e_est, e_interf)}``. The margin is in raw
    cosine units (not x100), comparable to the paper's target-vs-mixture similarity gap.

    Shape:
        estimate_embeddings: ``(batch, dim)``; target_embeddings and interferer_embeddings:
        ``(batch, dim)`` or ``(dim,)``. Each value is ``(batch,)``, torch for torch input.
    """
    cos_t = _cosine(estimate_embeddings, target_embeddings, "estimate_embeddings", "target_embeddings")
    cos_i = _cosine(estimate_embeddings, interferer_embeddings, "estimate_embeddings", "interferer_embeddings")
    return {"contamination": 100.0 * cos_i, "margin": cos_t - cos_i}

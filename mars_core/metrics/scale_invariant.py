"""Scale-invariant SDR and its improvement over the mixture; numpy or torch (differentiable)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .checks import _as_float64, _check_audio, _is_torch

SI_SDR_EPS = 1e-8
"""Additive energy floor of :func:`si_sdr`; keeps it finite for silent inputs."""


def si_sdr(estimate: Any, reference: Any, zero_mean: bool = True, eps: float = SI_SDR_EPS) -> Any:
    """Scale-invariant SDR (dB), batched over leading dims; numpy or torch (differentiable).

    With ``e = s_hat`` and ``s`` (means removed when ``zero_mean``):

        alpha = <e, s> / (|s|^2 + eps),   SI-SDR = 10 log10((|alpha s|^2 + eps) / (|e - alpha s|^2 + eps))

    ``eps`` keeps the value finite for silent inputs: both silent -> 0 dB; silent
    reference -> ``10 log10(eps / (|e|^2 + eps))``; silent estimate -> 0 dB. Those
    numbers mean nothing, which is why :func:`evaluate_batch` skips silent items.

    Shape:
        estimate, reference: ``(*batch, time)``, same shape. Returns ``(*batch,)``,
        torch for torch input, float64 numpy otherwise.
    """
    est, ref = _pair(estimate, reference)
    if zero_mean:
        est = est - est.mean(-1, keepdims=True)
        ref = ref - ref.mean(-1, keepdims=True)
    alpha = (est * ref).sum(-1, keepdims=True) / ((ref**2).sum(-1, keepdims=True) + eps)
    target = alpha * ref
    ratio = ((target**2).sum(-1) + eps) / (((est - target) ** 2).sum(-1) + eps)
    return 10.0 * (ratio.log10() if _is_torch(ratio) else np.log10(ratio))


def _pair(estimate: Any, reference: Any, names: tuple[str, str] = ("estimate", "reference")) -> tuple[Any, Any]:
    """Validate an ``(estimate, reference)`` pair: float, same shape, finite, a time axis."""
    if _is_torch(estimate) != _is_torch(reference):
        raise TypeError(f"{names[0]} and {names[1]} must both be torch tensors or both be array-likes")
    _check_audio(estimate, names[0])  # before any float conversion: integer PCM is refused
    _check_audio(reference, names[1])
    if not _is_torch(estimate):
        estimate, reference = _as_float64(estimate, names[0]), _as_float64(reference, names[1])
    if tuple(estimate.shape) != tuple(reference.shape):
        raise ValueError(f"shape mismatch: {names[0]} {tuple(estimate.shape)} vs {names[1]} {tuple(reference.shape)}")
    return estimate, reference


def si_sdri(estimate: Any, reference: Any, mixture: Any, zero_mean: bool = True, eps: float = SI_SDR_EPS) -> Any:
    """SI-SDR improvement (dB): ``si_sdr(estimate, reference) - si_sdr(mixture, reference)``.

    Shape:
        estimate, reference, mixture: ``(*batch, time)``, same shape. Returns ``(*batch,)``.
    """
    _pair(mixture, reference, ("mixture", "reference"))
    return si_sdr(estimate, reference, zero_mean, eps) - si_sdr(mixture, reference, zero_mean, eps)

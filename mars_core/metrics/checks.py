"""Input checks shared by every metric (float, finite, a time axis) and the silence rule.

A signal is *silent* when ``sum(|x|) <= SILENCE_L1``; see :mod:`mars_core.metrics`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..inputs import validate_audio

SILENCE_L1 = 1e-5
"""A signal with ``sum(|x|) <= SILENCE_L1`` is silent (CLIPSep/OmniSep evaluation rule)."""


def _is_torch(x: Any) -> bool:
    return type(x).__module__.split(".")[0] == "torch"


def _as_float64(x: Any, name: str) -> np.ndarray:
    """Any array-like (torch tensors detached, moved to CPU) as a float64 numpy array."""
    if _is_torch(x):
        x = x.detach().cpu().double().numpy()
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 0:
        raise ValueError(f"{name} must have a time axis; got a scalar")
    return arr


def _check_audio(x: Any, name: str, min_samples: int | None = None) -> None:
    """The shared audio checks at a metric's entry (:func:`mars_core.inputs.validate_audio`): float
    dtype (integer PCM is refused: an int16 estimate against a float reference would score -93 dB),
    finite (naming the first bad item), non-empty time axis, ``min_samples`` for BSS Eval's filter."""
    validate_audio(x, name, min_samples=min_samples, allow_empty_batch=True,
                   min_reason=None if min_samples is None else f"filter_length={min_samples} of BSS Eval's "
                   "distortion filter")


def _check_finite(x: Any, name: str) -> None:
    """Raise ``ValueError`` naming the first item (index over leading dims) holding NaN/inf.

    Shape:
        x: ``(*batch, ..., time)``; the item index is taken over the first axis.
    """
    if _is_torch(x):
        import torch

        bad = ~torch.isfinite(x.detach())
        if not bool(bad.any()):
            return
        bad = bad.cpu().numpy()
    else:
        bad = ~np.isfinite(x)
        if not bad.any():
            return
    if bad.ndim <= 1:
        raise ValueError(f"{name} contains NaN or inf")
    item = int(np.argmax(bad.reshape(bad.shape[0], -1).any(axis=1)))
    raise ValueError(f"{name}: item {item} contains NaN or inf")


def is_silent(x: Any, threshold: float = SILENCE_L1) -> np.ndarray:
    """True where a signal is silent: ``sum_t |x_t| <= threshold``.

    Shape:
        x: ``(*batch, time)`` numpy or torch. Returns a bool array ``(*batch,)``.
    """
    return np.abs(_as_float64(x, "x")).sum(axis=-1) <= threshold

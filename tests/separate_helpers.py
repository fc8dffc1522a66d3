"""Shared material of the ``mars_core.separate`` tests: a separator with a constant mask and sine tones."""

from __future__ import annotations

import numpy as np
import torch

from mars_core.config import get_profile
from mars_core.separator import new_separator

SMOKE = get_profile("smoke")
SEG = SMOKE.audio.segment_samples


def constant_separator(logit: float):
    """A smoke-size separator whose mask is sigmoid(logit) everywhere (40: all-pass, exactly 1.0 in float32)."""
    model = new_separator(SMOKE, 0)
    with torch.no_grad():
        model.scale.zero_()
        model.bias.fill_(logit)
    return model


def tones(n: int, sample_rate: int, freqs=(440.0, 1000.0), amps=(0.5, 0.3)) -> np.ndarray:
    """``(n, len(freqs))`` sine tones, one per channel."""
    t = np.arange(n) / sample_rate
    return np.stack([a * np.sin(2 * np.pi * f * t) for f, a in zip(freqs, amps)], axis=1).astype(np.float32)

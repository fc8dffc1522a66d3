"""Tolerances for float32 results, derived from how their rounding errors arise (not from one machine's run).

Different x86-64 CPUs (AVX2 or AVX-512, Intel or AMD, 1 or 2 threads) sum in different orders and use
different FFT kernels, so two float32 computations of the same value agree only to a few units of
``EPS32`` times the size of what was summed, which can be much larger than the value itself.
"""

from __future__ import annotations

import math

import torch

from mars_core.config import AudioConfig

EPS32 = torch.finfo(torch.float32).eps


def istft_gain(cfg: AudioConfig, length: int) -> torch.Tensor:
    """Per-sample gain with which :func:`mars_core.audio.istft` passes an error of its frames to the output.

    The centred least-squares overlap-add writes ``y(t) = sum_f w(t - f hop) z_f(t - f hop) / sum_f w^2(t - f hop)``
    (periodic Hann ``w``, frames starting at ``f hop - n_fft // 2``), so an error ``d`` in every frame sample
    reaches ``y(t)`` multiplied by ``sum_f |w| / sum_f w^2``: about 1.3 inside the signal and large at the last
    samples, which only the tail of the last frame covers. Computed here from that definition, in float64.

    Shape:
        returns: ``(length,)`` float64.
    """
    n, hop = cfg.n_fft, cfg.hop_length
    w = torch.hann_window(n, periodic=True, dtype=torch.float64)
    num, den = torch.zeros(length, dtype=torch.float64), torch.zeros(length, dtype=torch.float64)
    for f in range(1 + length // hop):
        start = f * hop - n // 2
        lo, hi = max(start, 0), min(start + n, length)
        num[lo:hi] += w[lo - start : hi - start].abs()
        den[lo:hi] += w[lo - start : hi - start] ** 2
    return num / den


def istft_atol(cfg: AudioConfig, length: int, scale: float, k: float = 16.0) -> torch.Tensor:
    """Per-sample absolute tolerance of a float32 STFT -> :func:`mars_core.audio.istft` round trip of a
    signal of peak ``scale`` (for :meth:`~mars_core.audio.FrontEnd.reconstruct` use :func:`reconstruct_atol`).

    An FFT of size ``n`` rounds each output to about ``EPS32 * log2(n)`` times the frame's magnitude
    (at most ``scale``), the same for every sample of the frame; the overlap-add multiplies it by
    :func:`istft_gain`. ``k`` covers the constant and the forward plus inverse transforms (the error measured
    in these units stayed below 0.3, for noise and tones, batched or not, 1 or 2 threads, on an Intel Xeon).

    Shape:
        returns: ``(length,)`` float64.
    """
    return k * EPS32 * math.log2(cfg.n_fft) * scale * istft_gain(cfg, length)


def reconstruct_atol(cfg: AudioConfig, length: int, scale: float, k: float = 16.0) -> torch.Tensor:
    """:func:`istft_atol` for :meth:`mars_core.audio.FrontEnd.reconstruct`, which overlap-adds ``length + n_fft // 2``
    samples (the mixture extended by the reflection the centred STFT makes anyway) and keeps the first ``length``.

    Shape:
        returns: ``(length,)`` float64.
    """
    return istft_atol(cfg, length + cfg.n_fft // 2, scale, k)[:length]


def assert_within(actual, expected, atol, what: str = "values") -> None:
    """``|actual - expected| <= atol`` elementwise (``atol`` broadcasts), with the worst element in the message."""
    actual = torch.as_tensor(actual, dtype=torch.float64)
    expected = torch.as_tensor(expected, dtype=torch.float64)
    atol = torch.as_tensor(atol, dtype=torch.float64)
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    excess = (actual - expected).abs() / atol
    worst = int(excess.flatten().argmax())
    idx = tuple(int(i) for i in torch.unravel_index(torch.tensor(worst), excess.shape))
    assert bool((excess <= 1).all()), (
        f"{what}: {int((excess > 1).sum())} of {excess.numel()} elements beyond tolerance; worst at {idx}: "
        f"{float(actual[idx])} vs {float(expected[idx])}, allowed {float(atol.expand_as(excess)[idx]):.3g}"
    )

"""Small signal helpers for the builder: resampling, pitch shift, low-pass, loudness.

All functions take and return mono ``float64`` numpy arrays of shape ``(samples,)``
and are deterministic (no randomness inside; callers pass drawn values).
"""

from __future__ import annotations

from math import gcd

import numpy as np
from scipy import signal

from .quality import active_mask


def to_mono(x: np.ndarray) -> np.ndarray:
    """Average the channels of ``(samples, channels)`` audio; pass ``(samples,)`` through."""
    x = np.asarray(x, dtype=np.float64)
    return x.mean(axis=1) if x.ndim == 2 else x


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Band-limited polyphase resampling from ``sr_in`` to ``sr_out`` Hz (integers)."""
    if sr_in == sr_out:
        return np.asarray(x, dtype=np.float64)
    g = gcd(int(sr_in), int(sr_out))
    return signal.resample_poly(np.asarray(x, dtype=np.float64), sr_out // g, sr_in // g)


def pitch_shift(x: np.ndarray, semitones: float, resolution: int = 64) -> np.ndarray:
    """Tape-style shift: play faster (up) or slower (down) by 2^(semitones/12).

    Pitch and duration change together; the ratio is quantised to ``k / resolution``.
    """
    down = max(1, int(round(resolution * 2 ** (semitones / 12))))
    if down == resolution:
        return np.asarray(x, dtype=np.float64)
    g = gcd(resolution, down)
    return signal.resample_poly(np.asarray(x, dtype=np.float64), resolution // g, down // g)


def lowpass(x: np.ndarray, sample_rate: int, cutoff_hz: float, order: int = 8) -> np.ndarray:
    """Butterworth low-pass (second-order sections, causal) at ``cutoff_hz``."""
    if not 0 < cutoff_hz < sample_rate / 2:
        raise ValueError(f"cut-off {cutoff_hz} Hz must lie in (0, {sample_rate / 2}) Hz")
    sos = signal.butter(order, cutoff_hz, btype="low", fs=sample_rate, output="sos")
    return signal.sosfilt(sos, np.asarray(x, dtype=np.float64))


def fade(x: np.ndarray, sample_rate: int, ms: float = 10.0) -> np.ndarray:
    """Linear fade-in and fade-out of ``ms`` milliseconds (shorter for short signals)."""
    x = np.array(x, dtype=np.float64)
    n = min(len(x) // 2, int(sample_rate * ms / 1000))
    if n > 0:
        ramp = np.linspace(0.0, 1.0, n, endpoint=False)
        x[:n] *= ramp
        x[len(x) - n :] *= ramp[::-1]
    return x


def trim_and_compact(
    x: np.ndarray, sample_rate: int, max_gap_s: float, frame_ms: float = 20.0, silence_db: float = -40.0
) -> np.ndarray:
    """Drop leading/trailing silent frames and shorten inner silent runs to ``max_gap_s``.

    Silence is judged per frame as in :func:`quality.active_mask`. A signal with no
    active frame is returned empty.
    """
    mask = active_mask(x, sample_rate, frame_ms, silence_db)
    frame = max(1, int(round(sample_rate * frame_ms / 1000)))
    if not mask.any():
        return np.zeros(0)
    keep_frames = max(1, int(round(max_gap_s * 1000 / frame_ms)))
    keep = np.zeros(len(mask), dtype=bool)
    active = np.nonzero(mask)[0]
    keep[active[0] : active[-1] + 1] = True
    run = 0
    for i in range(active[0], active[-1] + 1):
        run = 0 if mask[i] else run + 1
        if run > keep_frames:
            keep[i] = False
    pieces = [x[i * frame : (i + 1) * frame] for i in np.nonzero(keep)[0]]
    if active[-1] == len(mask) - 1:  # the tail shorter than one frame follows an active frame
        pieces.append(x[len(mask) * frame :])
    return np.concatenate(pieces)


def normalize_loudness(
    x: np.ndarray,
    sample_rate: int,
    target_dbfs: float = -20.0,
    peak_max: float = 0.99,
    frame_ms: float = 20.0,
    silence_db: float = -40.0,
) -> np.ndarray:
    """Scale so the RMS over active frames is ``target_dbfs``, then cap the peak at ``peak_max``.

    Active-frame RMS keeps sparse sounds (drum hits, chirps) as loud as sustained ones
    while they play; the cap keeps every sample in ``[-peak_max, peak_max]``.

    Raises:
        ValueError: for a silent signal.
    """
    x = np.asarray(x, dtype=np.float64)
    mask = active_mask(x, sample_rate, frame_ms, silence_db)
    if not mask.any():
        raise ValueError("cannot normalise a silent signal")
    frame = max(1, int(round(sample_rate * frame_ms / 1000)))
    if len(x) < frame:
        active = x
    else:
        active = x[: len(mask) * frame].reshape(len(mask), frame)[mask]
    rms = float(np.sqrt(np.mean(active**2)))
    y = x * (10 ** (target_dbfs / 20) / rms)
    peak = float(np.abs(y).max())
    return y * (peak_max / peak) if peak > peak_max else y

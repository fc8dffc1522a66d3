"""Quality checks on source material: silence and bandwidth.

Two measures, both on mono float signals:

* **active fraction**: the signal is cut into frames of ``frame_ms``; a frame is
  *active* when its mean-square energy is within ``silence_db`` (negative) of the
  loudest frame's energy. A clip that is mostly silence (e.g. a single short chirp
  in a 4 s phrase) has a small active fraction.
* **bandwidth**: the highest frequency whose Welch power spectral density is within
  ``floor_db`` of the spectrum's peak. A recording that was once sampled at 8 kHz
  has nothing above 4 kHz however it is stored. (A 95 %-energy roll-off would call
  a genuine cello or owl recording "low-bandwidth", since most of their energy lies
  below 1 kHz; what gives a class away after resampling is the empty band above the
  edge, which this measures.)

Failures raise :class:`MaterialError` with the name of the offending file or clip.
"""

from __future__ import annotations

import numpy as np
from scipy import signal


class MaterialError(RuntimeError):
    """Source material that is missing, unreadable or fails a quality check."""


def frame_energies(x: np.ndarray, sample_rate: int, frame_ms: float = 20.0) -> np.ndarray:
    """Mean-square energy of consecutive non-overlapping frames (a short signal is one frame).

    Shape:
        x: ``(samples,)``; returns ``(n_frames,)``.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"expected a mono signal of shape (samples,), got {x.shape}")
    if len(x) == 0:
        return np.zeros(0)
    frame = max(1, int(round(sample_rate * frame_ms / 1000)))
    n = max(1, len(x) // frame)
    if len(x) < frame:
        return np.array([np.mean(x**2)])
    return np.mean(x[: n * frame].reshape(n, frame) ** 2, axis=1)


def active_mask(x: np.ndarray, sample_rate: int, frame_ms: float = 20.0, silence_db: float = -40.0) -> np.ndarray:
    """Boolean mask of active frames: energy >= loudest frame's energy x 10^(silence_db/10).

    An all-zero or empty signal has no active frame.
    """
    e = frame_energies(x, sample_rate, frame_ms)
    if len(e) == 0 or e.max() <= 0:
        return np.zeros(len(e), dtype=bool)
    return e >= e.max() * 10 ** (silence_db / 10)


def active_fraction(x: np.ndarray, sample_rate: int, frame_ms: float = 20.0, silence_db: float = -40.0) -> float:
    """Fraction of frames that are active (0.0 for silence or an empty signal)."""
    m = active_mask(x, sample_rate, frame_ms, silence_db)
    return float(m.mean()) if len(m) else 0.0


def check_active(
    x: np.ndarray,
    sample_rate: int,
    name: str,
    min_fraction: float,
    frame_ms: float = 20.0,
    silence_db: float = -40.0,
) -> float:
    """Return the active fraction, or raise :class:`MaterialError` naming ``name`` if below ``min_fraction``."""
    frac = active_fraction(x, sample_rate, frame_ms, silence_db)
    if frac < min_fraction:
        raise MaterialError(
            f"{name}: mostly silence (active fraction {frac:.2f} < {min_fraction:.2f}; "
            f"frames of {frame_ms:g} ms, threshold {silence_db:g} dB below the loudest frame)"
        )
    return frac


def bandwidth_hz(x: np.ndarray, sample_rate: int, floor_db: float = 60.0) -> float:
    """Highest frequency (Hz) whose Welch PSD is within ``floor_db`` dB of the peak (0.0 for silence).

    Shape:
        x: ``(samples,)``.
    """
    x = np.asarray(x, dtype=np.float64)
    if len(x) < 16 or not np.any(x):
        return 0.0
    freqs, psd = signal.welch(x, fs=sample_rate, nperseg=min(1024, len(x)))
    if psd.max() <= 0:
        return 0.0
    above = np.nonzero(psd >= psd.max() * 10 ** (-floor_db / 10))[0]
    return float(freqs[above[-1]])


def check_bandwidth(x: np.ndarray, sample_rate: int, name: str, min_hz: float, floor_db: float = 60.0) -> float:
    """Return the bandwidth, or raise :class:`MaterialError` naming ``name`` if below ``min_hz``."""
    bw = bandwidth_hz(x, sample_rate, floor_db)
    if bw < min_hz:
        raise MaterialError(
            f"{name}: low-bandwidth recording (content up to {bw:.0f} Hz within {floor_db:g} dB of the peak, "
            f"needs at least {min_hz:.0f} Hz at this profile's sample rate; stored at {sample_rate} Hz)"
        )
    return bw

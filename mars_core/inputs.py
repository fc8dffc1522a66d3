"""One validator for every public entry point that takes audio, and the conversions it points to.

:func:`validate_audio` is called by :func:`mars_core.evaluation.evaluate.separate`, the metrics
(:mod:`mars_core.metrics`), the reward (:class:`mars_core.rl.rewards.RewardModel`) and the encoders'
``embed_audio``. It returns its input **unchanged** (the same object, no copy) when it is fine and
raises :class:`AudioInputError` (a ``ValueError``) otherwise, with a message that names the argument
and says what to do. The checks, in this order:

1. type: a numpy array or a torch tensor (lists and tuples of numbers become a float64 array);
2. dtype: floating point. **Integer arrays are always rejected, never rescaled silently**: the
   dtype alone does not say whether ``int16`` holds PCM or already-scaled counts, and guessing
   wrong costs ~90 dB (an int16 estimate against a float reference scores SDR -93 dB). The error
   says how to convert (int16 PCM: divide by 32768); :func:`pcm_to_float` does it explicitly
   (full scale of the dtype: ``int16 / 2**15``, ``int32 / 2**31``, ``uint8 (x - 128) / 128``);
3. layout: the number of axes the entry point expects (``ndim``), time on the last axis. A
   stereo or channels-last input is named in the error, e.g. ``got shape (16000, 2): looks like
   (time, channels) stereo; downmix with x.mean(-1) or separate each channel``;
4. not empty: no zero-length axis (an empty batch or an empty waveform);
5. sample rate: when both ``sample_rate`` (the audio's) and the expected rate (the profile's)
   are known they must be equal; the error says to resample with :func:`resample_to`
   (``torchaudio.functional.resample``, band-limited) and never resamples by itself;
6. length: at least ``min_samples`` (with a profile: one STFT frame, ``n_fft`` samples), or
   exactly ``length`` samples (the separator's segment); a length that is the segment at another
   common rate is reported as such ("is the audio at 16000 Hz?");
7. finite: no NaN or inf; the error counts them and gives the index of the first (one NaN sample
   would turn a whole separated estimate into NaN).

Example:
    >>> x = validate_audio(mixtures, "mixtures", ndim=2, profile="smoke", sample_rate=8000, length=16383)
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch

from .config import AudioConfig, Profile, get_profile

__all__ = ["AudioInputError", "validate_audio", "pcm_to_float", "resample_to", "COMMON_RATES", "MAX_CHANNELS"]

COMMON_RATES = (8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000)
"""Sample rates (Hz) recognised when a wrong length looks like the right duration at another rate."""
MAX_CHANNELS = 8
"""An axis of at most this many entries beside a long one is read as a channel axis in the hints."""

_LAYOUTS = {1: "(samples,)", 2: "(batch, samples)", 3: "(batch, n_src, samples)"}


class AudioInputError(ValueError):
    """Audio an entry point cannot use; the message names the argument and the fix."""


# --------------------------------------------------------------------------- helpers
def _audio_config(profile: str | Profile | AudioConfig | None) -> AudioConfig | None:
    if profile is None or isinstance(profile, AudioConfig):
        return profile
    return get_profile(profile).audio


def _dtype_name(x: Any) -> str:
    return str(x.dtype).replace("torch.", "")


def _int_advice(dtype: str) -> str:
    """How to turn integer samples of ``dtype`` into floats in [-1, 1]."""
    scale = {"int8": "128", "int16": "32768", "int32": "2147483648", "int64": "2**63"}.get(dtype)
    if scale is not None:
        how = f"{dtype} PCM: divide by {scale}, e.g. x.astype(np.float32) / {scale} or x.float() / {scale}"
    elif dtype == "uint8":
        how = "uint8 PCM: (x - 128) / 128"
    else:
        how = "convert it to float32 samples in [-1, 1]"
    return f"pass float samples in [-1, 1] ({how}; mars_core.inputs.pcm_to_float(x) does this)"


def _channel_hint(shape: tuple[int, ...]) -> str | None:
    """A reading of a multi-channel layout in ``shape``, or ``None`` when there is none."""
    if len(shape) < 2:
        return None
    last, prev = shape[-1], shape[-2]
    if last <= MAX_CHANNELS < prev:
        kind = "stereo" if last == 2 else f"{last} channels"
        return (f"looks like (time, channels) {kind}; downmix with x.mean(-1) or separate each channel "
                f"(x[..., c] is channel c)")
    if prev <= MAX_CHANNELS < last and len(shape) >= 3:
        kind = "stereo" if prev == 2 else f"{prev} channels"
        return (f"looks like (batch, channels, time) {kind}; downmix with x.mean(-2) or separate each channel "
                f"(x[..., c, :] is channel c)")
    return None


def _rate_hint(n: int, length: int, expected_rate: int | None) -> str:
    """' -- that is the segment at R Hz ...' when ``n`` samples are ``length`` at another common rate."""
    if not expected_rate:
        return ""
    implied = n * expected_rate / length
    for rate in COMMON_RATES:
        if rate != expected_rate and abs(implied - rate) <= 0.002 * rate:
            return (f"; that is one segment's duration at {rate} Hz: is the audio at {rate} Hz? Resample it with "
                    f"mars_core.inputs.resample_to(x, {rate}, {expected_rate})")
    return ""


def _report_non_finite(x: Any, name: str) -> None:
    """Raise naming the first item (index over the first axis) with NaN/inf, with counts."""
    if isinstance(x, torch.Tensor):
        d = x.detach()
        # a NaN or inf makes the sum non-finite, so a finite sum clears the input in one read without temporaries
        # (a sum that overflows is checked element by element below)
        if d.is_floating_point() and bool(torch.isfinite(d.sum())):
            return
        bad = ~torch.isfinite(d)
        if not bool(bad.any()):  # one pass and one device sync for a valid input
            return
        n_nan, n_inf = int(torch.isnan(d).sum()), int(torch.isinf(d).sum())
        first = tuple(int(i) for i in torch.nonzero(bad)[0])
    else:
        bad = ~np.isfinite(x)
        if not bad.any():
            return
        n_nan, n_inf = int(np.isnan(x).sum()), int(np.isinf(x).sum())
        first = tuple(int(i) for i in np.argwhere(bad)[0])
    shape = tuple(x.shape)
    where = f"first at index {first}" if len(first) > 1 else f"first at sample {first[0]}"
    head = f"{name}: item {first[0]}" if len(shape) >= 2 else name
    raise AudioInputError(
        f"{head} contains NaN or infinite values ({n_nan} NaN and {n_inf} inf of {math.prod(shape)} samples, "
        f"shape {shape}; {where}); a single NaN sample spreads over the whole separated estimate: "
        f"find where it comes from, or replace it explicitly (np.nan_to_num / torch.nan_to_num)")


# --------------------------------------------------------------------------- the validator
def validate_audio(x: Any, name: str = "audio", *, ndim: int | Sequence[int] | None = None,
                   layout: str | None = None, profile: str | Profile | AudioConfig | None = None,
                   sample_rate: int | None = None, expected_rate: int | None = None,
                   min_samples: int | None = None, min_reason: str | None = None, length: int | None = None,
                   finite: bool = True, allow_empty_batch: bool = False) -> Any:
    """Check audio for an entry point; return it unchanged (same object, no copy) or raise.

    Args:
        x: numpy array or torch tensor (any device); lists/tuples of numbers become float64 arrays.
        name: the argument's name, used in every message.
        ndim: the allowed numbers of axes (``None``: any, for ``(*batch, time)`` inputs).
        layout: how the expected layout is written in messages (default from ``ndim``, e.g.
            ``"(batch, samples)"``).
        profile: a profile name, :class:`~mars_core.config.Profile` or
            :class:`~mars_core.config.AudioConfig`; sets ``expected_rate`` (its sample rate) and
            ``min_samples`` (one STFT frame, ``n_fft``) unless those are given.
        sample_rate: the rate of ``x`` in Hz, when the caller knows it.
        expected_rate: the rate ``x`` must have (Hz); checked only when ``sample_rate`` is given.
        min_samples: the fewest samples on the time axis; ``min_reason`` says why in the message.
        length: the exact number of samples required (checked after ``min_samples``).
        finite: check for NaN/inf (one pass over the data; the only check that reads the samples).
        allow_empty_batch: accept zero items on a leading axis (``(0, samples)``: an empty table).

    Shape:
        x: ``(..., samples)``, time on the last axis. Returns ``x`` itself.

    Raises:
        TypeError: ``x`` is not an array, a tensor or a sequence of numbers.
        AudioInputError: (a ``ValueError``) see the module docstring for the checks and messages.
    """
    if not isinstance(x, (np.ndarray, torch.Tensor)):
        if isinstance(x, (str, bytes)) or not isinstance(x, (Sequence, np.generic, int, float)):
            raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(x).__name__}")
        try:
            x = np.asarray(x, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name} must be a numpy array or a torch tensor of samples ({exc})") from None
    cfg = _audio_config(profile)
    if cfg is not None:
        expected_rate = cfg.sample_rate if expected_rate is None else expected_rate
        if min_samples is None:
            min_samples = cfg.n_fft
            min_reason = min_reason or (f"one STFT frame of n_fft={cfg.n_fft} samples, "
                                        f"{1000 * cfg.n_fft / cfg.sample_rate:g} ms at {cfg.sample_rate} Hz")
    shape = tuple(x.shape)

    # dtype
    is_torch = isinstance(x, torch.Tensor)
    floating = x.is_floating_point() if is_torch else np.issubdtype(x.dtype, np.floating)
    if not floating:
        dtype = _dtype_name(x)
        if dtype.startswith(("int", "uint")):
            raise AudioInputError(f"{name} has dtype {dtype}; {_int_advice(dtype)}")
        raise AudioInputError(f"{name} has dtype {dtype}; audio must be real floating point samples in [-1, 1]")

    # layout
    allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim) if ndim is not None else None
    if allowed is not None and len(shape) not in allowed:
        want = layout or " or ".join(_LAYOUTS.get(k, f"{k}-D") for k in allowed)
        hint = _channel_hint(shape) if len(shape) > max(allowed) else None
        if len(shape) == min(allowed) - 1 and len(shape) >= 1:
            hint = "add the missing leading axis with x[None] (numpy) or x.unsqueeze(0) (torch)"
        raise AudioInputError(f"{name} must be {want} mono audio, got shape {shape}"
                              + (f": {hint}" if hint else ""))
    if len(shape) == 0:
        raise AudioInputError(f"{name} must have a time axis (..., samples); got a scalar")

    # emptiness
    if shape[-1] == 0:
        raise AudioInputError(f"{name} is empty (shape {shape}): no samples on the time axis")
    if 0 in shape:
        if allow_empty_batch:
            return x
        raise AudioInputError(f"{name} is an empty batch (shape {shape})")

    # sample rate
    if sample_rate is not None and expected_rate is not None and int(sample_rate) != int(expected_rate):
        raise AudioInputError(
            f"{name} is at {int(sample_rate)} Hz but {int(expected_rate)} Hz is required (the model's front end "
            f"runs at that rate); resample it first with "
            f"mars_core.inputs.resample_to(x, {int(sample_rate)}, {int(expected_rate)}) "
            f"(torchaudio.functional.resample(x, {int(sample_rate)}, {int(expected_rate)}))")

    # length
    n = shape[-1]
    if min_samples is not None and n < min_samples:
        hint = _channel_hint(shape)
        if hint:
            raise AudioInputError(f"{name} has shape {shape}: {hint}")
        why = f" ({min_reason})" if min_reason else ""
        raise AudioInputError(f"{name} has {n} samples, fewer than {min_samples}{why}; use longer audio "
                              f"or zero-pad it")
    if length is not None and n != length:
        hint = _channel_hint(shape)
        if hint:
            raise AudioInputError(f"{name} has shape {shape}: {hint}")
        secs = f" ({length / expected_rate:g} s at {int(expected_rate)} Hz)" if expected_rate else ""
        raise AudioInputError(f"{name} has {n} samples; expected segments of exactly {length} samples{secs}"
                              f"{_rate_hint(n, length, expected_rate)}; otherwise cut or zero-pad it to "
                              f"{length} samples")

    if finite:
        _report_non_finite(x, name)
    return x


# --------------------------------------------------------------------------- conversions
def pcm_to_float(x: Any) -> Any:
    """Integer PCM as float32 in [-1, 1] by the full scale of its dtype; floats are returned as they are.

    ``int8 / 2**7``, ``int16 / 2**15``, ``int32 / 2**31``, ``int64 / 2**63``, ``uint8 (x - 128) / 128``
    (WAV's 8-bit convention). Numpy in, numpy out; torch in, torch out (same device).

    Raises:
        AudioInputError: another dtype (bool, complex, unsigned wider than 8 bits).
    """
    is_torch = isinstance(x, torch.Tensor)
    if not is_torch:
        x = np.asarray(x)
    if (x.is_floating_point() if is_torch else np.issubdtype(x.dtype, np.floating)):
        return x
    dtype = _dtype_name(x)
    bits = {"int8": 7, "int16": 15, "int32": 31, "int64": 63}
    if dtype in bits:
        scale, offset = float(2 ** bits[dtype]), 0.0
    elif dtype == "uint8":
        scale, offset = 128.0, 128.0
    else:
        raise AudioInputError(f"pcm_to_float: no PCM convention for dtype {dtype}")
    if is_torch:
        return (x.to(torch.float64) - offset).div(scale).to(torch.float32)
    return ((x.astype(np.float64) - offset) / scale).astype(np.float32)


def resample_to(x: Any, sample_rate: int, target_rate: int) -> Any:
    """Band-limited resampling of ``x`` from ``sample_rate`` to ``target_rate`` (torchaudio's
    windowed-sinc ``torchaudio.functional.resample`` with its defaults); ``x`` itself when the
    rates are equal. Output length ``ceil(n * target_rate / sample_rate)``.

    ``x`` is validated first (float, finite, non-empty). Numpy in, numpy out (its float dtype);
    torch in, torch out (same device and dtype).

    Shape:
        x: ``(..., samples)``; returns ``(..., samples')``.
    """
    import torchaudio.functional as AF  # heavy; only needed when audio is actually resampled

    for what, rate in (("sample_rate", sample_rate), ("target_rate", target_rate)):
        if not isinstance(rate, (int, np.integer)) or rate <= 0:
            raise ValueError(f"resample_to: {what} must be a positive integer (Hz), got {rate!r}")
    x = validate_audio(x, "resample_to: x")
    if int(sample_rate) == int(target_rate):
        return x
    if isinstance(x, torch.Tensor):
        return AF.resample(x, int(sample_rate), int(target_rate))
    out = AF.resample(torch.from_numpy(np.ascontiguousarray(x)), int(sample_rate), int(target_rate))
    return out.numpy()

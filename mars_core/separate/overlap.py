"""Any length through a fixed-length separator: Hann-window overlap-add of segments, the input level
gain, and blocks with context cross-faded so memory does not grow with the file."""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..audio import FrontEnd
from ..config import Profile, get_profile
from ..evaluation.evaluate import separate as separate_segments
from ..inputs import resample_to, validate_audio

INPUT_RMS_DBFS = -20.0
"""Whole-file RMS the separator's input is scaled to: the benchmark clips' active-frame level
(``datasets/recipe.json``). The gain is undone on the estimates."""


def segment_hop(segment: int) -> int:
    """Hop between segments: ``segment // 2`` (50 % overlap)."""
    if segment < 4:
        raise ValueError(f"segment must be >= 4 samples, got {segment}")
    return segment // 2


def overlap_add(fn: Callable[[torch.Tensor], torch.Tensor], wav: torch.Tensor, segment: int,
                batch_size: int = 4, progress: bool = False) -> torch.Tensor:
    """Apply a fixed-length separator ``fn`` to a waveform of any length.

    The waveform is zero-padded by one hop ``H = segment // 2`` in front (so its first sample sits at a
    window's peak) and at the end up to whole segments; segments start every ``H`` samples, each output
    is multiplied by a symmetric Hann window ``w`` and added up, and the sum is divided by the summed
    windows. For an all-pass ``fn`` (returns its input) the result is the input itself:
    ``sum_j w_j x / sum_j w_j = x`` wherever the windows do not all vanish, which the front pad
    guarantees for every real sample.

    Args:
        fn: ``(B, segment)`` waveforms -> ``(B, K, segment)`` estimates (``K`` queries).
        wav: ``(channels, n)`` float; each channel is separated on its own.
        batch_size: segments per call of ``fn``.

    Shape:
        returns ``(K, channels, n)``.
    """
    if wav.dim() != 2 or wav.shape[-1] < 1:
        raise ValueError(f"wav must be (channels, n >= 1), got {tuple(wav.shape)}")
    n_ch, n = wav.shape
    hop = segment_hop(segment)
    # ceil(n / hop) segments give sample n - 1 a non-zero weight for an odd segment (2 hop + 1, every
    # profile's); an even one ends on a zero of its window and needs one more
    n_seg = -(-n // hop) + (segment % 2 == 0)
    total = (n_seg - 1) * hop + segment
    padded = F.pad(wav, (hop, total - hop - n))
    window = torch.hann_window(segment, periodic=False, dtype=wav.dtype)
    starts = [(c, j * hop) for c in range(n_ch) for j in range(n_seg)]
    acc: torch.Tensor | None = None
    quiet = {} if progress else {"disable": True}
    for lo in tqdm(range(0, len(starts), batch_size), desc="separate", **quiet):
        chunk = starts[lo : lo + batch_size]
        est = fn(torch.stack([padded[c, s : s + segment] for c, s in chunk]))  # (B, K, segment)
        if acc is None:
            acc = torch.zeros(est.shape[1], n_ch, total, dtype=wav.dtype)
        for (c, s), e in zip(chunk, est.to(wav.dtype)):
            acc[:, c, s : s + segment] += e * window
    wsum = torch.zeros(total, dtype=wav.dtype)
    for j in range(n_seg):
        wsum[j * hop : j * hop + segment] += window
    wsum = wsum[hop : hop + n]
    if not bool((wsum > 0).all()):  # guards the arithmetic above
        raise RuntimeError(f"overlap-add left samples without weight (n={n}, segment={segment})")
    return acc[..., hop : hop + n] / wsum


def level_gain(rms: float) -> float:
    """Gain that brings a signal of this RMS to :data:`INPUT_RMS_DBFS` (1 for silence)."""
    return 10 ** (INPUT_RMS_DBFS / 20) / rms if rms > 0 else 1.0


def separate_waveform(model: torch.nn.Module, profile: str | Profile, wav: np.ndarray | torch.Tensor, sample_rate: int,
                      queries: torch.Tensor, *, gain: float | None = None, batch_size: int = 4,
                      device: str | torch.device = "cpu", progress: bool = False) -> torch.Tensor:
    """Separate every channel of ``wav`` for every query (one U-Net pass per segment for all queries).

    Resamples to the profile's rate and back (``torchaudio.functional.resample``), multiplies the
    separator's input by ``gain`` (default :func:`level_gain` of ``wav``'s RMS) and its output by
    ``1 / gain``, and runs :func:`overlap_add` over the profile's segment length.

    Shape:
        wav: ``(frames, channels)`` float at ``sample_rate``; queries: ``(K, D)``.
        returns ``(K, frames, channels)`` float32 at ``sample_rate``.
    """
    prof = get_profile(profile)
    fe = FrontEnd(prof.audio)
    validate_audio(wav, "wav", ndim=2, layout="(frames, channels)")  # float, finite, non-empty
    x = torch.as_tensor(np.asarray(wav, dtype=np.float32)).T.contiguous()  # (channels, frames)
    if queries.dim() != 2:
        raise ValueError(f"queries must be (K, D), got {tuple(queries.shape)}")
    rate = prof.audio.sample_rate
    y = resample_to(x, int(sample_rate), rate)
    gain = level_gain(float(y.pow(2).mean().sqrt())) if gain is None else float(gain)
    model = model.to(device).eval()
    q = queries.float()

    def fn(segments: torch.Tensor) -> torch.Tensor:
        qb = q.unsqueeze(0).expand(segments.shape[0], -1, -1)
        return separate_segments(model, fe, segments * gain, qb, batch_size=segments.shape[0])[0] / gain

    with torch.no_grad():
        est = overlap_add(fn, y, prof.audio.segment_samples, batch_size, progress)  # (K, C, m)
    back = resample_to(est, rate, int(sample_rate))[..., : x.shape[1]]
    if back.shape[-1] < x.shape[1]:
        back = F.pad(back, (0, x.shape[1] - back.shape[-1]))
    return back.transpose(1, 2).contiguous()


def block_plan(n: int, block: int, crossfade: int) -> list[tuple[int, int]]:
    """The ``[a, b)`` blocks of a file of ``n`` frames; neighbours are cross-faded over ``2 crossfade``
    frames around their border, so a block must be at least that long."""
    if block < 2 * crossfade or block < 1:
        raise ValueError(f"block ({block}) must be >= 2 x crossfade ({crossfade}) and >= 1")
    return [(a, min(a + block, n)) for a in range(0, n, block)]


def separate_blocks(read: Callable[[int, int], np.ndarray], n: int,
                    separate_window: Callable[[np.ndarray], np.ndarray], *, block: int, crossfade: int,
                    margin: int) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Stream a long signal through a separator, one block (plus margins) at a time.

    Block ``[a, b)`` is separated with ``margin`` frames of context on each side
    (``separate_window`` sees ``read(a - margin, b + margin)``, clipped to the file); around each
    border ``t`` between blocks the two estimates are cross-faded linearly over ``[t - crossfade,
    t + crossfade)``. Estimates that agree (an all-pass separator's) pass unchanged, since the
    cross-fade weights sum to 1.

    Args:
        read: ``(start, stop)`` -> ``(stop - start, channels)`` samples.
        separate_window: ``(frames, channels)`` -> ``(K, frames, channels)`` estimates.
        margin: must be >= ``crossfade``.

    Yields:
        ``(start, mixture, estimates)`` for consecutive ranges covering ``[0, n)``:
        ``mixture (frames, channels)``, ``estimates (K, frames, channels)``.
    """
    if margin < crossfade:
        raise ValueError(f"margin ({margin}) must be >= crossfade ({crossfade})")
    ramp = (np.arange(2 * crossfade) + 0.5) / max(2 * crossfade, 1)  # weight of the later block
    pending = None  # previous block's weighted estimate over [a - crossfade, a + crossfade)
    for a, b in block_plan(n, block, crossfade):
        lo, hi = max(0, a - margin), min(n, b + margin)
        mix = read(lo, hi)
        est = separate_window(mix)
        pos = a
        if pending is not None:
            start, m = a - crossfade, pending.shape[1]
            r = ramp[:m, None].astype(est.dtype)
            yield start, mix[start - lo : start - lo + m], pending + r * est[:, start - lo : start - lo + m]
            pos = start + m
        stop = n if b == n else b - crossfade
        if stop > pos:
            yield pos, mix[pos - lo : stop - lo], est[:, pos - lo : stop - lo]
        if b < n:
            m = min(n, b + crossfade) - (b - crossfade)
            pending = (1 - ramp[:m, None].astype(est.dtype)) * est[:, b - crossfade - lo : b - crossfade - lo + m]

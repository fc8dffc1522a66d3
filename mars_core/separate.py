"""Separate your own audio file with a text, image or audio query.

Command line (one output file per query; ``--residual`` adds mixture minus the estimates)::

    python -m mars_core.separate MIX.wav --text "a violin" [--text "a piano"] [--image IMG.png]
        [--audio QUERY.wav] [--profile cpu] [--checkpoint PATH] [--out OUT.wav]
        [--device auto|cpu|cuda] [--residual]

and the same from Python: :func:`separate` (files) or :func:`separate_waveform` (arrays).

What happens to the file:

1. it is read with ``soundfile`` (WAV, FLAC, OGG; integer or float samples; any rate) and
   checked: unreadable, empty, NaN/infinite or all-silent files raise
   :class:`SeparationInputError` naming the file (the command prints one line and exits 2);
2. every channel is separated on its own (a stereo file gives a stereo estimate), after
   resampling to the profile's rate with :func:`mars_core.inputs.resample_to` (band-limited sinc of
   ``torchaudio.functional.resample``) and a whole-file gain to the benchmark's level (:data:`INPUT_RMS_DBFS`; undone on output,
   so the estimate has the file's own level);
3. any length: the signal is cut into the separator's segments (``profile.audio.segment_samples``)
   with 50 % overlap, each segment's estimate is weighted by a Hann window and the sum is divided
   by the summed windows (:func:`overlap_add`), so an all-pass separator returns the input exactly.
   Segments go through the model ``batch_size`` at a time. A long file is read, separated and written
   :data:`BLOCK_SECONDS` at a time, each block with one segment of context on both sides and
   neighbouring blocks cross-faded (:func:`separate_blocks`), so memory does not grow with its length;
4. estimates are resampled back to the file's rate and written with its length, rate, channel
   count and (for the same container) sample format. The separator only sees the band below half the
   profile's rate (4 kHz at ``smoke``/``cpu``), so an estimate has no content above it; the residual
   ``mixture - sum(estimates)`` is computed at the file's rate and keeps everything above that band.

The separator is the shipped ``checkpoints/separator_<profile>.pt`` (``cpu``), a ``--checkpoint``
written by :func:`mars_core.supervised.save_separator` (supervised or RL ``final.pt``), or, for a
profile without a shipped one, :func:`mars_core.supervised.load_or_train` (trained on first use on
the offline benchmark). Queries are embedded by the profile's query encoder
(:func:`mars_core.encoders.load.load_query_encoder`, the shipped MiniBind), the one the separator was
trained with; a checkpoint trained with another encoder is refused.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from .audio import FrontEnd
from .config import PROFILE_NAMES, Profile, get_profile
from .encoders.load import load_query_encoder
from .evaluation.evaluate import separate as separate_segments
from .inputs import resample_to, validate_audio
from .queries import encoder_fingerprint
from .supervised import load_or_train, load_separator, shipped_separator

DEFAULT_PROFILE = "cpu"
"""The profile with a shipped separator (``checkpoints/separator_cpu.pt``)."""
SILENT_PEAK = 1e-6
"""A file whose largest absolute sample is at most this (-120 dBFS) is 'all silent'."""
INPUT_RMS_DBFS = -20.0
"""Whole-file RMS the separator's input is scaled to: the benchmark clips' active-frame level
(``datasets/recipe.json``). The gain is undone on the estimates."""
QUERY_KINDS = ("text", "image", "audio")
BLOCK_SECONDS = 60.0
"""A file is separated this many seconds at a time (plus context), so memory does not grow with its length."""
CROSSFADE_SECONDS = 0.25
"""Neighbouring blocks' estimates are cross-faded over twice this around their border."""
RESAMPLE_CONTEXT_SECONDS = 0.02
"""Context beyond a block for the resampler's windowed sinc (6 zero crossings at the lower rate: 0.75 ms at 8 kHz)."""


class SeparationInputError(ValueError):
    """A file or argument :func:`separate` cannot use; the message names it and says what is wrong."""


# --------------------------------------------------------------------------- queries
@dataclass(frozen=True)
class Query:
    """One query: ``kind`` is ``text`` (``value`` the text), ``image`` or ``audio`` (``value`` a path)."""

    kind: str
    value: str

    def __post_init__(self):
        if self.kind not in QUERY_KINDS:
            raise SeparationInputError(f"query kind must be one of {QUERY_KINDS}, got {self.kind!r}")
        if not str(self.value).strip():
            raise SeparationInputError(f"empty {self.kind} query")

    def check(self) -> None:
        """Raise :class:`SeparationInputError` now if the query's file is missing or unusable."""
        if self.kind == "image":
            read_image(self.value)
        elif self.kind == "audio":
            check_audio_file(self.value)

    @property
    def slug(self) -> str:
        """File-name part derived from the query: ``a-violin``, ``image-cat``, ``audio-flute``."""
        base = self.value if self.kind == "text" else f"{self.kind}-{Path(self.value).stem}"
        slug = re.sub(r"[^a-z0-9]+", "-", base.lower()).strip("-")[:48].strip("-")
        return slug or self.kind


def read_image(path: str | Path) -> np.ndarray:
    """An image file as uint8 ``(H, W, 3)``.

    Raises:
        SeparationInputError: missing or not an image (naming the file).
    """
    path = Path(path)
    if not path.is_file():
        raise SeparationInputError(f"{path}: no such image file")
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError) as exc:
        raise SeparationInputError(f"{path}: not a readable image ({exc})") from exc


@torch.no_grad()
def embed_queries(encoder, queries: Sequence[Query]) -> torch.Tensor:
    """Unit-norm query embeddings with the profile's query encoder (what the separator was trained on).

    An audio query is read like the mixture (checked, channels averaged) and resampled to the
    encoder's rate.

    Shape:
        returns ``(len(queries), D)`` float32 on the CPU.
    """
    rows = []
    with encoder.eval_mode():
        for q in queries:
            if q.kind == "image":
                material = read_image(q.value)
            elif q.kind == "audio":
                wav, sr = read_audio(q.value)
                material = torch.from_numpy(wav.mean(axis=1))
            try:
                if q.kind == "text":
                    e = encoder.embed_text([q.value])
                elif q.kind == "image":
                    e = encoder.embed_image([material])
                else:
                    e = encoder.embed_audio([material], sr, resample=True)
            except ValueError as exc:  # e.g. an audio query shorter than the encoder's window
                raise SeparationInputError(f"{q.value}: cannot be used as {'an' if q.kind[0] in 'ai' else 'a'} {q.kind} query ({exc})") from exc
            rows.append(e.float().cpu())
    return F.normalize(torch.cat(rows), dim=-1)


# --------------------------------------------------------------------------- audio files
@dataclass(frozen=True)
class AudioFileInfo:
    """What :func:`check_audio_file` learned from a whole pass over a file."""

    path: Path
    frames: int
    channels: int
    sample_rate: int
    format: str
    """soundfile's container name (``WAV``, ``FLAC``, ``OGG``)."""
    subtype: str
    """soundfile's sample format (``PCM_16``, ``FLOAT``, ...)."""
    rms: float
    """Root mean square over every sample of every channel."""


def _open(path: Path) -> sf.SoundFile:
    if not path.is_file():
        raise SeparationInputError(f"{path}: no such file")
    try:
        return sf.SoundFile(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise SeparationInputError(f"{path}: not a readable audio file ({exc}); use WAV, FLAC or OGG") from exc


def _check_block(path: Path, block: np.ndarray, offset: int) -> None:
    """NaN/inf in ``(frames, channels)`` samples starting at frame ``offset`` -> an error naming the first."""
    finite = np.isfinite(block)
    if not finite.all():
        frame, ch = np.argwhere(~finite)[0]
        raise SeparationInputError(f"{path}: contains NaN or infinite samples (first at frame {offset + frame}, "
                                   f"channel {ch})")


def check_audio_file(path: str | Path, block_frames: int = 1 << 18) -> AudioFileInfo:
    """Read a file once, block by block, and check it (memory: one block).

    Raises:
        SeparationInputError: the file is missing, unreadable, empty, has NaN or infinite samples,
            or is all silent (peak <= :data:`SILENT_PEAK`); the message starts with the path.
    """
    path = Path(path)
    peak, sq, count = 0.0, 0.0, 0
    with _open(path) as f:
        info = dict(frames=f.frames, channels=f.channels, sample_rate=f.samplerate, format=f.format,
                    subtype=f.subtype)
        try:
            for block in f.blocks(blocksize=block_frames, dtype="float64", always_2d=True):
                _check_block(path, block, count)
                peak = max(peak, float(np.abs(block).max())) if block.size else peak
                sq += float(np.square(block).sum())
                count += block.shape[0]
        except sf.LibsndfileError as exc:
            raise SeparationInputError(f"{path}: unreadable after frame {count} ({exc})") from exc
    if count == 0:
        raise SeparationInputError(f"{path}: empty audio file (0 frames)")
    if peak <= SILENT_PEAK:
        raise SeparationInputError(f"{path}: all silent (peak <= {SILENT_PEAK:g}); nothing to separate")
    info["frames"] = count
    return AudioFileInfo(path, rms=float(np.sqrt(sq / (count * info["channels"]))), **info)


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Read a whole (short) file, checked like :func:`check_audio_file`:
    ``(samples (frames, channels) float32, sample rate)``. Used for audio queries."""
    info = check_audio_file(path)
    wav, sr = sf.read(str(info.path), dtype="float32", always_2d=True)
    return wav, int(sr)


def write_subtype(path: Path, like: AudioFileInfo | None = None) -> str:
    """The sample format of an output: the input's for the same container, else the container's default."""
    container = path.suffix.lstrip(".").upper()
    if like is not None and container == like.format and sf.check_format(container, like.subtype):
        return like.subtype
    return sf.default_subtype(container)


def _is_integer(subtype: str) -> bool:
    return not (subtype.startswith(("FLOAT", "DOUBLE")) or subtype in ("VORBIS", "OPUS"))


# --------------------------------------------------------------------------- overlap-add
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


# --------------------------------------------------------------------------- models
def resolve_device(device: str | torch.device | None) -> torch.device:
    """``auto`` (or None): CUDA when available, else CPU."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise SeparationInputError(f"--device {device}: CUDA is not available on this machine; use cpu or auto")
    return torch.device(device)


def load_model(profile: str | Profile, encoder, checkpoint: str | Path | None = None,
               progress: bool = True) -> tuple[torch.nn.Module, str]:
    """``(separator, where it came from)``: ``checkpoint``, else the shipped one, else
    :func:`~mars_core.supervised.load_or_train` (which trains on first use).

    A checkpoint must match the profile's front end and the query encoder.

    Raises:
        SeparationInputError: missing or unreadable checkpoint, or one trained for another
            profile front end or with another query encoder.
    """
    prof = get_profile(profile)
    path = Path(checkpoint) if checkpoint is not None else shipped_separator(prof)
    if checkpoint is None and not path.exists():
        model, history = load_or_train(prof, encoder=encoder, progress=progress)
        return model, history["source"]
    try:
        model, blob = load_separator(path)
    except FileNotFoundError as exc:
        raise SeparationInputError(f"{path}: no such checkpoint") from exc
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        raise SeparationInputError(f"{path}: not a separator checkpoint ({exc})") from exc
    cfg = blob.get("config") or {}
    if "audio" in cfg and cfg["audio"] != asdict(prof.audio):
        raise SeparationInputError(f"{path} was trained for the front end of profile {cfg.get('profile')!r}, not "
                                   f"of {prof.name!r}; pass --profile {cfg.get('profile')}")
    enc = str(cfg.get("queries", "")).split("-")[0]
    if enc and enc != encoder_fingerprint(encoder)[:16]:
        raise SeparationInputError(f"{path} was trained with another query encoder than profile {prof.name!r}'s "
                                   "shipped MiniBind; its queries would mean nothing to it")
    if model.cfg.query_dim != encoder.embed_dim:
        raise SeparationInputError(f"{path} expects {model.cfg.query_dim}-d queries but the encoder gives "
                                   f"{encoder.embed_dim}-d")
    return model, str(path)


# --------------------------------------------------------------------------- files
def output_paths(mix: Path, queries: Sequence[Query], out: str | Path | None, residual: bool) -> dict[str, Path]:
    """Where each estimate goes, keyed by query slug (and ``residual``).

    One query with ``out``: ``out`` itself. Otherwise ``<stem>_<slug><suffix>`` with stem and
    suffix from ``out`` if given, else from the mixture (beside it). Repeated slugs get ``-2``, ``-3``...
    """
    keys: list[str] = []
    for q in queries:
        k, i = q.slug, 2
        while k in keys:
            k, i = f"{q.slug}-{i}", i + 1
        keys.append(k)
    if residual:
        keys.append("residual")
    base = Path(out) if out is not None else mix
    container = (base.suffix.lstrip(".") or "wav").upper()
    if container not in sf.available_formats():
        raise SeparationInputError(f"{base}: cannot write {base.suffix!r} files; use .wav, .flac or .ogg")
    if out is not None and len(keys) == 1:
        return {keys[0]: base}
    return {k: base.with_name(f"{base.stem}_{k}{base.suffix or '.wav'}") for k in keys}


def separate(mix: str | Path, queries: Sequence[Query | str], *, profile: str | Profile = DEFAULT_PROFILE,
             checkpoint: str | Path | None = None, out: str | Path | None = None, device: str | None = "auto",
             residual: bool = False, model: torch.nn.Module | None = None, encoder=None, batch_size: int = 4,
             block_seconds: float = BLOCK_SECONDS, progress: bool = False) -> dict[str, Path]:
    """Separate an audio file for each query and write one file per query (and the residual).

    The file is checked in one streaming pass (:func:`check_audio_file`), then separated
    ``block_seconds`` at a time (:func:`separate_blocks`) and written as it goes, so memory does not
    grow with the file's length.

    Args:
        mix: the mixture (WAV, FLAC or OGG; any rate; mono or multi-channel; any length).
        queries: :class:`Query` objects, or plain strings taken as text queries.
        profile: sizes and front end; ``cpu`` has the shipped separator.
        checkpoint: a separator checkpoint instead of the shipped one.
        out: output path (one query) or path whose stem and suffix name every output (see :func:`output_paths`).
        device: ``auto``, ``cpu`` or ``cuda``.
        residual: also write ``mixture - sum(estimates)``.
        model, encoder: an already loaded separator and query encoder (skip loading).

    Returns:
        ``{slug: path written}`` in query order, then ``residual``.

    Raises:
        SeparationInputError: a bad file, query or checkpoint, named in the message.
    """
    mix = Path(mix)
    queries = [q if isinstance(q, Query) else Query("text", str(q)) for q in queries]
    if not queries:
        raise SeparationInputError("give at least one query (--text, --image or --audio)")
    if block_seconds <= 0:
        raise SeparationInputError(f"block_seconds must be > 0, got {block_seconds}")
    prof = get_profile(profile)
    dev = resolve_device(device)
    paths = output_paths(mix, queries, out, residual)
    info = check_audio_file(mix)
    for query in queries:  # every file is checked before any model is loaded
        query.check()
    encoder = encoder if encoder is not None else load_query_encoder(prof)
    q = embed_queries(encoder, queries)
    if model is None:
        model, _ = load_model(prof, encoder, checkpoint, progress=progress)
    sr = info.sample_rate
    crossfade = int(round(CROSSFADE_SECONDS * sr))
    block = max(int(round(block_seconds * sr)), 2 * crossfade, 1)
    # context: one separator segment at the file's rate (the overlap-add's zero padding reaches that far)
    # plus the resampler's filter support
    margin = crossfade + int(np.ceil(prof.audio.segment_seconds * sr)) + int(np.ceil(RESAMPLE_CONTEXT_SECONDS * sr))
    gain = level_gain(info.rms)

    def window(x: np.ndarray) -> np.ndarray:
        return separate_waveform(model, prof, x, sr, q, gain=gain, batch_size=batch_size, device=dev).numpy()

    with sf.SoundFile(str(mix)) as src, contextlib.ExitStack() as stack:
        def read(start: int, stop: int) -> np.ndarray:
            src.seek(start)
            return src.read(stop - start, dtype="float32", always_2d=True)

        sinks, partial = {}, {}
        for key, path in paths.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            partial[key] = path.with_name(f".{path.stem}.partial{path.suffix}")  # renamed when complete
            stack.callback(partial[key].unlink, missing_ok=True)
            subtype = write_subtype(path, info)
            sinks[key] = (stack.enter_context(sf.SoundFile(str(partial[key]), "w", sr, info.channels, subtype)),
                          _is_integer(subtype))
        bar = tqdm(total=info.frames, desc="separate", unit="frame", disable=not progress)
        for start, x, est in separate_blocks(read, info.frames, window, block=block, crossfade=crossfade,
                                             margin=margin):
            outs = list(est) + ([x - est.sum(0)] if residual else [])
            for (f, clip), y in zip(sinks.values(), outs):
                f.write(np.clip(y, -1.0, 1.0) if clip else y)  # a masked estimate can overshoot slightly
            bar.update(x.shape[0])
        bar.close()
        for f, _ in sinks.values():
            f.close()
        for key, path in paths.items():
            os.replace(partial[key], path)
    return dict(paths)


# --------------------------------------------------------------------------- CLI
class _QueryAction(argparse.Action):
    """Collect ``--text``, ``--image`` and ``--audio`` in command-line order."""

    def __call__(self, parser, namespace, values, option_string=None):
        found = list(getattr(namespace, "queries", None) or [])
        found.append((self.dest, values))
        namespace.queries = found


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mars_core.separate", description=__doc__.split("\n")[0])
    p.add_argument("mix", help="the mixture: WAV, FLAC or OGG, any rate, mono or multi-channel, any length")
    for kind, what in (("text", "a text query, e.g. 'a violin'"), ("image", "an image file as the query"),
                       ("audio", "an audio file of the sound to extract")):
        p.add_argument(f"--{kind}", dest=kind, action=_QueryAction, metavar="TEXT" if kind == "text" else "PATH",
                       help=f"{what}; repeat for several queries (one output file each)")
    p.add_argument("--profile", default=DEFAULT_PROFILE, choices=PROFILE_NAMES, help="smoke, cpu or full (default cpu: shipped separator)")
    p.add_argument("--checkpoint", default=None, help="separator checkpoint (default: the shipped one)")
    p.add_argument("--out", default=None, help="output file (several queries: its stem and suffix name every output)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--residual", action="store_true", help="also write mixture minus the sum of the estimates")
    p.add_argument("--batch-size", type=int, default=4, help="segments per model call (default 4)")
    p.set_defaults(queries=[])
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """The command; returns the exit status (2 for bad input, with a one-line message)."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.queries:
        parser.error("give at least one query: --text TEXT, --image PATH or --audio PATH")
    t0 = time.perf_counter()
    try:
        written = separate(args.mix, [Query(k, v) for k, v in args.queries], profile=args.profile,
                           checkpoint=args.checkpoint, out=args.out, device=args.device, residual=args.residual,
                           batch_size=args.batch_size, progress=sys.stderr.isatty())
    except SeparationInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for key, path in written.items():
        print(f"{key}: {path}")
    print(f"done in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

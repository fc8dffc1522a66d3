"""Separate a file: load the separator (:func:`load_model`), name the outputs (:func:`output_paths`) and
stream the file through :func:`~mars_core.separate.overlap.separate_blocks` (:func:`separate`)."""

from __future__ import annotations

import contextlib
import os
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import numpy as np
import soundfile as sf
import torch
from tqdm.auto import tqdm

from .. import device as device_lib
from ..config import Profile, get_profile
from ..encoders.load import load_query_encoder
from ..runs import encoder_fingerprint
from ..supervised import load_or_train, load_separator, shipped_separator
from .files import SeparationInputError, _is_integer, check_audio_file, write_subtype
from .overlap import level_gain, separate_blocks, separate_waveform
from .query import Query, embed_queries

DEFAULT_PROFILE = "cpu"
"""The profile with a shipped separator (``checkpoints/separator_cpu.pt``)."""
BLOCK_SECONDS = 60.0
"""A file is separated this many seconds at a time (plus context), so memory does not grow with its length."""
CROSSFADE_SECONDS = 0.25
"""Neighbouring blocks' estimates are cross-faded over twice this around their border."""
RESAMPLE_CONTEXT_SECONDS = 0.02
"""Context beyond a block for the resampler's windowed sinc (6 zero crossings at the lower rate: 0.75 ms at 8 kHz)."""


def resolve_device(device: str | torch.device | None, profile: str | None = None,
                   allow_cpu: bool = False) -> torch.device:
    """:func:`mars_core.device.resolve_device` (``auto``, ``cpu``, ``cuda``, ``cuda:N``; ``full`` on a CPU only
    with ``allow_cpu``), its refusal raised as :class:`SeparationInputError` so the command exits with status 2."""
    try:
        return device_lib.resolve_device(device, profile, allow_cpu=allow_cpu)
    except device_lib.DeviceError as err:
        raise SeparationInputError(str(err)) from err


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
             allow_cpu: bool = False, residual: bool = False, model: torch.nn.Module | None = None, encoder=None, batch_size: int = 4,
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
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``; allow_cpu: run the ``full`` profile on a CPU.
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
    dev = resolve_device(device, prof.name, allow_cpu)
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

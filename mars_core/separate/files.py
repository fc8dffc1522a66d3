"""Audio and image files for :mod:`mars_core.separate`: one streaming check of a file, reading,
the output sample format, and :class:`SeparationInputError` (every bad file or argument)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image, UnidentifiedImageError

SILENT_PEAK = 1e-6
"""A file whose largest absolute sample is at most this (-120 dBFS) is 'all silent'."""


class SeparationInputError(ValueError):
    """A file or argument :func:`separate` cannot use; the message names it and says what is wrong."""


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

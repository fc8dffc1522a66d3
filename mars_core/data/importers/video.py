"""Audio and frames of video files through PyAV (FFmpeg's libraries; ``av`` in requirements.txt).

Only the importers of video datasets (MUSIC, VGGSound) need it, so it is imported when a video is
first read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".mov", ".avi")


class VideoError(Exception):
    """A video that cannot be decoded (the message says why)."""


def _open(path: Path):
    import av  # heavy optional dependency: only the video importers use it

    try:
        return av.open(str(path))
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise VideoError(f"unreadable video: {exc}") from exc


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """The first audio stream, decoded: ``(samples (n, channels) float64, sample rate)``.

    Raises:
        VideoError: unreadable, or no audio stream.
    """
    import av

    with _open(Path(path)) as c:
        if not c.streams.audio:
            raise VideoError("no audio stream")
        stream = c.streams.audio[0]
        resampler = av.AudioResampler(format="fltp", layout=stream.layout.name if stream.layout else None,
                                      rate=stream.rate)
        chunks = []
        try:
            for frame in c.decode(stream):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray())
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray())
        except av.FFmpegError as exc:
            raise VideoError(f"audio decoding failed: {exc}") from exc
        if not chunks:
            raise VideoError("empty audio stream")
        return np.concatenate(chunks, axis=1).T.astype(np.float64), int(stream.rate)


def duration_seconds(path: str | Path) -> float:
    """The container's duration (0 when it does not say)."""
    with _open(Path(path)) as c:
        return float(c.duration or 0) / 1e6


def frames_at(path: str | Path, times: Sequence[float]) -> list[np.ndarray]:
    """RGB frames ``(H, W, 3)`` uint8 shown at each of ``times`` (seconds): the last frame starting at
    or before the time (the first frame for earlier times), decoding the video once.

    Raises:
        VideoError: unreadable, or no video stream.
    """
    import av

    want = sorted(set(float(t) for t in times))
    found: dict[float, np.ndarray] = {}
    with _open(Path(path)) as c:
        if not c.streams.video:
            raise VideoError("no video stream")
        prev = None
        i = 0
        try:
            for frame in c.decode(video=0):
                t = float(frame.time) if frame.time is not None else 0.0
                while i < len(want) and t > want[i] + 1e-6:
                    found[want[i]] = prev if prev is not None else frame.to_ndarray(format="rgb24")
                    i += 1
                if i == len(want):
                    break
                prev = frame.to_ndarray(format="rgb24")
        except av.FFmpegError as exc:
            raise VideoError(f"video decoding failed: {exc}") from exc
        if prev is None and not found:
            raise VideoError("no video frames")
        for t in want[i:]:
            found[t] = prev
    return [found[float(t)] for t in times]

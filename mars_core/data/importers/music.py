"""MUSIC (Zhao et al., "The Sound of Pixels", 2018): YouTube videos of solo instrument performances.

Published layout: the list ``MUSIC21_solo_videos.json`` (or ``MUSIC_solo_videos.json`` for the
original 11 instruments), ``{"videos": {"<instrument>": ["<youtube id>", ...], ...}}``, and the videos a
user downloads from it. This importer looks for each video as ``<id>.<ext>`` (mp4, mkv, webm, ...)
under ``ROOT/<instrument>/``, ``ROOT/videos/<instrument>/`` or ``ROOT/videos/``; a listed video that is
absent is skipped and counted (YouTube removes videos). ``--list`` (e.g. a MUSIC-clean+ selection)
keeps the listed ids.

Per video: ``clips_per_video`` clips (the most active window of each of that many equal parts of its
audio, decoded with PyAV) and its frames at 1 fps (at most ``frames_per_video``, evenly spread) as the
image queries. Splits by video, so a video's clips and frames never meet across splits: a class's videos
ordered by the sha256 of their id, ``max(2, 20 %)`` test, ``max(2, 10 %)`` val, the rest train (fewer
than 6 videos: all train). Families group the instruments (:data:`FAMILIES`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from .common import DatasetLayoutError, SourceClip, SourceImage, clean_class_name
from .folder import split_counts
from .video import VIDEO_SUFFIXES, VideoError, duration_seconds

LISTS = ("MUSIC21_solo_videos.json", "MUSIC_solo_videos.json")
FAMILIES = {"violin": "bowed_strings", "cello": "bowed_strings", "erhu": "bowed_strings",
            "flute": "woodwinds", "clarinet": "woodwinds", "saxophone": "woodwinds", "bassoon": "woodwinds",
            "bagpipe": "woodwinds", "trumpet": "brass", "tuba": "brass", "acoustic_guitar": "plucked",
            "electric_bass": "plucked", "banjo": "plucked", "ukulele": "plucked", "guzheng": "plucked",
            "pipa": "plucked", "xylophone": "percussion", "drum": "percussion", "congas": "percussion",
            "accordion": "free_reed", "piano": "keyboard"}
"""Instrument families of MUSIC-21 (hard pairs are drawn within one); others are their own family."""
LICENSE = "YouTube (per video; not redistributable)"
ATTRIBUTION = [{"source": "music", "package": "MUSIC / MUSIC-21", "version": "", "license": LICENSE,
                "used_for": "audio clips and frames of solo performances",
                "credit": "H. Zhao et al., The Sound of Pixels, ECCV 2018; videos by their YouTube uploaders"}]


def read_list(root: Path) -> tuple[Path, dict[str, list[str]]]:
    """``(json path, {class: [video ids]})`` from the first of :data:`LISTS` found in ``root``.

    Raises:
        DatasetLayoutError: none found, or no ``videos`` mapping in it.
    """
    for name in LISTS:
        path = root / name
        if path.is_file():
            try:
                videos = json.loads(path.read_text(encoding="utf-8"))["videos"]
                return path, {clean_class_name(c): [str(v) for v in ids] for c, ids in videos.items()}
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise DatasetLayoutError(f"{path}: expected {{\"videos\": {{instrument: [ids]}}}} ({exc})") from None
    raise DatasetLayoutError(f"{root}: none of {', '.join(LISTS)} found: --root must hold the MUSIC video list "
                             "and the downloaded videos")


def find_video(root: Path, folder_name: str, video_id: str) -> Path:
    """The downloaded file of a video, or the first place looked (missing files are skipped by name)."""
    places = [root / folder_name, root / "videos" / folder_name, root / "videos", root]
    for d in places:
        for ext in VIDEO_SUFFIXES:
            if (d / f"{video_id}{ext}").is_file():
                return d / f"{video_id}{ext}"
    return places[0] / f"{video_id}.mp4"


def frame_times(duration: float, limit: int) -> list[float]:
    """1 fps sample times ``0.5, 1.5, ...`` within ``duration``, at most ``limit`` of them evenly spread."""
    times = np.arange(0.5, max(duration, 0.5), 1.0)
    if len(times) > limit:
        times = times[np.linspace(0, len(times) - 1, limit).round().astype(int)]
    return [float(t) for t in times]


def list_files(root: str | Path, selection: set[str] | None = None, clips_per_video: int = 3,
               frames_per_video: int = 8) -> tuple[list[SourceClip], list[SourceImage], list[str]]:
    """``(clips, images, warnings)`` of a MUSIC download (module docstring)."""
    root = Path(root)
    _, videos = read_list(root)
    with open(root / next(n for n in LISTS if (root / n).is_file()), encoding="utf-8") as fh:
        raw_names = {clean_class_name(c): c for c in json.load(fh)["videos"]}
    clips, images, warnings = [], [], []
    for cls, ids in videos.items():
        ids = [v for v in ids if selection is None or v in selection]
        ids = sorted(set(ids), key=lambda v: hashlib.sha256(v.encode()).hexdigest())
        n_test, n_val = split_counts(len(ids), 2)
        if ids and n_test == 0:
            warnings.append(f"class {cls!r}: {len(ids)} videos, fewer than 6: all in train")
        for i, vid in enumerate(ids):
            split = "test" if i < n_test else "val" if i < n_test + n_val else "train"
            path = find_video(root, raw_names[cls], vid)
            clips += [SourceClip(path, cls, split, f"youtube:{vid}", LICENSE, "music", (k, clips_per_video))
                      for k in range(clips_per_video)]
            if path.is_file():
                try:
                    times = frame_times(duration_seconds(path), frames_per_video)
                except VideoError:
                    times = [0.5]  # the clip's own skip reports the unreadable video
                images += [SourceImage(path, cls, split, LICENSE, f"youtube:{vid}", "video_frame", t) for t in times]
    return clips, images, warnings


def families_of(classes: list[str]) -> dict[str, str]:
    return {c: FAMILIES.get(c, c) for c in classes}

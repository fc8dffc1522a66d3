"""VGGSound (Chen et al. 2020): 10-second YouTube clips labelled with 309 classes.

Published layout: ``vggsound.csv`` without header, one row ``youtube_id,start_seconds,label,split``
(``split`` is ``train`` or ``test``: the dataset's own split), and the clips a user downloads from it.
This importer looks for each clip as ``<id>_<start:06d>.<ext>`` or ``<id>_<start>.<ext>`` (mp4, mkv,
...) under ``ROOT/video/``, ``ROOT/videos/`` or ``ROOT/``; absent clips are skipped and counted.
``--list`` (e.g. a VGGSound-clean+ selection) keeps the listed ``<id>_<start>`` keys or ids.

Splits: the dataset's ``test`` is ``test``; ``train`` rows go to ``train``, except 10 % of each class's
videos (by the sha256 of the id) to ``val``. Labels are the text queries as written ("dog barking",
"playing violin, fiddle"); the image query is the clip's middle frame (5 s). Each class is its own
family (VGGSound has no hierarchy).
"""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

from .common import DatasetLayoutError, SourceClip, SourceImage, clean_class_name
from .video import VIDEO_SUFFIXES

LICENSE = "YouTube (per video; VGGSound annotations CC-BY-4.0)"
ATTRIBUTION = [{"source": "vggsound", "package": "VGGSound", "version": "", "license": LICENSE,
                "used_for": "audio clips and frames",
                "credit": "H. Chen et al., VGGSound: A Large-scale Audio-Visual Dataset, ICASSP 2020; "
                          "videos by their YouTube uploaders"}]
VAL_PERCENT = 10


def find_clip(root: Path, vid: str, start: int) -> Path:
    """The downloaded file of a clip, or the first name looked for."""
    names = [f"{vid}_{start:06d}", f"{vid}_{start}"]
    for d in (root / "video", root / "videos", root):
        for name in names:
            for ext in VIDEO_SUFFIXES:
                if (d / f"{name}{ext}").is_file():
                    return d / f"{name}{ext}"
    return root / "video" / f"{names[0]}.mp4"


def list_files(root: str | Path, selection: set[str] | None = None
               ) -> tuple[list[SourceClip], list[SourceImage], dict[str, str]]:
    """``(clips, images, {class: label text})`` of a VGGSound download (module docstring).

    Raises:
        DatasetLayoutError: no ``vggsound.csv``, or a row that is not ``id,start,label,split``.
    """
    root = Path(root)
    meta = root / "vggsound.csv"
    if not meta.is_file():
        raise DatasetLayoutError(f"{meta} not found: --root must hold vggsound.csv and the downloaded clips")
    clips, images, labels = [], [], {}
    with open(meta, newline="", encoding="utf-8") as fh:
        for i, row in enumerate(csv.reader(fh), start=1):
            if not row:
                continue
            if len(row) != 4 or row[3].strip() not in ("train", "test"):
                raise DatasetLayoutError(f"{meta} line {i}: expected youtube_id,start_seconds,label,train|test, "
                                         f"got {row}")
            vid, start, label, split = row[0].strip(), row[1].strip(), row[2].strip(), row[3].strip()
            try:
                start = int(float(start))
            except ValueError:
                raise DatasetLayoutError(f"{meta} line {i}: start_seconds {row[1]!r} is not a number") from None
            key = f"{vid}_{start:06d}"
            if selection is not None and not ({key, f"{vid}_{start}", vid} & selection):
                continue
            cls = clean_class_name(label)
            labels[cls] = label
            if split == "train" and int(hashlib.sha256(vid.encode()).hexdigest(), 16) % 100 < VAL_PERCENT:
                split = "val"
            path = find_clip(root, vid, start)
            clips.append(SourceClip(path, cls, split, f"youtube:{vid}", LICENSE, "vggsound"))
            if path.is_file():
                images.append(SourceImage(path, cls, split, LICENSE, f"youtube:{vid}", "video_frame", 5.0))
    return clips, images, labels

"""ESC-50 (Piczak 2015): 2000 five-second clips of 50 environmental sound classes in 5 folds.

Published layout (github.com/karolpiczak/ESC-50)::

    ROOT/meta/esc50.csv     filename,fold,target,category,esc10,src_file,take
    ROOT/audio/<filename>   e.g. 1-100032-A-0.wav (44.1 kHz mono)

Splits follow the folds (clips of one freesound recording, ``src_file``, share a fold): fold
``test_fold`` (default 5) is ``test``, the fold before it (default 4) ``val``, the others ``train``.
Categories become text queries. ESC-50 ships no images: the image modality is reported as
unavailable (``build_info.json["modalities"]["image"]``), never made up. Families are the dataset's
five major categories (``target // 10``). License: the dataset is CC BY-NC 3.0; its clips come from
freesound.org, credited in the dataset's own README.
"""

from __future__ import annotations

import csv
from pathlib import Path

from .common import DatasetLayoutError, SourceClip, clean_class_name

COLUMNS = ("filename", "fold", "target", "category", "src_file")
FAMILIES = ("animals", "natural_soundscapes", "human_non_speech", "interior_domestic", "exterior_urban")
"""ESC-50's major categories: targets 0-9, 10-19, 20-29, 30-39, 40-49."""
LICENSE = "CC-BY-NC-3.0"
IMAGE_STATUS = "unavailable: ESC-50 ships no images (train and evaluate with text or audio queries)"
NOUNS = {"door_wood_knock": "a knock on a wooden door", "door_wood_creaks": "a creaking wooden door",
         "drinking_sipping": "drinking and sipping", "clock_tick": "a ticking clock", "clock_alarm": "an alarm clock",
         "keyboard_typing": "typing on a keyboard", "can_opening": "a can being opened", "thunderstorm": "a thunderstorm",
         "toilet_flush": "a toilet flushing", "mouse_click": "a mouse click", "crackling_fire": "a crackling fire",
         "hand_saw": "a hand saw", "sea_waves": "sea waves", "pouring_water": "pouring water"}
"""Noun phrases for the categories the generic rule reads badly."""
ATTRIBUTION = [{"source": "esc50", "package": "ESC-50", "version": "", "license": LICENSE,
                "used_for": "audio clips of 50 classes",
                "credit": "K. J. Piczak, ESC: Dataset for Environmental Sound Classification, ACM MM 2015; "
                          "clips from freesound.org (see the dataset's README for each recording's author)"}]


def splits_of(test_fold: int) -> dict[int, str]:
    """Fold -> split: ``test_fold`` is test, the fold before it (cyclically) val, the rest train."""
    if test_fold not in range(1, 6):
        raise ValueError(f"test_fold must be 1..5, got {test_fold}")
    val_fold = 5 if test_fold == 1 else test_fold - 1
    return {f: "test" if f == test_fold else "val" if f == val_fold else "train" for f in range(1, 6)}


def list_clips(root: str | Path, selection: set[str] | None = None, test_fold: int = 5) -> list[SourceClip]:
    """Every clip of ``meta/esc50.csv`` (or those whose filename is in ``selection``).

    Raises:
        DatasetLayoutError: no ``meta/esc50.csv``, a missing column or fold outside 1..5.
    """
    root = Path(root)
    meta = root / "meta" / "esc50.csv"
    if not meta.is_file():
        raise DatasetLayoutError(f"{meta} not found: --root must be the ESC-50 folder (with meta/ and audio/)")
    split_of = splits_of(test_fold)
    with open(meta, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DatasetLayoutError(f"{meta}: missing column(s) {missing}; expected {', '.join(COLUMNS)}")
        clips = []
        for i, row in enumerate(reader, start=2):
            if selection is not None and row["filename"] not in selection:
                continue
            try:
                fold, target = int(row["fold"]), int(row["target"])
                split = split_of[fold]
            except (ValueError, KeyError):
                raise DatasetLayoutError(f"{meta} line {i}: fold must be 1..5 and target an integer, got "
                                         f"fold={row['fold']!r}, target={row['target']!r}") from None
            if not 0 <= target < 50:
                raise DatasetLayoutError(f"{meta} line {i}: target {target} outside 0..49")
            clips.append(SourceClip(root / "audio" / row["filename"], clean_class_name(row["category"]), split,
                                    f"freesound:{row['src_file']}", LICENSE, "esc50"))
    return clips


def families_of(root: str | Path) -> dict[str, str]:
    """Category -> major category (``target // 10``)."""
    with open(Path(root) / "meta" / "esc50.csv", newline="", encoding="utf-8") as fh:
        return {clean_class_name(r["category"]): FAMILIES[int(r["target"]) // 10] for r in csv.DictReader(fh)}

"""Your own data: ``ROOT/<class>/*.wav`` (or .flac, .ogg), with optional ``ROOT/<class>/images/*``.

Each sub-folder of ``ROOT`` is a class (its name cleaned to ``[a-z0-9_]``); its audio files are clips
and the files in its ``images/`` folder are query images. Splits are deterministic: a class's files
are ordered by the sha256 of their relative path; with 6 or more clips, ``max(2, 20 %)`` go to
``test``, ``max(2, 10 %)`` to ``val`` and the rest to ``train`` (fewer: all ``train``, with a
warning). Images: with 3 or more, ``max(1, 20 %)`` to test, ``max(1, 10 %)`` to val, the rest to
train; with fewer, the same images serve every split (a warning says so). A class without images
leaves the image modality partial (``build_info.json["modalities"]["image"]``). Families: one per
class unless ``ROOT/families.csv`` (``class_name,family``) groups them.
"""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

from .common import DatasetLayoutError, SourceClip, SourceImage, clean_class_name

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def _ordered(root: Path, files: list[Path]) -> list[Path]:
    return sorted(files, key=lambda p: hashlib.sha256(p.relative_to(root).as_posix().encode()).hexdigest())


def split_counts(n: int, minimum: int) -> tuple[int, int]:
    """``(n_test, n_val)`` for ``n`` files: ``max(minimum, 20 %)`` and ``max(minimum, 10 %)``, or ``(0, 0)``
    when that would leave fewer than ``minimum`` for train."""
    n_test, n_val = max(minimum, round(0.2 * n)), max(minimum, round(0.1 * n))
    return (n_test, n_val) if n - n_test - n_val >= max(minimum, 1) else (0, 0)


def class_folders(root: str | Path) -> dict[str, Path]:
    """Class name -> folder, for every sub-folder of ``root`` with audio files.

    Raises:
        DatasetLayoutError: ``root`` is not a folder, or two folders clean to one class name.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetLayoutError(f"{root} is not a folder: --root must hold one sub-folder per class")
    out: dict[str, Path] = {}
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        if not any(f.suffix.lower() in AUDIO_SUFFIXES for f in d.iterdir() if f.is_file()):
            continue
        name = clean_class_name(d.name)
        if name in out:
            raise DatasetLayoutError(f"{d} and {out[name]} are both class {name!r}; rename one")
        out[name] = d
    return out


def list_files(root: str | Path, license: str = "user-provided") -> tuple[list[SourceClip], list[SourceImage],
                                                                        list[str]]:
    """``(clips, images, warnings)`` of a folder dataset (module docstring for the split rule)."""
    root = Path(root)
    clips, images, warnings = [], [], []
    for name, d in class_folders(root).items():
        files = _ordered(root, [f for f in d.iterdir() if f.is_file() and f.suffix.lower() in AUDIO_SUFFIXES])
        n_test, n_val = split_counts(len(files), 2)
        if n_test == 0:
            warnings.append(f"class {name!r}: {len(files)} clips, fewer than 6: all in train")
        for i, f in enumerate(files):
            split = "test" if i < n_test else "val" if i < n_test + n_val else "train"
            clips.append(SourceClip(f, name, split, f"folder:{f.relative_to(root).as_posix()}", license, "folder"))
        img_dir = d / "images"
        pics = _ordered(root, [f for f in img_dir.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES]) \
            if img_dir.is_dir() else []
        i_test, i_val = split_counts(len(pics), 1)
        if pics and i_test == 0:
            warnings.append(f"class {name!r}: {len(pics)} image(s), fewer than 3: the same images serve every split")
        for i, f in enumerate(pics):
            if i_test == 0:
                images += [SourceImage(f, name, s, license, "folder") for s in ("train", "val", "test")]
            else:
                split = "test" if i < i_test else "val" if i < i_test + i_val else "train"
                images.append(SourceImage(f, name, split, license, "folder"))
    return clips, images, warnings


def families_of(root: str | Path, classes: list[str]) -> dict[str, str]:
    """Class -> family from ``ROOT/families.csv`` (``class_name,family``); each class its own otherwise."""
    fam = {c: c for c in classes}
    path = Path(root) / "families.csv"
    if path.is_file():
        with open(path, newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                name = clean_class_name(row.get("class_name", ""))
                if name in fam and row.get("family"):
                    fam[name] = clean_class_name(row["family"])
    return fam


def image_status(classes: list[str], images: list[SourceImage]) -> str:
    """``available``, ``partial: ...`` or ``unavailable: ...`` for ``build_info.json["modalities"]``."""
    have = {im.class_name for im in images}
    if not have:
        return "unavailable: no ROOT/<class>/images/ folders"
    lacking = [c for c in classes if c not in have]
    return f"partial: no images for {', '.join(lacking)}" if lacking else "available"

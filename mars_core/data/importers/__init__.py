"""Import a real dataset as a benchmark build: ``python -m mars_core.data import music|vggsound|esc50|folder --root PATH``.

Each importer reads a dataset in its published layout and writes the offline benchmark's manifest
format (:mod:`.common`), so :class:`~mars_core.data.mixing.MixtureDataset`, the query bank and the
trainers read it through their ``build_dir`` argument. The default output is
``$MARS_DATA/imports/<dataset>-<profile>`` (never the offline benchmark's own folder).

* ``music``: MUSIC / MUSIC-21's video list and the downloaded videos (:mod:`.music`); audio and 1 fps
  frames decoded with PyAV, splits by video.
* ``vggsound``: ``vggsound.csv`` and the downloaded clips (:mod:`.vggsound`); the dataset's own
  train/test, labels as text queries, the middle frame as the image query.
* ``esc50``: ESC-50's ``meta/esc50.csv`` and ``audio/`` (:mod:`.esc50`); folds as splits, no images.
* ``folder``: ``ROOT/<class>/*.wav`` with optional ``ROOT/<class>/images/*`` (:mod:`.folder`).

``--list CSV`` keeps only the files named in the CSV's first column (video ids for MUSIC, e.g. a
MUSIC-clean+ selection; ``<id>_<start>`` or ids for VGGSound, e.g. VGGSound-clean+; ``filename`` for
ESC-50; the path relative to ROOT for ``folder``).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import Sequence

from ...config import PROFILE_NAMES, get_profile
from . import esc50, folder, music, vggsound
from .common import DatasetLayoutError, ImportReport, default_out, write_import

DATASETS = ("music", "vggsound", "esc50", "folder")


def read_list(path: str | Path) -> set[str]:
    """The first column of a CSV (its header skipped when it is ``filename`` or ``path``)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetLayoutError(f"--list {path}: no such file")
    with open(path, newline="", encoding="utf-8") as fh:
        rows = [r[0].strip() for r in csv.reader(fh) if r and r[0].strip()]
    return set(rows[1:] if rows and rows[0].lower() in ("filename", "path") else rows)


def import_dataset(dataset: str, root: str | Path, *, profile=None, out: str | Path | None = None,
                   list_csv: str | Path | None = None, test_fold: int = 5, license: str = "user-provided",
                   clips_per_video: int = 3, frames_per_video: int = 8, progress: bool = False) -> ImportReport:
    """Import ``dataset`` from ``root`` into ``out`` (default :func:`~.common.default_out`).

    Raises:
        DatasetLayoutError: ``root`` does not have the dataset's published layout (named in the message).
    """
    prof = get_profile(profile)
    root = Path(root)
    out = Path(out) if out is not None else default_out(dataset, prof)
    selection = read_list(list_csv) if list_csv is not None else None
    if dataset == "music":
        clips, images, warnings = music.list_files(root, selection, clips_per_video, frames_per_video)
        classes = sorted({c.class_name for c in clips})
        return write_import(out, prof, "music", root, clips, images, families=music.families_of(classes),
                            attribution=music.ATTRIBUTION, image_status=folder.image_status(classes, images),
                            warnings=warnings, progress=progress)
    if dataset == "vggsound":
        clips, images, labels = vggsound.list_files(root, selection)
        classes = sorted({c.class_name for c in clips})
        return write_import(out, prof, "vggsound", root, clips, images, families={c: c for c in classes},
                            attribution=vggsound.ATTRIBUTION, image_status=folder.image_status(classes, images),
                            prompt_nouns=labels, progress=progress)
    if dataset == "esc50":
        clips = esc50.list_clips(root, selection, test_fold)
        return write_import(out, prof, "esc50", root, clips, [], families=esc50.families_of(root),
                            attribution=esc50.ATTRIBUTION, image_status=esc50.IMAGE_STATUS, prompt_nouns=esc50.NOUNS,
                            progress=progress)
    if dataset == "folder":
        clips, images, warnings = folder.list_files(root, license)
        if selection is not None:
            keep = lambda p: p.relative_to(root).as_posix() in selection  # noqa: E731
            clips, images = [c for c in clips if keep(c.path)], [i for i in images if keep(i.path)]
        classes = sorted({c.class_name for c in clips})
        attribution = [{"source": "folder", "package": root.name, "version": "", "license": license,
                        "used_for": "audio clips and query images", "credit": f"user-provided files under {root}"}]
        return write_import(out, prof, "folder", root, clips, images, families=folder.families_of(root, classes),
                            attribution=attribution, image_status=folder.image_status(classes, images),
                            warnings=warnings, progress=progress)
    raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mars_core.data import", description=__doc__.split("\n")[0])
    p.add_argument("dataset", choices=DATASETS)
    p.add_argument("--root", required=True, help="the dataset's folder, in its published layout")
    p.add_argument("--list", dest="list_csv", default=None, help="CSV whose first column names the files to keep")
    p.add_argument("--profile", default=None, choices=PROFILE_NAMES,
                   help="sample rate, clip length and image size (default: $MARS_PROFILE or smoke)")
    p.add_argument("--out", default=None, help="build folder (default: $MARS_DATA/imports/<dataset>-<profile>)")
    p.add_argument("--test-fold", type=int, default=5, help="esc50: the fold used as test (the one before: val)")
    p.add_argument("--license", default="user-provided", help="folder: license written into the manifests")
    p.add_argument("--clips-per-video", type=int, default=3, help="music: clips cut from each video")
    p.add_argument("--frames-per-video", type=int, default=8, help="music: 1 fps frames kept per video (at most)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        report = import_dataset(args.dataset, args.root, profile=args.profile, out=args.out, list_csv=args.list_csv,
                                test_fold=args.test_fold, license=args.license,
                                clips_per_video=args.clips_per_video, frames_per_video=args.frames_per_video,
                                progress=True)
    except DatasetLayoutError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(report.summary())
    return 0

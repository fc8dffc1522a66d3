"""The on-disk contract of the offline benchmark: paths, manifest columns, atomic writes.

A build of profile ``P`` lives in ``benchmark_dir(P)`` =
``$MARS_DATA/benchmark/<P>`` (``MARS_DATA`` defaults to ``~/.cache/mars``)::

    build_info.json          profile, seed, recipe hash, package versions, class table
    attribution.csv          one row per source of material (package, version, license, credit)
    classes.csv              class_name, family, kind (instrument/everyday/speech), label index
    prompts.csv              class_name, template_id, split_group (train|test), text
    audio/<split>.csv        one row per audio clip (AUDIO_COLUMNS)
    images/<split>.csv       one row per query image (IMAGE_COLUMNS)
    audio/<split>/<class>/<clip_id>.wav     float PCM, mono, profile sample rate
    images/<split>/<class>/<image_id>.png   RGB, image_size x image_size

Splits: ``train``, ``val``, ``test``, ``test_timbre``. Paths in manifests are
relative to the build directory. Every table is written with
:func:`write_csv_atomic` (temp file then ``os.replace``), so a crash never leaves a
half-written manifest.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable

from ..atomic import write_bytes_atomic

SPLITS = ("train", "val", "test", "test_timbre")

AUDIO_COLUMNS = (
    "clip_id",  # unique id, stable across builds with the same seed
    "class_name",  # one of classes.csv
    "family",  # acoustic family (bowed_strings, brass, ...), used for hard pairs
    "source",  # material source key, e.g. "fluidr3", "timgm6mb", "tuxpaint", "opensfx", "ovos"
    "recording_id",  # recording (or soundfont preset) the clip comes from; splits never share one for everyday classes
    "license",  # SPDX-like license of the material
    "path",  # relative to the build directory
    "sample_rate",  # Hz
    "num_samples",  # samples in the file
    "duration",  # seconds
    "sha256",  # of the file bytes
)

IMAGE_COLUMNS = (
    "image_id",
    "class_name",
    "style",  # e.g. "noto_emoji", "openmoji", "tuxpaint_photo"
    "source",
    "license",
    "path",
    "sha256",
)

PROMPT_COLUMNS = ("class_name", "template_id", "split_group", "text")


def data_root() -> Path:
    """``$MARS_DATA`` or ``~/.cache/mars``."""
    return Path(os.environ.get("MARS_DATA") or Path.home() / ".cache" / "mars").expanduser()


def benchmark_dir(profile_name: str, root: str | os.PathLike | None = None) -> Path:
    """Directory of the benchmark build for a profile."""
    return Path(root) if root is not None else data_root() / "benchmark" / profile_name


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def write_csv_atomic(path: str | os.PathLike, rows: Iterable[dict[str, Any]], columns: Iterable[str]) -> None:
    """Write ``rows`` (dicts) as CSV with exactly ``columns``, atomically."""
    import csv
    import io

    columns = list(columns)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n", extrasaction="raise")
    writer.writeheader()
    for row in rows:
        missing = set(columns) - set(row)
        if missing:
            raise ValueError(f"{path}: row is missing columns {sorted(missing)}: {row}")
        writer.writerow(row)
    write_bytes_atomic(Path(path), buf.getvalue().encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON (sorted keys, indented) atomically."""
    write_bytes_atomic(Path(path), (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode("utf-8"))


def read_table(build_dir: str | os.PathLike, kind: str, split: str | None = None):
    """Read a manifest as a pandas DataFrame.

    Args:
        kind: ``"audio"``, ``"images"``, ``"prompts"``, ``"classes"`` or ``"attribution"``.
        split: required for ``audio`` and ``images``.

    Raises:
        FileNotFoundError: with the command that builds the benchmark.
    """
    import pandas as pd

    build_dir = Path(build_dir)
    if kind in ("audio", "images"):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        path = build_dir / kind / f"{split}.csv"
    else:
        path = build_dir / f"{kind}.csv"
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found: build the benchmark first with `python -m mars_core.data build --profile <P>`"
        )
    return pd.read_csv(path, keep_default_na=False)

"""Verified reads of benchmark audio: every read is checked against the file's manifest row.

A clip ``<build>/audio/<split>/<class>/<clip_id>.wav`` is listed in ``<build>/audio/<split>.csv``
with its sample rate, length and sha256. :func:`read_clip` checks, on every read, that
the file exists and that its header (``soundfile.info``, no audio decoded) says mono,
the manifest's sample rate and exactly the manifest's number of samples; on the first
read of a file version in a process (keyed by path, size and mtime) it also checks the
sha256 of the bytes. Anything else raises :class:`BenchmarkFileError`, which names the
file, says what is wrong and gives the command that repairs the build
(:func:`repair_command`): the builder re-renders every file whose sha256 differs from
its manifest, byte for byte as a clean build would.

Query images ``<build>/images/<split>/<class>/<image_id>.png`` are checked the same way
against ``<build>/images/<split>.csv`` (:func:`read_benchmark_image`): the file must exist,
its bytes match the manifest's sha256 on the first read of a file version in a process
(the same cache as the audio), and it must decode; a missing, truncated or replaced image
raises :class:`BenchmarkFileError` with the repair command (the builder re-renders the
images when any differs from its manifest).

Costs: the header read is a few tens of microseconds; the sha256 of a 5 s clip at
8 kHz (160 kB) well under a millisecond, once per file and process.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image

from .manifest import SPLITS, benchmark_dir, sha256_file


class BenchmarkFileError(RuntimeError):
    """A benchmark file is missing, unreadable, or differs from its manifest."""


@dataclass(frozen=True)
class ClipRow:
    """What the manifest says about one clip. ``path`` is absolute."""

    path: Path
    sample_rate: int
    num_samples: int
    sha256: str


@dataclass(frozen=True)
class ImageRow:
    """What the manifest says about one query image. ``path`` is absolute."""

    path: Path
    sha256: str


def repair_command(build_dir: str | os.PathLike) -> str:
    """The command that re-renders a build's damaged files, e.g. ``python -m mars_core.data build --profile smoke``.

    The profile and seed come from ``build_info.json`` (else the folder's name);
    ``--root`` is added when the build is not in the profile's default place.
    """
    build_dir = Path(build_dir)
    try:
        info = json.loads((build_dir / "build_info.json").read_text())
    except (OSError, ValueError):
        info = {}
    profile = str(info.get("profile") or build_dir.name)
    cmd = f"python -m mars_core.data build --profile {profile}"
    if build_dir.resolve() != benchmark_dir(profile).resolve():
        cmd += f" --root {build_dir}"
    seed = info.get("seed")
    cfg_seed = info.get("profile_config", {}).get("data", {}).get("seed")
    if seed is not None and cfg_seed is not None and int(seed) != int(cfg_seed):
        cmd += f" --seed {seed}"
    return cmd


def _fail(row: ClipRow | ImageRow, build_dir: Path, what: str) -> BenchmarkFileError:
    noun = "benchmark image" if isinstance(row, ImageRow) else "benchmark clip"
    return BenchmarkFileError(f"{noun} {row.path}: {what}. Repair the build with `{repair_command(build_dir)}` "
                              f"(it re-renders every file that differs from its manifest)")


# (manifest path) -> ((size, mtime_ns), {absolute file path: row})
_MANIFESTS: dict[str, tuple[tuple[int, int], dict[str, ClipRow | ImageRow]]] = {}
# verified file versions: (path, size, mtime_ns, sha256 expected)
_VERIFIED: set[tuple[str, int, int, str]] = set()


def _version(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def _manifest(build_dir: str | os.PathLike, kind: str, split: str) -> dict[str, ClipRow | ImageRow]:
    """The rows of ``<kind>/<split>.csv`` (kind ``audio`` or ``images``) by absolute file path, cached
    while the manifest file is unchanged.

    Raises:
        FileNotFoundError: no such manifest, with the build command.
    """
    build_dir = Path(build_dir).absolute()
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    manifest = build_dir / kind / f"{split}.csv"
    try:
        version = _version(manifest)
    except FileNotFoundError:
        raise FileNotFoundError(f"{manifest} not found: build the benchmark with `{repair_command(build_dir)}`") from None
    cached = _MANIFESTS.get(str(manifest))
    if cached is not None and cached[0] == version:
        return cached[1]
    with open(manifest, newline="", encoding="utf-8") as fh:
        if kind == "audio":
            rows = {str(build_dir / r["path"]): ClipRow(build_dir / r["path"], int(r["sample_rate"]),
                                                        int(r["num_samples"]), r["sha256"]) for r in csv.DictReader(fh)}
        else:
            rows = {str(build_dir / r["path"]): ImageRow(build_dir / r["path"], r["sha256"]) for r in csv.DictReader(fh)}
    _MANIFESTS[str(manifest)] = (version, rows)
    return rows


def manifest_rows(build_dir: str | os.PathLike, split: str) -> dict[str, ClipRow]:
    """The rows of ``audio/<split>.csv`` by absolute clip path (cached while the manifest is unchanged).

    Raises:
        FileNotFoundError: no such manifest, with the build command.
    """
    return _manifest(build_dir, "audio", split)  # type: ignore[return-value]


def _locate(path: str | os.PathLike, kind: str) -> tuple[ClipRow | ImageRow, Path]:
    """The manifest row of ``<build>/<kind>/<split>/<class>/<file>`` and its build directory."""
    path = Path(path).absolute()
    parts = path.parts
    if len(parts) < 5 or parts[-4] != kind or parts[-3] not in SPLITS:
        what = "clip" if kind == "audio" else "image"
        raise BenchmarkFileError(f"{path} is not a benchmark {what} (expected <build>/{kind}/<split>/<class>/<file>)")
    build_dir = path.parents[3]
    rows = _manifest(build_dir, kind, parts[-3])
    row = rows.get(str(path))
    if row is None:
        raise BenchmarkFileError(f"{path} is not listed in {build_dir / kind / (parts[-3] + '.csv')}: "
                                 f"rebuild with `{repair_command(build_dir)}`")
    return row, build_dir


def clip_row(path: str | os.PathLike) -> tuple[ClipRow, Path]:
    """The manifest row of a clip path ``<build>/audio/<split>/<class>/<file>`` and its build directory.

    Raises:
        BenchmarkFileError: the path is not laid out as a benchmark clip, or its manifest does not list it.
    """
    return _locate(path, "audio")  # type: ignore[return-value]


def image_row(path: str | os.PathLike) -> tuple[ImageRow, Path]:
    """The manifest row of an image path ``<build>/images/<split>/<class>/<file>`` and its build directory.

    Raises:
        BenchmarkFileError: the path is not laid out as a benchmark image, or its manifest does not list it.
    """
    return _locate(path, "images")  # type: ignore[return-value]


def _check_sha256(row: ClipRow | ImageRow, version: tuple[int, int], build_dir: Path) -> None:
    """sha256 of the file against its row, once per file version ``(path, size, mtime_ns)`` and process."""
    key = (str(row.path), *version, row.sha256)
    if key in _VERIFIED:
        return
    digest = sha256_file(row.path)
    if digest != row.sha256:
        raise _fail(row, build_dir, f"sha256 {digest[:12]}... differs from the manifest's {row.sha256[:12]}... "
                                    f"(corrupted, truncated or modified)")
    _VERIFIED.add(key)


def check_clip(row: ClipRow, build_dir: str | os.PathLike) -> None:
    """Check a clip against its manifest row: header on every call, sha256 once per file version and process.

    Raises:
        BenchmarkFileError: missing, unreadable, not mono, other rate or length, other bytes.
    """
    build_dir = Path(build_dir)
    try:
        version = _version(row.path)
        info = sf.info(str(row.path))
    except FileNotFoundError:
        raise _fail(row, build_dir, "the file is missing") from None
    except (OSError, RuntimeError) as exc:  # soundfile.LibsndfileError is a RuntimeError
        raise _fail(row, build_dir, f"unreadable ({exc})") from None
    if info.channels != 1:
        raise _fail(row, build_dir, f"{info.channels} channels, the benchmark stores mono")
    if info.samplerate != row.sample_rate:
        raise _fail(row, build_dir, f"sample rate {info.samplerate} Hz, the manifest says {row.sample_rate} Hz")
    if info.frames != row.num_samples:
        raise _fail(row, build_dir, f"{info.frames} samples, the manifest says {row.num_samples} (truncated or replaced)")
    _check_sha256(row, version, build_dir)


def read_clip(path: str | os.PathLike, start: int = 0, frames: int | None = None) -> np.ndarray:
    """Samples ``start .. start + frames`` of a verified benchmark clip (default: to its end), mono float32.

    Reads past the clip's manifest length are zero-padded: ``frames`` samples always
    come back. The file itself must match its manifest (:func:`check_clip`).

    Shape:
        returns ``(frames,)`` (``(num_samples - start,)`` when ``frames`` is None).

    Raises:
        BenchmarkFileError: see :func:`check_clip`; also a file that reads short.
    """
    row, build_dir = clip_row(path)
    check_clip(row, build_dir)
    start = int(start)
    if start < 0:
        raise ValueError(f"start must be >= 0, got {start}")
    want = row.num_samples - start if frames is None else int(frames)
    n_file = max(0, min(want, row.num_samples - start))
    try:
        data, _ = sf.read(str(row.path), start=start, frames=n_file, dtype="float32", always_2d=True)
    except (OSError, RuntimeError) as exc:
        raise _fail(row, build_dir, f"unreadable ({exc})") from None
    if len(data) != n_file:
        raise _fail(row, build_dir, f"read {len(data)} of {n_file} samples from offset {start}")
    seg = data[:, 0]
    if len(seg) < want:
        seg = np.pad(seg, (0, want - len(seg)))
    return np.ascontiguousarray(seg, dtype=np.float32)


def read_benchmark_image(path: str | os.PathLike) -> np.ndarray:
    """A verified benchmark query image as RGB uint8 (``PIL`` ``convert("RGB")`` of the stored PNG).

    The file must be listed in ``images/<split>.csv``, exist, match its sha256 (checked on the
    first read of each file version in a process, :func:`_check_sha256`) and decode.

    Shape:
        returns ``(H, W, 3)`` uint8.

    Raises:
        BenchmarkFileError: not a listed benchmark image, missing, other bytes (truncated,
            replaced, modified) or undecodable; the message names the file and the repair command.
    """
    row, build_dir = image_row(path)
    try:
        version = _version(row.path)
    except FileNotFoundError:
        raise _fail(row, build_dir, "the file is missing") from None
    _check_sha256(row, version, build_dir)
    try:
        with Image.open(row.path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except (OSError, ValueError, Image.DecompressionBombError) as exc:  # PIL.UnidentifiedImageError is an OSError
        raise _fail(row, build_dir, f"unreadable ({exc})") from None

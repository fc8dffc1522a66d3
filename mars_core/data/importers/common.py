"""Write an imported dataset as a benchmark build (the manifest format of :mod:`mars_core.data.manifest`).

An importer lists :class:`SourceClip` and :class:`SourceImage` records (a file, its class, split,
license and provenance); :func:`write_import` turns them into a build directory that
:class:`~mars_core.data.mixing.MixtureDataset`, the query bank, the trainers and the benchmark read
like the offline benchmark::

    classes.csv  prompts.csv  attribution.csv  build_info.json
    audio/<split>.csv   audio/<split>/<class>/<clip_id>.wav     (every split, possibly empty)
    images/<split>.csv  images/<split>/<class>/<image_id>.png

Every clip is normalised as the offline benchmark's clips are (``mars_core.data.clips``): channels
averaged, resampled to the profile's rate with the builder's polyphase resampler
(:func:`~mars_core.data.sources.dsp.resample`), cut to the profile's ``clip_seconds`` (the most
energetic window of a longer file; a shorter one is zero-padded), then active-frame RMS to the
recipe's level with the peak capped (:func:`~mars_core.data.sources.dsp.normalize_loudness`), written
as 32-bit float WAV with its sha256. Unreadable, empty, NaN/inf or silent files are skipped and listed by
name in ``build_info.json["skipped"]``. Images are centre-cropped to a square and resized to
``profile.data.image_size``.

Text queries: each class name becomes a noun phrase (``crying_baby`` -> "a crying baby", ``rain``
-> "rain") filled into the catalog's generic and everyday templates
(:func:`~mars_core.data.catalog.class_templates`); the recipe's held-out template ids form the
``test`` prompt group, as in the benchmark.
"""

from __future__ import annotations

import io
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import soundfile as sf
from PIL import Image, UnidentifiedImageError

from ...atomic import write_bytes_atomic
from ...config import Profile, get_profile
from ..build import ATTRIBUTION_COLUMNS, CLASS_COLUMNS, wav_bytes
from ..catalog import ClassSpec, class_templates
from ..manifest import (AUDIO_COLUMNS, IMAGE_COLUMNS, PROMPT_COLUMNS, SPLITS, data_root, sha256_file,
                        write_csv_atomic, write_json_atomic)
from ..recipe import load_recipe
from ..sources import dsp
from . import video
from .video import VIDEO_SUFFIXES, VideoError

MASS_NOUNS = frozenset({"rain", "wind", "applause", "speech", "laughter", "music", "thunder", "traffic", "water"})
"""Class names read without an article ("rain", not "a rain")."""


class DatasetLayoutError(ValueError):
    """A dataset root that does not have the published layout (the message names what is missing)."""


@dataclass(frozen=True)
class SourceClip:
    """One audio file of the dataset and where it goes."""

    path: Path
    class_name: str
    split: str
    recording_id: str
    """Recording it was cut from (clips of one recording stay in one split)."""
    license: str
    source: str
    """Dataset key, e.g. ``esc50``."""
    part: tuple[int, int] = (0, 1)
    """``(i, n)``: the clip is cut from the ``i``-th of ``n`` equal parts of the file (several clips per long video)."""


@dataclass(frozen=True)
class SourceImage:
    """One image file of the dataset and where it goes."""

    path: Path
    class_name: str
    split: str
    license: str
    source: str
    style: str = "photo"
    time: float | None = None
    """For a video ``path``: the frame shown at this time (seconds) is the image."""


@dataclass
class ImportReport:
    """What :func:`write_import` wrote and skipped."""

    out: Path
    clips: dict[str, int]
    images: dict[str, int]
    skipped: list[dict[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        clips = ", ".join(f"{s} {n}" for s, n in self.clips.items())
        images = ", ".join(f"{s} {n}" for s, n in self.images.items())
        lines = [f"imported into {self.out}", f"  clips: {clips}", f"  images: {images}"]
        if self.skipped:
            lines.append(f"  skipped {len(self.skipped)} file(s): "
                         + "; ".join(f"{s['path']} ({s['reason']})" for s in self.skipped[:10])
                         + (" ..." if len(self.skipped) > 10 else ""))
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def default_out(dataset: str, profile: str | Profile | None) -> Path:
    """``$MARS_DATA/imports/<dataset>-<profile>``: never the offline benchmark's folder."""
    return data_root() / "imports" / f"{dataset}-{get_profile(profile).name}"


def clean_class_name(name: str) -> str:
    """A class name usable in paths and manifests: lower case, ``[a-z0-9_]``."""
    out = re.sub(r"[^a-z0-9]+", "_", str(name).strip().lower()).strip("_")
    if not out:
        raise DatasetLayoutError(f"class name {name!r} has no letters or digits")
    return out


def noun_phrases(class_name: str, overrides: dict[str, str] | None = None) -> tuple[str, str]:
    """``(a_noun, noun)`` of a class: ``crying_baby`` -> ("a crying baby", "crying baby").

    No article for plurals (``-s``), gerunds (``-ing``) and :data:`MASS_NOUNS`; ``overrides`` maps a
    class to its noun phrase with the article.
    """
    noun = class_name.replace("_", " ")
    if overrides and class_name in overrides:
        a_noun = overrides[class_name]
        bare = re.sub(r"^(a|an|the) ", "", a_noun)
        return a_noun, bare
    if noun.endswith(("s", "ing")) or noun in MASS_NOUNS:
        return noun, noun
    return (f"an {noun}" if noun[0] in "aeiou" else f"a {noun}"), noun


def held_out_template_ids() -> tuple[str, ...]:
    """The recipe's held-out prompt template ids (``prompts.test_template_ids``)."""
    return tuple(load_recipe()["prompts"]["test_template_ids"])


def prompt_rows(classes: Sequence[str], overrides: dict[str, str] | None = None,
                kind: str = "everyday") -> list[dict[str, str]]:
    """``prompts.csv`` rows: generic and ``kind`` templates filled with each class's noun phrase;
    the recipe's held-out ids are the ``test`` group (ids a class lacks, like ``c..``, are ignored)."""
    held = set(held_out_template_ids())
    rows = []
    for name in classes:
        a_noun, noun = noun_phrases(name, overrides)
        spec = ClassSpec(name, "", kind, (), 0, (0, 0), "recording", a_noun, noun, ())
        for tid, text in class_templates(spec):
            rows.append({"class_name": name, "template_id": tid, "split_group": "test" if tid in held else "train",
                         "text": text})
    return rows


# --------------------------------------------------------------------------- audio and images
class SkipFile(Exception):
    """A source file that cannot be used; the message says why."""


def most_active_window(x: np.ndarray, length: int, hop: int) -> np.ndarray:
    """The ``length`` samples of ``x`` with the most energy (start on a multiple of ``hop``, earliest
    on ties); ``x`` zero-padded to ``length`` when shorter.

    Shape:
        x: ``(n,)``; returns ``(length,)``.
    """
    if len(x) <= length:
        return np.pad(x, (0, length - len(x)))
    c = np.concatenate([[0.0], np.cumsum(np.square(x, dtype=np.float64))])
    starts = np.arange(0, len(x) - length + 1, max(hop, 1))
    energy = c[starts + length] - c[starts]
    s = int(starts[int(np.argmax(energy))])
    return x[s : s + length]


def read_source_audio(path: Path) -> tuple[np.ndarray, int]:
    """``(samples (n, channels) float64, rate)`` of an audio file, or of a video's first audio stream.

    Raises:
        SkipFile: unreadable (or no audio stream).
    """
    if path.suffix.lower() in VIDEO_SUFFIXES:
        try:
            return video.read_audio(path)
        except VideoError as exc:
            raise SkipFile(str(exc)) from exc
    if not path.is_file():
        raise SkipFile("missing file")
    try:
        x, sr = sf.read(str(path), dtype="float64", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise SkipFile(f"unreadable: {exc}") from exc
    return x, int(sr)


def normalise_clip(path: Path, profile: Profile, loudness: dict, quality: dict,
                   part: tuple[int, int] = (0, 1)) -> np.ndarray:
    """Read one source file (audio, or a video's audio) and normalise it like a benchmark clip
    (module docstring); ``part = (i, n)`` keeps the ``i``-th of ``n`` equal parts before choosing the window.

    Shape:
        returns ``(round(clip_seconds * sample_rate),)`` float32.

    Raises:
        SkipFile: unreadable, empty, NaN/inf or silent.
    """
    if not path.exists():
        raise SkipFile("missing file")
    x, sr = read_source_audio(path)
    if x.shape[0] == 0:
        raise SkipFile("empty")
    if not np.isfinite(x).all():
        raise SkipFile("NaN or infinite samples")
    rate = profile.audio.sample_rate
    y = dsp.resample(dsp.to_mono(x), int(sr), rate)
    i, n = part
    y = y[len(y) * i // n : len(y) * (i + 1) // n]
    y = most_active_window(y, int(round(profile.data.clip_seconds * rate)), rate // 10)
    try:
        y = dsp.normalize_loudness(y, rate, loudness["active_rms_dbfs"], loudness["peak_max"],
                                   quality["frame_ms"], quality["silence_db"])
    except ValueError as exc:
        raise SkipFile("silent") from exc
    return y.astype(np.float32)


def normalise_image(path: Path | np.ndarray, size: int) -> bytes:
    """PNG bytes of an image file (or an RGB array, e.g. a video frame) centre-cropped to a square and
    resized to ``size`` (bicubic).

    Raises:
        SkipFile: not a readable image.
    """
    try:
        with (Image.fromarray(path) if isinstance(path, np.ndarray) else Image.open(path)) as im:
            im = im.convert("RGB")
            w, h = im.size
            side = min(w, h)
            im = im.crop(((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side))
            im = im.resize((size, size), Image.BICUBIC)
            buf = io.BytesIO()
            im.save(buf, format="PNG")
            return buf.getvalue()
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise SkipFile(f"unreadable image: {exc}") from exc


class _FrameCache:
    """Decodes each video once for all the frames its images need (the images of one video are consecutive)."""

    def __init__(self, images: Sequence[SourceImage]):
        self.times: dict[Path, list[float]] = {}
        for im in images:
            if im.time is not None:
                self.times.setdefault(im.path, []).append(im.time)
        self.path, self.frames = None, {}

    def get(self, im: SourceImage) -> np.ndarray:
        if im.path != self.path:
            self.path, self.frames = im.path, {}
            times = sorted(set(self.times[im.path]))
            try:
                self.frames = dict(zip(times, video.frames_at(im.path, times)))
            except VideoError as exc:
                self.frames = {t: exc for t in times}
        frame = self.frames[im.time]
        if isinstance(frame, VideoError):
            raise SkipFile(f"no frame at {im.time:g} s: {frame}")
        return frame


# --------------------------------------------------------------------------- the build
def _numbered(records: Iterable) -> list[tuple[int, object]]:
    """Records sorted by (split, class, path) with their index within (split, class)."""
    out, seen = [], Counter()
    for r in sorted(records, key=lambda r: (r.split, r.class_name, str(r.path))):
        out.append((seen[(r.split, r.class_name)], r))
        seen[(r.split, r.class_name)] += 1
    return out


def write_import(out: str | Path, profile: str | Profile | None, dataset: str, root: str | Path,
                 clips: Sequence[SourceClip], images: Sequence[SourceImage], *, families: dict[str, str],
                 attribution: Sequence[dict[str, str]], image_status: str, prompt_nouns: dict[str, str] | None = None,
                 warnings: Sequence[str] = (), progress: bool = False) -> ImportReport:
    """Normalise and write ``clips`` and ``images`` as a build in ``out`` (module docstring).

    Args:
        families: class -> acoustic family (hard pairs are drawn within one).
        attribution: ``attribution.csv`` rows (:data:`~mars_core.data.build.ATTRIBUTION_COLUMNS`).
        image_status: how the image modality stands, written to ``build_info.json["modalities"]``
            (e.g. "unavailable: ESC-50 ships no images").
        prompt_nouns: class -> noun phrase with article, for names the rule of :func:`noun_phrases` gets wrong.

    Returns:
        :class:`ImportReport` with counts per split and the skipped files.
    """
    t0 = time.perf_counter()
    prof = get_profile(profile)
    out = Path(out)
    recipe = load_recipe()
    loudness, quality = recipe["loudness"], recipe["quality"]
    rows: dict[str, list[dict]] = {s: [] for s in SPLITS}
    skipped: list[dict[str, str]] = []
    for k, c in _numbered(clips):
        try:
            y = normalise_clip(c.path, prof, loudness, quality, c.part)
        except SkipFile as exc:
            skipped.append({"path": str(c.path), "reason": str(exc)})
            continue
        clip_id = f"{c.split}-{c.class_name}-{k:04d}"
        rel = Path("audio") / c.split / c.class_name / f"{clip_id}.wav"
        write_bytes_atomic(out / rel, wav_bytes(y, prof.audio.sample_rate))
        rows[c.split].append({"clip_id": clip_id, "class_name": c.class_name, "family": families[c.class_name],
                              "source": c.source, "recording_id": c.recording_id, "license": c.license,
                              "path": rel.as_posix(), "sample_rate": prof.audio.sample_rate, "num_samples": len(y),
                              "duration": len(y) / prof.audio.sample_rate, "sha256": sha256_file(out / rel)})
        if progress and sum(map(len, rows.values())) % 100 == 0:
            print(f"  {sum(map(len, rows.values()))} clips", flush=True)
    image_rows: dict[str, list[dict]] = {s: [] for s in SPLITS}
    frames = _FrameCache(images)
    for k, im in _numbered(images):
        try:
            data = normalise_image(im.path if im.time is None else frames.get(im), prof.data.image_size)
        except SkipFile as exc:
            skipped.append({"path": str(im.path), "reason": str(exc)})
            continue
        image_id = f"{im.split}-{im.class_name}-img{k:04d}"
        rel = Path("images") / im.split / im.class_name / f"{image_id}.png"
        write_bytes_atomic(out / rel, data)
        image_rows[im.split].append({"image_id": image_id, "class_name": im.class_name, "style": im.style,
                                     "source": im.source, "license": im.license, "path": rel.as_posix(),
                                     "sha256": sha256_file(out / rel)})
    classes = sorted({r["class_name"] for s in SPLITS for r in rows[s]})
    if len(classes) < 2:
        raise DatasetLayoutError(f"{root}: fewer than 2 classes with usable audio ({len(clips)} files listed, "
                           f"{len(skipped)} skipped)")
    warn = list(warnings)
    for s in ("train", "val", "test"):
        few = [c for c in classes if sum(r["class_name"] == c for r in rows[s]) < 2]
        if few and rows[s]:
            warn.append(f"{s}: {len(few)} class(es) with fewer than 2 clips are not used for mixtures there: "
                        f"{', '.join(few[:8])}")
    (out / "build_info.json").unlink(missing_ok=True)  # written last: a complete import has one
    for s in SPLITS:
        write_csv_atomic(out / "audio" / f"{s}.csv", rows[s], AUDIO_COLUMNS)
        write_csv_atomic(out / "images" / f"{s}.csv", image_rows[s], IMAGE_COLUMNS)
    write_csv_atomic(out / "classes.csv", [{"class_name": c, "family": families[c], "kind": "everyday", "label": i}
                                           for i, c in enumerate(classes)], CLASS_COLUMNS)
    write_csv_atomic(out / "prompts.csv", prompt_rows(classes, prompt_nouns), PROMPT_COLUMNS)
    write_csv_atomic(out / "attribution.csv", attribution, ATTRIBUTION_COLUMNS)
    totals = {s: len(rows[s]) for s in SPLITS}
    image_totals = {s: len(image_rows[s]) for s in SPLITS}
    write_json_atomic(out / "build_info.json", {
        "importer": dataset, "source_root": str(root), "profile": prof.name, "seed": prof.data.seed,
        "sample_rate": prof.audio.sample_rate, "clip_seconds": prof.data.clip_seconds,
        "clip_samples": int(round(prof.data.clip_seconds * prof.audio.sample_rate)),
        "classes": [{"class_name": c, "family": families[c]} for c in classes],
        "counts": {s: dict(Counter(r["class_name"] for r in rows[s])) for s in SPLITS},
        "totals": totals, "images": {"totals": image_totals},
        "modalities": {"audio": "available", "text": "available: class names in the benchmark's prompt templates",
                       "image": image_status},
        "skipped": skipped, "n_skipped": len(skipped),
        "degraded": {"missing_sources": [], "dropped_classes": [], "test_timbre": "none: an imported dataset"},
        "val_shares_train": [], "warnings": warn,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "elapsed_seconds": round(time.perf_counter() - t0, 1),
    })
    return ImportReport(out, totals, image_totals, skipped, warn)

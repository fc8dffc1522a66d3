"""Where the benchmark's material comes from and how it is checked.

* :mod:`.locate` - find soundfonts and recordings (Debian packages unpacked under
  ``$MARS_DATA/system`` or installed under ``/``; PyPI packages via ``find_spec``);
* :mod:`.soundfont` - render note lists with ``tinysoundfont``;
* :mod:`.phrases` - melodies, drum grooves and effect sequences drawn from a seeded RNG;
* :mod:`.recordings` - read real recordings (Tux Paint, OpenSFX, ovos) and assemble clips;
* :mod:`.quality` - silence and bandwidth checks that reject bad material by name;
* :mod:`.dsp` - resampling, pitch shift, low-pass, loudness.
"""

from .locate import TIMBRE_KEY, Material, locate_sources, system_roots, user_soundfont
from .quality import MaterialError, active_fraction, bandwidth_hz, check_active, check_bandwidth
from .recordings import Recording, assemble_clip, file_recording, open_recording, read_audio, read_opensfx
from .soundfont import Note, SoundfontRenderer, render_rate_for

__all__ = [
    "Material",
    "TIMBRE_KEY",
    "MaterialError",
    "Note",
    "Recording",
    "SoundfontRenderer",
    "active_fraction",
    "assemble_clip",
    "file_recording",
    "bandwidth_hz",
    "check_active",
    "check_bandwidth",
    "locate_sources",
    "open_recording",
    "read_audio",
    "read_opensfx",
    "render_rate_for",
    "system_roots",
    "user_soundfont",
]

"""Render notes with a General MIDI soundfont through ``tinysoundfont``.

One loaded soundfont serves every clip, and each clip renders exactly as it would in a
freshly loaded one (loading FluidR3 takes about 1 s, so it is not reloaded per clip).
``SoundFont.reset()`` alone is not enough: TinySoundFont's ``tsf_reset`` moves the
playing voices to a 10 ms "fast release" instead of silencing them, so the tail of the
previous clip would leak into the first milliseconds of the next one. :meth:`SoundfontRenderer.reset`
therefore resets and then renders (and discards) output until every voice has ended,
which leaves the synthesiser in the state of a fresh load: no active voice, no channel
state (``tsf_reset`` frees the channels). ``tests/test_data_purity.py`` checks clips
against a freshly loaded soundfont, in two orders and in two processes.
``Synth.generate_simple`` returns raw interleaved stereo float32 bytes, read with
``np.frombuffer(buf, np.float32).reshape(-1, 2)``.

Clips are rendered at ``render_rate`` (a multiple of the profile rate, at least
32 kHz) and decimated afterwards: rendering directly at 8 kHz would fold the
samples' upper partials into the audible band.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .quality import MaterialError

DRAIN_SECONDS = 0.05
"""Output rendered and discarded after a reset: 5x TinySoundFont's 10 ms fast release."""
MAX_DRAIN_SECONDS = 2.0
"""A voice still sounding after this long of drain is an error (it never happens with tsf's fast release)."""


@dataclass(frozen=True)
class Note:
    """A note event in seconds. ``key``: MIDI key; ``velocity``: 1..127."""

    onset: float
    key: int
    velocity: int
    duration: float


def render_rate_for(sample_rate: int, minimum: int = 32000) -> int:
    """Smallest multiple of ``sample_rate`` that is at least ``minimum``."""
    return sample_rate * max(1, -(-minimum // sample_rate))


class SoundfontRenderer:
    """A loaded soundfont that renders note lists to mono float64 audio.

    Args:
        path: the ``.sf2`` file.
        render_rate: synthesis rate in Hz.

    Raises:
        MaterialError: the file is missing or not a soundfont.
    """

    def __init__(self, path: str | Path, render_rate: int):
        import tinysoundfont

        self.path = Path(path)
        if not self.path.is_file():
            raise MaterialError(f"soundfont not found: {self.path} (run scripts/fetch_system_data.sh)")
        self.render_rate = int(render_rate)
        self.synth = tinysoundfont.Synth(samplerate=self.render_rate)
        try:
            self.sfid = self.synth.sfload(str(self.path))
        except Exception as exc:  # tinysoundfont raises a bare Exception subclass
            raise MaterialError(f"cannot load soundfont {self.path}: {exc}") from exc

    def has_preset(self, bank: int, program: int) -> bool:
        """Whether the soundfont defines ``(bank, program)``."""
        return self.synth.sfpreset_name(self.sfid, bank, program) is not None

    def preset_name(self, bank: int, program: int) -> str | None:
        return self.synth.sfpreset_name(self.sfid, bank, program)

    def _generate(self, n: int) -> np.ndarray:
        buf = self.synth.generate_simple(n)
        return np.frombuffer(buf, dtype=np.float32).reshape(-1, 2)

    def reset(self) -> None:
        """Bring the synthesiser back to the state of a fresh load (no voice, no channel state).

        Raises:
            MaterialError: a voice still sounds after ``MAX_DRAIN_SECONDS`` of output.
        """
        self.synth.soundfonts[self.sfid].reset()
        block = max(1, int(round(DRAIN_SECONDS * self.render_rate)))
        for _ in range(int(np.ceil(MAX_DRAIN_SECONDS / DRAIN_SECONDS))):
            if not self._generate(block).any():  # a whole block of exact zeros: every voice has ended
                return
        raise MaterialError(f"{self.path.name}: voices still sound {MAX_DRAIN_SECONDS} s after a reset")

    def render(self, notes: list[Note], bank: int, program: int, n_samples: int, drums: bool = False) -> np.ndarray:
        """Render ``notes`` on one channel for ``n_samples`` at ``render_rate``; mono float64.

        Shape:
            returns ``(n_samples,)``.

        Raises:
            MaterialError: the preset does not exist in this soundfont.
        """
        if not self.has_preset(bank, program):
            raise MaterialError(f"{self.path.name}: no preset bank {bank} program {program}")
        self.reset()
        self.synth.program_select(0, self.sfid, bank, program, is_drums=drums)
        sr = self.render_rate
        events = [(int(round(n.onset * sr)), 1, n.key, n.velocity) for n in notes]
        events += [(int(round((n.onset + n.duration) * sr)), 0, n.key, 0) for n in notes]
        events.sort()  # note-offs (0) before note-ons (1) at the same sample
        out = np.zeros((n_samples, 2), dtype=np.float32)
        pos = 0
        for t, is_on, key, vel in events:
            t = min(t, n_samples)
            if t > pos:
                out[pos:t] = self._generate(t - pos)
                pos = t
            if is_on and t < n_samples:
                self.synth.noteon(0, key, vel)
            elif not is_on:
                self.synth.noteoff(0, key)
        if pos < n_samples:
            out[pos:] = self._generate(n_samples - pos)
        return out.astype(np.float64).mean(axis=1)

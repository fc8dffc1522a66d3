"""Note lists for soundfont clips: melodies, drum grooves and effect sequences.

Every choice (tempo, scale, rhythm weights, pitches, velocities, rests) is drawn
from the generator the caller passes, which the builder seeds per clip with
``(seed, split, class, clip)``: two classes never share a rhythm, and a test
phrase is not a train phrase. Styles (see :data:`catalog.STYLES`):

* ``sustained``: legato melody (bowed strings, brass, woodwinds, accordion);
* ``plucked``: melody whose notes ring on, with occasional chords;
* ``mallet``: short repeated notes (xylophone);
* ``drums``: a one-bar 16-step groove repeated with mutations and fills;
* ``effect_long``: overlapping long events (seashore, helicopter, applause);
* ``effect_chirp``: re-triggered short events (bird, telephone). A single GM chirp
  lasts a fraction of a second, so a held note would leave the clip mostly silent.
"""

from __future__ import annotations

import numpy as np

from .soundfont import Note

SCALES = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "minor": (0, 2, 3, 5, 7, 8, 10),
    "pentatonic": (0, 2, 4, 7, 9),
    "dorian": (0, 2, 3, 5, 7, 9, 10),
}
RHYTHMS = {  # note values in beats
    "sustained": (0.5, 0.75, 1.0, 1.5, 2.0, 3.0),
    "plucked": (0.25, 0.5, 0.75, 1.0, 2.0),
    "mallet": (0.25, 0.5, 1.0),
}
STEPS = np.arange(-3, 4)  # scale-degree steps of the melodic random walk


def scale_keys(rng: np.random.Generator, lo: int, hi: int) -> np.ndarray:
    """MIDI keys in ``[lo, hi]`` of a random scale on a random tonic."""
    name = list(SCALES)[rng.integers(len(SCALES))]
    tonic = int(rng.integers(12))
    keys = np.array([k for k in range(lo, hi + 1) if (k - tonic) % 12 in SCALES[name]])
    return keys if len(keys) else np.arange(lo, hi + 1)


def melody(rng: np.random.Generator, seconds: float, lo: int, hi: int, style: str) -> list[Note]:
    """A melody in ``[lo, hi]`` filling ``seconds`` (styles ``sustained``, ``plucked``, ``mallet``)."""
    beat = 60.0 / rng.uniform(72, 150)
    values = np.array(RHYTHMS[style])
    weights = rng.dirichlet(np.ones(len(values)))
    step_p = rng.dirichlet(np.array([1, 2, 4, 2, 4, 2, 1], dtype=float))
    keys = scale_keys(rng, lo, hi)
    idx = int(rng.integers(len(keys) // 4, max(len(keys) // 4 + 1, 3 * len(keys) // 4)))
    loudness = rng.uniform(60, 110)
    t = rng.uniform(0.0, 0.2)
    notes: list[Note] = []
    while t < seconds - 0.05:
        ioi = float(values[rng.choice(len(values), p=weights)]) * beat
        if notes and rng.random() < 0.08:  # a rest
            t += ioi
            continue
        idx = int(np.clip(idx + rng.choice(STEPS, p=step_p), 0, len(keys) - 1))
        vel = int(np.clip(loudness + rng.normal(0, 12), 30, 127))
        hold = ioi * (rng.uniform(0.85, 1.0) if style == "sustained" else rng.uniform(1.0, 1.8))
        chord = [idx]
        if style == "plucked" and rng.random() < 0.2:
            chord += [i for i in (idx + 2, idx + 4) if i < len(keys)]
        notes += [Note(t, int(keys[i]), vel, hold) for i in chord]
        t += ioi
    return notes


KICK, SNARE, HAT, OPEN_HAT, CRASH, RIDE = 36, 38, 42, 46, 49, 51
TOMS = (41, 43, 45, 47, 48, 50)


def drum_groove(rng: np.random.Generator, seconds: float) -> list[Note]:
    """A 16-step groove (kick, snare, hats or ride) repeated with mutations and tom fills."""
    step = 60.0 / rng.uniform(80, 160) / 4
    p_kick = np.where(np.arange(16) % 8 == 0, 0.95, rng.uniform(0, 0.35) * (np.arange(16) % 2 == 0))
    p_snare = np.where(np.arange(16) % 8 == 4, 0.95, rng.uniform(0, 0.15))
    hat_every = int(rng.choice([1, 2, 4]))
    cymbal = RIDE if rng.random() < 0.3 else HAT
    bar = [(KICK, p_kick), (SNARE, p_snare)]
    pattern = [(s, k) for k, p in bar for s in range(16) if rng.random() < p[s]]
    pattern += [(s, cymbal) for s in range(0, 16, hat_every)]
    n_steps = int(seconds / step)
    t0 = rng.uniform(0.0, 0.1)
    notes: list[Note] = [Note(t0, CRASH, int(rng.integers(80, 120)), 0.5)] if rng.random() < 0.5 else []
    for s in range(n_steps):
        pos = s % 16
        fill = s % 64 >= 60 and rng.random() < 0.7
        hits = [TOMS[int(rng.integers(len(TOMS)))]] if fill else [k for ps, k in pattern if ps == pos]
        if not fill and rng.random() < 0.05:
            hits.append(OPEN_HAT)
        for k in hits:
            vel = int(np.clip(rng.normal(100 if pos % 4 == 0 else 80, 12), 30, 127))
            notes.append(Note(t0 + s * step, k, vel, step * 0.9))
    return notes


def effect_sequence(rng: np.random.Generator, seconds: float, lo: int, hi: int, style: str) -> list[Note]:
    """Re-triggered effect events: long overlapping ones, or bursts of short chirps.

    ``effect_long``: events of 1-3.5 s that overlap. ``effect_chirp``: bursts of 3-12
    chirps re-triggered every 40-120 ms (TimGM6mb's bird chirp lasts 20-100 ms),
    separated by pauses of 50-300 ms.
    """
    t = rng.uniform(0.0, 0.1)
    notes: list[Note] = []
    while t < seconds - 0.05:
        if style == "effect_long":
            dur = rng.uniform(1.0, 3.5)
            notes.append(Note(t, int(rng.integers(lo, hi + 1)), int(rng.integers(70, 128)), dur))
            t += dur * rng.uniform(0.4, 0.9) + rng.uniform(0.15, 0.9)
            continue
        ioi, key, vel = rng.uniform(0.04, 0.12), int(rng.integers(lo, hi + 1)), int(rng.integers(70, 128))
        for _ in range(int(rng.integers(3, 13))):
            notes.append(Note(t, int(np.clip(key + rng.integers(-2, 3), lo, hi)), vel, ioi))
            t += ioi
        t += rng.uniform(0.05, 0.3)
    return notes


def phrase(rng: np.random.Generator, style: str, seconds: float, lo: int, hi: int) -> list[Note]:
    """Notes of one clip for a class of the given style."""
    if style in RHYTHMS:
        return melody(rng, seconds, lo, hi, style)
    if style == "drums":
        return drum_groove(rng, seconds)
    if style in ("effect_long", "effect_chirp"):
        return effect_sequence(rng, seconds, lo, hi, style)
    raise ValueError(f"style {style!r} has no soundfont phrases")

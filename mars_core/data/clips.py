"""Render one benchmark clip: soundfont phrase or assembled recording, then low-pass, check, normalise.

Clip ``k`` of class ``c`` in split ``s`` is a pure function of
``numpy.random.default_rng([seed, split_code[s], catalog_index(c), k])`` and the
material: nothing depends on the order clips are rendered in or on the process (the
shared soundfont renderer is brought back to its freshly loaded state before every
clip, :meth:`~.sources.soundfont.SoundfontRenderer.reset`; ``tests/test_data_purity.py``).

Pipeline of a clip (``profile.audio.sample_rate`` = ``sr``, Nyquist ``sr/2``):

1. material: clips ``0 .. n_real-1`` of a split come from its recordings (round
   robin), the others are soundfont phrases (a GM program of the class drawn per clip,
   rendered at ``render_rate`` >= 32 kHz, then decimated to ``sr``);
2. low-pass at a cut-off drawn from ``U(lo, hi)`` with ``hi = 0.95 sr/2`` and
   ``lo = min(0.7 sr/2, 3600 Hz)`` (the recipe's ``lowpass``), capped at the
   bandwidth of the recording items used; every class gets the same treatment, so the
   position of the spectral edge does not tell the class;
3. quality: if the active fraction is below ``min_active_fraction``, draw again from
   the same generator, at most ``max_redraws`` times, then raise :class:`MaterialError`
   naming the clip and its source;
4. loudness: active-frame RMS to ``active_rms_dbfs``, peak capped at ``peak_max``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .recipe import ClassPlan, SplitPlan
from .sources import MaterialError, SoundfontRenderer, dsp
from .sources.phrases import phrase
from .sources.quality import active_fraction
from .sources.recordings import assemble_clip


@dataclass(frozen=True)
class ClipContext:
    """What every clip of a build shares.

    Attributes:
        seed: build seed; sample_rate: output rate (Hz); n_samples: clip length.
        split_codes: split name -> integer RNG key.
        lowpass: ``(lo_hz, hi_hz, order)``.
        qc, aug, loudness: recipe sections (``qc`` includes ``min_bandwidth_hz``).
        renderers: loaded soundfonts by source key; licenses: source key -> license.
    """

    seed: int
    sample_rate: int
    n_samples: int
    split_codes: dict[str, int]
    lowpass: tuple[float, float, int]
    qc: dict[str, Any]
    aug: dict[str, Any]
    loudness: dict[str, Any]
    renderers: dict[str, SoundfontRenderer]
    licenses: dict[str, str]


def clip_id(split: str, class_name: str, k: int) -> str:
    """Stable clip id, e.g. ``train-violin-0003``."""
    return f"{split}-{class_name}-{k:04d}"


def clip_rng(ctx: ClipContext, split: str, cp: ClassPlan, k: int) -> np.random.Generator:
    """The clip's own generator ``default_rng([seed, split_code, class_index, k])``."""
    return np.random.default_rng([ctx.seed, ctx.split_codes[split], cp.index, k])


def soundfont_material(ctx: ClipContext, cp: ClassPlan, sp: SplitPlan, split: str, rng: np.random.Generator):
    """A rendered phrase at ``sample_rate`` and its provenance ``(x, meta)``."""
    r = ctx.renderers[sp.soundfont]
    program = int(sp.programs[rng.integers(len(sp.programs))])
    seconds = ctx.n_samples / ctx.sample_rate
    notes = phrase(rng, cp.spec.style, seconds, *cp.spec.note_range)
    factor = r.render_rate // ctx.sample_rate
    y = r.render(notes, cp.spec.bank, program, ctx.n_samples * factor, drums=cp.spec.bank == 128)
    x = dsp.resample(y, r.render_rate, ctx.sample_rate)[: ctx.n_samples]
    rec_id = f"{sp.soundfont}:{cp.spec.bank}:{program}" + ("" if cp.spec.kind == "instrument" else f"@{split}")
    meta = {"source": sp.soundfont, "recording_id": rec_id, "license": ctx.licenses[sp.soundfont],
            "name": f"{r.path} (bank {cp.spec.bank}, program {program})"}
    return x, meta, float("inf")


def recording_material(ctx: ClipContext, sp: SplitPlan, k: int, rng: np.random.Generator):
    """A clip assembled from recording ``k mod len(recordings)``: ``(x, meta, bandwidth cap)``."""
    rec = sp.recordings[k % len(sp.recordings)]
    x, cap = assemble_clip(rec, rng, ctx.n_samples, ctx.sample_rate, ctx.aug, ctx.qc)
    more = " ..." if len(rec.names) > 1 else ""
    meta = {"source": rec.source, "recording_id": rec.recording_id, "license": rec.license,
            "name": f"{rec.recording_id} ({rec.names[0]}{more})"}
    return x, meta, cap


def make_clip(ctx: ClipContext, cp: ClassPlan, split: str, k: int, n_clips: int) -> tuple[np.ndarray, dict[str, str]]:
    """Clip ``k`` of ``n_clips`` of a class in a split: float32 audio and provenance.

    Shape:
        returns ``(n_samples,)`` float32.

    Raises:
        MaterialError: the clip stays mostly silent after ``max_redraws`` draws.
    """
    sp = cp.splits[split]
    rng = clip_rng(ctx, split, cp, k)
    lo, hi, order = ctx.lowpass
    qc = ctx.qc
    for _ in range(qc["max_redraws"] + 1):
        if k < sp.n_real(n_clips):
            x, meta, cap = recording_material(ctx, sp, k, rng)
        else:
            x, meta, cap = soundfont_material(ctx, cp, sp, split, rng)
        cutoff = min(rng.uniform(lo, hi), cap)
        x = dsp.lowpass(x, ctx.sample_rate, cutoff, order)
        frac = active_fraction(x, ctx.sample_rate, qc["frame_ms"], qc["silence_db"])
        if frac >= qc["min_active_fraction"]:
            y = dsp.normalize_loudness(x, ctx.sample_rate, ctx.loudness["active_rms_dbfs"], ctx.loudness["peak_max"],
                                       qc["frame_ms"], qc["silence_db"])
            return y.astype(np.float32), meta
    raise MaterialError(
        f"clip {clip_id(split, cp.spec.name, k)} from {meta['name']}: mostly silence (active fraction {frac:.2f} < "
        f"{qc['min_active_fraction']:.2f}) after {qc['max_redraws'] + 1} draws"
    )

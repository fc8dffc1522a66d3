"""Clips are a pure function of (recipe, class, split, index, seed): not of render order or process.

Oracle: a freshly loaded soundfont has no history, so a clip rendered by it is the clip
"rendered alone"; the shared renderer must reproduce it bit for bit whatever it rendered
before, and two processes rendering in different orders must write identical bytes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

from mars_core.config import get_profile
from mars_core.data import build as build_mod
from mars_core.data import images
from mars_core.data.clips import make_clip
from mars_core.data.recipe import load_recipe, make_plan
from mars_core.data.sources import SoundfontRenderer, locate_sources
from mars_core.data.sources.soundfont import Note, render_rate_for

REPO = Path(__file__).resolve().parents[1]


@lru_cache(maxsize=1)
def smoke_context():
    """The smoke build's clip context and plan (what ``build_benchmark`` renders with)."""
    prof = get_profile("smoke")
    recipe, sources = load_recipe(), locate_sources(None)
    ctx = build_mod.make_context(prof, prof.data.seed, recipe, sources)
    styles = images.available_styles()
    plan = make_plan(recipe, sources, ctx.sample_rate, ctx.renderers, ctx.qc, has_images=lambda c: bool(styles.get(c)))
    return prof, ctx, plan


def soundfont_jobs(split: str = "val") -> list[tuple[str, int]]:
    """``(class, k)`` of the soundfont clips of a smoke split (instruments and effects)."""
    prof, _, plan = smoke_context()
    n = build_mod.counts_per_split(prof)[split]
    return [(cp.spec.name, k) for cp in plan.classes if split in cp.splits
            for k in range(cp.splits[split].n_real(n), n)]


def clip_digests(split: str, jobs: list[tuple[str, int]]) -> dict[str, str]:
    """sha256 of the WAV bytes of each clip, rendered in the order of ``jobs``."""
    prof, ctx, plan = smoke_context()
    classes = {cp.spec.name: cp for cp in plan.classes}
    n = build_mod.counts_per_split(prof)[split]
    out = {}
    for name, k in jobs:
        x, _ = make_clip(ctx, classes[name], split, k, n)
        out[f"{name}-{k}"] = hashlib.sha256(build_mod.wav_bytes(x, ctx.sample_rate)).hexdigest()
    return out


def _timgm6mb() -> Path:
    src = locate_sources(None)["timgm6mb"]
    if not src.available:
        pytest.skip("TimGM6mb soundfont not available")
    return Path(src.path)


def test_renderer_forgets_the_previous_clip():
    """A clip whose notes ring past its end must not leak into the next render (tsf fast release)."""
    path = _timgm6mb()
    rate = render_rate_for(8000)
    n = rate // 2
    ringing = [Note(0.0, k, 120, 5.0) for k in (48, 55, 60, 64)]  # held far beyond the 0.5 s rendered
    probe = [Note(0.1, 72, 90, 0.2)]
    shared = SoundfontRenderer(path, rate)
    shared.render(ringing, 0, 48, n)  # strings: long sustain
    after = shared.render(probe, 0, 0, n)
    fresh = SoundfontRenderer(path, rate).render(probe, 0, 0, n)
    assert np.abs(fresh[: int(0.1 * rate)]).max() == 0.0  # nothing before the probe's onset
    np.testing.assert_array_equal(after, fresh)
    # the drums channel too
    shared.render([Note(0.0, 49, 127, 0.4)], 128, 0, n, drums=True)  # crash cymbal, long tail
    np.testing.assert_array_equal(shared.render(probe, 0, 0, n), fresh)


def test_smoke_clips_equal_fresh_renders_in_any_order():
    prof, ctx, plan = smoke_context()
    jobs = soundfont_jobs("val")
    assert len(jobs) >= 20
    forward = clip_digests("val", jobs)
    backward = clip_digests("val", jobs[::-1])
    assert forward == backward
    # oracle: a few clips, each rendered by a freshly loaded soundfont (no history at all)
    classes = {cp.spec.name: cp for cp in plan.classes}
    n = build_mod.counts_per_split(prof)["val"]
    for name, k in [jobs[0], jobs[len(jobs) // 2], jobs[-1]]:
        cp = classes[name]
        key = cp.splits["val"].soundfont
        fresh = dataclasses.replace(ctx, renderers={key: SoundfontRenderer(ctx.renderers[key].path,
                                                                           ctx.renderers[key].render_rate)})
        x, _ = make_clip(fresh, cp, "val", k, n)
        assert hashlib.sha256(build_mod.wav_bytes(x, ctx.sample_rate)).hexdigest() == forward[f"{name}-{k}"], name


def test_clips_are_identical_in_another_process_and_order():
    jobs = soundfont_jobs("test_timbre")[:12] + soundfont_jobs("val")[:12]
    order = [jobs[i] for i in np.random.default_rng(5).permutation(len(jobs))]
    code = ("import json, sys; from tests.test_data_purity import clip_digests;"
            "split, jobs = json.loads(sys.argv[1]);"
            "print(json.dumps(clip_digests(split, [tuple(j) for j in jobs])))")
    by_split = {}
    for split in ("test_timbre", "val"):
        mine = [j for j in order if j in soundfont_jobs(split)]
        res = subprocess.run([sys.executable, "-c", code, json.dumps([split, mine])], cwd=REPO, capture_output=True,
                             text=True, timeout=300)
        assert res.returncode == 0, res.stderr
        by_split[split] = json.loads(res.stdout.strip().splitlines()[-1])
        assert by_split[split] == clip_digests(split, [j for j in jobs if j in mine]), split

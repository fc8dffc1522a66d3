"""The mix-and-separate sampler on a hand-made benchmark (no builder involved)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mars_core.config import get_profile
from mars_core.data.mixing import MixtureDataset, collate
from tests.conftest import FAKE_CLASSES, make_fake_build


def _digest(item) -> str:
    h = hashlib.sha256()
    for key in ("mixture", "sources", "query_audio", "query_image"):
        h.update(np.ascontiguousarray(item[key]).tobytes())
    h.update(json.dumps([item["classes"], item["clip_ids"], item["query_text"], item["query_audio_clip_id"]]).encode())
    return h.hexdigest()


def test_mixture_is_exactly_the_sum_of_sources(fake_build):
    ds = MixtureDataset("train", "smoke", build_dir=fake_build, n_items=20)
    for i in range(20):
        it = ds[i]
        np.testing.assert_array_equal(it["mixture"], it["sources"][0] + it["sources"][1])
        assert it["mixture"].dtype == np.float32 and it["mixture"].shape == (get_profile("smoke").audio.segment_samples,)


def test_items_are_valid(fake_build):
    ds = MixtureDataset("val", "smoke", build_dir=fake_build, n_items=30)
    for i in range(30):
        it = ds[i]
        target, interferer = it["classes"]
        assert target != interferer
        assert it["query_audio_clip_id"] != it["clip_ids"][0]
        assert it["query_audio_clip_id"].startswith(f"val-{target}-")
        assert target in it["query_text"]
        assert it["query_image"].shape == (32, 32, 3) and it["query_image"].dtype == np.uint8
        np.testing.assert_array_equal(it["gains"], [1.0, 1.0])  # evaluation: no gain randomisation


def test_eval_gain_is_one_over_n_sources(fake_build):
    """A source of an eval item equals the stored clip crop divided by N = 2."""
    ds = MixtureDataset("test", "smoke", build_dir=fake_build, n_items=4, random_crop=False)
    it = ds[0]
    clip = ds.clips[it["classes"][0]][[c.clip_id for c in ds.clips[it["classes"][0]]].index(it["clip_ids"][0])]
    full, _ = sf.read(clip.path, dtype="float32")
    start = (len(full) - ds.length) // 2
    np.testing.assert_allclose(it["sources"][0], full[start : start + ds.length] / 2, rtol=0, atol=1e-7)


def test_train_gains_in_range(fake_build):
    ds = MixtureDataset("train", "smoke", build_dir=fake_build, n_items=50)
    gains = np.stack([ds[i]["gains"] for i in range(50)])
    assert gains.min() >= 0.5 and gains.max() <= 1.5 and gains.std() > 0.1


def test_hard_pairs_share_a_family(fake_build):
    ds = MixtureDataset("test", "smoke", build_dir=fake_build, n_items=30, hard_pairs=True)
    for i in range(30):
        t, o = ds[i]["classes"]
        assert FAKE_CLASSES[t][0] == FAKE_CLASSES[o][0] == "bowed_strings"


def test_item_does_not_depend_on_access_order(fake_build):
    ds = MixtureDataset("train", "smoke", build_dir=fake_build, n_items=10)
    first = _digest(ds[7])
    _ = [ds[i] for i in range(10)][::-1]
    assert _digest(MixtureDataset("train", "smoke", build_dir=fake_build, n_items=10)[7]) == first
    other_seed = MixtureDataset("train", "smoke", build_dir=fake_build, n_items=10, seed=1)
    assert _digest(other_seed[7]) != first


def test_sampler_is_deterministic_across_processes(fake_build):
    code = (
        "import sys, json; sys.path.insert(0, '.');"
        "from mars_core.data.mixing import MixtureDataset; from tests.test_mixing import _digest;"
        f"ds = MixtureDataset('val', 'smoke', build_dir={str(fake_build)!r}, n_items=6);"
        "print(json.dumps([_digest(ds[i]) for i in range(6)]))"
    )
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": str(s), "PATH": ""}, cwd=Path(__file__).resolve().parents[1])
            for s in (1, 2)]
    here = MixtureDataset("val", "smoke", build_dir=fake_build, n_items=6)
    expected = [_digest(here[i]) for i in range(6)]
    assert json.loads(runs[0].stdout) == json.loads(runs[1].stdout) == expected


def test_wrong_sample_rate_is_rejected(tmp_path):
    build = make_fake_build(tmp_path, sample_rate=16000)
    with pytest.raises(ValueError, match="16000 Hz but profile 'smoke' needs 8000 Hz"):
        MixtureDataset("train", "smoke", build_dir=build)


def test_missing_build_says_how_to_build(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m mars_core.data build"):
        MixtureDataset("train", "smoke", build_dir=tmp_path)


def test_collate_stacks_arrays(fake_build):
    ds = MixtureDataset("val", "smoke", build_dir=fake_build, n_items=3)
    batch = collate([ds[i] for i in range(3)])
    assert tuple(batch["sources"].shape) == (3, 2, ds.length)
    assert len(batch["query_text"]) == 3

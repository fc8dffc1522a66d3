"""Progressive alignment's stage runner: its guarantees (frozen backbone bit-identical, per-stage
heads, best-checkpoint chaining, weight 0 disables a term, resume, cached trunk features).

Most tests use a small spectral toy encoder (fast, with per-modality heads); one test runs
the real tiny ImageBind (fixture weights) through all three stages.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from mars_core.alignment import runner
from mars_core.alignment.config import AlignmentConfig
from mars_core.alignment.embedding import embed_items
from mars_core.alignment.heads import head_parameter_names, load_heads
from mars_core.alignment.losses import LogitScales
from mars_core.alignment.runner import history_frame, run_alignment, run_stage
from mars_core.alignment.sampling import AlignmentData, draw_batch, train_pool
from mars_core.alignment.stages import OBJECTIVES, StageContext
from mars_core.checkpoints import load_checkpoint, save_checkpoint
from mars_core.config import get_profile
from tests.alignment_toys import CFG, LeakyToyEncoder, SpectralToyEncoder, _heads, _same, toy_alignment, toy_data
from tests.conftest import imagebind_fixture, make_fake_build
from tests.one_thread import one_thread  # noqa: F401  (autouse: one torch thread for this module)


@pytest.fixture(scope="module")
def data(fake_build):
    return toy_data(fake_build)


@pytest.fixture(scope="module")
def aligned(data, tmp_path_factory):
    return toy_alignment(data, tmp_path_factory.mktemp("align"))


def test_head_parameter_names_by_autograd():
    names = head_parameter_names(SpectralToyEncoder())
    assert names == {m: [f"heads.{m}.weight", f"heads.{m}.bias"] for m in ("audio", "text", "vision")}


def test_stages_keep_backbone_and_other_heads_bit_identical(aligned):
    enc, out, trunk0, heads0, _ = aligned
    assert all(torch.equal(v, trunk0[k]) for k, v in enc.trunks.state_dict().items())
    ck = out["checkpoints"]
    pre = {k: v for k, v in load_checkpoint(ck["pretrained"])["heads"].items()}
    assert _same(pre, {f"heads.{k}": v for k, v in heads0.items()})
    # S1 trains audio+text, not vision; S2 only audio; S3 audio+vision, not text
    assert _same(_heads(ck["s1_audio_text"], "heads.vision"), _heads(ck["pretrained"], "heads.vision"))
    assert not _same(_heads(ck["s1_audio_text"], "heads.text"), _heads(ck["pretrained"], "heads.text"))
    assert _same(_heads(ck["s2_audio_audio"], "heads.text"), _heads(ck["s1_audio_text"], "heads.text"))
    assert _same(_heads(ck["s2_audio_audio"], "heads.vision"), _heads(ck["pretrained"], "heads.vision"))
    assert not _same(_heads(ck["s2_audio_audio"], "heads.audio"), _heads(ck["s1_audio_text"], "heads.audio"))
    assert _same(_heads(ck["s3_audio_visual"], "heads.text"), _heads(ck["s1_audio_text"], "heads.text"))
    assert not _same(_heads(ck["s3_audio_visual"], "heads.vision"), _heads(ck["pretrained"], "heads.vision"))
    # the encoder is left at the last stage's best checkpoint
    now = {f"heads.{k}": v for k, v in enc.heads.state_dict().items()}
    assert _same(now, load_checkpoint(ck["s3_audio_visual"])["heads"])


def test_each_stage_learns_and_keeps_its_best_checkpoint(aligned):
    _, out, _, _, _ = aligned
    for stage, h in out["history"].items():
        assert h["val_step"][0] == 0 and h["val_step"][-1] == CFG.steps_per_stage
        assert min(h["val_loss"][1:]) < h["val_loss"][0], (stage, h["val_loss"])  # training helped
        assert (
            h["best_val_loss"] == min(h["val_loss"])
            and h["val_loss"][h["val_step"].index(h["best_step"])] == h["best_val_loss"]
        )
        blob = load_checkpoint(h["checkpoint"])
        assert blob["complete"] and blob["step"] == h["best_step"]
        assert len(h["loss"]) == CFG.steps_per_stage and np.isfinite(h["loss"]).all()
    h2, h3 = out["history"]["s2_audio_audio"], out["history"]["s3_audio_visual"]
    assert {"s2_nce", "s2_triplet", "s2_consistency", "replay_s1_audio_text"} <= set(h2)
    assert {"s3_nce", "s3_triplet", "replay_s1_audio_text", "replay_s2_audio_audio"} <= set(h3)
    assert "replay_s1_audio_text" not in out["history"]["s1_audio_text"]
    assert "s1_triplet" not in out["history"]["s1_audio_text"]  # ours, off by default
    frame = history_frame(h2)
    assert list(frame.columns) == ["step", "loss", *sorted(h2["terms"])] and len(frame) == CFG.steps_per_stage


def test_each_stage_starts_from_the_previous_best(aligned, data, tmp_path, monkeypatch):
    enc, out, _, _, _ = aligned
    seen = []
    real = run_stage

    def spy(stage, encoder, *args, init_from=None, **kw):
        seen.append((stage, Path(init_from).name))
        return real(stage, encoder, *args, init_from=init_from, **kw)

    monkeypatch.setattr(runner, "run_stage", spy)
    run_alignment(SpectralToyEncoder(), data, dataclasses.replace(CFG, steps_per_stage=1), tmp_path)
    assert seen == [
        ("s1_audio_text", "pretrained.pt"),
        ("s2_audio_audio", "s1_audio_text_best.pt"),
        ("s3_audio_visual", "s2_audio_audio_best.pt"),
    ]


def test_the_encoder_leaves_a_stage_at_its_best_validation_step(data, tmp_path, monkeypatch):
    values = iter([1.0, 0.5, 0.9])  # validations at steps 0, 4, 8: the best is step 4, not the last
    monkeypatch.setattr(runner, "_objective_value", lambda *a, **k: next(values))
    enc = SpectralToyEncoder()
    h = run_alignment(enc, data, CFG, tmp_path, stages=["s1_audio_text"])["history"]["s1_audio_text"]
    assert h["val_step"] == [0, 4, 8] and h["best_step"] == 4 and h["best_val_loss"] == 0.5
    blob = load_checkpoint(h["checkpoint"])
    assert blob["step"] == 4
    assert _same({f"heads.{k}": v for k, v in enc.heads.state_dict().items()}, blob["heads"])
    assert not _same(blob["heads"], load_checkpoint(tmp_path / "pretrained.pt")["heads"])


def test_resume_loads_completed_stages_without_training(aligned, data, monkeypatch):
    enc, out, _, _, run_dir = aligned
    fresh = SpectralToyEncoder()
    monkeypatch.setattr(runner, "run_stage", lambda *a, **k: pytest.fail("resume retrained a completed stage"))
    again = run_alignment(fresh, data, CFG, run_dir, resume=True)
    assert again["history"]["s2_audio_audio"]["val_loss"] == out["history"]["s2_audio_audio"]["val_loss"]
    assert _same(dict(fresh.heads.state_dict()), dict(enc.heads.state_dict()))
    other = SpectralToyEncoder(seed=5)  # another backbone
    with pytest.raises(ValueError, match="another encoder backbone"):
        run_alignment(other, data, CFG, run_dir, resume=True)


def _objectives_with_and_without_cache(enc, data, cfg):
    scales = LogitScales()
    batch = draw_batch(data, cfg, 4, None, "probe")
    out = {}
    for stage, objective in OBJECTIVES.items():
        vals, cache = [], {}
        for c in (None, cache, cache):  # direct; cold cache; warm cache (every feature from the cache)
            ctx = StageContext(enc, scales, cfg, data.sample_rate, c)
            loss, parts = objective(ctx, batch, "heads", torch.Generator().manual_seed(3))
            vals.append((loss.item(), parts))
        out[stage] = vals
    return out


def test_cached_trunk_features_give_the_same_objectives(data):
    cfg = dataclasses.replace(CFG, s1_triplet_weight=1.0)
    for stage, vals in _objectives_with_and_without_cache(SpectralToyEncoder(), data, cfg).items():
        direct = vals[0]
        for got in vals[1:]:
            assert got[0] == pytest.approx(direct[0], abs=1e-5), stage
            assert got[1].keys() == direct[1].keys()
    assert set(direct[1]) == {"s3_nce", "s3_triplet"} and set(vals[0][1]) == {"s3_nce", "s3_triplet"}
    s1 = _objectives_with_and_without_cache(SpectralToyEncoder(), data, cfg)["s1_audio_text"][0][1]
    assert set(s1) == {"s1_nce", "s1_triplet"}


def test_pool_bounds_the_items_seen(data, tmp_path):
    cfg = dataclasses.replace(CFG, pool_items=6, steps_per_stage=6, replay_fraction=0)
    enc = SpectralToyEncoder()
    cache: dict = {}
    names = head_parameter_names(enc)
    run_stage("s2_audio_audio", enc, data, cfg, LogitScales(), names, tmp_path, cache=cache)
    train_keys = {k for (_, _, k) in cache if k.startswith("train")}
    assert 0 < len(train_keys) <= 6 and train_keys <= {f"{t}:{i}" for t, i in train_pool(data, cfg)}
    assert sum(k.startswith("train_hard") for k in train_keys) > 0  # hard pairs are in the pool
    assert {r for (_, r, _) in cache} == {"target", "query_audio", "mixture", "interferer", "aug"}


def test_zero_weights_disable_terms(data, tmp_path):
    enc = SpectralToyEncoder()
    off = dataclasses.replace(
        CFG,
        steps_per_stage=2,
        s2_nce_weight=0,
        s2_triplet_weight=0,
        s2_consistency_weight=0,
        replay_fraction=0,
        pool_items=None,
    )  # also the fresh-items path
    out = run_alignment(enc, data, off, tmp_path, stages=["s1_audio_text", "s2_audio_audio"])
    h = out["history"]["s2_audio_audio"]
    assert np.isnan(h["loss"]).all() and not any(k.startswith(("s2_", "replay_")) for k in h)
    ck = out["checkpoints"]
    assert _same(_heads(ck["s2_audio_audio"], "heads."), _heads(ck["s1_audio_text"], "heads."))
    some = dataclasses.replace(CFG, steps_per_stage=1, s2_consistency_weight=0)
    h = run_alignment(SpectralToyEncoder(), data, some, tmp_path / "b", stages=["s2_audio_audio"])["history"][
        "s2_audio_audio"
    ]
    assert "s2_consistency" not in h and {"s2_nce", "s2_triplet"} <= set(h)


def test_a_stage_that_touches_the_backbone_is_refused(data, tmp_path):
    with pytest.raises(RuntimeError, match="changed frozen tensors.*calls"):
        run_alignment(
            LeakyToyEncoder(), data, dataclasses.replace(CFG, steps_per_stage=1), tmp_path, stages=["s1_audio_text"]
        )


def test_bad_stage_lists_and_foreign_checkpoints(data, tmp_path):
    with pytest.raises(ValueError, match="ordered subset"):
        run_alignment(SpectralToyEncoder(), data, CFG, tmp_path, stages=["s2_audio_audio", "s1_audio_text"])
    save_checkpoint(tmp_path / "foreign.pt", heads={"modality_heads.audio.2.weight": torch.zeros(3, 3)})
    with pytest.raises(ValueError, match="not in this encoder"):
        load_heads(SpectralToyEncoder(), tmp_path / "foreign.pt")


def test_three_stages_on_tiny_imagebind(tmp_path):
    from mars_core.encoders import ImageBind

    enc = ImageBind("tiny")
    enc.load_state_dict(torch.load(imagebind_fixture("tiny_state_dict.pt"), weights_only=True))
    smoke = get_profile("smoke")
    prof = get_profile("smoke", audio=dataclasses.replace(smoke.audio, sample_rate=16000))  # native rate: no resampling
    build = make_fake_build(tmp_path / "b16k", sample_rate=16000, seconds=1.2)
    data = AlignmentData.from_build(prof, build_dir=build)
    frozen0 = {k: v.clone() for k, v in enc.state_dict().items() if not k.startswith("modality_heads")}
    cfg = AlignmentConfig.for_profile(
        "smoke", steps_per_stage=1, batch_size=3, eval_every=1, n_val_items=3, replay_fraction=0.5
    )
    out = run_alignment(enc, data, cfg, tmp_path / "run")
    names = head_parameter_names(enc)
    assert all(n.startswith("modality_heads.audio.") for n in names["audio"]) and len(names["audio"]) == 3
    assert "modality_postprocessors.text.1.log_logit_scale" in names["text"]
    # trunk, preprocessors and fixed buffers bit-identical; the text logit scale is a head-side parameter
    now = enc.state_dict()
    assert all(
        torch.equal(now[k], v) for k, v in frozen0.items() if k != "modality_postprocessors.text.1.log_logit_scale"
    )
    ck = out["checkpoints"]
    assert _same(
        _heads(ck["s2_audio_audio"], "modality_heads.text"), _heads(ck["s1_audio_text"], "modality_heads.text")
    )
    emb = embed_items(enc, data.val, data.sample_rate, n_items=2)
    torch.testing.assert_close(emb.target.norm(dim=1), torch.ones(2))
    # cached (per-item) trunk features through ImageBind's hooks give the same objectives
    for vals in _objectives_with_and_without_cache(enc, data, cfg).values():
        assert vals[1][0] == pytest.approx(vals[0][0], abs=1e-4) and vals[2][0] == pytest.approx(vals[0][0], abs=1e-4)

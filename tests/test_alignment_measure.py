"""Alignment measurements against direct recomputation (reward gaps, recall, family accuracy, per-term objectives)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mars_core.alignment.embedding import embed_waveforms, make_batch
from mars_core.alignment.heads import load_heads
from mars_core.alignment.losses import symmetric_info_nce
from mars_core.alignment.measure import measure_alignment, objective_terms
from mars_core.checkpoints import load_checkpoint
from mars_core.data.mixing import MixtureDataset
from tests.alignment_toys import CFG, SpectralToyEncoder, _same, toy_alignment, toy_data
from tests.one_thread import one_thread  # noqa: F401  (autouse: one torch thread for this module)


@pytest.fixture(scope="module")
def data(fake_build):
    return toy_data(fake_build)


@pytest.fixture(scope="module")
def aligned(data, tmp_path_factory):
    return toy_alignment(data, tmp_path_factory.mktemp("align"))


def test_measure_alignment_matches_direct_computation(fake_build):
    enc = SpectralToyEncoder()
    ds = MixtureDataset("test", "smoke", build_dir=fake_build)
    row = measure_alignment(enc, ds, stage="x")
    assert row["split"] == "test" and row["n_items"] == len(ds)
    gaps, hits, fam = [], [], []
    names = ds.class_names
    cls_t = torch.stack([F.normalize(enc.embed_text([t for _, t in ds.prompts[c]]).mean(0), dim=0) for c in names])
    for i in range(len(ds)):
        it = ds[i]
        a = enc.embed_audio(torch.from_numpy(np.stack([it["sources"][0], it["mixture"]])), ds.sr)
        t = enc.embed_text([it["query_text"]])[0]
        gaps.append(float(a[0] @ t - a[1] @ t))
        hits.append(names[int((cls_t @ a[0]).argmax())] == it["classes"][0])
        members = [c for c in names if ds.family_of[c] == it["family"]]
        if len(members) >= 2:
            sims = [float(cls_t[names.index(c)] @ a[0]) for c in members]
            fam.append(members[int(np.argmax(sims))] == it["classes"][0])
    assert row["gap_text"] == pytest.approx(np.mean(gaps), abs=1e-5)
    assert row["recall1_audio_text"] == pytest.approx(np.mean(hits))
    assert row["family_acc"] == pytest.approx(np.mean(fam)) and row["n_family"] == len(fam) > 0
    assert math.isnan(row["gap_mlbp"]) and 0 <= row["recall1_audio_image"] <= 1


def test_objective_terms_measure_every_term_on_train_and_val(aligned, data):
    enc, out, *_ = aligned
    ck = out["checkpoints"]["s1_audio_text"]
    heads = {k: v.clone() for k, v in enc.heads.state_dict().items()}
    cfg = dataclasses.replace(CFG, s1_triplet_weight=0.0, s3_nce_weight=0.0)  # weights are set to 1 for the table
    df = objective_terms(enc, data, cfg, ck, n_items=6)
    assert _same(dict(enc.heads.state_dict()), heads)  # the encoder's heads are restored
    terms = df.groupby("stage")["term"].apply(set).to_dict()
    assert terms == {"s1_audio_text": {"s1_nce", "s1_triplet"}, "s2_audio_audio": {"s2_nce", "s2_triplet", "s2_consistency"},
                     "s3_audio_visual": {"s3_nce", "s3_triplet"}}
    assert np.isfinite(df[["train", "val"]].to_numpy()).all()
    # S1 InfoNCE on the val items by hand: 3 random + 3 hard-pair items, one batch, the checkpoint's heads and scale
    blob = load_checkpoint(ck)
    fresh = SpectralToyEncoder()
    load_heads(fresh, ck)
    items = [data.val[i] for i in range(3)] + [data.val_hard[i] for i in range(3)]
    b = make_batch(items)
    a, t, labels = embed_waveforms(fresh, b.target, data.sample_rate), fresh.embed_text(b.text), b.labels
    scale = float(torch.exp(blob["logit_scales"]["log_scale.audio_text"]).clamp(max=100.0))
    want = symmetric_info_nce(a, t, scale, labels).item()
    got = df.set_index(["stage", "term"]).loc[("s1_audio_text", "s1_nce"), "val"]
    assert got == pytest.approx(want, abs=1e-5)

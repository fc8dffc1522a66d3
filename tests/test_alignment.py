"""Progressive alignment: loss mathematics against hand computations, the stage runner's
guarantees (frozen backbone bit-identical, per-stage heads, best-checkpoint chaining, weight 0
disables a term, resume) and the measurements against direct recomputation.

Most tests use a small spectral toy encoder (fast, with per-modality heads); one test runs
the real tiny ImageBind (fixture weights) through all three stages.
"""

from __future__ import annotations

import dataclasses
import math
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from mars_core.checkpoints import load_checkpoint, save_checkpoint
from mars_core.config import field_docs, get_profile
from mars_core.data.mixing import MixtureDataset
from mars_core.alignment.config import AlignmentConfig
from mars_core.alignment.embedding import augment_audio, embed_items, embed_waveforms, make_batch
from mars_core.alignment.heads import head_parameter_names, load_heads
from mars_core.alignment.losses import LogitScales, consistency_loss, symmetric_info_nce, triplet_loss
from mars_core.alignment.measure import measure_alignment, objective_terms
from mars_core.alignment.probe import PROBE_OUTPUTS, reward_hacking_probe
from mars_core.alignment import runner
from mars_core.alignment.runner import history_frame, run_alignment, run_stage
from mars_core.alignment.sampling import AlignmentData, draw_batch, train_pool
from mars_core.alignment.stages import OBJECTIVES, StageContext
from mars_core.encoders.base import TriModalEncoder
from mars_core.encoders.contrastive import info_nce_from_logits
from tests.conftest import imagebind_fixture, make_fake_build


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: on 2 shared cores, thread fan-out costs more than it saves."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class SpectralToyEncoder(TriModalEncoder):
    """A fast encoder of the interface with separate heads per modality.

    Frozen "trunks": band energies of the spectrum (audio), hashed character trigrams
    (text), colour mean/std (vision), each through a fixed random Linear + tanh.
    """

    sample_rate = 8000
    image_size = 16
    embed_dim = 16

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.trunks = nn.ModuleDict({"audio": nn.Linear(48, 32), "text": nn.Linear(64, 32), "vision": nn.Linear(6, 32)})
        self.heads = nn.ModuleDict({m: nn.Linear(32, 16) for m in ("audio", "text", "vision")})

    def prepare_audio(self, waveforms):
        rows = [torch.fft.rfft(w.float(), n=4096).abs()[:2016].reshape(48, -1).pow(2).mean(1) for w in waveforms]
        return torch.log(1e-3 + torch.stack(rows))

    def prepare_text(self, texts):
        x = torch.zeros(len(texts), 64)
        for i, t in enumerate(texts):
            for j in range(len(t) - 2):
                x[i, zlib.crc32(t[j : j + 3].encode()) % 64] += 1
        return F.normalize(x, dim=-1)

    def prepare_images(self, images):
        arr = [
            np.asarray(
                (im if isinstance(im, Image.Image) else Image.fromarray(np.asarray(im))).convert("RGB").resize((16, 16))
            )
            for im in images
        ]
        return torch.from_numpy(np.stack(arr)).permute(0, 3, 1, 2).float() / 255

    def trunk_features(self, modality, x):
        if modality == "vision":
            x = torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1)
        return torch.tanh(self.trunks[modality](x))

    def head_embeddings(self, modality, features):
        return self.heads[modality](features)

    def freeze_backbone(self):
        self.trunks.requires_grad_(False)
        return list(self.heads.parameters())


class LeakyToyEncoder(SpectralToyEncoder):
    """Broken on purpose: every head call bumps a backbone buffer (like BatchNorm statistics)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("calls", torch.zeros(()))

    def head_embeddings(self, modality, features):
        self.calls += 1
        return super().head_embeddings(modality, features)


def _np_info_nce(logits: np.ndarray, labels=None) -> float:
    """Row-wise: -log(exp(l_ii) / sum over j in {i} u {other classes} exp(l_ij)), averaged."""
    n = logits.shape[0]
    total = 0.0
    for i in range(n):
        allowed = [j for j in range(n) if j == i or labels is None or labels[j] != labels[i]]
        total += -logits[i, i] + math.log(sum(math.exp(logits[i, j]) for j in allowed))
    return total / n


# ----------------------------------------------------------------------------- losses
def test_info_nce_matches_hand_computation():
    logits = np.array([[2.0, 0.5, -1.0], [0.3, 1.0, 0.2], [1.5, -0.5, 0.0]])
    got = info_nce_from_logits(torch.tensor(logits)).item()
    # row 0 by hand: -2 + log(e^2 + e^0.5 + e^-1) etc.
    by_hand = np.mean(
        [
            -2 + math.log(math.exp(2) + math.exp(0.5) + math.exp(-1)),
            -1 + math.log(math.exp(0.3) + math.exp(1) + math.exp(0.2)),
            -0 + math.log(math.exp(1.5) + math.exp(-0.5) + math.exp(0)),
        ]
    )
    assert got == pytest.approx(by_hand, abs=1e-12)
    # class-aware: items 0 and 2 share a class, so 0 is not a negative of 2 and vice versa
    labels = torch.tensor([7, 1, 7])
    got = info_nce_from_logits(torch.tensor(logits), labels).item()
    by_hand = np.mean(
        [
            -2 + math.log(math.exp(2) + math.exp(0.5)),
            -1 + math.log(math.exp(0.3) + math.exp(1) + math.exp(0.2)),
            -0 + math.log(math.exp(-0.5) + math.exp(0)),
        ]
    )
    assert got == pytest.approx(by_hand, abs=1e-12)


def test_info_nce_edge_cases():
    assert info_nce_from_logits(torch.tensor([[3.0]])).item() == 0.0  # no negative: log 1
    assert info_nce_from_logits(torch.randn(4, 4), torch.zeros(4, dtype=torch.long)).item() == pytest.approx(
        0.0, abs=1e-7
    )
    with pytest.raises(ValueError, match="square"):
        info_nce_from_logits(torch.randn(2, 3))
    with pytest.raises(ValueError, match="labels"):
        info_nce_from_logits(torch.randn(3, 3), torch.tensor([0, 1]))


def test_symmetric_info_nce_matches_numpy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(4, 5)), rng.normal(size=(4, 5))
    an, bn = a / np.linalg.norm(a, axis=1, keepdims=True), b / np.linalg.norm(b, axis=1, keepdims=True)
    labels = [0, 1, 0, 2]
    logits = 10.0 * an @ bn.T
    expect = 0.5 * (_np_info_nce(logits, labels) + _np_info_nce(logits.T, labels))
    got = symmetric_info_nce(torch.tensor(a), torch.tensor(b), 10.0, torch.tensor(labels)).item()
    assert got == pytest.approx(expect, abs=1e-10)
    with pytest.raises(ValueError, match="equal shape"):
        symmetric_info_nce(torch.randn(3, 5), torch.randn(2, 5), 1.0)


def test_triplet_loss_hand_values():
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    p = torch.tensor([[3.0, 0.0], [1.0, 1.0]])  # d = 0 and 1 - 1/sqrt(2)
    n = torch.tensor([[[0.0, 1.0], [1.0, 1.0]], [[0.0, -1.0], [0.0, 5.0]]])  # d = 1, 1-1/sqrt2 ; 2, 0
    m, r = 0.5, 1 - 1 / math.sqrt(2)
    hinge = [max(0, 0 - 1 + m), max(0, 0 - r + m), max(0, r - 2 + m), max(0, r - 0 + m)]
    assert triplet_loss(a, p, n, m).item() == pytest.approx(np.mean(hinge), abs=1e-6)
    # (N, D) negatives = one negative each
    assert triplet_loss(a, p, n[:, 0], m).item() == pytest.approx(np.mean(hinge[0::2]), abs=1e-6)
    with pytest.raises(ValueError, match="margin"):
        triplet_loss(a, p, n, -0.1)
    with pytest.raises(ValueError, match="negatives"):
        triplet_loss(a, p, torch.randn(3, 2), 0.1)


def test_consistency_loss_hand_values():
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z_aug = torch.tensor([[1.0, 1.0], [0.0, -3.0]])  # 1 - 1/sqrt2, 1 - (-1) = 2
    assert consistency_loss(z, z_aug).item() == pytest.approx((1 - 1 / math.sqrt(2) + 2) / 2, abs=1e-6)
    assert consistency_loss(z, 5 * z).item() == pytest.approx(0.0, abs=1e-7)


def test_augment_audio_snr_gain_shift_and_silence():
    x = torch.sin(torch.arange(8000) * 0.05).repeat(3, 1)
    cfg = AlignmentConfig(aug_gain_db=0.0, aug_max_shift=0.0, aug_snr_db=(20.0, 30.0))
    y = augment_audio(x, torch.Generator().manual_seed(1), cfg)
    noise = y - x
    snr = 10 * torch.log10(x.pow(2).mean(1) / noise.pow(2).mean(1))
    assert ((snr > 19.7) & (snr < 30.3)).all(), snr
    torch.testing.assert_close(y, augment_audio(x, torch.Generator().manual_seed(1), cfg))  # seeded
    loud = augment_audio(
        x[:1],
        torch.Generator().manual_seed(2),
        AlignmentConfig(aug_gain_db=6, aug_max_shift=0.25, aug_snr_db=(200, 200)),
    )
    ratio = loud.abs().max() / x.abs().max()  # gain within +-6 dB, noise negligible
    assert 10 ** (-6 / 20) - 1e-6 <= ratio <= 10 ** (6 / 20) + 1e-6
    assert torch.equal(augment_audio(torch.zeros(2, 100), torch.Generator().manual_seed(0), cfg), torch.zeros(2, 100))
    with pytest.raises(ValueError, match="B, T"):
        augment_audio(torch.zeros(100), torch.Generator(), cfg)


# ----------------------------------------------------------------------------- config
def test_config_documents_every_field_and_validates():
    docs = field_docs(AlignmentConfig)
    assert {f.name for f in dataclasses.fields(AlignmentConfig)} == set(docs)
    smoke = AlignmentConfig.for_profile("smoke", s2_margin=0.3)
    assert smoke.steps_per_stage < AlignmentConfig().steps_per_stage and smoke.s2_margin == 0.3
    for bad in (dict(s2_triplet_weight=-1), dict(batch_size=1), dict(replay_fraction=-0.1), dict(temperature_init=0)):
        with pytest.raises(ValueError):
            AlignmentConfig(**bad)
    with pytest.raises(ValueError, match="profile"):
        AlignmentConfig.for_profile("huge")


# ----------------------------------------------------------------------------- stage runner (toy)
@pytest.fixture(scope="module")
def data(fake_build):
    return AlignmentData.from_build("smoke", build_dir=fake_build)


def _heads(path, prefix):
    return {k: v for k, v in load_checkpoint(path)["heads"].items() if k.startswith(prefix)}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_head_parameter_names_by_autograd():
    names = head_parameter_names(SpectralToyEncoder())
    assert names == {m: [f"heads.{m}.weight", f"heads.{m}.bias"] for m in ("audio", "text", "vision")}


CFG = AlignmentConfig.for_profile("smoke", steps_per_stage=8, batch_size=6, eval_every=4, n_val_items=8, lr=3e-3,
                                  s2_nce_weight=1.0, s3_nce_weight=1.0)  # every term on: the mechanics under test


def test_minibind_profiles_lean_on_the_triplets_and_full_keeps_every_term():
    for name in ("smoke", "cpu"):
        c = AlignmentConfig.for_profile(name)
        assert (c.s2_nce_weight, c.s3_nce_weight, c.s2_triplet_weight, c.s3_triplet_weight) == (0.1, 0.0, 1.0, 1.0)
    full = AlignmentConfig.for_profile("full")
    assert (full.s1_nce_weight, full.s2_nce_weight, full.s3_nce_weight) == (1.0, 1.0, 1.0)


@pytest.fixture(scope="module")
def aligned(data, tmp_path_factory):
    enc = SpectralToyEncoder()
    trunk0 = {k: v.clone() for k, v in enc.trunks.state_dict().items()}
    heads0 = {k: v.clone() for k, v in enc.heads.state_dict().items()}
    run_dir = tmp_path_factory.mktemp("align")
    out = run_alignment(enc, data, CFG, run_dir)
    return enc, out, trunk0, heads0, run_dir


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


# ----------------------------------------------------------------------------- measurements
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


def test_reward_hacking_probe_rewards(fake_build):
    enc = SpectralToyEncoder()
    ds = MixtureDataset("test", "smoke", build_dir=fake_build, n_items=6)
    table = reward_hacking_probe(enc, ds).set_index("output")
    assert list(table.index) == list(PROBE_OUTPUTS)
    items = [ds[i] for i in range(6)]
    text = enc.embed_text([it["query_text"] for it in items])
    silent = enc.embed_audio(torch.zeros(1, 1000), ds.sr)[0]
    assert table.loc["silent", "reward_mean"] == pytest.approx(float((text @ silent).mean()), abs=1e-5)
    tgt = enc.embed_audio(torch.from_numpy(np.stack([it["sources"][0] for it in items])), ds.sr)
    assert table.loc["target", "reward_mean"] == pytest.approx(float((tgt * text).sum(1).mean()), abs=1e-5)
    assert table.loc["oracle_irm", "frac_ge_oracle"] == 1.0
    with pytest.raises(ValueError, match="profile"):
        reward_hacking_probe(enc, items)
    with pytest.raises(ValueError, match="anchor"):
        reward_hacking_probe(enc, ds, anchor="clap")


# ----------------------------------------------------------------------------- the real tiny ImageBind
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

"""Rollout: batch layout, reconstruction, item order, determinism under a seed."""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mars_core.audio import FrontEnd
from mars_core.config import get_profile
from mars_core.data.mixing import MixtureDataset
from mars_core.alignment.anchor import MLBPAnchor
from mars_core.encoders.minibind import MiniBind
from mars_core.alignment.stack import RewardStack
from mars_core.queries import build_query_bank, item_queries, modality_embeddings
from mars_core.rl.rewards import RewardModel, anchors
from mars_core.rl.rewards import signal_term
from mars_core.rl.rollout import (policy_proposal, reconstruct_group, remainder_references, rl_batch,
                                  rollout, step_seed)
from mars_core.separator import new_separator
from tests import beta_reference as beta_ref  # torch.distributions.Beta: the oracle
from tests.test_queries import fake_bank
from tests.tolerances import assert_within, reconstruct_atol

SMOKE = get_profile("smoke")


# --------------------------------------------------------------------------- shared helpers (also used by test_rl_trainer)
@lru_cache(maxsize=None)
def smoke_stack(build_dir: str):
    """A reward stack of the smoke size (seeded MiniBind, MLBP of rank 16) and its bank on ``build_dir``."""
    torch.manual_seed(0)
    enc = MiniBind.from_profile(SMOKE, seed=0).eval().requires_grad_(False)
    stack = RewardStack(enc, MLBPAnchor(enc.embed_dim, 16).eval().requires_grad_(False), aligned=True, key="test-stack")
    return stack, build_query_bank(enc, Path(build_dir), SMOKE.audio.sample_rate, progress=False)


def trained_looking_separator(seed: int = 0):
    """A smoke separator whose maps matter (the reference init is nearly zero, so P would be 0.5 everywhere)."""
    model = new_separator(SMOKE, seed, query_init_std=1.0)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model.eval()


@pytest.fixture(scope="module")
def parts(fake_build):
    stack, rbank = smoke_stack(str(fake_build))
    bank = fake_bank(fake_build, SMOKE.separator.query_dim)
    ds = MixtureDataset("train", SMOKE, n_items=8, build_dir=fake_build, load_images=False)
    return {"stack": stack, "rbank": rbank, "bank": bank, "ds": ds, "fe": FrontEnd(SMOKE.audio)}


def _batch(parts, step=0, b=2):
    return rl_batch(parts["ds"], parts["bank"], parts["rbank"], parts["stack"], parts["fe"], step, b, "mixup", 0)


# --------------------------------------------------------------------------- batch
def test_rl_batch_layout_queries_and_anchors(parts):
    b, step = 2, 1
    batch = _batch(parts, step, b)
    k, f, t = SMOKE.data.n_sources, SMOKE.audio.n_freq_warped, SMOKE.audio.n_frames
    assert batch.features.shape == (b, 1, f, t) and batch.queries.shape == (b, k, 128)
    assert batch.mixtures.shape == (b, SMOKE.audio.segment_samples) and batch.sources.shape == (b, k, batch.mixtures.shape[1])
    assert batch.z.shape == (b * k, 128) and batch.z_neg.shape == (b * k, k - 1, 128) and batch.n_items == b * k
    items = [parts["ds"][step * b + j] for j in range(b)]
    torch.testing.assert_close(batch.mixtures, torch.from_numpy(np.stack([it["mixture"] for it in items])))
    refs = [r for it in items for r in item_queries(parts["ds"], it)]
    z = anchors(parts["stack"], parts["rbank"], refs)
    torch.testing.assert_close(batch.z, z)
    # the interferer of item (b, 0) is item (b, 1) and vice versa
    torch.testing.assert_close(batch.z_neg[:, 0], z.reshape(b, k, -1).flip(1).reshape(b * k, -1))
    again = _batch(parts, step, b)
    assert torch.equal(again.queries, batch.queries) and torch.equal(again.z, batch.z)


def test_rl_batch_query_augmentation_moves_queries_never_anchors(parts):
    """query_noise / pure_query_prob move the separator's queries as supervised training does; the reward's anchors
    stay; 0 (the default) is the unaugmented batch bit for bit. Oracles: with pure_query_prob=1 and no noise every query
    is one modality's unit embedding of its own item (modality_embeddings, by hand); with noise each query has unit
    norm and a cosine with the clean one below 1."""
    b, step = 2, 1
    args = (parts["ds"], parts["bank"], parts["rbank"], parts["stack"], parts["fe"], step, b, "mixup", 0)
    clean = rl_batch(*args)
    same = rl_batch(*args, query_noise=0.0, pure_query_prob=0.0)
    assert torch.equal(same.queries, clean.queries)
    items = [parts["ds"][step * b + j] for j in range(b)]
    refs = [r for it in items for r in item_queries(parts["ds"], it)]
    emb = modality_embeddings(parts["bank"], refs)
    pure = rl_batch(*args, pure_query_prob=1.0)
    q = pure.queries.reshape(len(refs), -1)
    for i in range(len(refs)):
        hits = [m for m in ("image", "text", "audio")
                if torch.allclose(q[i], F.normalize(emb[m][i], dim=-1).to(q), atol=1e-6)]
        assert len(hits) == 1, (i, hits)
    noisy = rl_batch(*args, query_noise=2.0)
    qn, qc = noisy.queries.reshape(len(refs), -1), clean.queries.reshape(len(refs), -1)
    cos = F.cosine_similarity(qn, qc, dim=-1)
    assert torch.all(cos < 0.9999) and torch.all(cos > -1)
    for batch in (pure, noisy):
        torch.testing.assert_close(batch.z, clean.z, rtol=0, atol=0)
        torch.testing.assert_close(batch.mixtures, clean.mixtures, rtol=0, atol=0)
    again = rl_batch(*args, query_noise=2.0, pure_query_prob=0.5)
    assert torch.equal(again.queries, rl_batch(*args, query_noise=2.0, pure_query_prob=0.5).queries)  # seeded


def test_rl_batch_draws_same_family_pairs_from_training_data(parts, fake_build):
    """With a TrainingData (hard_pair_prob = 1) every mixture pairs two classes of one family (the catalog's
    family_of); with hard_pair_prob = 0 the batch is the plain dataset's, bit for bit."""
    from dataclasses import replace as _replace

    from mars_core.config import RLConfig
    from mars_core.supervised.trainer import TrainingData

    cfg = RLConfig(steps=4, batch_mixtures=2, group_size=2)
    args = (parts["bank"], parts["rbank"], parts["stack"], parts["fe"], 1, 2, "mixup", 0)
    hard = TrainingData(SMOKE, _replace(cfg, hard_pair_prob=1.0), fake_build)
    batch = rl_batch(hard, *args)
    for j in range(2):
        item = hard.hard[1 * 2 + j]
        assert len({hard.hard.family_of[c] for c in item["classes"]}) == 1
        torch.testing.assert_close(batch.mixtures[j], torch.from_numpy(item["mixture"]), rtol=0, atol=0)
    plain = TrainingData(SMOKE, cfg, fake_build)
    ref = MixtureDataset("train", SMOKE, n_items=8, build_dir=fake_build, load_images=False)
    a, b = rl_batch(plain, *args), rl_batch(ref, *args)
    assert torch.equal(a.queries, b.queries) and torch.equal(a.mixtures, b.mixtures) and torch.equal(a.z, b.z)


# --------------------------------------------------------------------------- reconstruction
def test_reconstruct_with_the_oracle_mask_is_the_oracle_separation(parts):
    fe = parts["fe"]
    items = [parts["ds"][j] for j in range(2)]
    src = torch.from_numpy(np.stack([it["sources"] for it in items])).double()
    mix = src.sum(1)
    oracle = fe.oracle_masks(src, mix, "ibm")  # (B, K, F, T)
    group = oracle.unsqueeze(2).expand(-1, -1, 3, -1, -1)  # G = 3 copies
    wav = reconstruct_group(fe, group, mix)
    assert wav.shape == (2, 2, 3, mix.shape[-1])
    ref = fe.oracle_separate(src, mix, "ibm", "warped")  # (B, K, samples)
    for g in range(3):
        torch.testing.assert_close(wav[:, :, g], ref, rtol=0, atol=1e-9)


# --------------------------------------------------------------------------- the rollout
def test_rollout_shapes_order_and_values(parts):
    model = trained_looking_separator()
    batch = _batch(parts)
    rm = RewardModel(parts["stack"], SMOKE.audio.sample_rate, lambda_sig=0.5, lambda_neg=0.5)
    G = 3
    ro = rollout(model, batch, parts["fe"], rm, 9.0, G, seed=7)
    n, f, t = batch.n_items, SMOKE.audio.n_freq_warped, SMOKE.audio.n_frames
    assert ro.P_old.shape == (n, f, t) and ro.masks.shape == (n, G, f, t) and ro.old_logp.shape == (n, G, f, t)
    assert ro.rewards.shape == (n, G) and ro.waveforms.shape == (n, G, SMOKE.audio.segment_samples)
    assert set(ro.terms) == {"semantic", "signal", "contamination", "residual"} and all(v.shape == (n, G) for v in ro.terms.values())
    assert set(ro.timings) == {"policy", "rollout", "reward"} and all(v >= 0 for v in ro.timings.values())
    assert not ro.masks.requires_grad and not ro.old_logp.requires_grad and ro.group_size == G
    assert torch.all(torch.isfinite(ro.rewards)) and ro.P_old.std() > 0.01
    # item n = b K + k: P of (features[b], queries[b, k]) through the plain forward
    with torch.no_grad():
        for item in range(n):
            b, k = divmod(item, 2)
            p = model(batch.features[b : b + 1], batch.queries[b, k][None])[0]
            torch.testing.assert_close(ro.P_old[item], p, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ro.old_logp, beta_ref.log_prob(ro.P_old.unsqueeze(1), ro.masks, 9.0), rtol=1e-5, atol=1e-4)
    m = ro.masks.double().clamp(1e-6, 1 - 1e-6)  # the per-sample logs the updates reuse, by hand in float64
    torch.testing.assert_close(ro.mask_logit.double(), torch.log(m / (1 - m)), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ro.mask_log1m.double(), torch.log(1 - m), rtol=1e-5, atol=1e-6)
    assert ro.trunk.shape == (batch.n_mixtures, 2 * SMOKE.separator.down_channels[0], f // 2, t // 2)
    # one waveform and its reward, rebuilt by hand: mask (item 3, sample 2) on mixture 1
    wav = parts["fe"].reconstruct(ro.masks[3, 2], batch.mixtures[1])
    atol = reconstruct_atol(SMOKE.audio, wav.shape[-1], batch.mixtures[1].abs().max().item())  # batched vs single FFTs
    assert_within(ro.waveforms[3, 2], wav, atol, "rollout waveform")
    r, terms = rm(wav[None], batch.z[3:4], batch.z_neg[3:4], batch.sources[1, 1][None])
    assert math.isclose(ro.rewards[3, 2].item(), r.item(), abs_tol=1e-5)
    assert math.isclose(ro.terms["contamination"][3, 2].item(), terms["contamination"].item(), abs_tol=1e-5)


def test_rollout_residual_term_reads_each_waveforms_own_mixture(parts):
    """lambda_res: the rollout hands the reward model each sample's own mixture (item n = b K + k, sample i: mixture
    b) and the interferer anchors; oracle: the reward model called on one waveform with its mixture by hand."""
    model = trained_looking_separator(3)
    batch = _batch(parts)
    rm = RewardModel(parts["stack"], SMOKE.audio.sample_rate, lambda_res=1.0)
    ro = rollout(model, batch, parts["fe"], rm, 9.0, 2, seed=3)
    for item, sample in ((0, 1), (3, 0)):
        b = item // SMOKE.data.n_sources
        wav = ro.waveforms[item, sample][None]
        r, terms = rm(wav, batch.z[item:item + 1], batch.z_neg[item:item + 1], mixtures=batch.mixtures[b][None])
        assert math.isclose(ro.terms["residual"][item, sample].item(), terms["residual"].item(), abs_tol=1e-5)
        assert math.isclose(ro.rewards[item, sample].item(), r.item(), abs_tol=1e-5)
    wrong = rm(ro.waveforms[3, 0][None], batch.z[3:4], batch.z_neg[3:4], mixtures=batch.mixtures[0][None])[1]
    assert abs(wrong["residual"].item() - ro.terms["residual"][3, 0].item()) > 1e-4  # another mixture: another value


def test_remainder_references_by_hand_and_a_rollout_that_never_reads_the_sources(parts):
    """signal_reference='remainder': item k's reference is x - sum_{j != k} y_j, y_j the waveform of the old policy's
    mode (each rebuilt here one by one with FrontEnd.reconstruct); the rollout's signal term is SI-SDR against it, and
    with every clean source replaced by NaN the rewards stay finite and equal (the sources are never read)."""
    from dataclasses import replace as _replace

    model = trained_looking_separator(5)
    batch = _batch(parts)
    fe, k = parts["fe"], SMOKE.data.n_sources
    with torch.no_grad():
        P = model(batch.features.repeat_interleave(k, 0), batch.queries.reshape(batch.n_items, -1))
    ref = remainder_references(fe, P, batch.mixtures)
    assert ref.shape == (batch.n_items, batch.mixtures.shape[-1])
    atol = reconstruct_atol(SMOKE.audio, ref.shape[-1], batch.mixtures.abs().max().item())
    for item in range(batch.n_items):
        b = item // k
        others = [fe.reconstruct(P[j], batch.mixtures[b]) for j in range(b * k, b * k + k) if j != item]
        assert_within(ref[item], batch.mixtures[b] - sum(others), k * atol, "remainder")
    rm = RewardModel(parts["stack"], SMOKE.audio.sample_rate, lambda_sem=0.0, lambda_sig=1.0)
    ro = rollout(model, batch, fe, rm, 9.0, 2, seed=5, signal_reference="remainder")
    expected = signal_term(ro.waveforms.reshape(-1, ro.waveforms.shape[-1]), ref.repeat_interleave(2, 0))
    torch.testing.assert_close(ro.terms["signal"].reshape(-1), expected, rtol=0, atol=1e-4)
    blind = rollout(model, _replace(batch, sources=torch.full_like(batch.sources, float("nan"))), fe, rm, 9.0, 2,
                    seed=5, signal_reference="remainder")
    assert torch.equal(blind.rewards, ro.rewards)
    source = rollout(model, batch, fe, rm, 9.0, 2, seed=5)
    assert not torch.allclose(source.rewards, ro.rewards)  # the clean sources: another reward
    with pytest.raises(ValueError, match="signal_reference"):
        rollout(model, batch, fe, rm, 9.0, 2, seed=5, signal_reference="clean")


def test_pathwise_update_against_the_remainder_never_reads_the_sources(parts):
    """estimator='pathwise' with signal_reference='remainder': the update's loss is pathwise_loss against the old
    modes' remainders (remainder_references, tested above), the same with every clean source NaN, and another loss
    against the clean sources."""
    from dataclasses import replace as _replace

    from mars_core.config import RLConfig
    from mars_core.rl.pathwise import pathwise_loss
    from mars_core.rl.update import minibatch_loss

    model = trained_looking_separator(6)
    batch = _batch(parts)
    fe, k = parts["fe"], SMOKE.data.n_sources
    rm = RewardModel(parts["stack"], SMOKE.audio.sample_rate, lambda_sem=0.0, lambda_sig=1.0)
    cfg = RLConfig(estimator="pathwise", lambda_sig=1.0, signal_reference="remainder", ent_coef=0.0, kl_coef=0.0,
                   trainable="head", group_size=2)
    mb = torch.arange(batch.n_mixtures)
    losses, ros = [], []
    for b in (batch, _replace(batch, sources=torch.full_like(batch.sources, float("nan")))):
        ros.append(rollout(model, b, fe, rm, 30.0, 2, seed=1, signal_reference="remainder"))
        torch.manual_seed(0)  # the reparameterised draws
        losses.append(minibatch_loss(model, ros[-1], torch.zeros(batch.n_items, 2), mb, cfg, fe)[0])
    assert torch.isfinite(losses[0]) and losses[0].item() == losses[1].item()
    with torch.no_grad():
        P = model(batch.features.repeat_interleave(k, 0), batch.queries.reshape(batch.n_items, -1)).unsqueeze(1)
    refs = remainder_references(fe, P[:, 0], batch.mixtures).reshape(batch.n_mixtures, k, -1)
    torch.manual_seed(0)
    by_hand = pathwise_loss(P, P, batch.mixtures, refs, fe, 30.0, 2, 1.0, 0.0, 0.0)[0]
    assert losses[0].item() == pytest.approx(by_hand.item(), abs=1e-4)
    torch.manual_seed(0)
    source = minibatch_loss(model, ros[0], torch.zeros(batch.n_items, 2), mb, _replace(cfg, signal_reference="source"),
                            fe)[0]
    assert abs(source.item() - by_hand.item()) > 1e-3


def test_rollout_is_deterministic_under_a_seed(parts):
    model = trained_looking_separator()
    batch = _batch(parts)
    rm = RewardModel(parts["stack"], SMOKE.audio.sample_rate)
    state = torch.get_rng_state()
    a = rollout(model, batch, parts["fe"], rm, 9.0, 2, seed=step_seed(0, 3))
    assert torch.equal(torch.get_rng_state(), state)  # the global generator is left alone
    torch.manual_seed(123)
    b = rollout(model, batch, parts["fe"], rm, 9.0, 2, seed=step_seed(0, 3))
    assert torch.equal(a.masks, b.masks) and torch.equal(a.rewards, b.rewards) and torch.equal(a.waveforms, b.waveforms)
    c = rollout(model, batch, parts["fe"], rm, 9.0, 2, seed=step_seed(0, 4))
    assert not torch.equal(a.masks, c.masks)
    assert step_seed(0, 3) == step_seed(0, 3) != step_seed(1, 3)


def test_policy_proposal_is_the_per_item_forward():
    model = trained_looking_separator(1)
    x, q = torch.randn(2, 1, 128, 128), torch.randn(2, 2, 128)
    with torch.no_grad():
        P = policy_proposal(model, x, q)
        ref = model(x.repeat_interleave(2, 0), q.reshape(4, 128))
    torch.testing.assert_close(P, ref, rtol=1e-5, atol=1e-5)


def test_rollout_forward_autocasts_where_the_precision_says_and_keeps_fp32_outputs(parts, monkeypatch):
    from mars_core import precision

    model = trained_looking_separator()
    batch = _batch(parts)
    rm = RewardModel(parts["stack"], SMOKE.audio.sample_rate)
    seen = []
    conv = next(m for m in model.unet.modules() if isinstance(m, torch.nn.Conv2d))
    conv.register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    plain = rollout(model, batch, parts["fe"], rm, 9.0, 2, seed=7)
    assert seen == [torch.float32]  # the default on a CPU: no autocast, bit-exact fp32
    monkeypatch.setattr(precision, "AUTOCAST_DEVICE_TYPES", frozenset({"cuda", "cpu"}))  # the bf16 path on a CPU
    old = precision.get_precision()
    precision.set_precision("bf16", "cpu")
    try:
        bf = rollout(model, batch, parts["fe"], rm, 9.0, 2, seed=7)
    finally:
        precision.set_precision(old)
    assert seen[-1] == torch.bfloat16
    assert bf.P_old.dtype == torch.float32 and bf.trunk.dtype == torch.float32
    # bf16 keeps 8 significant bits: P in (0, 1) through 7 convolution levels moves by well under 0.05, and not 0
    diff = (bf.P_old - plain.P_old).abs().max().item()
    assert 0 < diff < 0.05

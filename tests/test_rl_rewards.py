"""Rewards: each term against hand-computed values, anchors, batching, and a trained encoder's preference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mars_core.audio import FrontEnd
from mars_core.config import get_profile
from mars_core.data.manifest import benchmark_dir
from mars_core.data.mixing import MixtureDataset
from mars_core.alignment.anchor import MLBPAnchor, fuse_anchor
from mars_core.encoders.minibind import checkpoints_dir, load_minibind
from mars_core.alignment.stack import RewardStack
from mars_core.queries import QueryRef
from mars_core.rl.rewards import RewardModel, anchors, signal_term
from mars_core.rl.rollout import reconstruct_group
from tests.test_queries import fake_bank

SR = 8000


class FeatureEncoder(nn.Module):
    """A transparent audio 'encoder': ``n([rms, mean |x|, max |x|, 1])``, and a log of its calls."""

    sample_rate = SR

    def __init__(self):
        super().__init__()
        self.calls: list[tuple[int, int, bool]] = []

    @staticmethod
    def features(w: np.ndarray) -> np.ndarray:
        w = np.asarray(w, np.float64)
        v = np.array([np.sqrt((w**2).mean()), np.abs(w).mean(), np.abs(w).max(), 1.0])
        return v / np.linalg.norm(v)

    def embed_audio(self, waveforms, sample_rate, *, batch_size=32, resample=False):
        self.calls.append((int(waveforms.shape[0]), batch_size, resample))
        return torch.tensor(np.stack([self.features(w) for w in waveforms.numpy()]), dtype=torch.float32)


def _stack(encoder, anchor=None):
    return RewardStack(encoder, anchor if anchor is not None else MeanAnchor(), aligned=True, key="t")


class MeanAnchor(nn.Module):
    """``z* = n(mean_m n(e_m))``: an honest, parameter-free target anchor."""

    def forward(self, e_audio=None, e_text=None, e_image=None):
        return fuse_anchor("mean", e_audio, e_text, e_image)


def _tones(n=3, length=4000):
    t = np.arange(length) / SR
    return torch.tensor(np.stack([(0.3 + 0.1 * i) * np.sin(2 * np.pi * 200 * (i + 1) * t) for i in range(n)]),
                        dtype=torch.float32)


# --------------------------------------------------------------------------- terms by hand
def test_signal_term_by_hand():
    length = 8000  # 200 Hz and its quadrature over whole periods: orthogonal, zero mean
    t = np.arange(length) / SR
    s, c = np.sin(2 * np.pi * 200 * t), np.cos(2 * np.pi * 200 * t)
    ref = torch.tensor(np.stack([s] * 5))
    est = torch.tensor(np.stack([
        s + np.sqrt(0.1) * c,  # |noise|^2 = |s|^2 / 10: 10 dB -> 1.0
        2.0 * (s + 0.1 * c),  # 20 dB, scale-invariant -> 2.0
        s + 1e-3 * c,  # 60 dB, clamped to 30 -> 3.0
        s + 100.0 * c,  # -40 dB, clamped to -30 -> -3.0
        np.zeros(length),  # silent: the floor, -3.0 (SI-SDR alone would say 0 dB)
    ]))
    np.testing.assert_allclose(signal_term(est, ref).numpy(), [1.0, 2.0, 3.0, -3.0, -3.0], atol=1e-4)
    assert signal_term(est, ref).dtype == torch.float32


def test_reward_terms_and_their_sum_by_hand():
    enc = FeatureEncoder()
    wav = _tones(3)
    wav[2] = 0.0  # a silent estimate
    g = torch.Generator().manual_seed(0)
    z = F.normalize(torch.randn(3, 4, generator=g), dim=-1)
    z_neg = F.normalize(torch.randn(3, 4, generator=g), dim=-1)
    refs = _tones(3).flip(0)
    rm = RewardModel(_stack(enc), SR, lambda_sig=0.5, lambda_neg=0.25)
    R, terms = rm(wav, z, z_neg, refs)
    a = np.stack([FeatureEncoder.features(w) for w in wav.numpy()])
    cos = lambda x, y: (x * y).sum(-1) / np.linalg.norm(x, axis=-1) / np.linalg.norm(y, axis=-1)  # noqa: E731
    sem, neg = cos(a, z.numpy()), cos(a, z_neg.numpy())
    sig = signal_term(wav, refs).numpy()
    np.testing.assert_allclose(terms["semantic"].numpy(), sem, atol=1e-6)
    np.testing.assert_allclose(terms["contamination"].numpy(), neg, atol=1e-6)
    np.testing.assert_allclose(R.numpy(), sem + 0.5 * sig - 0.25 * neg, atol=1e-5)
    assert sig[2] == pytest.approx(-3.0) and torch.all(torch.isfinite(R))  # silent: finite, floored
    assert enc.calls == [(3, 3, False)]  # one encoder call for the whole batch, native rate


def test_reward_weights_batching_and_errors():
    enc = FeatureEncoder()
    wav, z = _tones(4), F.normalize(torch.ones(4, 4), dim=-1)
    R, terms = RewardModel(_stack(enc), SR)(wav, z)
    torch.testing.assert_close(R, terms["semantic"])  # lambdas 0: the paper's reward, other terms reported as 0
    assert torch.equal(terms["signal"], torch.zeros(4)) and torch.equal(terms["contamination"], torch.zeros(4))
    RewardModel(_stack(enc), SR, batch_size=2)(wav, z)
    assert enc.calls[-1] == (4, 2, False)
    RewardModel(_stack(enc), 16000)(wav, z)
    assert enc.calls[-1][2] is True  # another rate: resampled explicitly
    # several interferers: the mean of their cosines
    zn = torch.stack([z, -z], dim=1)
    _, t2 = RewardModel(_stack(enc), SR, lambda_neg=1.0)(wav, z, zn)
    torch.testing.assert_close(t2["contamination"], torch.zeros(4), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="clean references"):
        RewardModel(_stack(enc), SR, lambda_sig=1.0)(wav, z)
    with pytest.raises(ValueError, match="interferer anchors"):
        RewardModel(_stack(enc), SR, lambda_neg=1.0)(wav, z)
    with pytest.raises(ValueError, match="waveforms must be"):
        RewardModel(_stack(enc), SR)(wav, z[:2])


def test_residual_term_by_hand_and_its_guards():
    """lambda_res: cos(phi(x - y), z-) - cos(phi(x - y), z*) of each waveform's own mixture x, by hand; with the other
    encoder terms off only the residuals are embedded (one call); missing mixtures, interferers or shapes refused."""
    enc = FeatureEncoder()
    wav, mix = _tones(3), _tones(3) + 0.5 * _tones(3).flip(0)
    g = torch.Generator().manual_seed(1)
    z = F.normalize(torch.randn(3, 4, generator=g), dim=-1)
    z_neg = F.normalize(torch.randn(3, 4, generator=g), dim=-1)
    R, terms = RewardModel(_stack(enc), SR, lambda_sem=0.0, lambda_res=2.0)(wav, z, z_neg, mixtures=mix)
    r = np.stack([FeatureEncoder.features(w) for w in (mix - wav).numpy()])
    cos = lambda x, y: (x * y).sum(-1) / np.linalg.norm(x, axis=-1) / np.linalg.norm(y, axis=-1)  # noqa: E731
    expected = cos(r, z_neg.numpy()) - cos(r, z.numpy())
    np.testing.assert_allclose(terms["residual"].numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(R.numpy(), 2.0 * expected, atol=1e-5)
    assert torch.equal(terms["semantic"], torch.zeros(3)) and enc.calls == [(3, 3, False)]
    # with the semantic term on: both embeddings, each term by hand, and the sum
    R2, t2 = RewardModel(_stack(enc), SR, lambda_res=0.5)(wav, z, z_neg, mixtures=mix)
    a = np.stack([FeatureEncoder.features(w) for w in wav.numpy()])
    np.testing.assert_allclose(R2.numpy(), cos(a, z.numpy()) + 0.5 * expected, atol=1e-5)
    with pytest.raises(ValueError, match="mixture"):
        RewardModel(_stack(enc), SR, lambda_res=1.0)(wav, z, z_neg)
    with pytest.raises(ValueError, match="interferer anchors"):
        RewardModel(_stack(enc), SR, lambda_res=1.0)(wav, z, mixtures=mix)
    with pytest.raises(ValueError, match="shape"):
        RewardModel(_stack(enc), SR, lambda_res=1.0)(wav, z, z_neg, mixtures=mix[:, :100])


def test_anchors_fuse_the_bank_embeddings_with_the_mlbp(fake_build):
    bank = fake_bank(fake_build, 16)
    torch.manual_seed(0)
    mlbp = MLBPAnchor(16, rank=8).eval()
    with torch.no_grad():  # away from the zero init of W_o and b, so the bilinear term counts
        mlbp.out.weight.normal_(0.0, 1.0)
        mlbp.out.bias.normal_(0.0, 0.5)
    refs = [QueryRef("violin", bank.ids["text"][0], bank.ids["image"][0], tuple(bank.ids["audio"][:2])),
            QueryRef("dog", bank.ids["text"][3], bank.ids["image"][2], (bank.ids["audio"][5],))]
    z = anchors(_stack(FeatureEncoder(), mlbp), bank, refs)
    n = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
    E = {m: bank.embeddings[m].double().numpy() for m in ("text", "image", "audio")}
    row = {m: {k: i for i, k in enumerate(bank.ids[m])} for m in E}
    U = {m: mlbp.factors[m].weight.detach().double().numpy() for m in ("audio", "text", "vision")}
    W, b = mlbp.out.weight.detach().double().numpy(), mlbp.out.bias.detach().double().numpy()
    for i, r in enumerate(refs):
        e_a = n(np.mean([E["audio"][row["audio"][a]] for a in r.audio_ids], axis=0))
        e_t, e_v = E["text"][row["text"][r.text]], E["image"][row["image"][r.image_id]]
        h = np.tanh(U["audio"] @ n(e_a)) * np.tanh(U["text"] @ n(e_t)) * np.tanh(U["vision"] @ n(e_v))
        mean = (n(e_a) + n(e_t) + n(e_v)) / 3  # the residual base: the mean anchor
        np.testing.assert_allclose(z[i].double().numpy(), n(mean + W @ h + b), atol=1e-5)


# --------------------------------------------------------------------------- a trained encoder prefers the oracle
def _real_build():
    for name in ("cpu", "smoke"):  # the cpu build if it is here, else the smoke build (CI builds it)
        if (benchmark_dir(name) / "build_info.json").exists():
            return get_profile(name)
    pytest.skip("no benchmark build here; `python -m mars_core.data build --profile smoke` builds one")


def test_trained_reward_encoder_prefers_the_oracle_mask_over_silence_and_all_pass():
    """With the shipped, trained cpu MiniBind (8 kHz, like the smoke and cpu builds) and the honest
    mean anchor of each target's prompt, image and audio query, on real val mixtures: the oracle
    mask's output earns more than a silent output (mask 0) and the mixture itself (mask 1)."""
    path = checkpoints_dir() / "minibind_cpu.pt"
    assert path.exists(), f"{path} is shipped with the repository"
    prof = _real_build()
    enc = load_minibind(path).eval()
    ds = MixtureDataset("val", prof, n_items=12, random_gain=False, random_crop=False)
    items = [ds[i] for i in range(len(ds))]
    mix = torch.from_numpy(np.stack([it["mixture"] for it in items]))
    src = torch.from_numpy(np.stack([it["sources"] for it in items]))
    with torch.no_grad():
        e_t = enc.embed_text([it["query_text"] for it in items])
        e_v = enc.embed_image([it["query_image"] for it in items])
        e_a = enc.embed_audio(torch.from_numpy(np.stack([it["query_audio"] for it in items])), SR)
    stack = _stack(enc)
    z = stack.target_anchor(e_a, e_t, e_v)
    fe = FrontEnd(prof.audio)
    oracle = fe.oracle_masks(src, mix, "ibm")[:, 0]  # target's ideal binary mask on the warped grid
    masks = torch.stack([oracle, torch.zeros_like(oracle), torch.ones_like(oracle)], dim=1)  # oracle, silent, all-pass
    wav = reconstruct_group(fe, masks, mix)  # (N, 3, samples)
    assert wav[:, 1].abs().max() == 0.0
    torch.testing.assert_close(wav[:, 2], mix, atol=1e-3, rtol=0)  # float32 iSTFT, edge samples
    n = len(items)
    R, terms = RewardModel(stack, SR)(wav.reshape(3 * n, -1), z.repeat_interleave(3, 0))
    R = R.reshape(n, 3)
    assert torch.all(torch.isfinite(R))
    oracle_r, silent_r, allpass_r = R.mean(0).tolist()
    assert oracle_r > silent_r + 0.2 and oracle_r > allpass_r + 0.2, R.mean(0)
    assert (R[:, 0] > R[:, 1]).float().mean() >= 0.75 and (R[:, 0] > R[:, 2]).float().mean() >= 0.75
    assert math.isfinite(silent_r)


# --------------------------------------------------------------------------- input dtypes
def _si_sdr_db(est: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """SI-SDR (dB) in float64 by hand: zero-mean, alpha = <e, s> / |s|^2, 10 log10(|alpha s|^2 / |e - alpha s|^2)."""
    e, s = est - est.mean(-1, keepdims=True), ref - ref.mean(-1, keepdims=True)
    t = ((e * s).sum(-1) / (s**2).sum(-1))[:, None] * s
    return 10 * np.log10((t**2).sum(-1) / ((e - t) ** 2).sum(-1))


def test_references_keep_their_dtype_the_reward_is_the_float_one():
    """The references used to be cast to the waveforms' dtype: int16 zeros beside int16 waveforms,
    half-precision rounding beside float16 ones. Oracle: the float64 reward of the same waveform."""
    enc = FeatureEncoder()
    g = torch.Generator().manual_seed(1)
    refs = torch.randn(3, 1000, generator=g) * 0.3  # float32, not representable in float16
    wav16 = (refs + 0.012 * torch.randn(3, 1000, generator=g)).half()  # about 28 dB SI-SDR, below the 30 dB clamp
    z = F.normalize(torch.ones(3, 4), dim=-1)
    rm = RewardModel(_stack(enc), SR, lambda_sig=1.0)
    R16, t16 = rm(wav16, z, references=refs)
    R32, t32 = rm(wav16.float(), z, references=refs)  # the same waveform in float32
    expected = _si_sdr_db(wav16.double().numpy(), refs.double().numpy()) / 10
    assert np.all((expected > 2.5) & (expected < 3.0))
    # the term is computed in float64 and returned as float32: ~3 x 6e-8 of rounding
    np.testing.assert_allclose(t16["signal"].numpy(), expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(R16, R32, atol=1e-6, rtol=0)
    # the old cast is measurable at this tolerance: rounding the references to float16 moves the term
    old = _si_sdr_db(wav16.double().numpy(), refs.half().double().numpy()) / 10
    assert np.abs(old - expected).max() > 1e-5


def test_integer_waveforms_or_references_are_refused():
    enc = FeatureEncoder()
    wav, z = _tones(2), F.normalize(torch.ones(2, 4), dim=-1)
    rm = RewardModel(_stack(enc), SR, lambda_sig=1.0)
    pcm = (wav * 32767).round().to(torch.int16)
    with pytest.raises(ValueError, match=r"waveforms has dtype int16; .*int16 PCM: divide by 32768"):
        rm(pcm, z, references=wav)
    with pytest.raises(ValueError, match=r"references has dtype int16"):
        rm(wav, z, references=pcm)
    with pytest.raises(ValueError, match=r"references \(2, 100\) must have the waveforms' shape"):
        rm(wav, z, references=wav[:, :100])
    bad = wav.clone()
    bad[1, 10] = float("nan")
    with pytest.raises(ValueError, match=r"waveforms: item 1 contains NaN or infinite values"):
        rm(bad, z, references=wav)
    assert enc.calls == []  # refused before the encoder runs

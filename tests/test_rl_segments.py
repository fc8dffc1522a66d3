"""Dense segment rewards (mars_core.rl.segments): segment bounds, the frame -> segment map, per-segment
rewards and advantages against hand values, and S = 1 equal to the whole-waveform reward."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mars_core.config import RLConfig
from mars_core.rl import segments as seg
from mars_core.rl.advantages import group_advantages, loo_advantages
from mars_core.rl.ppo import ppo_loss
from mars_core.rl.rewards import RewardModel, signal_term
from mars_core.rl.update import advantages
from tests.test_rl_rewards import SR, FeatureEncoder, _stack, _tones


def test_segment_bounds_and_the_frame_map_by_hand():
    # 10 samples in 3 segments: floor(10 s / 3) = 0, 3, 6, 10
    assert seg.segment_bounds(10, 3).tolist() == [0, 3, 6, 10]
    # a centred STFT with hop 3 over 10 samples has 1 + 10 // 3 = 4 frames, centred on samples 0, 3, 6, 9
    n_frames = torch.stft(torch.zeros(10), n_fft=4, hop_length=3, window=torch.hann_window(4), center=True,
                          return_complex=True).shape[-1]
    assert n_frames == 4
    assert seg.frame_segments(4, 3, 10, 3).tolist() == [0, 1, 2, 2]  # 0 in [0, 3), 3 in [3, 6), 6 and 9 in [6, 10)
    assert seg.frame_segments(4, 3, 10, 2).tolist() == [0, 0, 1, 1]  # bounds 0, 5, 10
    assert seg.frame_segments(4, 3, 10, 1).tolist() == [0, 0, 0, 0]
    with pytest.raises(ValueError, match="exceeds the waveform"):
        seg.segment_bounds(3, 4)


def test_bins_are_credited_with_their_segment_advantage():
    adv = torch.tensor([[[10.0, 20.0, 30.0], [-1.0, -2.0, -3.0]]])  # (N=1, G=2, S=3)
    a = seg.bin_advantages(adv, seg.frame_segments(4, 3, 10, 3))
    assert a.shape == (1, 2, 1, 4)
    assert a[0, :, 0].tolist() == [[10.0, 20.0, 30.0, 30.0], [-1.0, -2.0, -3.0, -3.0]]


def test_segment_advantages_normalise_each_segment_within_its_group():
    # item 0, G = 3, S = 2: segment 0 rewards (1, 2, 6), segment 1 rewards (0, 0, 3)
    r = torch.tensor([[[1.0, 0.0], [2.0, 0.0], [6.0, 3.0]]])
    adv, _ = seg.segment_advantages(r, loo_advantages)
    np.testing.assert_allclose(adv[0, :, 0].numpy(), [-3.0, -1.5, 4.5], atol=1e-6)
    np.testing.assert_allclose(adv[0, :, 1].numpy(), [-1.5, -1.5, 3.0], atol=1e-6)
    adv_g, _ = advantages(r, RLConfig(advantage="group"), None)
    s1 = np.sqrt(2.0)  # population std of (0, 0, 3)
    np.testing.assert_allclose(adv_g[0, :, 1].numpy(), [-1 / s1, -1 / s1, 2 / s1], atol=1e-5)
    np.testing.assert_allclose(adv_g[0, :, 0].numpy(), group_advantages(r[:, :, 0])[0][0].numpy(), atol=1e-6)


def _half_noise(length: int = 4000):
    """A tone as the reference, the estimate equal to it in its first half and noise in its second; an anchor."""
    ref = _tones(1, length)
    est = ref.clone()
    est[0, length // 2:] = torch.tensor(np.random.default_rng(0).standard_normal(length - length // 2),
                                        dtype=torch.float32)
    return ref, est, FeatureEncoder(), F.normalize(torch.tensor([[1.0, 2.0, 0.5, 1.0]]), dim=-1)


def test_per_segment_signal_and_semantic_terms_by_hand():
    length = 4000
    ref, est, enc, z = _half_noise(length)
    R, terms = RewardModel(_stack(enc), SR, lambda_sig=1.0)(est, z, None, ref, segments=2)
    assert R.shape == (1, 2)
    # segment 0 is the reference itself: SI-SDR clamped at 30 dB -> 3.0; segment 1 is noise against a tone
    assert terms["signal"][0, 0].item() == pytest.approx(3.0)
    e, r = est[0, 2000:].double().numpy(), ref[0, 2000:].double().numpy()
    e, r = e - e.mean(), r - r.mean()
    t = (e @ r) / (r @ r) * r
    assert terms["signal"][0, 1].item() == pytest.approx(np.clip(10 * np.log10((t @ t) / ((e - t) @ (e - t))), -30, 30) / 10,
                                                         abs=1e-5)
    for s, (lo, hi) in enumerate(((0, 2000), (2000, 4000))):
        a = FeatureEncoder.features(est[0, lo:hi].numpy())
        assert terms["semantic"][0, s].item() == pytest.approx(float(a @ z[0].numpy()), abs=1e-6)
    assert enc.calls == [(2, 2, False)]  # equal lengths: one encoder call for both windows


def test_signal_only_segments_keep_one_embedding_per_waveform():
    length = 4000
    ref, est, enc, z = _half_noise(length)
    R, terms = RewardModel(_stack(enc), SR, lambda_sig=1.0, segment_terms="signal")(est, z, None, ref, segments=2)
    whole = float(FeatureEncoder.features(est[0].numpy()) @ z[0].numpy())  # the semantic term of the whole waveform
    assert terms["semantic"][0].tolist() == pytest.approx([whole, whole], abs=1e-6)
    assert terms["signal"][0, 0].item() == pytest.approx(3.0)  # segment 0 is the reference: the 30 dB clamp
    assert R[0].tolist() == pytest.approx([whole + 3.0, whole + terms["signal"][0, 1].item()], abs=1e-6)
    assert enc.calls == [(1, 1, False)]  # one call on the one whole waveform (per segment: (2, 2, False))
    with pytest.raises(ValueError, match="segment_terms"):
        RewardModel(_stack(enc), SR, segment_terms="semantic")(est, z, None, ref, segments=2)


def test_signal_only_reward_never_calls_the_encoder():
    """lambda_sem = lambda_neg = 0 (the dense preset): R is the segment SI-SDR term alone (hand-computed above: the
    30 dB clamp on the clean half), the semantic and contamination terms are reported as 0, and the encoder is never
    called; with lambda_neg > 0 it is, and only the semantic term is dropped."""
    length = 4000
    ref, est, enc, z = _half_noise(length)
    rm = RewardModel(_stack(enc), SR, lambda_sig=1.0, segment_terms="signal", lambda_sem=0.0)
    assert not rm.uses_encoder
    R, terms = rm(est, z, None, ref, segments=2)
    assert enc.calls == []
    assert R.shape == (1, 2) and R.dtype == torch.float32
    assert R[0, 0].item() == pytest.approx(3.0)
    torch.testing.assert_close(R, terms["signal"])
    assert torch.equal(terms["semantic"], torch.zeros(1, 2)) and torch.equal(terms["contamination"], torch.zeros(1, 2))
    R1, _ = rm(est, z, None, ref)  # one reward per waveform
    assert R1.shape == (1,) and enc.calls == []
    zn = -z
    R2, t2 = RewardModel(_stack(enc), SR, lambda_sig=1.0, lambda_neg=0.5, lambda_sem=0.0)(est, z, zn, ref)
    a = FeatureEncoder.features(est[0].numpy())
    assert enc.calls == [(1, 1, False)] and torch.equal(t2["semantic"], torch.zeros(1))
    assert R2.item() == pytest.approx(R1.item() - 0.5 * float(a @ zn[0].numpy()), abs=1e-5)


def test_one_segment_equals_the_whole_waveform_reward():
    wav, refs = _tones(3, 4001), _tones(3, 4001).flip(0)  # 4001: an odd length
    wav[1] += 0.05
    g = torch.Generator().manual_seed(0)
    z, zn = F.normalize(torch.randn(3, 4, generator=g), dim=-1), F.normalize(torch.randn(3, 4, generator=g), dim=-1)
    rm = RewardModel(_stack(FeatureEncoder()), SR, lambda_sig=0.5, lambda_neg=0.25)
    R1, t1 = rm(wav, z, zn, refs, segments=1)
    R, t = rm(wav, z, zn, refs)
    torch.testing.assert_close(R1[:, 0], R, rtol=0, atol=1e-6)
    for k in t:
        torch.testing.assert_close(t1[k][:, 0], t[k], rtol=0, atol=1e-6)


def test_segments_of_unequal_length_cover_every_sample_once():
    wav = torch.arange(10.0).reshape(1, 10)
    got = seg.per_segment(lambda w: w.sum(-1), 3, wav)  # lengths 3, 3, 4
    assert got.tolist() == [[0 + 1 + 2, 3 + 4 + 5, 6 + 7 + 8 + 9]]
    sig = seg.per_segment(signal_term, 3, _tones(2, 4001), _tones(2, 4001))
    torch.testing.assert_close(sig, torch.full((2, 3), 3.0))  # each segment of a reference against itself: 30 dB


def test_per_bin_advantages_equal_to_one_per_mask_give_the_same_loss():
    torch.manual_seed(0)
    new = torch.randn(2, 3, 4, 5, requires_grad=True)
    old = new.detach() + 0.1 * torch.randn(2, 3, 4, 5)
    adv = torch.randn(2, 3)
    ent = torch.zeros(2, 1, 4, 5)
    l1, _ = ppo_loss(new, old, adv, ent, ent_coef=0.0, kl_coef=0.0)
    l2, _ = ppo_loss(new, old, adv[:, :, None, None].expand(2, 3, 1, 5), ent, ent_coef=0.0, kl_coef=0.0)
    torch.testing.assert_close(l1, l2)
    with pytest.raises(ValueError, match="per bin"):
        ppo_loss(new, old, torch.zeros(2, 3, 2, 5), ent)


def test_error_share_rewards_by_hand_and_they_add_up_to_the_si_sdr_difference():
    """Oracle: numpy by hand (alpha, error and target energies, the group's mean ratio); the sum over segments moves
    like SI-SDR / 10 between two nearby estimates (first order: d(SI-SDR/10) = -d rho / (ln 10 rho)); and a scaled
    copy of an estimate earns exactly what it earns (the rewards are scale-invariant, like SI-SDR)."""
    rng = np.random.default_rng(3)
    s = rng.standard_normal(200)
    y = np.stack([s + 0.3 * rng.standard_normal(200), 0.5 * s + 0.3 * rng.standard_normal(200) + 0.1])[None]
    r = seg.error_share_rewards(torch.from_numpy(y), torch.from_numpy(s[None]), 4).numpy()
    assert r.shape == (1, 2, 4)
    sc = s - s.mean()
    want = np.zeros((2, 4))
    rho = []
    for g in range(2):
        yc = y[0, g] - y[0, g].mean()
        t = (yc @ sc) / (sc @ sc) * sc
        e = yc - t
        rho.append((e @ e) / (t @ t))
        want[g] = [e[k * 50:(k + 1) * 50] @ e[k * 50:(k + 1) * 50] / (t @ t) for k in range(4)]
    want = -want / (np.log(10.0) * np.mean(rho))
    np.testing.assert_allclose(r[0], want, rtol=1e-5, atol=1e-7)  # float32 output
    # first order: a small change of the estimate that leaves its projection on s (so |alpha s|^2) alone moves
    # sum_k r like SI-SDR / 10; the relative error is second order, about |d rho| / (2 rho) ~ 1e-2 here
    d = rng.standard_normal(200)
    d -= d.mean()
    d -= (d @ sc) / (sc @ sc) * sc
    y2 = y.copy()
    y2[0, 1] = y[0, 0] + 0.01 * d  # sample 1 close to sample 0, same projection on s
    r2 = seg.error_share_rewards(torch.from_numpy(y2), torch.from_numpy(s[None]), 4).numpy()[0].sum(-1)

    def si_sdr_db(est):  # by hand, means removed
        e, t = est - est.mean(), sc * ((est - est.mean()) @ sc) / (sc @ sc)
        return 10 * np.log10((t @ t) / ((e - t) @ (e - t)))

    d_sisdr = (si_sdr_db(y2[0, 1]) - si_sdr_db(y2[0, 0])) / 10
    assert abs((r2[1] - r2[0]) - d_sisdr) < 0.05 * abs(d_sisdr) + 1e-6
    # scale invariance: sample 1 replaced by a tenth of sample 0 earns what sample 0 earns
    y3 = y.copy()
    y3[0, 1] = 0.1 * y[0, 0]
    r3 = seg.error_share_rewards(torch.from_numpy(y3), torch.from_numpy(s[None]), 4).numpy()[0]
    np.testing.assert_allclose(r3[1], r3[0], rtol=1e-5, atol=1e-7)


def test_error_share_rewards_refuse_bad_shapes():
    with pytest.raises(ValueError, match=r"\(N, G, L\)"):
        seg.error_share_rewards(torch.zeros(2, 100), torch.zeros(2, 100), 4)


def test_frame_segment_weights_split_a_frame_on_a_boundary_by_its_window():
    """Hop 256, n_fft 512, segments of 512 samples: a frame centred on a segment boundary (even t) puts the two
    halves of its Hann^2 window in the two segments (periodic Hann: 0.4974 / 0.5026, by hand below); a frame centred
    inside a segment (odd t) lies in it whole; frame 0's left half is outside the signal and dropped."""
    W = seg.frame_segment_weights(8, 256, 512, 2048, 4)
    w2 = np.hanning(513)[:512] ** 2  # the periodic Hann window of 512 samples, squared
    left = w2[:256].sum() / w2.sum()
    assert W.shape == (8, 4)
    torch.testing.assert_close(W.sum(1), torch.ones(8), rtol=0, atol=1e-6)
    assert W[2, 0].item() == pytest.approx(left, abs=1e-6) and W[2, 1].item() == pytest.approx(1 - left, abs=1e-6)
    assert W[3].tolist() == pytest.approx([0, 1, 0, 0], abs=1e-6)
    assert W[0].tolist() == pytest.approx([1, 0, 0, 0], abs=1e-6)
    adv = torch.tensor([[[1.0, -1.0, 2.0, 0.0]]])  # (N=1, G=1, S=4)
    a = seg.bin_advantages(adv, W)[0, 0, 0]
    assert a[2].item() == pytest.approx(left * 1.0 + (1 - left) * -1.0, abs=1e-6)
    assert a[3].item() == pytest.approx(-1.0, abs=1e-6)

"""The RL step's faster paths compute what the straightforward computations do (issue 17, the step's cost).

Each test runs the optimised code and an independent, step-by-step evaluation of the same quantity:
torchaudio's Kaldi filterbank per clip for the reward encoder's front end, :func:`mars_core.metrics.si_sdr`
for the signal term, the separator's own ``logits_from_trunk`` for the head-only updates, and
:meth:`mars_core.audio.FrontEnd.reconstruct` for the rollout's waveforms. Tolerances are float32 rounding of
reordered arithmetic, bounded from the sizes involved (:mod:`tests.tolerances`).
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from mars_core.encoders import preprocess as P
from mars_core.inputs import AudioInputError, validate_audio
from mars_core.encoders.minibind import load_shipped
from mars_core.audio import FrontEnd, apply_mask
from mars_core.config import get_profile
from mars_core.metrics import si_sdr
from mars_core.rl import head
from mars_core.rl.ppo import ppo_loss
from mars_core.rl.rewards import signal_term
from mars_core.rl.rollout import reconstruct_group
from mars_core.separator import logits_from_trunk, new_separator
from mars_core.supervised.store import load_separator
from tests.tolerances import EPS32

RATE, LENGTH = 8000, 32767  # the cpu profile's rate and segment


def _test_waveforms(n: int = LENGTH) -> torch.Tensor:
    """Noise, a tone with a DC offset, a tone that stops half way over faint noise, and near-silence.

    Shape: returns ``(4, n)`` float32.
    """
    g = torch.Generator().manual_seed(0)
    t = torch.arange(n) / RATE
    return torch.stack([0.1 * torch.randn(n, generator=g),
                        0.3 * torch.sin(2 * math.pi * 440 * t) + 0.05,
                        0.2 * torch.sin(2 * math.pi * 97 * t) * (t < 2) + 0.01 * torch.randn(n, generator=g),
                        1e-4 * torch.randn(n, generator=g)])


def _torchaudio_log_mel(wav: torch.Tensor, cfg: P.AudioPreprocessConfig) -> torch.Tensor:
    """ImageBind's audio input of one mono waveform, step by step: clips cut in order with the in-place mean
    removal, torchaudio's Kaldi filterbank per clip, right zero-padding, ``(x + 4.268) / 9.138``.

    Shape: wav ``(n,)``; returns ``(clips, 1, mel, frames)``.
    """
    kaldi = pytest.importorskip("torchaudio.compliance.kaldi")
    w = wav.clone()
    clips = []
    for start, end in P.clip_sample_ranges(w.shape[-1], cfg):
        w[start:end] -= w[start:end].mean()  # a view: later overlapping clips see it (ImageBind's quirk)
        f = kaldi.fbank(w[start:end].unsqueeze(0).clone(), htk_compat=True, sample_frequency=cfg.sample_rate,
                        use_energy=False, window_type="hanning", num_mel_bins=cfg.num_mel_bins, dither=0.0,
                        frame_length=cfg.frame_length_ms, frame_shift=cfg.frame_shift_ms).T
        f = F.pad(f, (0, cfg.target_length - f.shape[-1]))
        clips.append(((f - cfg.mean) / cfg.std).unsqueeze(0))
    return torch.stack(clips)


def test_shipped_reward_minibind_embeds_like_torchaudio_front_end():
    enc = load_shipped("cpu")
    wav = _test_waveforms()
    reference_in = torch.stack([_torchaudio_log_mel(w, enc.audio_cfg) for w in wav])
    ours_in = enc.prepare_audio(list(wav))
    # the filterbank's power is re^2 + im^2 instead of |X|^2: a few float32 roundings of each log-mel value
    assert ours_in.shape == reference_in.shape == (4, 3, 1, 64, 204)
    assert float((ours_in - reference_in).abs().max()) <= 16 * EPS32 * float(reference_in.abs().max())
    with torch.no_grad():
        reference = enc.encode("audio", reference_in)
    ours = enc.embed_audio(wav, RATE, batch_size=4)
    # unit vectors out of a 4-block width-128 float32 transformer: its own rounding is about
    # depth * sqrt(width) * EPS32 = 5e-6, and the inputs differ by less than that
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)


def test_signal_term_equals_clamped_si_sdr_and_its_gradient():
    g = torch.Generator().manual_seed(1)
    ref = 0.1 * torch.randn(6, LENGTH, generator=g) + 0.02  # a DC offset: the moments are centred
    noise = torch.randn(6, LENGTH, generator=g)
    noise = noise - noise.mean(-1, keepdim=True)
    r0 = ref - ref.mean(-1, keepdim=True)
    noise = noise - (noise * r0).sum(-1, keepdim=True) / (r0 * r0).sum(-1, keepdim=True) * r0  # orthogonal to ref
    # hand-made SI-SDRs: est = 2 ref + noise scaled so |2 ref|^2 / |noise|^2 = 10^(snr / 10)
    snr = torch.tensor([-40.0, -12.0, 0.0, 7.5, 29.0, 60.0], dtype=torch.float64)
    scale = ((2 * r0).double().pow(2).sum(-1) / noise.double().pow(2).sum(-1) / 10 ** (snr / 10)).sqrt()
    est = (2 * ref + scale[:, None].float() * noise).requires_grad_()
    est.data[0] = 0.0  # silent: the floor, whatever SI-SDR says
    ours = signal_term(est, ref)
    expected = snr.clamp(-30, 30).float() / 10
    expected[0] = -3.0
    # float32 samples: |2 ref|^2 / |noise|^2 is itself rounded to about 1e-6 relative, 4e-6 dB
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)
    # the straightforward float64 evaluation (metrics.si_sdr, ten passes) agrees to float32 rounding, gradient too
    direct_est = est.detach().clone().requires_grad_()
    direct = si_sdr(direct_est.double(), ref.double()).clamp(-30, 30).float() / 10
    direct = torch.where(direct_est.detach().abs().sum(-1) <= 1e-5, torch.full_like(direct, -3.0), direct)
    torch.testing.assert_close(ours, direct, atol=4 * EPS32 * 3, rtol=0)
    ours.sum().backward()
    direct.sum().backward()
    peak = float(direct_est.grad.abs().max())
    torch.testing.assert_close(est.grad, direct_est.grad, atol=64 * EPS32 * peak, rtol=0)


def test_signal_term_names_a_nan_estimate():
    est = torch.zeros(2, 1000)
    est[1, 3] = float("nan")
    with pytest.raises(ValueError, match="item 1 contains NaN"):
        signal_term(est, torch.ones(2, 1000))


def _separators():
    """The shipped cpu separator, and a cpu-size one whose every weight is random (maps and queries all matter)."""
    shipped = load_separator(Path(__file__).resolve().parents[1] / "checkpoints" / "separator_cpu.pt")[0]
    rand = new_separator(get_profile("cpu"), 0, query_init_std=1.0)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in rand.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return [shipped, rand.eval()]


@pytest.mark.parametrize("which", [0, 1], ids=["shipped", "random"])
def test_folded_head_gives_the_separators_logits_and_gradients(which):
    model = _separators()[which]
    assert head.foldable(model)
    g = torch.Generator().manual_seed(2)
    features = torch.randn(3, 1, 128, 128, generator=g)
    queries = F.normalize(torch.randn(2, 2, model.cfg.query_dim, generator=g), dim=-1)
    rows = torch.tensor([2, 0])  # a minibatch: mixtures 2 and 0 of the rollout
    with torch.no_grad():
        trunk = model.unet.trunk(features)
        x = head.head_input(model, trunk.clone())
    # the separator's own path, on the minibatch's trunk outputs
    params = [p for p in model.parameters()]
    direct = logits_from_trunk(model, trunk[rows], queries)
    d_direct = torch.autograd.grad(direct.square().mean(), params, allow_unused=True)
    assert torch.equal(head.logits_from_head_input(model, x[rows], queries).detach(), direct.detach())  # same ops
    folded = head.folded_logits(model, x, queries, rows=rows)
    d_folded = torch.autograd.grad(folded.square().mean(), params, allow_unused=True)
    # each logit sums C_in * 9 = 288 products and C = 32 maps in another order: float32 rounding of those sums
    bound = 300 * EPS32 * float(direct.detach().abs().max())
    assert folded.shape == direct.shape == (2, 2, 128, 128)
    torch.testing.assert_close(folded, direct, atol=bound, rtol=0)
    trained = set(model.head_parameter_names())
    for (name, _), a, b in zip(model.named_parameters(), d_folded, d_direct):
        if name in trained:
            torch.testing.assert_close(a, b, atol=300 * EPS32 * float(b.abs().max()) + 1e-12, rtol=0, msg=name)
        else:  # the trunk is frozen input to the head: no gradient reaches it
            assert a is None and b is None


def test_film_heads_are_not_folded():
    film = new_separator(get_profile("smoke"), 0)
    film.cfg = replace(film.cfg, conditioning="film")
    assert not head.foldable(film)


def test_group_reconstruction_is_each_masks_own_masked_istft():
    cpu = get_profile("cpu")
    fe = FrontEnd(cpu.audio)
    g = torch.Generator().manual_seed(3)
    mix = 0.1 * torch.randn(2, LENGTH, generator=g)
    masks = torch.rand(2, 2, 3, cpu.audio.n_freq_warped, cpu.audio.n_frames, generator=g)  # (B, K, G, F, T)
    ours = reconstruct_group(fe, masks, mix)
    pad = cpu.audio.n_fft // 2
    for b in range(2):  # one mask at a time, every step written out (docs/method.md section 1)
        ext = torch.cat([mix[b], mix[b, LENGTH - 1 - pad:LENGTH - 1].flip(-1)])
        spec = fe.stft(ext)  # (n_freq, frames + 1)
        for k in range(2):
            for i in range(3):
                m = fe.unwarp(masks[b, k, i]).clamp(0.0, 1.0)
                m = torch.cat([m, m[:, -1:].expand(-1, spec.shape[-1] - m.shape[-1])], dim=-1)
                expected = fe.istft(apply_mask(m, spec), LENGTH + pad)[:LENGTH]
                torch.testing.assert_close(ours[b, k, i], expected, atol=4 * EPS32 * float(expected.abs().max()), rtol=0)


def test_finite_check_by_sum_still_finds_every_non_finite_sample_and_accepts_an_overflowing_sum():
    loud = torch.full((3, 1000), 3e38)  # finite samples whose float32 sum overflows to inf
    assert validate_audio(loud, "loud") is loud
    for value, counts in ((float("nan"), "1 NaN and 0 inf"), (float("inf"), "0 NaN and 1 inf")):
        x = torch.zeros(3, 1000)
        x[2, 17] = value
        with pytest.raises(AudioInputError, match=f"item 2 contains NaN or infinite values \\({counts}"):
            validate_audio(x, "x")
    x = torch.zeros(3, 1000)
    x[1, 0], x[1, 1] = float("inf"), -float("inf")  # their sum is NaN
    with pytest.raises(AudioInputError, match="item 1 .*0 NaN and 2 inf"):
        validate_audio(x, "x")


def _autograd_surrogate(new_logp, old_logp, adv, clip_eps=0.2):
    """The clipped surrogate as ppo.py's docstring writes it, through autograd: ``exp`` of the log-ratio clamped to
    [-20, 20] with the gradient passed straight through, ``mean(max(-A r, -A clip(r, 1 - eps, 1 + eps)))``."""
    logratio = new_logp - old_logp
    ratio = torch.exp(logratio.detach().clamp(-20, 20) + (logratio - logratio.detach()))
    a = adv.reshape(*adv.shape, 1, 1) if adv.dim() == 2 else adv
    return torch.max(-a * ratio, -a * torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps)).mean(), ratio.detach()


@pytest.mark.parametrize("spread", [0.0, 0.01, 0.3, 30.0], ids=["ratio1", "small", "clipping", "bounded"])
@pytest.mark.parametrize("per_bin", [False, True])
def test_ppo_loss_has_the_autograd_surrogates_value_gradient_and_statistics_bit_for_bit(spread, per_bin):
    g = torch.Generator().manual_seed(4)
    old = torch.randn(5, 4, 33, 17, generator=g)
    start = old + spread * torch.randn(old.shape, generator=g)
    adv = torch.randn(5, 4, 1, 17, generator=g) if per_bin else torch.randn(5, 4, generator=g)
    adv[0, 0] = 0.0  # both branches equal whatever the ratio
    ent, kl = torch.rand(5, 1, 33, 17, generator=g), torch.rand(5, 1, 33, 17, generator=g)
    ours_new, ref_new = start.clone().requires_grad_(), start.clone().requires_grad_()
    loss, stats = ppo_loss(ours_new, old, adv, ent, kl, clip_eps=0.2, ent_coef=0.1, kl_coef=0.01)
    loss.backward()
    pg, ratio = _autograd_surrogate(ref_new, old, adv)
    (pg - 0.1 * ent.mean() + 0.01 * kl.mean()).backward()
    assert stats["pg_loss"] == pg.item() and stats["loss"] == loss.item()
    assert torch.equal(ours_new.grad, ref_new.grad)
    bounded = (start - old).clamp(-20, 20)
    assert stats["approx_kl"] == ((ratio - 1) - bounded).mean().item()
    assert stats["clipfrac"] == ((ratio - 1).abs() > 0.2).float().mean().item()
    assert stats["ratio_mean"] == ratio.mean().item()
    if spread == 0.3:
        assert 0.1 < stats["clipfrac"] < 0.9  # both branches of the max are exercised


def test_ppo_loss_with_an_infinite_log_ratio_is_not_finite_as_before():
    new = torch.zeros(2, 3, 4, 4)
    new[0, 0, 0, 0] = float("inf")
    loss, _ = ppo_loss(new.requires_grad_(), torch.zeros(2, 3, 4, 4), torch.ones(2, 3), torch.zeros(2, 1, 4, 4))
    assert math.isnan(loss.item())  # exp(clamp(inf) + (inf - inf)): the update is skipped (update._step)

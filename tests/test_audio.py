"""Front end against independent oracles: numpy FFT framing, hand-computed warp rows, two-tone IBM."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.signal
import torch

from mars_core.audio import (
    FrontEnd, apply_mask, ideal_binary_mask, ideal_ratio_mask, istft, stft, unwarp, unwarp_source_coords, warp,
    warp_source_coords,
)
from mars_core.config import PROFILE_NAMES, get_profile


@pytest.mark.parametrize("name", PROFILE_NAMES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_stft_istft_reconstruction(name, dtype):
    cfg = get_profile(name).audio
    x = torch.randn(2, cfg.segment_samples, generator=torch.Generator().manual_seed(0), dtype=dtype)
    spec = stft(x, cfg)
    assert spec.shape == (2, cfg.n_freq, cfg.n_frames)
    y = istft(spec, cfg, cfg.segment_samples)
    rel = (torch.linalg.vector_norm(y - x) / torch.linalg.vector_norm(x)).item()
    assert rel < 1e-5


def test_stft_matches_numpy_framing():
    """Frame t is the reflect-padded signal around t * hop times a periodic Hann window."""
    cfg = get_profile("smoke").audio
    rng = np.random.default_rng(1)
    x = rng.standard_normal(cfg.segment_samples)
    spec = stft(torch.from_numpy(x), cfg).numpy()
    pad = np.pad(x, cfg.n_fft // 2, mode="reflect")
    win = scipy.signal.get_window("hann", cfg.n_fft, fftbins=True)
    for t in (0, 1, 17, cfg.n_frames - 1):
        frame = pad[t * cfg.hop_length : t * cfg.hop_length + cfg.n_fft] * win
        np.testing.assert_allclose(spec[:, t], np.fft.rfft(frame), rtol=1e-9, atol=1e-9)


def test_warp_coordinates_hand_values():
    g = warp_source_coords(5)
    # g(y) = (21^((y+1)/2) - 11) / 10 at y = -1, -0.5, 0, 0.5, 1
    expected = [(21 ** ((y + 1) / 2) - 11) / 10 for y in (-1.0, -0.5, 0.0, 0.5, 1.0)]
    np.testing.assert_allclose(g, expected, rtol=0, atol=1e-12)
    assert g[0] == pytest.approx(-1.0) and g[-1] == pytest.approx(1.0)
    assert np.all(np.diff(warp_source_coords(256)) > 0)
    # the inverse warp undoes g: g^-1(g(y)) = y
    y = np.linspace(-1, 1, 7)
    gy = (21 ** ((y + 1) / 2) - 11) / 10
    ginv = 2 * np.log(10 * gy + 11) / math.log(21) - 1
    np.testing.assert_allclose(ginv, y, atol=1e-12)
    np.testing.assert_allclose(unwarp_source_coords(3), [2 * math.log(1) / math.log(21) - 1, 2 * math.log(11) / math.log(21) - 1, 1.0], atol=1e-12)


def test_warp_of_a_row_ramp_is_exact():
    """Bilinear interpolation of a linear ramp is exact: warped row i holds (g(y_i)+1)/2 * (F-1)."""
    n_freq, n_out, frames = 513, 256, 4
    ramp = torch.arange(n_freq, dtype=torch.float64)[:, None].expand(n_freq, frames)
    out = warp(ramp, n_out)[:, 0].numpy()
    y = np.linspace(-1, 1, n_out)
    expected = ((21 ** ((y + 1) / 2) - 11) / 10 + 1) / 2 * (n_freq - 1)
    np.testing.assert_allclose(out, expected, atol=1e-9)
    # and back: linear row j of unwarp(warped ramp) reads warped coordinate g^-1(x_j)
    ramp_w = torch.arange(n_out, dtype=torch.float64)[:, None].expand(n_out, frames)
    back = unwarp(ramp_w, n_freq)[:, 0].numpy()
    x = np.linspace(-1, 1, n_freq)
    np.testing.assert_allclose(back, (2 * np.log(10 * x + 11) / np.log(21) - 1 + 1) / 2 * (n_out - 1), atol=1e-9)


@pytest.mark.parametrize("name", PROFILE_NAMES)
def test_warp_unwarp_round_trip_bound(name):
    """A mask that is smooth in log-frequency survives warp -> unwarp within 2e-3 (max abs).

    Bilinear interpolation errs by at most h^2/8 max|f''| per pass; at 3 oscillations over the
    axis and >= 128 rows that is about 1e-3 for two passes (the smoke grid, 129 -> 128 rows, is the coarsest).
    """
    cfg = get_profile(name).audio
    fe = FrontEnd(cfg)
    x = torch.linspace(-1, 1, cfg.n_freq, dtype=torch.float64)
    logf = 2 * torch.log(10 * x + 11) / math.log(21) - 1  # position on the warped axis
    t = torch.linspace(0, 1, cfg.n_frames, dtype=torch.float64)
    mask = 0.5 + 0.4 * torch.sin(1.5 * math.pi * logf)[:, None] * torch.cos(2 * math.pi * t)[None, :]
    err = (fe.unwarp(fe.warp(mask)) - mask).abs().max().item()
    assert err < 2e-3
    # an arbitrary (non-smooth) image cannot survive a 2x downsampling: the bound is for smooth masks
    noise = torch.rand(cfg.n_freq, cfg.n_frames, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert (fe.unwarp(fe.warp(noise)) - noise).abs().max().item() > 1e-2


def _tone_mixture(cfg, f_a, f_b):
    t = np.arange(cfg.segment_samples) / cfg.sample_rate
    a = 0.5 * np.sin(2 * np.pi * f_a * t)
    b = 0.3 * np.sin(2 * np.pi * f_b * t + 0.3)
    return a, b


def _sdr(est, ref):
    return 10 * np.log10(np.sum(ref**2) / np.sum((ref - est) ** 2))


@pytest.mark.parametrize("domain", ["linear", "warped"])
def test_ibm_two_tone(domain):
    cfg = get_profile("cpu").audio  # 8 kHz, n_fft 512: bin spacing 15.625 Hz
    f_a, f_b = 40 * 15.625, 120 * 15.625  # 625 Hz and 1875 Hz, on bin centres 40 and 120
    a, b = _tone_mixture(cfg, f_a, f_b)
    fe = FrontEnd(cfg)
    sources = torch.from_numpy(np.stack([a, b]))
    mix = sources.sum(0)
    masks = fe.oracle_masks(sources, mix, "ibm", "linear")[:, :, 10:-10]  # ignore edge frames
    # hand oracle: tone A owns bins 39..41, tone B owns bins 119..121, neither owns bin 80
    assert masks[0, 39:42].min() == 1 and masks[0, 119:122].max() == 0
    assert masks[1, 119:122].min() == 1 and masks[1, 39:42].max() == 0
    est = fe.oracle_separate(sources, mix, "ibm", domain).numpy()
    inner = slice(cfg.n_fft, -cfg.n_fft)
    floor = 25 if domain == "linear" else 15  # the warped grid is coarse at 1.9 kHz
    assert _sdr(est[0, inner], a[inner]) > floor
    assert _sdr(est[1, inner], b[inner]) > floor


def test_irm_sums_to_one_for_disjoint_tones_and_handles_silence():
    src = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    mix = torch.tensor([1.0, 2.0, 0.0])
    irm = ideal_ratio_mask(src, mix)
    np.testing.assert_array_equal(irm.numpy(), [[1, 0, 0], [0, 1, 0]])
    assert torch.isfinite(irm).all()
    np.testing.assert_array_equal(ideal_binary_mask(torch.tensor([0.6, 0.5, 0.4]), torch.ones(3)).numpy(), [1, 0, 0])


def test_all_pass_mask_returns_the_mixture_and_zero_mask_silence():
    cfg = get_profile("smoke").audio
    fe = FrontEnd(cfg)
    mix = torch.randn(2, cfg.segment_samples, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    ones = torch.ones(2, cfg.n_freq_warped, cfg.n_frames, dtype=torch.float64)
    np.testing.assert_allclose(fe.reconstruct(ones, mix).numpy(), mix.numpy(), atol=1e-9)
    assert fe.reconstruct(torch.zeros_like(ones), mix).abs().max().item() == 0.0
    # a group of G masks per item broadcasts against the item's mixture
    group = torch.ones(2, 3, cfg.n_freq_warped, cfg.n_frames, dtype=torch.float64)
    out = fe.reconstruct(group, mix.unsqueeze(1))
    assert out.shape == (2, 3, cfg.segment_samples)


def test_apply_mask_keeps_mixture_phase_and_checks_shapes():
    spec = torch.polar(torch.tensor([2.0, 3.0]), torch.tensor([0.5, -1.0]))
    out = apply_mask(torch.tensor([0.5, 1.0]), spec)
    np.testing.assert_allclose(out.abs().numpy(), [1.0, 3.0], atol=1e-6)
    np.testing.assert_allclose(out.angle().numpy(), [0.5, -1.0], atol=1e-6)
    with pytest.raises(ValueError, match="shape"):
        apply_mask(torch.ones(3), spec)


def test_features_shape_and_wrong_length():
    cfg = get_profile("smoke").audio
    fe = FrontEnd(cfg)
    feats = fe.features(torch.zeros(3, cfg.segment_samples))
    assert feats.shape == (3, 1, cfg.n_freq_warped, cfg.n_frames)
    assert torch.allclose(feats, torch.full_like(feats, math.log(1e-10)))  # silence is finite: log(0 + 1e-10)
    with pytest.raises(ValueError, match="samples"):
        fe.check_length(torch.zeros(1, cfg.segment_samples + 1))


def test_too_short_or_stereo_audio_gets_a_clear_error_not_a_padding_error():
    cfg = get_profile("smoke").audio  # n_fft 256: the centred STFT reflects 128 samples at each end
    with pytest.raises(ValueError, match=r"waveform has 100 samples, fewer than 129 \(the centred STFT reflects "
                                         r"n_fft // 2 = 128 samples"):
        stft(torch.zeros(1, 100), cfg)
    with pytest.raises(ValueError, match=r"looks like \(time, channels\) stereo"):
        FrontEnd(cfg).features(torch.zeros(cfg.segment_samples, 2))
    assert stft(torch.zeros(1, 129), cfg).shape == (1, cfg.n_freq, 2)  # the shortest input torch accepts


def test_check_input_is_the_shared_validator_bound_to_the_front_end():
    cfg = get_profile("smoke").audio
    fe = FrontEnd(cfg)
    x = torch.zeros(2, cfg.segment_samples)
    assert fe.check_input(x, sample_rate=cfg.sample_rate, ndim=2) is x
    with pytest.raises(ValueError, match=r"mixture is at 16000 Hz but 8000 Hz is required"):
        fe.check_input(x, sample_rate=16000)
    x[1, 7] = float("inf")
    with pytest.raises(ValueError, match=r"mixture: item 1 contains NaN or infinite values \(0 NaN and 1 inf"):
        fe.check_input(x)
    assert fe.check_input(torch.zeros(1, 1000), exact_length=False).shape == (1, 1000)


@pytest.mark.parametrize("name", PROFILE_NAMES)
def test_reconstruction_has_no_tail_spikes(name):
    """Segments of 2^k - 1 samples leave the last samples under one Hann tail only (squared-window envelope
    down to ~1e-8); a time-varying mask used to blow them up (IRM outputs 150x the signal peak there).
    Oracle: a 440 Hz tone in white noise, separated with its own warped IRM, must stay within twice the
    tone's peak over the last n_fft // 2 samples, like everywhere else; the all-pass mask stays exact."""
    cfg = get_profile(name).audio
    fe = FrontEnd(cfg)
    g = torch.Generator().manual_seed(7)
    t = torch.arange(cfg.segment_samples, dtype=torch.float64) / cfg.sample_rate
    tone = 0.3 * torch.sin(2 * math.pi * 440.0 * t)
    noise = 0.2 * torch.randn(cfg.segment_samples, dtype=torch.float64, generator=g)
    src = torch.stack([tone, noise])
    est = fe.oracle_separate(src, src.sum(0), "irm", "warped")
    tail = cfg.n_fft // 2
    assert est[0, -tail:].abs().max().item() <= 2 * 0.3
    assert est[0, :-tail].abs().max().item() <= 2 * 0.3
    # random masks in [0, 1]: the tail is no louder than twice the mixture's peak
    mix = src.sum(0)
    masks = torch.rand(4, cfg.n_freq_warped, cfg.n_frames, dtype=torch.float64, generator=g)
    out = fe.reconstruct(masks, mix)
    assert out[:, -tail:].abs().max().item() <= 2 * mix.abs().max().item()

"""mars_core.separate.overlap: overlap-add, blocks and separate_waveform.

Oracles: the input itself (an all-pass separator must give it back), hand-made tones, and the linear
cross-fade weights written out."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mars_core.separate import overlap_add, separate_blocks, separate_waveform
from tests.separate_helpers import SEG, SMOKE, constant_separator, tones


@pytest.mark.parametrize("segment", [SEG, 101, 100])
@pytest.mark.parametrize("fraction", [0.3, 1.0, 2.7])
def test_overlap_add_of_an_all_pass_returns_the_input(segment, fraction):
    n = int(round(fraction * segment))
    x = torch.from_numpy(np.random.default_rng(n).uniform(-1, 1, (2, n)).astype(np.float32))
    y = overlap_add(lambda s: s.unsqueeze(1), x, segment, batch_size=3)
    assert y.shape == (1, 2, n)
    # sum_j w_j x / sum_j w_j: a few float32 roundings of values in [-1, 1]
    torch.testing.assert_close(y[0], x, rtol=0, atol=1e-6)


def test_overlap_add_feeds_whole_segments_and_keeps_a_constant():
    seen = []

    def ones(s):
        seen.append(s.shape)
        return torch.ones(s.shape[0], 2, s.shape[1])  # two "queries", each a constant 1 whatever the input

    segment, n = 101, 273  # hop 50: ceil(273 / 50) = 6 segments per channel
    y = overlap_add(ones, torch.zeros(3, n), segment, batch_size=4)
    assert all(s[1] == segment for s in seen) and sum(s[0] for s in seen) == 3 * 6
    torch.testing.assert_close(y, torch.ones(2, 3, n), rtol=0, atol=1e-6)


@pytest.mark.parametrize("n", [1000, SEG, int(2.7 * SEG)])
def test_all_pass_separator_returns_the_waveform(n):
    """At the profile's rate (no resampling) the whole path (gain, segments, STFT, mask 1, iSTFT,
    overlap-add) is the identity up to float32 iSTFT error."""
    wav = tones(n, SMOKE.audio.sample_rate, (300.0, 1234.0))
    out = separate_waveform(constant_separator(40.0), SMOKE, wav, SMOKE.audio.sample_rate, torch.randn(3, 128))
    assert out.shape == (3, n, 2)
    for k in range(3):
        torch.testing.assert_close(out[k], torch.from_numpy(wav), rtol=0, atol=1e-4)
    half = separate_waveform(constant_separator(0.0), SMOKE, wav, SMOKE.audio.sample_rate, torch.randn(1, 128))
    torch.testing.assert_close(half[0], torch.from_numpy(wav) / 2, rtol=0, atol=1e-4)


def test_blocks_cover_the_signal_and_cross_fade_linearly():
    n, block, xf, margin = 1000, 300, 50, 60
    calls = []

    def read(start, stop):
        return np.arange(start, stop, dtype=np.float64)[:, None]

    def window(x):  # the i-th block's estimate is the constant i + 1 (K = 1 query, 1 channel)
        calls.append((x[0, 0], x[-1, 0]))
        return np.full((1, len(x), 1), float(len(calls)))

    parts = list(separate_blocks(read, n, window, block=block, crossfade=xf, margin=margin))
    assert calls == [(0, 359), (240, 659), (540, 959), (840, 999)]  # each block with its margins, clipped
    starts = [p[0] for p in parts]
    assert starts[0] == 0 and all(s + len(x) == t for (s, x, _), t in zip(parts, starts[1:] + [n]))  # contiguous
    mixture = np.concatenate([p[1][:, 0] for p in parts])
    np.testing.assert_array_equal(mixture, np.arange(n))
    out = np.concatenate([p[2][0, :, 0] for p in parts])
    expected = np.array([t // block + 1.0 for t in range(n)])
    for border in (300, 600, 900):  # from the earlier block's value to the later's over [border - 50, border + 50)
        t = np.arange(border - xf, border + xf)
        w = (t - (border - xf) + 0.5) / (2 * xf)
        expected[t] = (1 - w) * (border // block) + w * (border // block + 1)
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-12)


def test_separate_waveform_refuses_integer_samples():
    from mars_core.inputs import AudioInputError

    with pytest.raises(AudioInputError, match="int16"):  # never rescaled silently
        separate_waveform(constant_separator(40.0), SMOKE, np.ones((100, 2), np.int16), 8000, torch.randn(1, 128))

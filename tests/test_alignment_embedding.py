"""The S2 audio augmentation: SNR, gain, shift and silence against their definitions."""

from __future__ import annotations


import pytest
import torch

from mars_core.alignment.config import AlignmentConfig
from mars_core.alignment.embedding import augment_audio
from tests.one_thread import one_thread  # noqa: F401  (autouse: one torch thread for this module)


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

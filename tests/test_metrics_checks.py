"""Tests of mars_core.metrics.checks: integer PCM and channels-last stereo are refused with a clear error."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mars_core import metrics as M
from tests.metrics_signals import T


# ----------------------------------------------------------------------------- integer and stereo input
def test_integer_pcm_is_refused_not_scored():
    """An int16 estimate against a float reference used to score about -93 dB (32768x too loud)."""
    ref = np.sin(2 * np.pi * 440 * np.arange(T) / 8000)[None]
    est = np.round(ref * 32767).astype(np.int16)
    for fn in (M.sdr, M.si_sdr, M.bss_eval):
        with pytest.raises(ValueError, match=r"estimate has dtype int16; .*int16 PCM: divide by 32768"):
            fn(est, ref)
    with pytest.raises(ValueError, match=r"reference has dtype int16"):
        M.si_sdr(torch.from_numpy(ref), torch.from_numpy(est))
    with pytest.raises(ValueError, match=r"estimates has dtype int16"):
        M.evaluate_batch(est, np.stack([ref, ref[:, ::-1]], 1), ref)
    # converted explicitly, the same waveform scores like the float one: -20 log10 of the rounding error
    from mars_core.inputs import pcm_to_float

    v4 = M.sdr(pcm_to_float(est).astype(np.float64), ref)[0]
    expected = 10 * np.log10(np.sum(ref**2) / np.sum((est / 32768 - ref) ** 2))
    assert v4 == pytest.approx(expected, abs=1e-3) and v4 > 40


def test_channels_last_stereo_is_named():
    x = np.zeros((T, 2))
    with pytest.raises(ValueError, match=r"estimate has shape \(\d+, 2\): looks like \(time, channels\) stereo"):
        M.bss_eval(x, x)

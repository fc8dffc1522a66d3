"""Advantages (mars_core.rl.advantages): group normalisation and the EMA baseline against hand values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mars_core.rl.advantages import EMABaseline, group_advantages, loo_advantages


def test_group_advantages_hand_values_and_zero_mean():
    adv, frac = group_advantages(torch.tensor([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0]]))
    s = np.sqrt(2 / 3)  # population std of (1, 2, 3)
    np.testing.assert_allclose(adv[0].numpy(), [-1 / s, 0, 1 / s], rtol=1e-5)
    assert torch.equal(adv[1], torch.zeros(3)) and frac == 0.5
    rng = torch.Generator().manual_seed(0)
    adv, _ = group_advantages(torch.randn(16, 8, generator=rng))
    torch.testing.assert_close(adv.mean(1), torch.zeros(16), atol=1e-6, rtol=0)
    torch.testing.assert_close(adv.std(1, unbiased=False), torch.ones(16), atol=1e-4, rtol=0)
    single, frac1 = group_advantages(torch.tensor([[0.3], [0.7]]))  # groups of one carry no ranking
    assert torch.equal(single, torch.zeros(2, 1)) and frac1 == 1.0


def test_loo_advantages_by_hand():
    # group (1, 2, 6): each reward minus the mean of the two others, i.e. 1 - 4, 2 - 3.5, 6 - 1.5
    adv, frac = loo_advantages(torch.tensor([[1.0, 2.0, 6.0], [4.0, 4.0, 4.0]]))
    np.testing.assert_allclose(adv[0].numpy(), [-3.0, -1.5, 4.5], rtol=0, atol=1e-6)
    assert torch.equal(adv[1], torch.zeros(3)) and frac == 0.5  # equal rewards: no ranking
    with pytest.raises(ValueError, match="group_size >= 2"):
        loo_advantages(torch.ones(3, 1))
    with pytest.raises(ValueError, match="finite"):
        loo_advantages(torch.tensor([[1.0, float("nan")]]))


def test_ema_baseline_paper_reading():
    ema = EMABaseline(decay=0.92)
    adv, _ = ema(torch.tensor([1.0, 3.0]))  # first batch: baseline = its mean 2
    np.testing.assert_allclose(adv.numpy(), [-1, 1], rtol=1e-5)
    assert ema.value == pytest.approx(2.0)
    adv, _ = ema(torch.tensor([4.0, 6.0]))  # b = 2: A = (2, 4) / std 1
    np.testing.assert_allclose(adv.numpy(), [2, 4], rtol=1e-5)
    assert ema.value == pytest.approx(0.92 * 2 + 0.08 * 5)
    equal, frac = ema(torch.tensor([7.0, 7.0]))
    assert torch.equal(equal, torch.zeros(2)) and frac == 1.0


def test_ema_baseline_ignores_non_finite_rewards():
    ema = EMABaseline(decay=0.92)
    adv, frac = ema(torch.tensor([1.0, float("nan"), 3.0, float("inf")]))
    np.testing.assert_allclose(adv.numpy(), [-1, 0, 1, 0], rtol=1e-6)  # the finite ones as in the paper reading
    assert ema.value == pytest.approx(2.0) and ema.nonfinite == 2 and frac == 0.0
    adv, frac = ema(torch.tensor([float("nan"), float("nan")]))
    assert torch.equal(adv, torch.zeros(2)) and frac == 1.0 and ema.value == pytest.approx(2.0)
    adv, _ = ema(torch.tensor([4.0, 6.0]))  # b = 2 still: A = (2, 4) / std 1
    np.testing.assert_allclose(adv.numpy(), [2, 4], rtol=1e-5)
    assert ema.value == pytest.approx(0.92 * 2 + 0.08 * 5) and ema.nonfinite == 4
    restored = EMABaseline()
    restored.load_state_dict(ema.state_dict())
    assert (restored.value, restored.nonfinite) == (ema.value, 4)

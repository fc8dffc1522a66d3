"""Tests of mars_core.metrics.scale_invariant (SI-SDR, SI-SDRi) against fast_bss_eval and closed forms."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mars_core import metrics as M


# ----------------------------------------------------------------------------- SI-SDR
def _orthogonal_pair(rng, shape):
    """Zero-mean ``s`` and ``n`` with ``<s, n> = 0`` exactly (Gram-Schmidt against [1, s])."""
    s = rng.standard_normal(shape)
    s -= s.mean(-1, keepdims=True)
    n = rng.standard_normal(shape)
    n -= n.mean(-1, keepdims=True)
    n -= (n * s).sum(-1, keepdims=True) / (s * s).sum(-1, keepdims=True) * s
    return s, n


def test_si_sdr_closed_form_numpy_and_torch():
    rng = np.random.default_rng(2)
    s, n = _orthogonal_pair(rng, (3, 2, 4000))
    a = np.array([0.5, 1.0, -3.0])[:, None, None]
    want = 10 * np.log10(a[..., 0] ** 2 * (s**2).sum(-1) / (n**2).sum(-1))
    np.testing.assert_allclose(M.si_sdr(a * s + n, s), want, atol=1e-6)
    got = M.si_sdr(torch.from_numpy(a * s + n), torch.from_numpy(s))
    assert isinstance(got, torch.Tensor) and got.shape == (3, 2)
    np.testing.assert_allclose(got.numpy(), want, atol=1e-6)


def test_si_sdr_matches_fast_bss_eval_and_is_scale_invariant():
    from fast_bss_eval.numpy import si_sdr as fbe_si_sdr

    rng = np.random.default_rng(3)
    ref = rng.standard_normal((5, 3000))
    est = 0.7 * ref + rng.standard_normal((5, 3000)) * np.linspace(0.1, 2, 5)[:, None]
    want = fbe_si_sdr(ref[:, None], est[:, None], zero_mean=False)[:, 0]
    np.testing.assert_allclose(M.si_sdr(est, ref, zero_mean=False), want, atol=1e-6)
    np.testing.assert_allclose(M.si_sdr(13.0 * est, ref), M.si_sdr(est, ref), atol=1e-9)
    np.testing.assert_allclose(M.si_sdr(est, 0.01 * ref), M.si_sdr(est, ref), atol=1e-4)


def test_si_sdr_zero_mean_removes_dc_offset():
    rng = np.random.default_rng(4)
    s = rng.standard_normal(2000)
    s -= s.mean()
    est = s + 0.5  # only a DC offset
    assert M.si_sdr(est, s, zero_mean=True) > 100  # offset removed: a perfect estimate
    want = 10 * np.log10((s**2).sum() / (2000 * 0.25))  # alpha = 1, noise = the offset
    assert abs(M.si_sdr(est, s, zero_mean=False) - want) < 1e-6


def test_si_sdri_of_the_mixture_itself_is_zero_and_matches_closed_form():
    rng = np.random.default_rng(5)
    s, i = _orthogonal_pair(rng, (4, 3000))
    mix = s + i
    np.testing.assert_allclose(M.si_sdri(mix, s, mix), 0.0, atol=1e-12)
    np.testing.assert_allclose(M.si_sdri(s + 0.1 * i, s, mix), 20.0, atol=1e-6)  # 20 log10(1/0.1)


def test_si_sdr_silent_inputs_are_finite_and_defined():
    z, x = np.zeros(1000), np.random.default_rng(6).standard_normal(1000)
    assert M.si_sdr(z, z) == 0.0
    assert M.si_sdr(z, x) == 0.0  # silent estimate: meaningless, hence skipped by evaluate_batch
    xc = x - x.mean()
    assert abs(M.si_sdr(x, z) - 10 * np.log10(M.SI_SDR_EPS / ((xc**2).sum() + M.SI_SDR_EPS))) < 1e-9


def test_si_sdr_is_differentiable_and_validates():
    est = torch.randn(2, 500, requires_grad=True)
    M.si_sdr(est, torch.randn(2, 500)).sum().backward()
    assert torch.isfinite(est.grad).all() and est.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="shape mismatch"):
        M.si_sdr(np.ones((2, 10)), np.ones((3, 10)))
    with pytest.raises(ValueError, match="item 1"):
        M.si_sdr(torch.tensor([[1.0, 2.0], [float("nan"), 1.0]]), torch.ones(2, 2))
    with pytest.raises(TypeError):
        M.si_sdr(torch.ones(5), np.ones(5))

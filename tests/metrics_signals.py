"""Shared signals and oracles of the ``mars_core.metrics`` tests: crafted items (target, interferer,
estimate), museval loaded even without its ffmpeg-dependent wrapper, and a two-thread fixture."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import scipy.signal as sps
import torch

SR, T = 8000, 8000  # 1 s at 8 kHz keeps the per-item oracles fast
TOL_DB = 0.01


def _museval_metrics():
    """``museval.metrics``; loaded from its file when the package wrapper cannot import
    (``museval/__init__`` imports musdb -> stempeg, which demands an ffmpeg binary)."""
    try:
        return importlib.import_module("museval.metrics")
    except Exception:  # noqa: BLE001
        spec = importlib.util.find_spec("museval")
        path = Path(list(spec.submodule_search_locations)[0]) / "metrics.py"
        mod_spec = importlib.util.spec_from_file_location("_museval_metrics", path)
        module = importlib.util.module_from_spec(mod_spec)
        mod_spec.loader.exec_module(module)
        return module


def _band_noise(rng, lo, hi, n=T):
    taps = sps.firwin(129, [lo, hi], fs=SR, pass_zero=False)
    return sps.lfilter(taps, 1, rng.standard_normal(n))


def _harmonic(rng, n=T):
    """Three harmonics with a slow amplitude envelope plus a little noise (well conditioned)."""
    t = np.arange(n) / SR
    f0 = rng.uniform(150, 400)
    x = sum(np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi)) / k for k in (1, 2, 3))
    return x * (1.2 + np.sin(2 * np.pi * 1.5 * t)) + 0.05 * rng.standard_normal(n)


def _items(n_items=8):
    """References ``(n, 2, T)`` (target, interferer) and target estimates ``(n, T)``.

    Estimates = gain * target + leak * filtered interferer + white noise at varied levels;
    item 0 has gain 2.5, item 1 a filtered (distorted) target, odd items harmonic targets.
    """
    refs, ests = np.empty((n_items, 2, T)), np.empty((n_items, T))
    leaks = np.linspace(0.02, 1.2, n_items)
    noises = np.linspace(0.3, 0.005, n_items)
    for i in range(n_items):
        rng = np.random.default_rng([7, i])
        target = _harmonic(rng) if i % 2 else _band_noise(rng, 150, 1200)
        interf = _band_noise(rng, 600, 3500)
        gain = 2.5 if i == 0 else 1.0
        shaped = sps.lfilter([1.0, -0.6, 0.2], 1, target) if i == 1 else target
        leak = sps.lfilter([1.0, 0.5], 1, interf)
        refs[i] = target, interf
        ests[i] = gain * shaped + leaks[i] * leak + noises[i] * np.std(target) * rng.standard_normal(T)
    return refs, ests


@pytest.fixture(scope="module")
def items():
    return _items()


@pytest.fixture
def two_threads():
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(old)

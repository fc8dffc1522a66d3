"""Alignment losses against hand computations and NumPy (InfoNCE, symmetric InfoNCE, triplet, consistency)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mars_core.alignment.losses import consistency_loss, symmetric_info_nce, triplet_loss
from mars_core.encoders.contrastive import info_nce_from_logits
from tests.one_thread import one_thread  # noqa: F401  (autouse: one torch thread for this module)


def _np_info_nce(logits: np.ndarray, labels=None) -> float:
    """Row-wise: -log(exp(l_ii) / sum over j in {i} u {other classes} exp(l_ij)), averaged."""
    n = logits.shape[0]
    total = 0.0
    for i in range(n):
        allowed = [j for j in range(n) if j == i or labels is None or labels[j] != labels[i]]
        total += -logits[i, i] + math.log(sum(math.exp(logits[i, j]) for j in allowed))
    return total / n


def test_info_nce_matches_hand_computation():
    logits = np.array([[2.0, 0.5, -1.0], [0.3, 1.0, 0.2], [1.5, -0.5, 0.0]])
    got = info_nce_from_logits(torch.tensor(logits)).item()
    # row 0 by hand: -2 + log(e^2 + e^0.5 + e^-1) etc.
    by_hand = np.mean(
        [
            -2 + math.log(math.exp(2) + math.exp(0.5) + math.exp(-1)),
            -1 + math.log(math.exp(0.3) + math.exp(1) + math.exp(0.2)),
            -0 + math.log(math.exp(1.5) + math.exp(-0.5) + math.exp(0)),
        ]
    )
    assert got == pytest.approx(by_hand, abs=1e-12)
    # class-aware: items 0 and 2 share a class, so 0 is not a negative of 2 and vice versa
    labels = torch.tensor([7, 1, 7])
    got = info_nce_from_logits(torch.tensor(logits), labels).item()
    by_hand = np.mean(
        [
            -2 + math.log(math.exp(2) + math.exp(0.5)),
            -1 + math.log(math.exp(0.3) + math.exp(1) + math.exp(0.2)),
            -0 + math.log(math.exp(-0.5) + math.exp(0)),
        ]
    )
    assert got == pytest.approx(by_hand, abs=1e-12)


def test_info_nce_edge_cases():
    assert info_nce_from_logits(torch.tensor([[3.0]])).item() == 0.0  # no negative: log 1
    assert info_nce_from_logits(torch.randn(4, 4), torch.zeros(4, dtype=torch.long)).item() == pytest.approx(
        0.0, abs=1e-7
    )
    with pytest.raises(ValueError, match="square"):
        info_nce_from_logits(torch.randn(2, 3))
    with pytest.raises(ValueError, match="labels"):
        info_nce_from_logits(torch.randn(3, 3), torch.tensor([0, 1]))


def test_symmetric_info_nce_matches_numpy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(4, 5)), rng.normal(size=(4, 5))
    an, bn = a / np.linalg.norm(a, axis=1, keepdims=True), b / np.linalg.norm(b, axis=1, keepdims=True)
    labels = [0, 1, 0, 2]
    logits = 10.0 * an @ bn.T
    expect = 0.5 * (_np_info_nce(logits, labels) + _np_info_nce(logits.T, labels))
    got = symmetric_info_nce(torch.tensor(a), torch.tensor(b), 10.0, torch.tensor(labels)).item()
    assert got == pytest.approx(expect, abs=1e-10)
    with pytest.raises(ValueError, match="equal shape"):
        symmetric_info_nce(torch.randn(3, 5), torch.randn(2, 5), 1.0)


def test_triplet_loss_hand_values():
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    p = torch.tensor([[3.0, 0.0], [1.0, 1.0]])  # d = 0 and 1 - 1/sqrt(2)
    n = torch.tensor([[[0.0, 1.0], [1.0, 1.0]], [[0.0, -1.0], [0.0, 5.0]]])  # d = 1, 1-1/sqrt2 ; 2, 0
    m, r = 0.5, 1 - 1 / math.sqrt(2)
    hinge = [max(0, 0 - 1 + m), max(0, 0 - r + m), max(0, r - 2 + m), max(0, r - 0 + m)]
    assert triplet_loss(a, p, n, m).item() == pytest.approx(np.mean(hinge), abs=1e-6)
    # (N, D) negatives = one negative each
    assert triplet_loss(a, p, n[:, 0], m).item() == pytest.approx(np.mean(hinge[0::2]), abs=1e-6)
    with pytest.raises(ValueError, match="margin"):
        triplet_loss(a, p, n, -0.1)
    with pytest.raises(ValueError, match="negatives"):
        triplet_loss(a, p, torch.randn(3, 2), 0.1)


def test_consistency_loss_hand_values():
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z_aug = torch.tensor([[1.0, 1.0], [0.0, -3.0]])  # 1 - 1/sqrt2, 1 - (-1) = 2
    assert consistency_loss(z, z_aug).item() == pytest.approx((1 - 1 / math.sqrt(2) + 2) / 2, abs=1e-6)
    assert consistency_loss(z, 5 * z).item() == pytest.approx(0.0, abs=1e-7)

"""mars_core.supervised.loss: weighted BCE, weighted L1 and the mask targets against hand-computed values."""

import math

import pytest
import torch

from mars_core.supervised.loss import bce_weight, mask_targets, weighted_bce, weighted_l1


def test_weight_clamps():
    w = bce_weight(torch.tensor([0.0, math.e - 1, 1e6]))
    assert w.tolist() == pytest.approx([1e-3, 1.0, 10.0])


def test_weighted_bce_by_hand():
    z = torch.tensor([[[0.0, 2.0], [-1.0, 3.0]]])
    m = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    x = torch.tensor([[[math.e - 1, 0.0], [math.e**2 - 1, 1e9]]])  # weights 1, 1e-3, 2, 10
    p = [0.5, 1 / (1 + math.exp(-2)), 1 / (1 + math.exp(1)), 1 / (1 + math.exp(-3))]
    terms = [-1 * math.log(p[0]), -1e-3 * math.log(1 - p[1]), -2 * math.log(1 - p[2]), -10 * math.log(p[3])]
    assert weighted_bce(z, m, x).item() == pytest.approx(sum(terms) / 4, rel=1e-6)
    # stable for huge logits where log(sigmoid) would underflow
    assert torch.isfinite(weighted_bce(torch.full((1, 1, 1), 200.0), torch.zeros(1, 1, 1), torch.ones(1, 1, 1)))


def test_weighted_l1_and_targets():
    mask = torch.tensor([[[0.2, 0.9]]])
    target = torch.tensor([[[0.0, 1.0]]])
    x = torch.tensor([[[math.e - 1, math.e - 1]]])
    assert weighted_l1(mask, target, x).item() == pytest.approx((0.2 + 0.1) / 2)
    s, X = torch.tensor([0.6, 0.4, 0.0]), torch.tensor([1.0, 1.0, 0.0])
    assert mask_targets(s, X, "ibm").tolist() == [1.0, 0.0, 0.0]
    assert mask_targets(s, X, "irm").tolist() == pytest.approx([0.6, 0.4, 0.0])
    with pytest.raises(ValueError, match="shapes differ"):
        weighted_bce(torch.zeros(1, 2, 2), torch.zeros(1, 2, 2), torch.zeros(1, 2, 3))

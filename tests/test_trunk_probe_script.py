"""scripts/trunk_probe.py: which trunk entries its training moves (against the committed weights and block names
written out by hand), determinism, and the per-class placement count (by hand)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mars_core.encoders import mobilenet as M
from tests.repo_files import load_script


@pytest.fixture(scope="module")
def script():
    return load_script("scripts/trunk_probe.py")


@pytest.fixture(scope="module")
def weights():
    return M.load_trunk_weights()


def _data():
    gen = torch.Generator().manual_seed(0)
    return torch.rand(6, 3, 32, 32, generator=gen), torch.tensor([0, 1, 2, 0, 1, 2])


def _trunk_values(trunk) -> dict[str, torch.Tensor]:
    """Keras name -> the trunk's current value (parameters and buffers alike)."""
    return {name: getattr(trunk, M._buffer_name(name)).detach() for name in trunk.shapes}


def test_two_trained_blocks_move_only_blocks_13_and_14(script, weights):
    """K = 2: every kernel, BatchNorm gamma and beta of block_13 and block_14 (the trunk ends at block_14) moves; their
    moving statistics and every entry of the blocks below stay bit-equal to the committed weights."""
    x, y = _data()
    trunk, head, losses = script.train_top(weights, x, y, 3, 2, steps=2, lr=1e-2)
    assert len(losses) == 2 and all(np.isfinite(losses))
    moved, kept = [], []
    for name, value in _trunk_values(trunk).items():
        top = name.startswith(("block_13_", "block_14_"))
        if top and "moving_" not in name:
            moved.append(name)
            assert not torch.equal(value, weights[name]), f"{name} did not train"
        else:
            kept.append(name)
            assert torch.equal(value, weights[name].float()), f"{name} moved"
    # block_13 and block_14 each: expand, depthwise and project convolutions, each with a BatchNorm (gamma, beta)
    assert len(moved) == 2 * 3 * 3 and len(kept) > len(moved)
    assert not trunk.training and not head.training


def test_the_frozen_trunk_trains_the_classifier_alone(script, weights):
    x, y = _data()
    _, one_step, _ = script.train_top(weights, x, y, 3, 0, steps=1, lr=1e-2, seed=0)
    trunk, head, _ = script.train_top(weights, x, y, 3, 0, steps=3, lr=1e-2, seed=0)
    assert list(trunk.parameters()) == []
    for name, value in _trunk_values(trunk).items():
        assert torch.equal(value, weights[name].float()), name
    assert not torch.equal(head[1].weight, one_step[1].weight)  # the classifier kept training after its first step


def test_a_seed_gives_the_same_training(script, weights):
    x, y = _data()
    a = script.train_top(weights, x, y, 3, 1, steps=1, lr=1e-2, seed=3)
    b = script.train_top(weights, x, y, 3, 1, steps=1, lr=1e-2, seed=3)
    c = script.train_top(weights, x, y, 3, 1, steps=1, lr=1e-2, seed=4)
    assert a[2] == b[2] and a[2] != c[2]
    assert torch.equal(a[1][1].weight, b[1][1].weight)


def test_training_refuses_bad_input(script, weights):
    x, y = _data()
    with pytest.raises(ValueError, match="steps"):
        script.train_top(weights, x, y, 3, 1, steps=0, lr=1e-2)
    with pytest.raises(ValueError, match="expected x"):
        script.train_top(weights, x[:, :1], y, 3, 1, steps=1, lr=1e-2)
    with pytest.raises(ValueError, match="trainable_blocks"):
        script.train_top(weights, x, y, 3, 16, steps=1, lr=1e-2)


def test_placement_counts_each_class_by_hand(script):
    classes = ["cat", "dog", "drums"]
    truth = np.array([1, 1, 1, 1, 2, 2, 2, 2, 0])
    pred = np.array([1, 0, 1, 2, 1, 1, 0, 2, 0])  # dog: 2 of 4 right; drums: 1 of 4; cat: 1 of 1
    assert script.placement(pred, truth, classes, ["dog", "drums", "cat"]) == {"dog": (2, 4), "drums": (1, 4),
                                                                               "cat": (1, 1)}
    with pytest.raises(ValueError, match="unknown class"):
        script.placement(pred, truth, classes, ["violin"])

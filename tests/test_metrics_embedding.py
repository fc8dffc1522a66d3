"""Tests of mars_core.metrics.embedding (semantic and contamination scores) against hand-computed cosines."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mars_core import metrics as M


# ----------------------------------------------------------------------------- embedding scores
def test_semantic_score_by_hand():
    est = np.array([[3.0, 4.0], [1.0, 0.0]])
    tgt = np.array([[4.0, 3.0], [0.0, 5.0]])
    np.testing.assert_allclose(M.semantic_score(est, tgt), [96.0, 0.0], atol=1e-12)  # 24/25 = 0.96
    np.testing.assert_allclose(M.semantic_score(est, np.array([1.0, 1.0])), [700 / (5 * np.sqrt(2)), 100 / np.sqrt(2)])
    got = M.semantic_score(torch.tensor(est), torch.tensor(tgt))
    assert isinstance(got, torch.Tensor) and torch.allclose(got, torch.tensor([96.0, 0.0], dtype=got.dtype))


def test_contamination_score_by_hand():
    est = np.array([[1.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    tgt = np.array([[2.0, 0.0, 0.0], [0.0, 3.0, 4.0]])
    itf = np.array([[0.0, 0.0, 2.0], [0.0, 4.0, 3.0]])
    got = M.contamination_score(est, tgt, itf)
    np.testing.assert_allclose(got["contamination"], [0.0, 80.0], atol=1e-12)
    np.testing.assert_allclose(got["margin"], [1 / np.sqrt(2), 0.6 - 0.8], atol=1e-12)


def test_embedding_scores_reject_zero_rows_and_size_mismatch():
    with pytest.raises(ValueError, match="row 1 has zero norm"):
        M.semantic_score(np.array([[1.0, 0.0], [0.0, 0.0]]), np.ones((2, 2)))
    with pytest.raises(ValueError, match="sizes differ"):
        M.contamination_score(np.ones((2, 3)), np.ones((2, 3)), np.ones((2, 4)))

"""mars_core.query_mixup: Query-Mixup weights and sums, the omni query and a query on data without images,
all by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mars_core.queries import ModalityEmbeddings
from mars_core.query_mixup import ModalityUnavailableError, compose, mixup_weights, omni_query, query_mixup


def test_mixup_weights_are_uniform_then_normalised():
    w = mixup_weights(np.random.default_rng(0), 20000)
    raw = np.random.default_rng(0).uniform(0, 1, size=(20000, 3))
    np.testing.assert_allclose(w, raw / raw.sum(1, keepdims=True))
    np.testing.assert_allclose(w.sum(1), 1.0)
    assert np.all(w >= 0) and abs(w.mean() - 1 / 3) < 0.005


def test_query_mixup_by_hand():
    e_v, e_t, e_a = torch.tensor([[3.0, 4.0]]), torch.tensor([[0.0, 2.0]]), torch.tensor([[-1.0, 0.0]])
    q = query_mixup(e_v, e_t, e_a, np.array([[0.5, 0.25, 0.25]]))
    # 0.5 (0.6, 0.8) + 0.25 (0, 1) + 0.25 (-1, 0)
    torch.testing.assert_close(q, torch.tensor([[0.05, 0.65]]))
    with pytest.raises(ValueError, match=r"weights must be \(1, 3\)"):
        query_mixup(e_v, e_t, e_a, np.ones((1, 2)))


def test_omni_query_by_hand():
    e_v, e_t, e_a = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 0.0]])
    # (2 (1, 0) + 2 (0, 1) + (1, 0)) / 5 = (0.6, 0.4) -> unit
    torch.testing.assert_close(omni_query(e_v, e_t, e_a), torch.tensor([[0.6, 0.4]]) / np.hypot(0.6, 0.4))


def test_declared_missing_image_by_hand():
    """Data that records 'no image': omni and Query-Mixup use text and audio, the image query is refused."""
    e_t, e_a = torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 0.0]])
    emb = ModalityEmbeddings({"text": e_t, "audio": e_a}, {"image": "BUILD: no images"})
    # omni: (2 (0, 1) + (1, 0)) / 3 -> (1, 2) / sqrt(5)
    torch.testing.assert_close(compose(emb, "omni"), torch.tensor([[1.0, 2.0]]) / np.sqrt(5.0))
    # mixup weights (0.5, 0.3, 0.2): the image's 0.5 is dropped, (0.3, 0.2) -> (0.6, 0.4)
    torch.testing.assert_close(compose(emb, "mixup", np.array([[0.5, 0.3, 0.2]])), torch.tensor([[0.4, 0.6]]))
    with pytest.raises(ModalityUnavailableError, match=r"the image query is unavailable on this data: no image "
                                                       r"\(BUILD: no images\); ask for a text, audio, omni query"):
        compose(emb, "image")
    # the same embeddings without the record: still the caller's mistake
    with pytest.raises(ValueError, match=r"the omni query needs the image, text, audio embedding\(s\); missing: image"):
        compose(dict(emb), "omni")

"""The target anchor z*: MLBP against a NumPy re-derivation of its formula, missing
modalities, mean/max pooling against hand values, config validation (training: test_anchor_fit.py).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mars_core.alignment.anchor import AnchorConfig, MLBPAnchor, fuse_anchor
from tests.one_thread import one_thread  # noqa: F401  (autouse: one torch thread for this module)


def _np_mlbp(m: MLBPAnchor, **inputs) -> np.ndarray:
    """normalize(mean_m n(e_m) + W_o prod_m tanh(U_m n(e_m)) + b) in float64 NumPy."""
    prod, units = 1.0, []
    for name, e in inputs.items():
        e = e.double().numpy()
        e = e / np.linalg.norm(e, axis=-1, keepdims=True)
        units.append(e)
        prod = prod * np.tanh(e @ m.factors[name].weight.detach().double().numpy().T)
    out = np.mean(units, axis=0) + prod @ m.out.weight.detach().double().numpy().T + m.out.bias.detach().double().numpy()
    return out / np.linalg.norm(out, axis=-1, keepdims=True)


def _randomize_output(m: MLBPAnchor) -> MLBPAnchor:
    """A trained-looking MLBP: W_o and b away from their zero init, so the bilinear term counts."""
    with torch.no_grad():
        m.out.weight.normal_(0.0, 1.0)
        m.out.bias.normal_(0.0, 0.5)
    return m


def test_untrained_mlbp_is_the_mean_anchor():
    torch.manual_seed(2)
    m = MLBPAnchor(dim=6, rank=5)
    e_a, e_t, e_v = torch.randn(4, 6), torch.randn(4, 6) * 3, torch.randn(4, 6)
    torch.testing.assert_close(m(e_a, e_t, e_v), fuse_anchor("mean", e_a, e_t, e_v))
    torch.testing.assert_close(m(e_t=e_t, e_v=e_v), fuse_anchor("mean", None, e_t, e_v))


# ----------------------------------------------------------------------------- MLBP
def test_mlbp_matches_its_formula_and_is_unit_norm():
    torch.manual_seed(0)
    m = _randomize_output(MLBPAnchor(dim=6, rank=5))
    e_a, e_t, e_v = torch.randn(4, 6), torch.randn(4, 6) * 3, torch.randn(4, 6)
    z = m(e_a, e_t, e_v)
    assert z.shape == (4, 6)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(4))
    np.testing.assert_allclose(z.detach().numpy(), _np_mlbp(m, audio=e_a, text=e_t, vision=e_v), atol=1e-6)
    z1 = m(e_a[0], e_t[0], e_v[0])  # (D,) in, (D,) out
    assert z1.shape == (6,)
    torch.testing.assert_close(z1, z[0])


def test_mlbp_missing_modality_drops_its_factor():
    torch.manual_seed(1)
    m = _randomize_output(MLBPAnchor(dim=5, rank=7))
    e_a, e_t, e_v = torch.randn(3, 5), torch.randn(3, 5), torch.randn(3, 5)
    np.testing.assert_allclose(m(e_a, e_t).detach().numpy(), _np_mlbp(m, audio=e_a, text=e_t), atol=1e-6)
    np.testing.assert_allclose(m(e_t=e_t).detach().numpy(), _np_mlbp(m, text=e_t), atol=1e-6)
    # per-row dropout through keep masks equals calling without that modality
    keep = {
        "audio": torch.tensor([True, True, False]),
        "text": torch.ones(3, dtype=torch.bool),
        "vision": torch.tensor([False, True, True]),
    }
    z = m.fuse({"audio": e_a, "text": e_t, "vision": e_v}, keep)
    torch.testing.assert_close(z[0], m(e_a[0], e_t[0]))
    torch.testing.assert_close(z[1], m(e_a[1], e_t[1], e_v[1]))
    torch.testing.assert_close(z[2], m(e_t=e_t[2], e_v=e_v[2]))
    with pytest.raises(ValueError, match="at least one"):
        m()
    with pytest.raises(ValueError, match="size 4, expected 5"):
        m(torch.randn(2, 4))


# ----------------------------------------------------------------------------- mean / max
def test_mean_and_max_against_hand_values():
    e_a, e_t, e_v = torch.tensor([3.0, 0.0]), torch.tensor([0.0, 2.0]), torch.tensor([-1.0, 0.0])
    r = 1 / math.sqrt(2)
    torch.testing.assert_close(fuse_anchor("mean", e_a, e_t), torch.tensor([r, r]))
    torch.testing.assert_close(fuse_anchor("max", e_a, e_t), torch.tensor([r, r]))
    # (1,0), (0,1), (-1,0): mean (0, 1/3) -> (0, 1); max (1, 1) -> (r, r)
    torch.testing.assert_close(fuse_anchor("mean", e_a, e_t, e_v), torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(fuse_anchor("max", e_a, e_t, e_v), torch.tensor([r, r]))
    torch.testing.assert_close(fuse_anchor("max", e_v=torch.tensor([[0.0, -4.0]])), torch.tensor([[0.0, -1.0]]))
    assert torch.equal(fuse_anchor("mean", e_a, e_v), torch.zeros(2))  # opposite: documented zero vector


def test_fuse_anchor_errors():
    x = torch.randn(2, 4)
    with pytest.raises(ValueError, match="unknown anchor kind"):
        fuse_anchor("median", x)
    with pytest.raises(ValueError, match="at least one"):
        fuse_anchor("mean")
    with pytest.raises(ValueError, match="share one shape"):
        fuse_anchor("mean", x, torch.randn(3, 4))
    with pytest.raises(ValueError, match="finite"):
        fuse_anchor("max", torch.tensor([[float("nan"), 1.0]]))
    with pytest.raises(ValueError, match="trained MLBPAnchor"):
        fuse_anchor("mlbp", x)
    m = MLBPAnchor(4, 3)
    torch.testing.assert_close(fuse_anchor("mlbp", x, mlbp=m), m(x))
    torch.testing.assert_close(fuse_anchor("mean", x, mlbp=m), F.normalize(x, dim=1))  # mlbp ignored


def test_anchor_config_validation():
    assert AnchorConfig.for_profile("smoke").steps < AnchorConfig().steps
    for bad in (dict(rank=0), dict(batch_size=1), dict(modality_dropout=1.0), dict(temperature=0), dict(margin=-1)):
        with pytest.raises(ValueError):
            AnchorConfig(**bad)

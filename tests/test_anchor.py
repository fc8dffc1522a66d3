"""The target anchor z*: MLBP against a NumPy re-derivation of its formula, missing
modalities, mean/max pooling against hand values, the contrastive loss by hand, and
training that widens the target-vs-mixture gap (synthetic embeddings and the fake benchmark).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mars_core.data.mixing import MixtureDataset
from mars_core.alignment.anchor import (
    AnchorConfig,
    MLBPAnchor,
    anchor_gap,
    anchor_loss,
    anchor_table,
    fit_mlbp,
    fuse_anchor,
    load_mlbp,
    modality_keep_masks,
    save_mlbp,
    train_mlbp,
)
from mars_core.alignment.embedding import ItemEmbeddings, embed_items
from tests.test_alignment import SpectralToyEncoder


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: on 2 shared cores, thread fan-out costs more than it saves."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


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


def test_modality_keep_masks_keep_at_least_one():
    keep = modality_keep_masks(500, 0.6, torch.Generator().manual_seed(0))
    stacked = torch.stack(list(keep.values()), dim=1)
    assert stacked.any(dim=1).all()
    assert 0.3 < 1 - stacked.float().mean() < 0.6  # about p_drop, a bit less after revival
    assert all(v.all() for v in modality_keep_masks(10, 0.0, torch.Generator()).values())


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


# ----------------------------------------------------------------------------- loss
def test_anchor_loss_by_hand():
    r = 1 / math.sqrt(2)
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    target = torch.tensor([[1.0, 0.0], [r, r]])
    mixture = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    loss, parts = anchor_loss(z, target, mixture, None, temperature=0.5, margin=0.8, margin_weight=2.0)
    # logits cos/0.5 = [[2, 2r], [0, 2r]]; gaps 1 and r; hinge (0 + 0.8 - r) / 2
    nce = (-2 + math.log(math.exp(2) + math.exp(2 * r)) - 2 * r + math.log(1 + math.exp(2 * r))) / 2
    hinge = (0.8 - r) / 2
    assert parts["nce"] == pytest.approx(nce, abs=1e-6) and parts["margin"] == pytest.approx(hinge, abs=1e-6)
    assert loss.item() == pytest.approx(nce + 2 * hinge, abs=1e-6)
    # same class: the other target is no negative, so the InfoNCE vanishes
    _, parts = anchor_loss(z, target, mixture, torch.tensor([3, 3]), temperature=0.5, margin=0.8)
    assert parts["nce"] == pytest.approx(0.0, abs=1e-7)
    torch.testing.assert_close(anchor_gap(z, target, mixture), torch.tensor([1.0, r]))
    with pytest.raises(ValueError, match="equal"):
        anchor_loss(z, target[:1], mixture, None, temperature=0.5, margin=0.1)


# ----------------------------------------------------------------------------- training
def _synthetic(n: int, seed: int, dim: int = 16, n_classes: int = 6) -> ItemEmbeddings:
    """Class prototypes; audio clips near them; text/image = rotated prototypes; mixture = target + interferer."""
    g = torch.Generator().manual_seed(1234)  # shared world: prototypes and rotations
    protos = F.normalize(torch.randn(n_classes, dim, generator=g), dim=1)
    rot_t, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g))
    rot_v, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g))
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(n_classes, (n,), generator=g)
    other = (y + torch.randint(1, n_classes, (n,), generator=g)) % n_classes
    clip = lambda c: F.normalize(protos[c] + 0.3 * torch.randn(len(c), dim, generator=g), dim=1)  # noqa: E731
    target, interferer = clip(y), clip(other)
    text = F.normalize(protos[y] @ rot_t.T + 0.1 * torch.randn(n, dim, generator=g), dim=1)
    image = F.normalize(protos[y] @ rot_v.T + 0.1 * torch.randn(n, dim, generator=g), dim=1)
    mixture = F.normalize(target + interferer, dim=1)
    names = [f"c{int(c)}" for c in y]
    return ItemEmbeddings(target, mixture, interferer, clip(y), text, image, y, names, names)


def test_training_widens_the_gap_for_every_modality_subset():
    train, test = _synthetic(256, seed=1), _synthetic(128, seed=2)
    torch.manual_seed(0)
    m = MLBPAnchor(16, rank=48)
    before = anchor_table(test, m).set_index(["kind", "modalities"])["gap"]
    hist = train_mlbp(m, train, AnchorConfig(rank=48, steps=200, batch_size=32, lr=3e-3, margin=0.2), val=test)
    after = anchor_table(test, m).set_index(["kind", "modalities"])["gap"]
    assert hist["val_gap"][-1] > hist["val_gap"][0] + 0.1
    mlbp_after = after.loc["mlbp"]
    assert (mlbp_after > before.loc["mlbp"] + 0.05).all(), (before.loc["mlbp"], mlbp_after)
    assert (mlbp_after > 0.1).all()  # modality dropout: each subset alone gives a useful anchor
    assert np.mean(hist["loss"][-20:]) < np.mean(hist["loss"][:20])


def test_fit_mlbp_on_the_fake_benchmark(fake_build, tmp_path):
    enc = SpectralToyEncoder()
    train = MixtureDataset("train", "smoke", build_dir=fake_build, n_items=64)
    test = MixtureDataset("test", "smoke", build_dir=fake_build)
    cfg = AnchorConfig.for_profile("smoke", rank=32, steps=120)
    torch.manual_seed(cfg.seed)
    untrained = MLBPAnchor(enc.embed_dim, cfg.rank)  # fit_mlbp draws the same init
    mlbp, hist = fit_mlbp(enc, train, cfg, val_items=test)
    emb = embed_items(enc, test, test.sr)

    def gap(m):
        with torch.no_grad():
            z = fuse_anchor("mlbp", emb.query_audio, emb.text, emb.image, mlbp=m)
        return float(anchor_gap(z, emb.target, emb.mixture).mean())

    assert gap(mlbp) > gap(untrained) + 0.02
    assert hist["val_gap"][0] == pytest.approx(gap(untrained), abs=1e-5)
    save_mlbp(tmp_path / "anchor.pt", mlbp, cfg)
    again = load_mlbp(tmp_path / "anchor.pt")
    torch.testing.assert_close(again(emb.query_audio, emb.text), mlbp(emb.query_audio, emb.text))
    with pytest.raises(ValueError, match="sample_rate"):
        fit_mlbp(enc, [train[0], train[1]], cfg)


def test_anchor_config_validation():
    assert AnchorConfig.for_profile("smoke").steps < AnchorConfig().steps
    for bad in (dict(rank=0), dict(batch_size=1), dict(modality_dropout=1.0), dict(temperature=0), dict(margin=-1)):
        with pytest.raises(ValueError):
            AnchorConfig(**bad)

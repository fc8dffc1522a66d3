"""Training the anchor z*: the contrastive loss by hand, modality dropout, and training that
widens the target-vs-mixture gap (synthetic embeddings and the fake benchmark).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mars_core.alignment.anchor import (AnchorConfig, MLBPAnchor, anchor_gap, anchor_table, fuse_anchor, load_mlbp,
                                        save_mlbp)
from mars_core.alignment.anchor_fit import anchor_loss, fit_mlbp, modality_keep_masks, train_mlbp
from mars_core.alignment.embedding import ItemEmbeddings, embed_items
from mars_core.data.mixing import MixtureDataset
from tests.alignment_toys import SpectralToyEncoder
from tests.one_thread import one_thread  # noqa: F401  (autouse: one torch thread for this module)


def test_modality_keep_masks_keep_at_least_one():
    keep = modality_keep_masks(500, 0.6, torch.Generator().manual_seed(0))
    stacked = torch.stack(list(keep.values()), dim=1)
    assert stacked.any(dim=1).all()
    assert 0.3 < 1 - stacked.float().mean() < 0.6  # about p_drop, a bit less after revival
    assert all(v.all() for v in modality_keep_masks(10, 0.0, torch.Generator()).values())


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

"""Batches and embeddings of mixture items: what every stage, measurement and the anchor read.

* :class:`AlignmentBatch` / :func:`make_batch`: ``MixtureDataset`` items stacked for one step;
* :class:`ItemEmbeddings` / :func:`embed_items`: target, mixture, interferer and query
  embeddings of items (no gradient), for measurements and anchor training;
* :func:`augment_audio`: the S2 consistency augmentation (gain, shift, noise).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ..encoders.base import TriModalEncoder
from .config import AlignmentConfig


def embed_waveforms(
    encoder: TriModalEncoder, waves: torch.Tensor | Sequence, sample_rate: int, grad: Any = False, batch_size: int = 64
) -> torch.Tensor:
    """``encoder.embed_audio`` with explicit resampling to its native rate.

    Shape:
        waves: ``(N, T)`` at ``sample_rate``; returns ``(N, D)`` unit-norm float32.
    """
    return encoder.embed_audio(waves, sample_rate, grad=grad, resample=True, batch_size=batch_size)


@dataclass
class AlignmentBatch:
    """What one step of any stage needs, from ``MixtureDataset`` items."""

    target: torch.Tensor
    """``(B, T)`` clean target source (as mixed: with its gain)."""
    query_audio: torch.Tensor
    """``(B, T)`` another clip of the target class."""
    mixture: torch.Tensor
    """``(B, T)`` the mixture that contains the target."""
    interferer: torch.Tensor
    """``(B, T)`` the interferer source."""
    text: list
    """``B`` prompts of the target classes."""
    images: list | None
    """``B`` uint8 ``(H, W, 3)`` images of the target classes (None if not loaded)."""
    labels: torch.Tensor
    """``(B,)`` target class labels (classes.csv)."""
    keys: list | None = None
    """``B`` item identities (e.g. ``"train:17"``) for the trunk-feature cache, or None."""

    def __len__(self) -> int:
        return len(self.text)


def make_batch(items: Sequence[Mapping[str, Any]], keys: Sequence[str] | None = None) -> AlignmentBatch:
    """Stack ``MixtureDataset`` items into an :class:`AlignmentBatch` (``keys``: their identities)."""
    if len(items) == 0:
        raise ValueError("make_batch: no items")
    if keys is not None and len(keys) != len(items):
        raise ValueError(f"make_batch: {len(keys)} keys for {len(items)} items")
    stack = lambda key, row=None: torch.from_numpy(  # noqa: E731
        np.stack([np.asarray(it[key] if row is None else it[key][row], dtype=np.float32) for it in items])
    )
    images = [it["query_image"] for it in items]
    return AlignmentBatch(
        target=stack("sources", 0),
        query_audio=stack("query_audio"),
        mixture=stack("mixture"),
        interferer=stack("sources", 1),
        text=[it["query_text"] for it in items],
        images=None if any(im is None for im in images) else images,
        labels=torch.tensor([int(it["labels"][0]) for it in items], dtype=torch.long),
        keys=None if keys is None else list(keys),
    )


@dataclass
class ItemEmbeddings:
    """Embeddings of mixture items (no gradient), for measurements and anchor training."""

    target: torch.Tensor
    """``(N, D)`` phi_a(clean target)."""
    mixture: torch.Tensor
    """``(N, D)`` phi_a(mixture)."""
    interferer: torch.Tensor
    """``(N, D)`` phi_a(interferer)."""
    query_audio: torch.Tensor
    """``(N, D)`` phi_a(another clip of the target class): the anchor's audio input."""
    text: torch.Tensor
    """``(N, D)`` phi_t(query prompt)."""
    image: torch.Tensor | None
    """``(N, D)`` phi_v(query image), or None."""
    labels: torch.Tensor
    """``(N,)`` target labels."""
    classes: list = field(default_factory=list)
    """Target class names."""
    families: list = field(default_factory=list)
    """Target families."""

    def __len__(self) -> int:
        return self.target.shape[0]

    def subset(self, idx: torch.Tensor) -> "ItemEmbeddings":
        """Rows ``idx`` (a 1-D index tensor)."""
        pick = lambda x: None if x is None else x[idx.to(x.device)]  # noqa: E731
        ids = idx.tolist()
        return ItemEmbeddings(
            pick(self.target),
            pick(self.mixture),
            pick(self.interferer),
            pick(self.query_audio),
            pick(self.text),
            pick(self.image),
            pick(self.labels),
            [self.classes[i] for i in ids],
            [self.families[i] for i in ids],
        )


def take_items(items: Any, n_items: int | None) -> list:
    """The first ``n_items`` items (all if None) as a list; raises ValueError if there are none."""
    n = len(items) if n_items is None else min(int(n_items), len(items))
    if n < 1:
        raise ValueError("no items to embed")
    return [items[i] for i in range(n)]


@torch.no_grad()
def embed_items(
    encoder: TriModalEncoder, items: Any, sample_rate: int, n_items: int | None = None, batch_size: int = 64
) -> ItemEmbeddings:
    """Embed target, mixture, interferer, query audio/text/image of mixture items.

    Args:
        items: a ``MixtureDataset`` or a list of its items (the first ``n_items`` are used).
        sample_rate: rate of the items' waveforms.
    """
    items = take_items(items, n_items)
    b = make_batch(items)
    with encoder.eval_mode():
        waves = torch.cat([b.target, b.mixture, b.interferer, b.query_audio])
        a = embed_waveforms(encoder, waves, sample_rate, False, batch_size).split(len(b))
        text = encoder.embed_text(b.text, batch_size=batch_size)
        image = encoder.embed_image(b.images, batch_size=batch_size) if b.images is not None else None
    return ItemEmbeddings(
        a[0],
        a[1],
        a[2],
        a[3],
        text,
        image,
        b.labels.to(text.device),
        [it["classes"][0] for it in items],
        [it["family"] for it in items],
    )


def augment_audio(wave: torch.Tensor, generator: torch.Generator, cfg: AlignmentConfig) -> torch.Tensor:
    """Random gain, circular shift and white noise at a random SNR (per row).

    ``y = roll(g x, s) + sigma n`` with ``20 log10 g ~ U(-G, G)``, ``|s| <= max_shift T``,
    ``sigma^2 = mean(y_clean^2) / 10^(SNR/10)``, ``SNR ~ U(low, high)``. A silent row stays silent.

    Shape:
        wave: ``(B, T)``; returns ``(B, T)``.
    """
    if wave.ndim != 2:
        raise ValueError(f"augment_audio expects (B, T), got {tuple(wave.shape)}")
    n, t = wave.shape
    u = lambda lo, hi: lo + (hi - lo) * torch.rand(n, generator=generator)  # noqa: E731
    gain = 10 ** (u(-cfg.aug_gain_db, cfg.aug_gain_db) / 20)
    max_shift = int(cfg.aug_max_shift * t)
    shifts = (
        torch.randint(-max_shift, max_shift + 1, (n,), generator=generator)
        if max_shift > 0
        else torch.zeros(n, dtype=torch.long)
    )
    y = torch.stack([torch.roll(w * g, int(s)) for w, g, s in zip(wave.float(), gain, shifts)])
    snr = u(*cfg.aug_snr_db)
    sigma = (y.pow(2).mean(dim=1) / 10 ** (snr / 10)).sqrt()
    return y + sigma[:, None] * torch.randn(n, t, generator=generator)

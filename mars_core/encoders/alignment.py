"""Progressive alignment of the reward encoder (docs/method.md sections 5, 7 and 8).

MARS-Sep rewards a separated waveform ``y^`` with ``R = cos(phi_a(y^), z*)``. With an
off-the-shelf encoder the reward barely separates a clean target from the mixture that
contains it (the paper measures a gap of 0.0035), which invites reward hacking. Before
RL, the encoder's **projection heads** (never the backbone) are fine-tuned in three
stages, each starting from the previous stage's best validation checkpoint and replaying
part of the earlier stages' objectives:

* ``s1_audio_text``   symmetric InfoNCE, audio clip <-> its class prompt (audio + text heads);
* ``s2_audio_audio``  InfoNCE between two clips of one class, a triplet loss (anchor: a second
  clip of the class; positive: the target) whose negatives are the mixture containing the
  target and a clip of another (often same-family) class,
  and a consistency loss between a clip and its augmentation (audio head);
* ``s3_audio_visual`` symmetric InfoNCE audio <-> image, plus a triplet loss anchored on the
  image (positive: the clean target audio; negatives: the mixture and the interferer)
  (audio + vision heads).

The module only uses the :class:`~mars_core.encoders.base.TriModalEncoder` interface
(``embed_* (grad="heads")`` and ``freeze_backbone``), so it runs unchanged on MiniBind
(offline) and ImageBind-Huge (GPU). Sections: losses; config; batches and embeddings;
stage objectives; the stage runner; measurements.

Project decisions (documented in :class:`AlignmentConfig`): the encoder stays in eval
mode (no dropout / drop-path, frozen normalisation statistics); the InfoNCE temperatures
are owned here (one learnable logit scale per modality pair), because the encoders'
own logit scales act before the L2 normalisation of the interface and receive no gradient.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..checkpoints import load_checkpoint, save_checkpoint
from ..progress import CsvLog, Progress, default_every, last_row
from ..seeding import item_rng
from .base import TriModalEncoder, as_waveform_list
from .contrastive import info_nce, info_nce_from_logits  # noqa: F401  (re-exported: the stage losses use them)

STAGES = ("s1_audio_text", "s2_audio_audio", "s3_audio_visual")
"""The three alignment stages, in training order."""
STAGE_MODALITIES = {
    "s1_audio_text": ("audio", "text"),
    "s2_audio_audio": ("audio",),
    "s3_audio_visual": ("audio", "vision"),
}
"""Heads each stage trains (everything else stays bit-identical during the stage)."""
PAIRS = ("audio_text", "audio_audio", "audio_image")
"""Modality pairs with their own learnable InfoNCE logit scale."""


# =========================================================================== losses
def _check_pair(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(
            f"{what}: expected two (N, D) tensors of equal shape, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    if a.shape[0] == 0:
        raise ValueError(f"{what}: empty batch")


def symmetric_info_nce(
    a: torch.Tensor, b: torch.Tensor, logit_scale: torch.Tensor | float, labels: torch.Tensor | None = None
) -> torch.Tensor:
    """Symmetric (CLIP) InfoNCE between paired embeddings ``a_i <-> b_i``.

    ``l_ij = s cos(a_i, b_j)``; ``L = (InfoNCE(l) + InfoNCE(l^T)) / 2`` with the
    class-aware negatives of :func:`info_nce_from_logits` (same-class items in the
    batch are not negatives).

    Shape:
        a, b: ``(N, D)`` (normalised inside); labels ``(N,)``; returns a scalar.
    """
    _check_pair(a, b, "symmetric_info_nce")
    logits = logit_scale * F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T
    return info_nce(logits, labels)


def cosine_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``d(x, y) = 1 - cos(x, y)`` over the last axis (broadcasting). Shape: ``(..., D) -> (...)``."""
    return 1.0 - F.cosine_similarity(x, y, dim=-1, eps=1e-8)


def triplet_loss(anchor: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor, margin: float) -> torch.Tensor:
    """Triplet loss with a margin on cosine distances.

    ``L = mean_{i,k} max(0, d(a_i, p_i) - d(a_i, n_ik) + m)``, ``d = 1 - cos``: the
    positive must be closer to the anchor than every negative by at least ``m``.

    Shape:
        anchor, positive: ``(N, D)``; negatives ``(N, D)`` or ``(N, K, D)``; returns a scalar.
    """
    _check_pair(anchor, positive, "triplet_loss")
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    if negatives.ndim == 2:
        negatives = negatives.unsqueeze(1)
    if negatives.ndim != 3 or negatives.shape[0] != anchor.shape[0] or negatives.shape[2] != anchor.shape[1]:
        raise ValueError(
            f"negatives must be (N, D) or (N, K, D) with N, D = {tuple(anchor.shape)}, got {tuple(negatives.shape)}"
        )
    d_pos = cosine_distance(anchor, positive).unsqueeze(1)  # (N, 1)
    d_neg = cosine_distance(anchor.unsqueeze(1), negatives)  # (N, K)
    return F.relu(d_pos - d_neg + margin).mean()


def consistency_loss(z: torch.Tensor, z_aug: torch.Tensor) -> torch.Tensor:
    """Consistency between a clip and its augmentation: ``L = mean_i (1 - cos(z_i, z~_i))``.

    Shape:
        z, z_aug: ``(N, D)``; returns a scalar in ``[0, 2]``.
    """
    _check_pair(z, z_aug, "consistency_loss")
    return cosine_distance(z, z_aug).mean()


# =========================================================================== config
@dataclass(frozen=True)
class AlignmentConfig:
    """Hyper-parameters of the three alignment stages (defaults: the ``full`` profile).

    The paper publishes no weights, margins or step counts; these are ours. Setting a
    weight to 0 removes its term (it is not even computed); ``replay_fraction = 0``
    removes replay. Use :meth:`for_profile` for smoke / cpu sizes.
    """

    steps_per_stage: int = 2000
    """Optimizer steps of each stage."""
    batch_size: int = 64
    """Mixture items per step (each gives a target clip, a second clip of its class, the
    mixture, the interferer clip, a prompt and an image)."""
    lr: float = 1e-4
    """AdamW learning rate of the heads: small, the heads start pretrained."""
    weight_decay: float = 0.0
    """AdamW weight decay; 0 so the pretrained projections are not shrunk for nothing."""
    grad_clip: float = 1.0
    """Gradient-norm clip over the trained parameters."""
    temperature_init: float = 0.07
    """Initial InfoNCE temperature tau (logit scale 1/tau), as CLIP and ImageBind."""
    learn_temperature: bool = True
    """Train the logit scales (one per modality pair, capped at 100)."""
    s1_nce_weight: float = 1.0
    """S1: weight of the audio-text symmetric InfoNCE."""
    s1_triplet_weight: float = 0.0
    """S1: weight of a prompt-anchored triplet (positive target audio, negatives mixture and
    interferer audio). Ours, off by default: the paper's S1 is InfoNCE only."""
    s1_margin: float = 0.1
    """S1: margin of that triplet (cross-modal cosines are small)."""
    s2_nce_weight: float = 1.0
    """S2: weight of the audio-audio InfoNCE (two clips of one class)."""
    s2_triplet_weight: float = 1.0
    """S2: weight of the triplet loss (anchor: a second clip of the target class; positive: the
    target clip; negatives: the mixture and the interferer clip)."""
    s2_margin: float = 0.2
    """S2: triplet margin on cosine distance (audio-audio cosines span a wide range)."""
    s2_consistency_weight: float = 0.5
    """S2: weight of the clip-vs-augmentation consistency loss (a regulariser: half weight)."""
    s3_nce_weight: float = 1.0
    """S3: weight of the audio-image symmetric InfoNCE."""
    s3_triplet_weight: float = 1.0
    """S3: weight of the image-anchored triplet (positive target audio, negatives mixture
    and interferer audio)."""
    s3_margin: float = 0.1
    """S3: triplet margin; smaller than S2's because cross-modal cosines are small."""
    replay_fraction: float = 0.25
    """Each step of stage k also draws ``round(fraction x batch_size)`` items (at least 2)
    per earlier stage and adds that stage's objective (weight 1); 0 disables replay."""
    hard_pair_fraction: float = 0.5
    """Fraction of each batch drawn as hard pairs (interferer from the target's family),
    where the split has such families: the triplet's 'acoustically similar' negatives."""
    aug_gain_db: float = 6.0
    """Augmentation: random gain in +-this many dB."""
    aug_max_shift: float = 0.1
    """Augmentation: circular time shift of up to this fraction of the clip."""
    aug_snr_db: tuple[float, float] = (20.0, 40.0)
    """Augmentation: white noise at an SNR drawn uniformly from this range (dB)."""
    eval_every: int = 200
    """Validate (stage objective on fixed val items) every this many steps (and at steps 0 and last)."""
    n_val_items: int = 256
    """Validation items per stage (half hard pairs where available)."""
    encode_batch_size: int = 64
    """Chunk size of the encoder calls."""
    pool_items: int | None = None
    """Train from a fixed pool of this many train items whose frozen trunk features are computed
    once and cached (then a step costs only the heads: how a CPU affords alignment; each item
    keeps one fixed augmentation); None draws fresh items every step (GPU)."""
    verify_frozen: bool = True
    """Hash the backbone before and after each stage and raise if a bit changed."""
    seed: int = 0
    """Seed of batch draws, augmentation and validation."""

    def __post_init__(self):
        weights = [f.name for f in dataclasses.fields(self) if f.name.endswith("_weight")]
        for name in weights + [
            "replay_fraction",
            "hard_pair_fraction",
            "s1_margin",
            "s2_margin",
            "s3_margin",
            "weight_decay",
        ]:
            if getattr(self, name) < 0:
                raise ValueError(f"AlignmentConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.pool_items is not None and self.pool_items < 2:
            raise ValueError(f"AlignmentConfig.pool_items must be None or >= 2, got {self.pool_items}")
        for name in ("steps_per_stage", "batch_size", "eval_every", "n_val_items", "encode_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"AlignmentConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_size < 2:
            raise ValueError("AlignmentConfig.batch_size must be >= 2 (InfoNCE needs negatives)")
        if not 0 < self.temperature_init <= 1:
            raise ValueError(f"temperature_init must be in (0, 1], got {self.temperature_init}")
        if self.hard_pair_fraction > 1 or self.aug_snr_db[0] > self.aug_snr_db[1]:
            raise ValueError("hard_pair_fraction must be <= 1 and aug_snr_db must be (low, high)")

    @classmethod
    def for_profile(cls, profile: str, **overrides: Any) -> "AlignmentConfig":
        """Sizes for ``smoke`` (CI, seconds), ``cpu`` (minutes) or ``full`` (GPU); ``overrides`` win."""
        # MiniBind (smoke, cpu) was pretrained on this very train split with image-anchored InfoNCE, so
        # on train the clip-clip (S2) and audio-image (S3) InfoNCE terms start near zero (cpu, after S1:
        # 0.12 and 0.07) while on val they are 0.41 and 3.8: their gradient only fits train items, and
        # with weight 1 both stages' val objective rose from the first evaluation (best step 0). There,
        # S2 and S3 lean on the hard-negative triplets (the terms that see mixtures, which pretraining
        # never did), with wider margins and a lower lr. ImageBind (full) keeps the weights above.
        minibind = dict(s2_nce_weight=0.1, s2_margin=0.5, s3_nce_weight=0.0, s3_margin=0.3)
        sizes = {
            "smoke": dict(steps_per_stage=30, batch_size=8, eval_every=10, n_val_items=16, lr=1e-3, pool_items=48,
                          **minibind),
            "cpu": dict(steps_per_stage=300, batch_size=32, eval_every=50, n_val_items=96, lr=1e-4, pool_items=384,
                        **minibind),
            "full": {},
        }
        name = getattr(profile, "name", profile)
        if name not in sizes:
            raise ValueError(f"unknown profile {name!r}; choose smoke, cpu or full")
        return cls(**{**sizes[name], **overrides})


class LogitScales(nn.Module):
    """Learnable InfoNCE logit scales ``s = min(exp(log_s), max_scale)``, one per modality pair."""

    def __init__(self, temperature_init: float = 0.07, learnable: bool = True, max_scale: float = 100.0):
        super().__init__()
        init = math.log(1.0 / temperature_init)
        self.log_scale = nn.ParameterDict({p: nn.Parameter(torch.tensor(init), requires_grad=learnable) for p in PAIRS})
        self.max_scale = max_scale

    def forward(self, pair: str) -> torch.Tensor:
        """The scale of ``pair`` (one of :data:`PAIRS`), a scalar tensor."""
        return self.log_scale[pair].exp().clamp(max=self.max_scale)


# =========================================================================== batches, embeddings
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


def _take(items: Any, n_items: int | None) -> list:
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
    items = _take(items, n_items)
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


# =========================================================================== stage objectives
@dataclass
class StageContext:
    """Everything a stage objective reads besides the batch."""

    encoder: TriModalEncoder
    scales: LogitScales
    cfg: AlignmentConfig
    sample_rate: int
    cache: dict | None = None
    """Trunk-feature cache ``{(modality, role, key): features}`` (``cfg.pool_items``), or None."""


def _trunk(ctx: StageContext, modality: str, value: Any) -> Any:
    """Frozen features of ONE input through the interface's hooks (no gradient)."""
    enc = ctx.encoder
    with torch.no_grad():
        if modality == "audio":
            wave = as_waveform_list(value.unsqueeze(0))
            if ctx.sample_rate != enc.sample_rate:
                from .preprocess import resample

                wave = [resample(w.float(), ctx.sample_rate, enc.sample_rate) for w in wave]
            inputs = enc.prepare_audio(wave)
        elif modality == "text":
            inputs = enc.prepare_text([value])
        else:
            inputs = enc.prepare_images([value]).to(enc.device, enc.dtype)
        return enc.trunk_features(modality, inputs)


def _embed_cached(
    ctx: StageContext, modality: str, role: str, values: Sequence, keys: Sequence, grad: Any
) -> torch.Tensor:
    """Heads on cached trunk features: ``normalize(head(trunk(x)))``, as ``TriModalEncoder.encode``."""
    feats = []
    for value, key in zip(values, keys):
        ck = (modality, role, key)
        if ck not in ctx.cache:
            ctx.cache[ck] = _trunk(ctx, modality, value)
        feats.append(ctx.cache[ck])
    with torch.enable_grad() if grad else torch.no_grad():
        return torch.cat([F.normalize(ctx.encoder.head_embeddings(modality, f).float(), dim=-1) for f in feats])


def _cached(ctx: StageContext, batch: AlignmentBatch, grad: Any) -> bool:
    return ctx.cache is not None and batch.keys is not None and grad is not True


def _audio(
    ctx: StageContext, batch: AlignmentBatch, roles: Sequence[str], grad: Any, generator=None
) -> list[torch.Tensor]:
    """Embed the batch's waveforms of each role (``target, query_audio, mixture, interferer, aug``).

    One encoder call for all roles, or per-item heads on cached trunk features (``aug``
    is then fixed per item: the first augmentation drawn is cached).
    """
    waves = []
    for role in roles:
        if role == "aug":
            gen = generator if generator is not None else torch.Generator().manual_seed(ctx.cfg.seed)
            waves.append(augment_audio(batch.target, gen, ctx.cfg))
        else:
            waves.append(getattr(batch, role))
    if _cached(ctx, batch, grad):
        return [_embed_cached(ctx, "audio", role, list(w), batch.keys, grad) for role, w in zip(roles, waves)]
    z = embed_waveforms(ctx.encoder, torch.cat(waves), ctx.sample_rate, grad, ctx.cfg.encode_batch_size)
    return list(z.split(len(batch)))


def _text(ctx: StageContext, batch: AlignmentBatch, grad: Any) -> torch.Tensor:
    if _cached(ctx, batch, grad):
        return _embed_cached(ctx, "text", "prompt", batch.text, batch.text, grad)  # keyed by the prompt itself
    return ctx.encoder.embed_text(batch.text, grad=grad, batch_size=ctx.cfg.encode_batch_size)


def _image(ctx: StageContext, batch: AlignmentBatch, grad: Any) -> torch.Tensor:
    if batch.images is None:
        raise ValueError("stage s3_audio_visual needs images: build the dataset with load_images=True")
    if _cached(ctx, batch, grad):
        return _embed_cached(ctx, "vision", "query_image", batch.images, batch.keys, grad)
    return ctx.encoder.embed_image(batch.images, grad=grad, batch_size=ctx.cfg.encode_batch_size)


def _sum(terms: dict[str, tuple[float, torch.Tensor]]) -> tuple[torch.Tensor | None, dict[str, float]]:
    loss, parts = None, {}
    for name, (w, value) in terms.items():
        parts[name] = float(value.detach())
        loss = w * value if loss is None else loss + w * value
    return loss, parts


def s1_objective(ctx: StageContext, batch: AlignmentBatch, grad: Any = "heads", generator=None):
    """S1: ``w_nce InfoNCE(phi_a(target), phi_t(prompt)) [+ w_tri Triplet(t, a, [mix, interferer])]``.

    The text-anchored triplet is ours and off by default (the paper's S1 is InfoNCE only).
    Returns ``(loss or None, parts)``.
    """
    c = ctx.cfg
    use_nce, use_tri = c.s1_nce_weight > 0, c.s1_triplet_weight > 0
    if not (use_nce or use_tri):
        return None, {}
    z = _audio(ctx, batch, ["target"] + (["mixture", "interferer"] if use_tri else []), grad)
    t = _text(ctx, batch, grad)
    terms = {}
    if use_nce:
        terms["s1_nce"] = (
            c.s1_nce_weight,
            symmetric_info_nce(z[0], t, ctx.scales("audio_text"), batch.labels.to(t.device)),
        )
    if use_tri:
        terms["s1_triplet"] = (c.s1_triplet_weight, triplet_loss(t, z[0], torch.stack(z[1:], dim=1), c.s1_margin))
    return _sum(terms)


def s2_objective(ctx: StageContext, batch: AlignmentBatch, grad: Any = "heads", generator=None):
    """S2: ``w_nce InfoNCE(a, q) + w_tri Triplet(q, a, [mix, interferer]) + w_cons (1 - cos(a, aug(a)))``.

    ``a`` = phi_a(target), ``q`` = phi_a(another clip of its class). The triplet is anchored
    on ``q`` (what the reward's anchor is built from), so it asks for the reward gap directly:
    ``cos(q, target) - cos(q, mixture) >= margin`` (and the same against the interferer).
    """
    c = ctx.cfg
    use_nce, use_tri, use_cons = c.s2_nce_weight > 0, c.s2_triplet_weight > 0, c.s2_consistency_weight > 0
    if not (use_nce or use_tri or use_cons):
        return None, {}
    roles = (
        ["target"] + (["query_audio"] if use_nce or use_tri else []) + (["mixture", "interferer"] if use_tri else [])
    )
    z = _audio(ctx, batch, roles + (["aug"] if use_cons else []), grad, generator)
    a, rest = z[0], z[1:]
    terms = {}
    if use_nce or use_tri:
        pos, rest = rest[0], rest[1:]
        if use_nce:
            terms["s2_nce"] = (
                c.s2_nce_weight,
                symmetric_info_nce(a, pos, ctx.scales("audio_audio"), batch.labels.to(a.device)),
            )
        if use_tri:
            negs, rest = torch.stack(rest[:2], dim=1), rest[2:]
            terms["s2_triplet"] = (c.s2_triplet_weight, triplet_loss(pos, a, negs, c.s2_margin))
    if use_cons:
        terms["s2_consistency"] = (c.s2_consistency_weight, consistency_loss(a, rest[0]))
    return _sum(terms)


def s3_objective(ctx: StageContext, batch: AlignmentBatch, grad: Any = "heads", generator=None):
    """S3: ``w_nce InfoNCE(phi_a(target), phi_v(image)) + w_tri Triplet(v, a, [mix, interferer])``."""
    c = ctx.cfg
    use_nce, use_tri = c.s3_nce_weight > 0, c.s3_triplet_weight > 0
    if not (use_nce or use_tri):
        return None, {}
    v = _image(ctx, batch, grad)
    z = _audio(ctx, batch, ["target"] + (["mixture", "interferer"] if use_tri else []), grad)
    terms = {}
    if use_nce:
        terms["s3_nce"] = (
            c.s3_nce_weight,
            symmetric_info_nce(z[0], v, ctx.scales("audio_image"), batch.labels.to(v.device)),
        )
    if use_tri:
        terms["s3_triplet"] = (c.s3_triplet_weight, triplet_loss(v, z[0], torch.stack(z[1:], dim=1), c.s3_margin))
    return _sum(terms)


OBJECTIVES: dict[str, Callable] = {
    "s1_audio_text": s1_objective,
    "s2_audio_audio": s2_objective,
    "s3_audio_visual": s3_objective,
}
"""Stage name -> objective ``(ctx, batch, grad, generator) -> (loss or None, parts)``."""


# =========================================================================== data for the stages
@dataclass
class AlignmentData:
    """Mixture datasets the stages draw from (``*_hard``: same-family interferers, or None)."""

    train: Any
    val: Any
    train_hard: Any = None
    val_hard: Any = None

    @property
    def sample_rate(self) -> int:
        """Rate of the datasets' waveforms."""
        return int(self.train.sr)

    @classmethod
    def from_build(
        cls, profile: Any = None, build_dir: str | Path | None = None, seed: int | None = None
    ) -> "AlignmentData":
        """Train and val ``MixtureDataset`` s of a built benchmark (hard-pair ones where possible)."""
        from ..data.mixing import MixtureDataset

        def make(split: str, hard: bool):
            try:
                return MixtureDataset(split, profile, hard_pairs=hard, build_dir=build_dir, seed=seed)
            except ValueError:
                if hard:  # no family with two classes in this split
                    return None
                raise

        return cls(make("train", False), make("val", False), make("train", True), make("val", True))


def _split_sizes(n: int, cfg: AlignmentConfig, hard_available: bool) -> tuple[int, int]:
    n_hard = int(round(cfg.hard_pair_fraction * n)) if hard_available else 0
    return n - n_hard, n_hard


def train_pool(data: AlignmentData, cfg: AlignmentConfig) -> list[tuple[str, int]] | None:
    """The fixed train pool ``[(dataset tag, index)]`` of ``cfg.pool_items`` items, or None.

    Items ``0..`` of ``train`` and ``train_hard`` (each index is already a random mixture).
    """
    if cfg.pool_items is None:
        return None
    n_rand, n_hard = _split_sizes(cfg.pool_items, cfg, data.train_hard is not None)
    pool = [("train", i) for i in range(min(n_rand, len(data.train)))]
    return pool + [("train_hard", i) for i in range(min(n_hard, len(data.train_hard)))] if n_hard else pool


def _draw(data: AlignmentData, cfg: AlignmentConfig, n: int, pool, *seed_keys: Any) -> AlignmentBatch:
    """A batch of ``n`` train items (``hard_pair_fraction`` hard pairs, or from the pool), seeded by ``seed_keys``."""
    rng = item_rng(cfg.seed, "align", *seed_keys)
    if pool is not None:
        picks = [pool[int(i)] for i in rng.integers(len(pool), size=n)]
    else:
        n_rand, n_hard = _split_sizes(n, cfg, data.train_hard is not None)
        picks = [("train", int(i)) for i in rng.integers(len(data.train), size=n_rand)]
        picks += [("train_hard", int(i)) for i in rng.integers(len(data.train_hard), size=n_hard)] if n_hard else []
    return make_batch([getattr(data, tag)[i] for tag, i in picks], [f"{tag}:{i}" for tag, i in picks])


def _val_batches(data: AlignmentData, cfg: AlignmentConfig) -> list[AlignmentBatch]:
    """Fixed validation batches: the first items of val (and of val_hard, half of them)."""
    n_hard = cfg.n_val_items // 2 if data.val_hard is not None else 0
    picks = [("val", i) for i in range(min(cfg.n_val_items - n_hard, len(data.val)))]
    picks += [("val_hard", i) for i in range(min(n_hard, len(data.val_hard)))] if n_hard else []
    chunks = [picks[i : i + cfg.batch_size] for i in range(0, len(picks), cfg.batch_size)]
    return [make_batch([getattr(data, t)[i] for t, i in c], [f"{t}:{i}" for t, i in c]) for c in chunks if len(c) >= 2]


# =========================================================================== parameters, checkpoints
def tensor_sha256(t: torch.Tensor) -> str:
    """SHA-256 of a tensor's raw bytes (dtype and shape included)."""
    x = t.detach().contiguous().cpu()
    h = hashlib.sha256(f"{x.dtype}{tuple(x.shape)}".encode())
    h.update(x.reshape(-1).view(torch.uint8).numpy().tobytes() if x.numel() else b"")
    return h.hexdigest()


def frozen_digest(module: nn.Module, exclude: set[str] = frozenset()) -> dict[str, str]:
    """``{name: sha256}`` of every state-dict entry (parameters and buffers) not in ``exclude``."""
    return {k: tensor_sha256(v) for k, v in module.state_dict().items() if k not in exclude}


def head_parameter_names(encoder: TriModalEncoder) -> dict[str, list[str]]:
    """Which trainable (head) parameters each modality's embedding depends on.

    Calls ``freeze_backbone()`` and probes each modality once with ``grad="heads"``:
    a parameter belongs to a modality when autograd reaches it. Works for any encoder
    of the interface, whatever its parameter names.
    """
    trainable = encoder.freeze_backbone()
    names = {id(p): n for n, p in encoder.named_parameters()}
    sr = encoder.sample_rate
    probes = {
        "audio": lambda: encoder.embed_audio(
            torch.randn(1, 2 * sr, generator=torch.Generator().manual_seed(0)) * 0.1, sr, grad="heads"
        ),
        "text": lambda: encoder.embed_text(["a sound"], grad="heads"),
        "vision": lambda: encoder.embed_image(
            np.full((1, encoder.image_size, encoder.image_size, 3), 128, np.uint8), grad="heads"
        ),
    }
    out: dict[str, list[str]] = {}
    with encoder.eval_mode():
        for modality, probe in probes.items():
            try:
                z = probe()
            except ValueError:  # modality not built
                out[modality] = []
                continue
            grads = (
                torch.autograd.grad(z.sum(), trainable, allow_unused=True)
                if z.requires_grad
                else [None] * len(trainable)
            )
            out[modality] = [names[id(p)] for p, g in zip(trainable, grads) if g is not None]
    return out


def head_state(encoder: TriModalEncoder, names: Sequence[str]) -> dict[str, torch.Tensor]:
    """CPU copies of the named parameters."""
    params = dict(encoder.named_parameters())
    return {n: params[n].detach().cpu().clone() for n in names}


def load_heads(encoder: TriModalEncoder, path: str | Path, scales: LogitScales | None = None) -> dict[str, Any]:
    """Load the head parameters (and logit scales) of an alignment checkpoint into ``encoder``.

    Raises:
        ValueError: the checkpoint names a parameter the encoder lacks, or a shape differs.
    """
    blob = load_checkpoint(path)
    if "heads" not in blob:
        raise ValueError(f"{path} is not an alignment checkpoint (no 'heads')")
    params = dict(encoder.named_parameters())
    with torch.no_grad():
        for name, value in blob["heads"].items():
            if name not in params:
                raise ValueError(f"{path}: parameter {name!r} is not in this encoder ({type(encoder).__name__})")
            if params[name].shape != value.shape:
                raise ValueError(
                    f"{path}: {name} has shape {tuple(value.shape)}, the encoder {tuple(params[name].shape)}"
                )
            params[name].copy_(value.to(params[name].device, params[name].dtype))
        if scales is not None and "logit_scales" in blob:
            scales.load_state_dict(blob["logit_scales"])
    return blob


# =========================================================================== stage runner
def _objective_value(stage: str, ctx: StageContext, batches: Sequence[AlignmentBatch]) -> float:
    """Mean stage objective over fixed batches (no gradient, fixed augmentation seed)."""
    gen = torch.Generator().manual_seed(ctx.cfg.seed + 1)
    vals = []
    with torch.no_grad():
        for b in batches:
            loss, _ = OBJECTIVES[stage](ctx, b, grad=False, generator=gen)
            vals.append(0.0 if loss is None else float(loss))
    return float(np.mean(vals)) if vals else float("nan")


def _step_loss(stage: str, ctx: StageContext, data: AlignmentData, step: int, gen: torch.Generator, pool=None):
    """Current stage on a fresh batch, plus replay of each earlier stage's objective."""
    k = STAGES.index(stage)
    cfg = ctx.cfg
    loss, parts = OBJECTIVES[stage](ctx, _draw(data, cfg, cfg.batch_size, pool, k, step), "heads", gen)
    n_replay = max(2, int(round(cfg.replay_fraction * cfg.batch_size))) if cfg.replay_fraction > 0 else 0
    for j, earlier in enumerate(STAGES[:k]):
        if n_replay == 0:
            break
        batch = _draw(data, cfg, n_replay, pool, k, step, "replay", j)
        r_loss, _ = OBJECTIVES[earlier](ctx, batch, "heads", gen)
        if r_loss is not None:
            parts[f"replay_{earlier}"] = float(r_loss.detach())
            loss = r_loss if loss is None else loss + r_loss
    return loss, parts


@contextlib.contextmanager
def _only_trainable(encoder: TriModalEncoder, names: Sequence[str]):
    """Inside: exactly the parameters ``names`` require grad; the flags are restored after."""
    params = dict(encoder.named_parameters())
    old = {n: p.requires_grad for n, p in params.items()}
    try:
        for n, p in params.items():
            p.requires_grad_(n in names)
        yield [params[n] for n in names]
    finally:
        for n, p in params.items():
            p.requires_grad_(old[n])


def _log_step(hist: dict[str, Any], step: int, loss: torch.Tensor | None, parts: dict[str, float]) -> None:
    """Append one step; a term first seen late is NaN-padded, an absent term is NaN."""
    for name in parts.keys() - hist.keys():
        hist[name] = [float("nan")] * len(hist["step"])
    hist["step"].append(step)
    hist["loss"].append(float("nan") if loss is None else float(loss.detach()))
    for name in hist["terms"] | parts.keys():
        hist[name].append(parts.get(name, float("nan")))
    hist["terms"] |= parts.keys()


def _save_stage(path: Path, cfg: AlignmentConfig, stage: str, step: int, val_loss: float, heads, scales, **extra):
    save_checkpoint(
        path,
        config=cfg,
        stage=stage,
        step=step,
        val_loss=val_loss,
        heads=heads,
        logit_scales=scales if isinstance(scales, dict) else scales.state_dict(),
        **extra,
    )


def run_stage(
    stage: str,
    encoder: TriModalEncoder,
    data: AlignmentData,
    cfg: AlignmentConfig,
    scales: LogitScales,
    head_names: Mapping[str, Sequence[str]],
    run_dir: str | Path,
    init_from: str | Path | None = None,
    cache: dict | None = None,
) -> dict[str, Any]:
    """Train one stage; leave ``encoder`` at the stage's best validation checkpoint.

    Trains the heads of :data:`STAGE_MODALITIES` ``[stage]`` (+ logit scales) with AdamW
    on the stage objective plus replay (batches from :func:`train_pool` when ``cfg.pool_items``,
    with trunk features kept in ``cache``); validates at step 0, every ``eval_every`` steps
    and at the end (each step's terms and validations go to ``run_dir/metrics_<stage>.csv``);
    saves the best as ``run_dir/<stage>_best.pt``; reloads it; checks that every other
    encoder tensor is bit-identical (``cfg.verify_frozen``).

    Returns:
        history: ``step, loss`` and one list per loss term (NaN where absent), ``terms``,
        ``val_step, val_loss``, ``best_step, best_val_loss, checkpoint``.
    """
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; choose one of {STAGES}")
    best_path = Path(run_dir) / f"{stage}_best.pt"
    if init_from is not None:
        load_heads(encoder, init_from, scales)
    all_heads = sorted({n for names in head_names.values() for n in names})
    train_names = sorted({n for m in STAGE_MODALITIES[stage] for n in head_names.get(m, [])})
    if not train_names:
        raise ValueError(f"stage {stage}: the encoder has no trainable head for {STAGE_MODALITIES[stage]}")
    before = frozen_digest(encoder, set(train_names)) if cfg.verify_frozen else {}
    ctx = StageContext(
        encoder, scales, cfg, data.sample_rate, ({} if cache is None else cache) if cfg.pool_items else None
    )
    pool, val_batches = train_pool(data, cfg), _val_batches(data, cfg)
    gen = torch.Generator().manual_seed(cfg.seed * 1000 + STAGES.index(stage))
    hist: dict[str, Any] = {"stage": stage, "step": [], "loss": [], "terms": set(), "val_step": [], "val_loss": []}
    best = [float("inf"), -1]

    def validate(step: int) -> None:
        v = _objective_value(stage, ctx, val_batches)
        hist["val_step"].append(step)
        hist["val_loss"].append(v)
        if v < best[0] or best[1] < 0:
            best[:] = [v, step]
            _save_stage(best_path, cfg, stage, step, v, head_state(encoder, all_heads), scales, complete=False)

    with _only_trainable(encoder, train_names) as params, encoder.eval_mode():
        trained = params + [p for p in scales.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(trained, lr=cfg.lr, weight_decay=cfg.weight_decay)
        validate(0)
        csv_log = CsvLog(Path(run_dir) / f"metrics_{stage}.csv")  # a stage always trains from its start
        csv_log.log(0, val_loss=hist["val_loss"][-1])
        prog = Progress(cfg.steps_per_stage, stage, every=default_every(cfg.steps_per_stage, 5),  # 5 lines a stage
                        show=("loss", "val_loss"))
        for step in range(1, cfg.steps_per_stage + 1):
            loss, parts = _step_loss(stage, ctx, data, step, gen, pool)
            if loss is not None and loss.requires_grad:
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(trained, cfg.grad_clip)
                opt.step()
            _log_step(hist, step, loss, parts)
            if step % cfg.eval_every == 0 or step == cfg.steps_per_stage:
                validate(step)
            logged = last_row(hist, ["loss", *sorted(hist["terms"])], ("val_loss",), at=step)
            csv_log.log(step, **logged)
            prog.update(step, **logged)
        prog.close()
    blob = load_heads(encoder, best_path, scales)
    hist.update(best_step=best[1], best_val_loss=best[0], checkpoint=str(best_path), terms=sorted(hist["terms"]))
    _save_stage(
        best_path,
        cfg,
        stage,
        blob["step"],
        blob["val_loss"],
        blob["heads"],
        blob["logit_scales"],
        complete=True,
        history=hist,
    )
    if cfg.verify_frozen:
        after = frozen_digest(encoder, set(train_names))
        changed = sorted(k for k in before if after.get(k) != before[k])
        if changed:
            raise RuntimeError(f"stage {stage} changed frozen tensors: {changed[:5]}")
    return hist


@contextlib.contextmanager
def heads_restored(encoder: TriModalEncoder):
    """Inside: load or train any heads; on exit every head tensor is what it was on entry."""
    names = sorted({n for ns in head_parameter_names(encoder).values() for n in ns})
    saved = head_state(encoder, names)
    try:
        yield
    finally:
        params = dict(encoder.named_parameters())
        with torch.no_grad():
            for n, v in saved.items():
                params[n].copy_(v.to(params[n].device))


def objective_terms(
    encoder: TriModalEncoder, data: AlignmentData, cfg: AlignmentConfig, checkpoint: str | Path,
    stages: Sequence[str] = STAGES, n_items: int | None = None,
):
    """Every term of each stage's objective, weight 1, on fixed train items and on fixed val items.

    The heads (and temperatures) of ``checkpoint`` are loaded for the measurement and the
    encoder's heads are restored after. A term far lower on train than on val has nothing left
    to learn from the train split except its items: a warning sign for a pretrained encoder that
    already saw that split (MiniBind).

    Returns:
        DataFrame ``stage, term, train, val`` (``n_items`` of each split, default ``cfg.n_val_items``,
        half of them hard pairs where the split has any).
    """
    import pandas as pd

    n = n_items or cfg.n_val_items
    ones = {f.name: 1.0 for f in dataclasses.fields(cfg) if f.name.endswith("_weight")}
    full = dataclasses.replace(cfg, **ones, n_val_items=n)
    train_view = AlignmentData(data.train, data.train, data.train_hard, data.train_hard)
    scales = LogitScales(cfg.temperature_init, cfg.learn_temperature).to(encoder.device)
    rows = []
    with heads_restored(encoder):
        load_heads(encoder, checkpoint, scales)
        ctx = StageContext(encoder, scales, full, data.sample_rate)
        for stage in stages:
            means = {}
            for split, view in (("train", train_view), ("val", data)):
                gen = torch.Generator().manual_seed(cfg.seed + 1)
                parts: dict[str, list[float]] = {}
                with torch.no_grad(), encoder.eval_mode():
                    for b in _val_batches(view, full):
                        for k, v in OBJECTIVES[stage](ctx, b, grad=False, generator=gen)[1].items():
                            parts.setdefault(k, []).append(v)
                means[split] = {k: float(np.mean(v)) for k, v in parts.items()}
            rows += [{"stage": stage, "term": k, "train": means["train"][k], "val": means["val"].get(k, float("nan"))}
                     for k in means["train"]]
    return pd.DataFrame(rows)


def history_frame(history: Mapping[str, Any]):
    """A stage history as a DataFrame: one row per step (``step, loss`` and each term), for plotting."""
    import pandas as pd

    return pd.DataFrame({k: history[k] for k in ["step", "loss", *history["terms"]]})


def _backbone_fingerprint(encoder: TriModalEncoder, heads: set[str], full: bool) -> str:
    """SHA-256 over the hashes of all non-head tensors (``full``), else over names and shapes only."""
    if full:
        parts = sorted(f"{k}:{v}" for k, v in frozen_digest(encoder, heads).items())
    else:
        parts = sorted(f"{k}:{tuple(v.shape)}" for k, v in encoder.state_dict().items() if k not in heads)
    return hashlib.sha256((type(encoder).__name__ + "".join(parts)).encode()).hexdigest()


def run_alignment(
    encoder: TriModalEncoder,
    data: AlignmentData,
    cfg: AlignmentConfig,
    run_dir: str | Path,
    stages: Sequence[str] = STAGES,
    resume: bool = True,
) -> dict[str, Any]:
    """Progressive alignment: S1 -> S2 -> S3, each from the previous stage's best checkpoint.

    Writes ``run_dir/pretrained.pt`` (the heads before alignment) and
    ``run_dir/<stage>_best.pt``. With ``resume``, a stage whose completed checkpoint
    has the same config is loaded instead of trained.

    Returns:
        ``{"history": {stage: history}, "checkpoints": {"pretrained": path, stage: path}}``;
        the encoder is left at the last stage's best checkpoint.

    Raises:
        ValueError: ``run_dir`` holds a run of an encoder with another backbone (resume),
            or an unknown / out-of-order stage.
    """
    stages = list(stages)
    if not stages or any(s not in STAGES for s in stages) or stages != sorted(stages, key=STAGES.index):
        raise ValueError(f"stages must be a non-empty ordered subset of {STAGES}, got {stages}")
    run_dir = Path(run_dir)
    head_names = head_parameter_names(encoder)  # also freezes the backbone
    all_heads = sorted({n for names in head_names.values() for n in names})
    scales = LogitScales(cfg.temperature_init, cfg.learn_temperature).to(encoder.device)
    backbone = _backbone_fingerprint(encoder, set(all_heads), cfg.verify_frozen)
    start = run_dir / "pretrained.pt"
    if resume and start.exists():
        blob = load_checkpoint(start)
        if blob.get("backbone_sha256") != backbone:
            raise ValueError(f"{run_dir} holds a run of another encoder backbone; use another run_dir or resume=False")
    else:
        save_checkpoint(
            start,
            config=cfg,
            stage="pretrained",
            heads=head_state(encoder, all_heads),
            logit_scales=scales.state_dict(),
            backbone_sha256=backbone,
            step=0,
        )
    out = {"history": {}, "checkpoints": {"pretrained": str(start)}}
    prev, cache = start, {}  # trunk features do not depend on the heads: one cache for all stages
    for stage in stages:
        path = run_dir / f"{stage}_best.pt"
        blob = load_checkpoint(path) if resume and path.exists() else None
        if blob is not None and blob.get("complete") and blob.get("config") == dataclasses.asdict(cfg):
            load_heads(encoder, path, scales)
            out["history"][stage] = blob.get("history", {})
        else:
            out["history"][stage] = run_stage(
                stage, encoder, data, cfg, scales, head_names, run_dir, init_from=prev, cache=cache
            )
        out["checkpoints"][stage] = str(path)
        prev = path
    return out


# =========================================================================== measurements
def _cos(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cosine_similarity(x, y, dim=-1, eps=1e-8)


@torch.no_grad()
def class_embeddings(encoder: TriModalEncoder, dataset: Any) -> tuple[list[str], torch.Tensor, torch.Tensor | None]:
    """Per class of ``dataset``: normalised mean of its prompt embeddings and of its image embeddings.

    Returns:
        ``(class_names, text (C, D), image (C, D) or None)``; a class without images makes ``image`` None.
    """
    from PIL import Image

    names = list(dataset.class_names)
    text = torch.stack(
        [F.normalize(encoder.embed_text([t for _, t in dataset.prompts[c]]).mean(0), dim=-1) for c in names]
    )
    if any(not dataset.images.get(c) for c in names):
        return names, text, None
    rows = []
    for c in names:
        ims = []
        for _, rel in dataset.images[c]:
            with Image.open(Path(dataset.build_dir) / rel) as im:
                ims.append(np.asarray(im.convert("RGB"), dtype=np.uint8).copy())
        rows.append(F.normalize(encoder.embed_image(ims).mean(0), dim=-1))
    return names, text, torch.stack(rows)


def _recall_at_1(query: torch.Tensor, keys: torch.Tensor, truth: torch.Tensor) -> float:
    return float(((query @ keys.T).argmax(dim=1) == truth).float().mean())


@torch.no_grad()
def measure_alignment(
    encoder: TriModalEncoder, dataset: Any, *, stage: str = "", n_items: int | None = None, mlbp: Any = None
) -> dict[str, Any]:
    """Reward-relevant alignment metrics on the mixtures of one split (docs/method.md section 7).

    * ``gap_<anchor> = mean_i [cos(phi_a(target_i), z_i) - cos(phi_a(mixture_i), z_i)]`` for the
      anchors ``text`` (the item's prompt embedding: the paper's 0.0035 -> 0.0258 number),
      ``audio`` (another clip of the class), ``mean`` (:func:`fuse_anchor` mean of the
      three query embeddings) and ``mlbp`` (if a trained ``mlbp`` is given, else NaN);
    * ``family_acc``: target clip vs. its family's class prompts (argmax is its own class),
      over items whose family has >= 2 classes in the split (``n_family``; NaN if none);
    * ``recall1_audio_text`` / ``recall1_audio_image``: target clip -> nearest class prompt /
      class image embedding among all classes of the split.

    Returns:
        one row as a dict (see :func:`alignment_table` for the tidy table).
    """
    from .anchor import fuse_anchor

    with encoder.eval_mode():
        emb = embed_items(encoder, dataset, dataset.sr, n_items)
        names, cls_text, cls_image = class_embeddings(encoder, dataset)
    index = {c: i for i, c in enumerate(names)}
    truth = torch.tensor([index[c] for c in emb.classes], device=emb.target.device)
    anchors = {
        "text": emb.text,
        "audio": emb.query_audio,
        "mean": fuse_anchor("mean", emb.query_audio, emb.text, emb.image),
    }
    if mlbp is not None:
        anchors["mlbp"] = fuse_anchor("mlbp", emb.query_audio, emb.text, emb.image, mlbp=mlbp)
    row: dict[str, Any] = {"stage": stage, "split": dataset.split, "n_items": len(emb)}
    for name in ("text", "audio", "mean", "mlbp"):
        z = anchors.get(name)
        row[f"gap_{name}"] = (
            float((_cos(emb.target, z) - _cos(emb.mixture, z)).mean()) if z is not None else float("nan")
        )
    row["cos_target_text"] = float(_cos(emb.target, emb.text).mean())
    row["cos_mixture_text"] = float(_cos(emb.mixture, emb.text).mean())
    fam_hits = []
    for i, (c, fam) in enumerate(zip(emb.classes, emb.families)):
        members = [index[m] for m in dataset.family_members.get(fam, []) if m in index]
        if len(members) >= 2:
            sims = emb.target[i] @ cls_text[members].T
            fam_hits.append(members[int(sims.argmax())] == index[c])
    row["family_acc"] = float(np.mean(fam_hits)) if fam_hits else float("nan")
    row["n_family"] = len(fam_hits)
    row["recall1_audio_text"] = _recall_at_1(emb.target, cls_text, truth)
    row["recall1_audio_image"] = _recall_at_1(emb.target, cls_image, truth) if cls_image is not None else float("nan")
    return row


def alignment_table(
    encoder: TriModalEncoder,
    checkpoints: Mapping[str, str | Path],
    datasets: Sequence[Any],
    *,
    n_items: int | None = None,
    anchor_train: Any = None,
    anchor_cfg: Any = None,
    anchor_val: Any = None,
):
    """Measurements before and after each stage: one row per (checkpoint stage x split).

    Args:
        checkpoints: ``{stage name: alignment checkpoint}`` (``run_alignment(...)["checkpoints"]``).
        datasets: evaluation ``MixtureDataset`` s (e.g. ``test`` and ``test_timbre``).
        anchor_train: if given (a train ``MixtureDataset``), an MLBP anchor is fitted for each
            stage's encoder (:func:`mars_core.encoders.anchor.fit_mlbp` with ``anchor_cfg``)
            and ``gap_mlbp`` is filled in; ``anchor_val`` (a val ``MixtureDataset``) selects each
            anchor's best validation step, as :func:`mars_core.encoders.stack.load_reward_stack` does.

    Returns:
        a pandas DataFrame (columns of :func:`measure_alignment`); the encoder's heads are
        restored to what they were on entry.
    """
    import pandas as pd

    rows = []
    with heads_restored(encoder):
        for stage, path in checkpoints.items():
            load_heads(encoder, path)
            mlbp = None
            if anchor_train is not None:
                from .anchor import fit_mlbp

                mlbp, _ = fit_mlbp(encoder, anchor_train, anchor_cfg, val_items=anchor_val)
            rows += [measure_alignment(encoder, ds, stage=stage, n_items=n_items, mlbp=mlbp) for ds in datasets]
    return pd.DataFrame(rows)


PROBE_OUTPUTS = ("silent", "mixture", "oracle_irm", "target", "interferer")
"""What :func:`reward_hacking_probe` rewards: a silent output, the all-pass output (the mixture),
the oracle ratio-mask estimate, the clean target and the interferer."""


@torch.no_grad()
def reward_hacking_probe(
    encoder: TriModalEncoder,
    items: Any,
    *,
    profile: Any = None,
    anchor: str = "text",
    mlbp: Any = None,
    n_items: int | None = None,
    oracle_domain: str = "warped",
):
    """The reward ``R = cos(phi_a(y^), z*)`` that degenerate and ideal outputs would get.

    A reward is hackable when a silent or an all-pass (mixture) output scores as high as
    the oracle ideal-ratio-mask estimate: the policy can then collect reward without
    separating. ``frac_ge_oracle`` is the fraction of items where an output's reward is
    >= the oracle's.

    Args:
        items: a ``MixtureDataset`` (its profile is used) or a list of its items (pass ``profile``).
        anchor: ``"text"`` (item prompt), ``"audio"`` (query clip), or a fusion kind of
            :func:`~mars_core.encoders.anchor.fuse_anchor` (``mean``, ``max``, ``mlbp``).
        oracle_domain: ``"warped"`` (a separator-reachable mask) or ``"linear"``.

    Returns:
        DataFrame with one row per output of :data:`PROBE_OUTPUTS`:
        ``output, reward_mean, reward_std, frac_ge_oracle``.
    """
    import pandas as pd

    from ..audio import FrontEnd
    from ..config import get_profile
    from .anchor import ANCHOR_KINDS, fuse_anchor

    if profile is None:
        if not hasattr(items, "profile"):
            raise ValueError("reward_hacking_probe: pass profile= when items is a list (a MixtureDataset carries it)")
        profile = items.profile
    prof = get_profile(profile)
    sr = prof.audio.sample_rate
    if anchor not in ("text", "audio") + ANCHOR_KINDS:
        raise ValueError(f"anchor must be 'text', 'audio' or one of {ANCHOR_KINDS}, got {anchor!r}")
    lst = _take(items, n_items)
    b = make_batch(lst)
    with encoder.eval_mode():
        emb = embed_items(encoder, lst, sr)
        sources = torch.stack([b.target, b.interferer], dim=1)
        oracle = FrontEnd(prof.audio).oracle_separate(sources, b.mixture, kind="irm", domain=oracle_domain)[:, 0]
        outputs = {
            "silent": torch.zeros_like(b.mixture),
            "mixture": b.mixture,
            "oracle_irm": oracle.float(),
            "target": b.target,
            "interferer": b.interferer,
        }
        z = {"text": emb.text, "audio": emb.query_audio}.get(anchor)
        if z is None:
            z = fuse_anchor(anchor, emb.query_audio, emb.text, emb.image, mlbp=mlbp)
        rewards = {k: _cos(embed_waveforms(encoder, w, sr), z) for k, w in outputs.items()}
    ref = rewards["oracle_irm"]
    return pd.DataFrame(
        [
            {
                "output": k,
                "reward_mean": float(r.mean()),
                "reward_std": float(r.std()) if len(r) > 1 else 0.0,
                "frac_ge_oracle": float((r >= ref).float().mean()),
            }
            for k, r in rewards.items()
        ]
    )

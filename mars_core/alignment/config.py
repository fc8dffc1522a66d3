"""The alignment stages and their hyper-parameters (docs/method.md section 7).

:data:`STAGES` names the three stages in training order; their objectives are in
:mod:`.stages` (``s1_objective``, ``s2_objective``, ``s3_objective``) and the runner in :mod:`.runner`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


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

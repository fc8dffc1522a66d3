"""How a MiniBind is trained: :class:`TrainConfig` and its sizes per profile.

Apart from :mod:`.train` (the loop) so that the judge's configs (:mod:`.judge`) and the
training loop both import it downward.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from ..config import Profile, get_profile


@dataclass(frozen=True)
class TrainConfig:
    """How a MiniBind is trained (the architecture is the profile's EncoderConfig)."""

    clip_steps: int = 600
    """Steps of stage 1, image<->text InfoNCE (a CLIP trained on the benchmark); 0 skips it."""
    steps: int = 1500
    """Steps of stage 2, image<->audio InfoNCE (plus image<->text if freeze_clip is False)."""
    freeze_clip: bool = True
    """Stage 2 freezes the vision and text towers (ImageBind); False trains all towers on both losses."""
    classes_per_batch: int = 0
    """Classes drawn per batch without replacement (0 = every class of the split)."""
    items_per_class: int = 2
    """Stage 2: (audio, image) pairs per drawn class; same-class pairs are masked, not negatives."""
    clip_items_per_class: int = 4
    """Stage 1: (image, prompt) pairs per drawn class (the CLIP stage is cheap: larger batches)."""
    lr: float = 1e-3
    """Peak AdamW learning rate."""
    min_lr_ratio: float = 0.02
    """Final learning rate of the cosine decay, as a fraction of lr."""
    warmup_steps: int = 100
    """Linear warm-up steps from 0 to lr, at the start of each stage."""
    weight_decay: float = 0.05
    """AdamW weight decay (matrices only)."""
    beta2: float = 0.95
    """AdamW second-moment decay (beta1 = 0.9), as in ImageBind/CLIP."""
    grad_clip: float = 1.0
    """Max global gradient norm."""
    eval_every: int = 100
    """Validate (and maybe take a new best) every this many stage-2 steps."""
    ckpt_every: int = 100
    """Write last.pt every this many steps (when a run directory is given)."""
    seed: int = 0
    """Seed of the initial weights, of every batch and of stochastic depth."""
    gain_db: float = 10.0
    """Audio gain drawn in U(-gain_db, +gain_db) dB."""
    noise_prob: float = 0.5
    """Probability of adding white noise to a crop."""
    snr_db_low: float = 5.0
    """Lowest SNR of the added noise in dB."""
    snr_db_high: float = 40.0
    """Highest SNR of the added noise in dB."""
    time_masks: int = 2
    """SpecAugment time bands per crop."""
    time_mask_frames: int = 24
    """Widest SpecAugment time band in frames (10 ms each)."""
    freq_masks: int = 2
    """SpecAugment frequency bands per crop."""
    freq_mask_bins: int = 8
    """Widest SpecAugment frequency band in mel bins."""
    image_scale_low: float = 0.7
    """Smallest zoom window side (fraction of the image) of the image augmentation."""
    image_rotation_deg: float = 15.0
    """Largest image rotation in degrees."""
    flip_prob: float = 0.5
    """Probability of a horizontal flip."""
    color_jitter: float = 0.2
    """Contrast factor U(1 +- j) and brightness shift U(+-j) in normalised units."""
    gray_prob: float = 0.0
    """Probability of turning an image grey (mean of its channels)."""
    channel_shuffle_prob: float = 0.0
    """Probability of permuting an image's colour channels."""
    cartoon_prob: float = 0.0
    """Probability of redrawing an image as flat colour with black outlines (pairs.restyle_images). Measured at cpu
    size (one seed, cartoon 0.3 and line art 0.15 against none): test audio->image R@1 0.19 -> 0.23, but audio->text
    R@1 0.78 -> 0.64 and test_timbre audio->image 0.00 -> 0.06; not adopted by any profile."""
    line_prob: float = 0.0
    """Probability of redrawing an image (not made a cartoon) as black line art on white (pairs.restyle_images)."""

    image_trunk_lr_ratio: float = 0.5
    """Learning rate of a pretrained image trunk's trained blocks (``EncoderConfig.image_trunk_train_blocks``), as a
    fraction of ``lr``, on the same warm-up and decay (no weight decay)."""

    prompt_recompose_prob: float = 0.0
    """Probability of replacing a training prompt by its class name between random generic template words
    (pairs.recompose_prompt); 0 trains on the prompts as written."""

    @property
    def total_steps(self) -> int:
        """Both stages."""
        return self.clip_steps + self.steps

    @classmethod
    def for_profile(cls, profile: str | Profile | None = None, **overrides: Any) -> "TrainConfig":
        """The training sizes of a profile (``overrides`` replace fields)."""
        name = get_profile(profile).name
        return replace(cls(**_PROFILE_TRAIN[name]), **overrides)


_PROFILE_TRAIN: dict[str, dict[str, Any]] = {
    "smoke": dict(clip_steps=200, steps=300, lr=2e-3, warmup_steps=30, eval_every=50, ckpt_every=50),
    "cpu": dict(clip_steps=1000, steps=2000, lr=2e-3, warmup_steps=100, eval_every=100, ckpt_every=100,
                prompt_recompose_prob=0.5),
    "full": dict(clip_steps=5000, steps=20000, items_per_class=8, clip_items_per_class=16, lr=1e-3,
                 warmup_steps=1000, eval_every=1000, ckpt_every=1000),
}

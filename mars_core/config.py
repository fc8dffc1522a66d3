"""Run-size profiles: ``smoke``, ``cpu`` and ``full``.

One code path, three sizes. A profile is a frozen dataclass of frozen sections;
every field carries a docstring right below it (CleanRL style), which
:func:`profile_table` reads back so notebooks can print what each number means.

Choose a profile with :func:`get_profile` (explicit name, else ``MARS_PROFILE``,
else ``smoke``). ``full`` is the paper's front end (16 kHz, 65535-sample clips,
STFT 1024/256, 256 log-frequency bins); ``smoke`` and ``cpu`` only change numbers.

Why one module (about 500 lines, over the ~400 of the layout rule): it is one table. The section
dataclasses hold every field with its meaning, the three factories below them hold each field's
smoke/cpu/full value, and :func:`profile_table` reads the field docstrings back from this source;
split into modules, a reader would compare a field and its three values across files. Beyond the
table it only chooses a profile and prints it.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import os
import textwrap
from dataclasses import dataclass, field, fields, is_dataclass, replace
from functools import lru_cache
from typing import Any

PROFILE_NAMES = ("smoke", "cpu", "full")
ENV_VAR = "MARS_PROFILE"


@dataclass(frozen=True)
class AudioConfig:
    """Signal front end (docs/method.md section 1)."""

    sample_rate: int = 16000
    """Sampling rate in Hz of every waveform the package handles."""
    segment_samples: int = 65535
    """Length in samples of one training/evaluation segment (mixture and sources)."""
    n_fft: int = 1024
    """STFT size; the linear spectrogram has n_fft // 2 + 1 frequency rows."""
    hop_length: int = 256
    """STFT hop in samples; a segment has 1 + segment_samples // hop_length frames."""
    n_freq_warped: int = 256
    """Rows of the log-frequency-warped spectrogram the separator sees."""

    @property
    def win_length(self) -> int:
        """Hann window length (equal to n_fft, as in the reference front end)."""
        return self.n_fft

    @property
    def n_freq(self) -> int:
        """Rows of the linear-frequency STFT."""
        return self.n_fft // 2 + 1

    @property
    def n_frames(self) -> int:
        """STFT frames of one segment (centered STFT)."""
        return 1 + self.segment_samples // self.hop_length

    @property
    def segment_seconds(self) -> float:
        """Segment duration in seconds."""
        return self.segment_samples / self.sample_rate


@dataclass(frozen=True)
class DataConfig:
    """Offline benchmark size and mixing (docs/method.md section 3; the benchmark: datasets/README.md)."""

    clip_seconds: float = 6.0
    """Duration of each stored source clip; segments are cropped from it."""
    train_clips_per_class: int = 160
    """Source clips per class in the ``train`` split."""
    val_clips_per_class: int = 20
    """Source clips per class in the ``val`` split."""
    test_clips_per_class: int = 20
    """Source clips per class in the ``test`` split (same timbre family as train)."""
    test_timbre_clips_per_class: int = 20
    """Source clips per instrument class in ``test_timbre`` (independent soundfont)."""
    train_images_per_class: int = 24
    """Augmented images per class for train and val (training styles)."""
    test_images_per_class: int = 8
    """Augmented images per class for test splits (the held-out style)."""
    image_size: int = 224
    """Side in pixels of every rendered query image."""
    n_val_mixtures: int = 200
    """Seeded validation mixtures (one target + one interferer each)."""
    n_test_mixtures: int = 400
    """Seeded test mixtures per test split."""
    n_sources: int = 2
    """Sources per mixture (N in mix-and-separate)."""
    gain_low: float = 0.5
    """Lower bound of the per-source training gain U(low, high)."""
    gain_high: float = 1.5
    """Upper bound of the per-source training gain U(low, high)."""
    seed: int = 0
    """Seed of the benchmark build and of every mixture sampler."""


@dataclass(frozen=True)
class SeparatorConfig:
    """Query-conditioned U-Net separator (docs/method.md section 2)."""

    down_channels: tuple[int, ...] = (64, 128, 256, 512, 512, 512, 512)
    """Output channels of the U-Net's down blocks, outermost first; one entry per level."""
    n_maps: int = 32
    """K: feature maps the U-Net outputs at full resolution, combined with the query."""
    query_dim: int = 1024
    """Size of the query embedding (1024 for ImageBind-Huge; the encoder's width otherwise)."""
    conditioning: str = "inner"
    """How the query meets the K maps: 'inner' (weighted inner product, the reference) or 'film'."""


@dataclass(frozen=True)
class EncoderConfig:
    """Tri-modal encoder of queries and rewards (ImageBind's architecture; MiniBind when small)."""

    kind: str = "imagebind"
    """Which encoder the pipeline loads: 'imagebind' (official weights) or 'minibind' (trained offline, checkpoints/)."""
    embed_dim: int = 1024
    """Shared embedding size D; the separator's query_dim must equal it."""
    audio_width: int = 768
    """Width of the audio transformer."""
    audio_depth: int = 12
    """Blocks of the audio transformer."""
    audio_heads: int = 12
    """Attention heads of the audio transformer."""
    vision_width: int = 1280
    """Width of the vision transformer."""
    vision_depth: int = 32
    """Blocks of the vision transformer."""
    vision_heads: int = 16
    """Attention heads of the vision transformer."""
    text_width: int = 1024
    """Width of the text transformer."""
    text_depth: int = 24
    """Blocks of the text transformer."""
    text_heads: int = 16
    """Attention heads of the text transformer."""
    image_size: int = 224
    """Side in pixels of the square images the vision tower reads (resize short side + centre crop)."""
    patch_size: int = 14
    """Side in pixels of one image patch (Conv3d kernel = stride, 2 frames)."""
    audio_stride: int = 10
    """Stride of the 16x16 audio patches on the (mel, frame) plane (ImageBind: 10, overlapping)."""
    num_mel_bins: int = 128
    """Kaldi mel bins of the audio front end (20 Hz to Nyquist); 25 ms frames, 10 ms hop."""
    target_frames: int = 204
    """Frames of one audio clip's log-mel image after zero-padding or truncation (204 = 2 s + margin)."""
    clip_seconds: float = 2.0
    """Duration of one audio clip; longer waveforms are covered by clips_per_item evenly spaced clips."""
    clips_per_item: int = 3
    """Clips per waveform at inference; their embeddings are averaged (ImageBind: 3)."""
    audio_drop_path: float = 0.1
    """Largest stochastic-depth rate of the audio trunk (training only)."""
    tokenizer: str = "bpe"
    """Text tokenizer: 'bpe' (CLIP, 49408 ids) or 'bytes' (UTF-8 bytes, 259 ids, no vocabulary file)."""
    context_length: int = 77
    """Token positions of the text tower (longer prompts are truncated, EOT kept)."""
    init: str = "xavier"
    """Weight initialisation of a fresh model: 'xavier' (ImageBind class default) or 'trunc_normal' (ViT, std 0.02)."""
    image_style: str = "as_drawn"
    """What a MiniBind's vision tower reads: 'as_drawn' (the images) or 'line_art' (each image redrawn as black
    strokes on white, :func:`~mars_core.encoders.preprocess.line_art`, at training and at query time alike). The
    official ImageBind reads images as drawn. Measured at cpu size (two seeds, ``python -m mars_core.encoders.train
    --profile cpu --image-style line_art --seed S``): test audio->image R@1 0.29 / 0.27 (as drawn 0.22), but
    audio->text 0.57 / 0.62 (0.86), and the text classes crowd together (the nearest other class's mean prompt at
    cosine 0.73 / 0.63 against 0.34): the text tower is trained against the images, so what the pictures lose
    (colour) the prompts lose too. No profile uses it."""
    image_tower: str = "vit"
    """A MiniBind's vision tower: 'vit' (a vision transformer of ``vision_width`` x ``vision_depth``, trained from
    scratch) or 'mobilenet_v2' (the frozen, pretrained MobileNetV2 trunk of :mod:`mars_core.encoders.mobilenet`,
    globally pooled, then a trained LayerNorm + Linear to ``vision_width``; the vision head and the rest as before).
    Measured at cpu size (``python -m mars_core.encoders.train --profile cpu --role reward --image-tower mobilenet_v2``,
    33 min, at 143670f): test audio->image R@1 0.62 (ViT 0.22), test_timbre 0.39 (0.00), audio->text 0.87 / 0.61
    (0.86 / 0.61). The cpu profile uses 'mobilenet_v2' since the eighth session; smoke and every judge use 'vit'."""
    image_trunk_train_blocks: int = 0
    """With ``image_tower='mobilenet_v2'``: how many of the pretrained trunk's last blocks MiniBind trains (in its
    CLIP stage, at ``TrainConfig.image_trunk_lr_ratio`` of the learning rate, no weight decay); 0 keeps the trunk
    frozen (the shipped ``cpu`` model). Measured at cpu size with 4 (``block_11`` to ``block_14``, the blocks the npm
    package had fine-tuned away from ImageNet; ``python -m mars_core.encoders.train --profile cpu --role reward
    --image-trunk-train-blocks 4``, 49 min at 6259b8f, one seed): test audio->image R@1 0.67 (frozen 0.62), image->text
    0.61 (0.50), audio->text 0.87 (0.87), but test_timbre audio->text 0.46 (0.61; 0.54 with
    ``TrainConfig.image_trunk_lr_ratio=0.1``), and its separator's family cells trade places; not adopted (README,
    eleventh session)."""


@dataclass(frozen=True)
class SupervisedConfig:
    """Supervised mix-and-separate training of the separator (docs/method.md section 3; OmniSep recipe at ``full``)."""

    steps: int = 100_000
    """Optimisation steps (OmniSep: linear decay to 0.1 x lr at 100k steps)."""
    batch_mixtures: int = 64
    """Mixtures per step; every source of a mixture is an item, so a step has n_sources x this many items."""
    optimizer: str = "adam"
    """'adam' (OmniSep) or 'adamw' (decoupled weight decay)."""
    lr: float = 1e-3
    """Peak learning rate (reached after the warm-up)."""
    weight_decay: float = 0.0
    """Weight decay (L2 for 'adam', decoupled for 'adamw')."""
    warmup_steps: int = 5000
    """Linear warm-up from lr / warmup_steps to lr over this many steps."""
    final_lr_ratio: float = 0.1
    """After the warm-up the learning rate decays linearly to final_lr_ratio x lr at the last step."""
    grad_clip: float = 1.0
    """Maximum global gradient norm (clip_grad_norm_)."""
    loss: str = "bce"
    """'bce': weighted BCE on the ideal binary mask (CLIPSep/OmniSep); 'l1': weighted L1 on the ratio mask (Sound of Pixels)."""
    query: str = "mixup"
    """Training query: 'mixup' (Query-Mixup over image, text and audio), or one of 'text', 'image', 'audio', 'omni'."""
    eval_every: int = 2000
    """Validate (SDR of the fixed validation mixtures, deterministic mask) every this many steps; the best step is kept."""
    val_mixtures: int = 200
    """Fixed validation mixtures (the first ones of the val split, omni query); at most data.n_val_mixtures."""
    ckpt_every: int = 1000
    """Write the resumable checkpoint last.pt every this many steps (and at the end)."""
    seed: int = 0
    """Seed of the initial weights and of the Query-Mixup weights (the mixtures use data.seed)."""
    query_init_std: float = 0.0
    """0 keeps the reference init N(0, 1e-4) of the query projection W; > 0 redraws W ~ N(0, std^2) (project decision for short runs: with 1e-4 every query gets the same weights q~ = 0.5 and training idles a few hundred steps before the maps and W break their symmetry)."""
    query_noise: float = 0.0
    """Query augmentation (0: none, the reference recipe): each training item's image, text and audio embedding
    becomes ``n(e + s xi)`` with ``s ~ U(0, query_noise)`` per item and modality and ``xi ~ N(0, I / D)``, before
    Query-Mixup. At cpu size the text tower maps the 12 training prompts of a class to one point (cosine 0.99) while
    a held-out prompt sits at cosine 0.55 from it (n(e + 1.5 xi) has cosine about 0.55 with e): without noise the
    separator only ever sees 22 text points and fails on the held-out prompts (docs/method.md section 3)."""
    pure_query_prob: float = 0.0
    """Share of training items whose Query-Mixup weights are one-hot on a uniformly drawn modality (0: the reference
    Query-Mixup; evaluation asks pure text, image and audio queries, which plain Query-Mixup almost never shows)."""
    hard_pair_prob: float = 0.0
    """Share of training mixtures whose interferer comes from the target's family (same-family, hard pairs);
    0 draws every interferer at random (the reference)."""
    trainable: str = "all"
    """Which weights train: 'all' (the reference), or 'head' (the last up-convolution and the query fusion, the U-Net
    trunk frozen in eval mode, as RL's trainable='head'; used by the control 'supervised (continued)')."""
    max_skipped_updates: int = 10
    """A step whose loss or gradient norm is not finite is skipped before the optimiser step (weights and optimiser
    state unchanged; the learning-rate schedule still advances) and counted in history['skipped_updates'] (0 or 1
    per step). The run raises FloatingPointError once more than this many steps were skipped in total (0: at the
    first). It does not change what a run computes, so it is left out of the run config that keys cached runs and
    checkpoints (supervised.trainer.run_config)."""
    num_workers: int = 0
    """DataLoader worker processes that read the training mixtures (0: in the training process). A step's mixtures
    are a pure function of the step, so any count trains the same weights; left out of the run config."""


@dataclass(frozen=True)
class RLConfig:
    """RL fine-tuning of the separator as a Beta mask policy (docs/method.md sections 4-6).

    A step samples ``group_size`` masks for each of ``n_sources x batch_mixtures`` items from
    the frozen old policy, rewards every waveform, and runs ``ppo_epochs x minibatches`` clipped
    updates. :func:`rl_preset` gives the two named variants (``plus``: ours; ``paper``).
    """

    preset: str = "plus"
    """Name of the preset this config came from ('plus', 'paper'; anything else for a custom run)."""
    steps: int = 20_000
    """RL steps (one rollout and its PPO epochs each); the paper trains 200k steps of batch 128."""
    batch_mixtures: int = 64
    """Mixtures per step; every source of a mixture is an item with its own query (n_sources x this items)."""
    group_size: int = 8
    """G: masks sampled per item; group advantages compare them. G = 1 needs advantage='ema'."""
    query: str = "mixup"
    """Conditioning query of the training items: 'mixup' (as in supervised training) or 'text', 'image', 'audio', 'omni'."""
    query_noise: float = 0.0
    """Augmentation of the separator's training queries, as SupervisedConfig.query_noise: each item's modality embeddings
    moved to n(e + s xi), s ~ U(0, query_noise) (0: clean training embeddings, every preset). The reward's anchors are never
    moved."""
    pure_query_prob: float = 0.0
    """As SupervisedConfig.pure_query_prob: this share of the Query-Mixup items gets a one-modality query."""
    hard_pair_prob: float = 0.0
    """As SupervisedConfig.hard_pair_prob: this share of the training mixtures pairs the target with an interferer of its
    own family (0: random pairs only, the method)."""
    train_split: str = "train"
    """The split whose mixtures RL trains on: 'train' (the method), or another split of the build for **adaptation without
    references** (e.g. 'test_timbre': RL on mixtures of a timbre the separator never heard). Any split but 'train' is
    reference-free: the reward may not read the clean sources (lambda_sig = 0, so the score-function estimator); what the run still uses
    is each mixture's class labels (which queries to ask, and the contamination anchor) and the val split for selection.
    Its mixtures are drawn with the seed ``data.seed + 1`` (mars_core.rl.trainer.ADAPTATION_SEED_OFFSET), so none is one
    of the benchmark's evaluation mixtures of that split, though they share its clips."""
    signal_reference: str = "source"
    """What the signal term's SI-SDR compares each estimate with: 'source', the item's clean source (the signal term sees
    the ground truth), or 'remainder', the mixture less the old policy's mode estimates of the mixture's other items
    (x - sum_{j != k} y_j^old: what the others leave of the mixture; no clean source is read, so it is allowed with any
    train_split). The pathwise estimator differentiates SI-SDR against the same reference."""
    select: str = "val"
    """Which weights a finished run returns: 'val', those of the step with the best val SDR (the method's selection,
    on labelled mixtures of the training timbres), or 'last', the last step's (no selection: an adaptation run that
    reads no label at all, and whose val split is not the material it adapts to)."""
    kappa: float = 9.0
    """Beta concentration: alpha = 1 + kappa P, beta = 1 + kappa (1 - P) (paper's best: 9); the start value of a schedule."""
    kappa_end: float = 9.0
    """Concentration at the last step when kappa_schedule anneals (ignored for 'constant')."""
    kappa_schedule: str = "constant"
    """'constant' (the paper), 'linear' or 'cosine' from kappa to kappa_end."""
    clip_eps: float = 0.2
    """PPO clip range eps of the per-bin ratio."""
    ent_coef: float = 0.1
    """lambda_H: weight of the mean per-bin entropy bonus (paper: 0.1; 'plus': 0.01, because at the cpu supervised checkpoint the 0.1 bonus's gradient, which pulls every P towards 0.5, measured 2-5x the policy gradient's norm)."""
    kl_coef: float = 0.01
    """lambda_KL: weight of the mean per-bin KL(pi_theta || pi_old) penalty (0 skips computing it)."""
    ppo_epochs: int = 2
    """Passes over each sampled batch (1 = the paper: ratio 1 at the gradient, clip and KL inactive)."""
    minibatches: int = 2
    """Minibatches per PPO epoch, split over mixtures (at most batch_mixtures); advantages are never re-normalised per minibatch."""
    trainable: str = "all"
    """What RL trains: 'all' separator weights, or 'head' (the last up-path layer and the query
    fusion; the U-Net trunk stays at the supervised weights and is run once per rollout, not once
    per update)."""
    optimizer: str = "adamw"
    """'adamw' (the method's) or 'sgd' (plain SGD on the clipped gradient: no per-weight normalisation, so
    weights whose policy gradient is mostly noise move little; see :func:`mars_core.rl.trainer.make_optimizer`)."""
    lr: float = 2e-4
    """Learning rate (constant) of the optimizer."""
    weight_decay: float = 0.01
    """Decoupled weight decay (AdamW; SGD applies it as L2)."""
    grad_clip: float = 1.0
    """Maximum global gradient norm per update."""
    max_skipped_updates: int = 10
    """Non-finite values skip updates, counted in history['skipped_updates'] per step: a step with a non-finite
    reward runs none of its ppo_epochs x minibatches updates, and an update whose loss or gradient norm is not
    finite is skipped before the optimiser step (weights and optimiser state unchanged). The run raises
    FloatingPointError once more than this many updates were skipped in total (0: at the first)."""
    advantage: str = "group"
    """'group': (R - group mean) / (group std + eps) per item (GRPO, the group-std normalisation); 'loo': R_g - mean of the
    group's other rewards (leave-one-out, unbiased, not divided by the spread); 'ema': R - EMA baseline, divided by the batch
    std (the paper's reading); 'none': every advantage 0 (the ablation with no policy gradient: only the entropy bonus and
    the KL term train)."""
    ema_decay: float = 0.92
    """Decay of the EMA baseline of the batch-mean reward (advantage='ema')."""
    reward_segments: int = 0
    """S: 0 = one reward per waveform (the method). S > 0: dense segment rewards (mars_core.rl.segments): each waveform is cut
    into S equal time segments, each rewarded (its SI-SDR, the encoder's embedding of its window), advantages normalised per
    segment within the group, and each bin credited with its frame's segment's advantage; why: one scalar advantage spread
    over every bin gives a gradient whose noise grows with the bins (scripts/rl_gradient_check.py), S divides that dimension."""
    segment_terms: str = "all"
    """With reward_segments S > 0, which reward terms are computed per segment: 'all' (the encoder embeds every segment's
    window: about 50x the reward's cost at cpu size, 64 segments) or 'signal' (only the SI-SDR signal term is per segment;
    the semantic and contamination terms stay one embedding per waveform, the same for all its segments)."""
    estimator: str = "score"
    """'score': the score-function (likelihood-ratio) gradient of PPO/GRPO (the method). 'pathwise': the reparameterised gradient
    of the differentiable signal term (Beta rsample -> iSTFT -> clamped SI-SDR / 10, needs lambda_sig > 0; the semantic and
    contamination terms pass no gradient), the low-noise reference estimator the diagnostics compare the others with."""
    lambda_sem: float = 1.0
    """Weight of the semantic term cos(phi_a(y^), z*) (1: the method). With lambda_neg also 0 the reward encoder is never run
    (the 'dense' preset: the signal term alone)."""
    lambda_sig: float = 0.0
    """Weight of the signal term SI-SDR(y^, y*) / 10 dB (clamped to [-30, 30] dB; ours, sees the ground truth); 0 turns it off."""
    lambda_neg: float = 0.0
    """Weight of the contamination penalty -cos(phi_a(y^), z* of the interferer) (ours); 0 turns it off."""
    lambda_res: float = 0.0
    """Weight of the residual term cos(phi_a(x - y^), z-) - cos(phi_a(x - y^), z*) (ours): what the estimate leaves of
    the mixture x should sound like the other sources and not like the target. Needs no clean source, like the semantic
    term, and costs a second encoder call per waveform; 0 turns it off."""
    reward_batch_size: int = 0
    """Waveforms per reward-encoder call; 0 = all G x items in one call."""
    eval_every: int = 1000
    """Validate (SDR, SI-SDRi with the deterministic mode P on fixed val mixtures, judge score) every this many steps; the best val SDR is kept."""
    val_mixtures: int = 200
    """Fixed validation mixtures (first ones of the val split, centred crops, omni query); at most data.n_val_mixtures."""
    ckpt_every: int = 500
    """Write the resumable checkpoint last.pt every this many steps (and at the end)."""
    seed: int = 0
    """Seed of the mask samples (per step) and of the Query-Mixup weights."""


PLUS: dict[str, Any] = dict(trainable="head", kappa=30.0, kappa_end=30.0, ent_coef=0.01, lambda_sig=1.0, lambda_neg=0.5)
"""How the ``plus`` preset (every profile's ``rl``) departs from the :class:`RLConfig` defaults (docs/method.md sections 4-6).
Measured at cpu size from the supervised checkpoint (200 steps, validation SDR and judge score on 50 val mixtures;
commands in the RL issue's notes, ``scripts/rl_fixed_batch.py`` and ``scripts/rl_gradient_check.py``): training every
weight lowered validation SDR in every full run tried (five configurations) and costs 1.3-1.5x the head-only step; the
masks sampled at kappa 9 score far below their mode (one batch: -4.9 to -6.3 dB SI-SDR against +4.3 dB, two sample
streams; kappa 30: -1.7 to -2.2 dB); the entropy bonus 0.1 pulls every P towards 1/2 (its gradient measured 2-5x the
policy gradient's norm); the semantic reward alone raised the judge's score but lowered SDR, the signal term keeps SDR
in the objective (these choices were measured on the second session's separator). None of this makes RL improve SDR at
cpu size (README results, notebook 04 section 10): at its 32 sampled masks per update one update's cosine with the exact
gradient of the mode's SI-SDR is about 0.1 (kappa 30; 0.09-0.18 on the three separators shipped so far); dense segment
rewards are the ``dense`` preset."""


@dataclass(frozen=True)
class Profile:
    """A named run size: the only thing that differs between smoke, cpu and full."""

    name: str = "full"
    """Profile name: smoke, cpu or full."""
    description: str = ""
    """What the profile is for and roughly how long it takes."""
    audio: AudioConfig = field(default_factory=AudioConfig)
    """Signal front end."""
    data: DataConfig = field(default_factory=DataConfig)
    """Benchmark size and mixing."""
    separator: SeparatorConfig = field(default_factory=SeparatorConfig)
    """Separator architecture."""
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    """Tri-modal query/reward encoder."""
    supervised: SupervisedConfig = field(default_factory=SupervisedConfig)
    """Supervised training of the separator."""
    rl: RLConfig = field(default_factory=RLConfig)
    """RL fine-tuning (the 'plus' preset; rl_preset(profile, 'paper') for the paper's reading)."""


def _smoke() -> Profile:
    return Profile(
        name="smoke",
        description="CI and tests on 2 CPU cores: every notebook in minutes; numbers are not meaningful.",
        audio=AudioConfig(sample_rate=8000, segment_samples=16383, n_fft=256, hop_length=128, n_freq_warped=128),
        data=DataConfig(
            clip_seconds=2.5,
            train_clips_per_class=6,
            val_clips_per_class=2,
            test_clips_per_class=2,
            test_timbre_clips_per_class=2,
            train_images_per_class=4,
            test_images_per_class=2,
            image_size=224,
            n_val_mixtures=8,
            n_test_mixtures=12,
        ),
        separator=SeparatorConfig(down_channels=(8, 16, 32, 64, 64, 64, 64), n_maps=16, query_dim=128),
        supervised=SupervisedConfig(steps=30, batch_mixtures=4, warmup_steps=5, eval_every=15, val_mixtures=8,
                                    ckpt_every=15, query_init_std=1.0),
        rl=RLConfig(steps=8, batch_mixtures=2, group_size=4, eval_every=4, val_mixtures=4, ckpt_every=4, **PLUS),
        encoder=EncoderConfig(
            kind="minibind", embed_dim=128,
            audio_width=96, audio_depth=2, audio_heads=4, audio_stride=16,
            vision_width=64, vision_depth=2, vision_heads=4,
            text_width=64, text_depth=2, text_heads=4,
            image_size=112, num_mel_bins=64, clips_per_item=1,
            tokenizer="bytes", context_length=48,
        ),
    )


def _cpu() -> Profile:
    return Profile(
        name="cpu",
        description="A laptop without GPU: the whole notebook sequence in about an hour, results worth reading.",
        audio=AudioConfig(sample_rate=8000, segment_samples=32767, n_fft=512, hop_length=256, n_freq_warped=128),
        data=DataConfig(
            clip_seconds=5.0,
            train_clips_per_class=40,
            val_clips_per_class=8,
            test_clips_per_class=10,
            test_timbre_clips_per_class=10,
            train_images_per_class=12,
            test_images_per_class=4,
            n_val_mixtures=100,
            n_test_mixtures=200,
        ),
        separator=SeparatorConfig(down_channels=(16, 32, 64, 128, 128, 128, 128), n_maps=32, query_dim=256),
        supervised=SupervisedConfig(steps=8000, batch_mixtures=8, warmup_steps=50, eval_every=250, val_mixtures=100,
                                    ckpt_every=50, query_init_std=1.0, query_noise=2.0, pure_query_prob=0.5,
                                    hard_pair_prob=0.25),
        rl=RLConfig(steps=200, batch_mixtures=4, group_size=4, eval_every=25, val_mixtures=50, ckpt_every=25, **PLUS),
        encoder=EncoderConfig(
            kind="minibind", embed_dim=256,
            audio_width=128, audio_depth=4, audio_heads=4, audio_stride=16,
            vision_width=96, vision_depth=2, vision_heads=4,
            text_width=96, text_depth=2, text_heads=4,
            image_size=112, num_mel_bins=64, clips_per_item=3,
            tokenizer="bytes", context_length=48,
            image_tower="mobilenet_v2",
        ),
    )


def _full() -> Profile:
    return Profile(
        name="full",
        description="Paper scale on a GPU workstation: 16 kHz, 65535-sample clips, 256x256 log-frequency spectrograms.",
        rl=RLConfig(**PLUS),
    )


_FACTORIES = {"smoke": _smoke, "cpu": _cpu, "full": _full}

DENSE: dict[str, Any] = dict(reward_segments=64, segment_terms="signal", lambda_sem=0.0, lambda_sig=1.0, lambda_neg=0.0,
                             ent_coef=0.0, kl_coef=0.0)
"""How the ``dense`` preset departs from ``plus``: the score-function gradient made to carry signal at cpu size. The reward is
the SI-SDR signal term alone, given per time segment (64 segments, each normalised within its group), with no entropy or KL
term and no reward encoder. Why (README, notebook 04; scripts/rl_gradient_check.py at cpu size, N = 32, kappa 30): one
scalar reward per waveform spreads its advantage over ~16,000 bins, so one update's cosine with the mode's exact gradient
is about 0.1; 64 segment rewards raise it to 0.3-0.5 (mean of 12 updates: 0.59-0.79); plus's semantic term alone pointed away
from it (mean cosine -0.22 with the from-scratch image tower's reward encoder; +0.29 with the shipped one) and its encoder
call is most of plus's step; the entropy bonus alone lowers val SDR by about
2.3 dB in 200 steps. Training it on the supervised recipe's augmented queries and same-family pairs (query_noise 2,
pure_query_prob 0.5, hard_pair_prob 0.25, as the 'supervised (continued)' control) gained less on test and lost as much
for image queries and on test_timbre (one seed each, on the third session's separator: docs/results_history.md), so they
stay options."""

RL_PRESETS = ("plus", "paper", "dense")
"""Names accepted by :func:`rl_preset`."""


def rl_preset(profile: str | Profile | None, name: str = "plus") -> RLConfig:
    """The profile's :class:`RLConfig` for a named preset.

    * ``plus`` (ours, ``profile.rl``, :data:`PLUS`): G sampled masks per item (4 at smoke/cpu, 8 at
      full), group advantages, 2 PPO epochs of 2 minibatches (so clipping and the KL term act),
      only the head trained (last up-convolution and query fusion), kappa 30, entropy bonus 0.01,
      semantic reward with the contamination penalty (``lambda_neg``) and the SI-SDR signal term
      (``lambda_sig``: train targets only; val SDR, which selects the checkpoint, is never rewarded).
    * ``dense`` (:data:`DENSE`): ``plus`` rewarded by the SI-SDR signal term alone, per time segment (64 dense
      rewards, each normalised within its group), no entropy bonus, no KL term, no reward encoder.
    * ``paper`` (the paper's reading): every weight trained, kappa 9, one PPO epoch of one
      minibatch (old policy = current policy at the gradient: REINFORCE with normalised advantages
      plus entropy), G = 1 with the batch as the group through the EMA baseline, entropy bonus 0.1,
      semantic reward only.

    Raises:
        ValueError: unknown preset name.
    """
    rl = get_profile(profile).rl
    if name == "plus":
        return replace(rl, preset="plus")
    if name == "dense":
        return replace(rl, preset="dense", **DENSE)
    if name == "paper":
        return replace(rl, preset="paper", group_size=1, ppo_epochs=1, minibatches=1, advantage="ema", trainable="all",
                       kappa=9.0, kappa_end=9.0, ent_coef=0.1, kl_coef=0.01, lambda_sig=0.0, lambda_neg=0.0)
    raise ValueError(f"unknown RL preset {name!r}; choose one of {RL_PRESETS}")


def get_profile(name: str | Profile | None = None, **overrides: Any) -> Profile:
    """Return a profile by name, or from ``MARS_PROFILE``, defaulting to ``smoke``.

    ``overrides`` replace top-level sections or fields, e.g.
    ``get_profile("cpu", data=replace(p.data, seed=1))``.

    Raises:
        ValueError: unknown profile name.
    """
    if isinstance(name, Profile):
        prof = name
    else:
        name = (name or os.environ.get(ENV_VAR) or "smoke").strip().lower()
        if name not in _FACTORIES:
            raise ValueError(f"unknown profile {name!r}; choose one of {', '.join(PROFILE_NAMES)} (env {ENV_VAR})")
        prof = _FACTORIES[name]()
    return replace(prof, **overrides) if overrides else prof


@lru_cache(maxsize=None)
def field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings of a dataclass, read from its source (``{field: doc}``)."""
    src = textwrap.dedent(inspect.getsource(cls))
    body = ast.parse(src).body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for prev, node in zip(body, body[1:]):
        if (
            isinstance(prev, ast.AnnAssign)
            and isinstance(prev.target, ast.Name)
            and isinstance(node, ast.Expr)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            docs[prev.target.id] = " ".join(node.value.value.split())
    return docs


def flatten(obj: Any, prefix: str = "") -> list[tuple[str, Any, str]]:
    """``(dotted.name, value, doc)`` for every leaf field of a nested dataclass."""
    rows: list[tuple[str, Any, str]] = []
    docs = field_docs(type(obj))
    for f in fields(obj):
        value = getattr(obj, f.name)
        key = f"{prefix}{f.name}"
        if is_dataclass(value):
            rows.extend(flatten(value, key + "."))
        else:
            rows.append((key, value, docs.get(f.name, "")))
    return rows


def profile_table(profile: Profile | str | None = None):
    """The profile as a pandas DataFrame with columns ``field, value, doc``."""
    import pandas as pd

    prof = get_profile(profile)
    rows = flatten(prof)
    audio = prof.audio
    derived = [
        ("audio.n_freq", audio.n_freq, "Rows of the linear-frequency STFT (derived)."),
        ("audio.n_frames", audio.n_frames, "STFT frames per segment (derived)."),
        ("audio.segment_seconds", round(audio.segment_seconds, 3), "Segment duration in seconds (derived)."),
    ]
    return pd.DataFrame(rows + derived, columns=["field", "value", "doc"])


def show_profile(profile: Profile | str | None = None) -> Profile:
    """Print which profile runs and its table; return the profile (notebook helper)."""
    prof = get_profile(profile)
    print(f"MARS profile: {prof.name} — {prof.description}")
    try:
        from IPython.display import display

        display(profile_table(prof).style.hide(axis="index"))
    except Exception:  # plain Python: a text table
        print(profile_table(prof).to_string(index=False))
    return prof


def to_dict(profile: Profile) -> dict[str, Any]:
    """Plain-dict view (for checkpoints and build manifests)."""
    return dataclasses.asdict(profile)

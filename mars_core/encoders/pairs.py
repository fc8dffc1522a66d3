"""Training pairs for MiniBind: a benchmark split in memory, class-balanced batches, augmentation.

A batch is a pure function of ``(seed, step)``: one generator
``item_rng(seed, "minibind-batch", step)`` draws the classes, the clips, crop offsets,
gains, noise, SpecAugment masks, images and their geometric/colour jitter, and the
prompts. So a resumed run sees exactly the batches an uninterrupted run would.

Each of the ``classes_per_batch`` classes contributes ``items_per_class`` triples
``(audio crop, image, prompt)`` of that class; the triples of one class are positives
of nothing but themselves and are masked out as negatives (:mod:`.contrastive`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..data.manifest import read_table
from ..data.verify import clip_row, read_benchmark_image, read_clip
from ..seeding import item_rng
from .preprocess import CLIP_MEAN, CLIP_STD, edge_map
from .preprocess import transform_image

PROMPT_GROUP = {"train": "train", "val": "train", "test": "test", "test_timbre": "test"}
"""Which prompt templates a split uses: training templates for train/val, held-out ones for tests."""


@dataclass
class SplitData:
    """One split of a benchmark build, decoded into memory.

    ``audio[i]`` is a float32 waveform of class ``audio_labels[i]``; ``images`` are
    already resized/cropped/normalised for the model; ``prompts`` come from the split's
    template group. Labels index ``classes`` (the order of ``classes.csv``).
    """

    split: str
    classes: list[str]
    families: list[str]
    sample_rate: int
    audio: list[np.ndarray]
    audio_labels: np.ndarray
    images: torch.Tensor
    image_labels: np.ndarray
    prompts: list[str]
    prompt_labels: np.ndarray

    def usable_classes(self) -> np.ndarray:
        """Classes that have at least one clip, one image and one prompt in this split."""
        has = [set(self.audio_labels.tolist()), set(self.image_labels.tolist()), set(self.prompt_labels.tolist())]
        return np.array(sorted(set.intersection(*has)), dtype=np.int64)


def read_mono(path: Path, expected_sr: int) -> np.ndarray:
    """A whole benchmark clip as mono float32, checked against its manifest (``data.verify.read_clip``);
    raises ``ValueError`` naming both rates on a mismatch."""
    sr = clip_row(path)[0].sample_rate
    if sr != expected_sr:
        raise ValueError(f"{path}: {sr} Hz, but the encoder runs at {expected_sr} Hz (use the profile's build)")
    return read_clip(path)


def load_split(build_dir: str | Path, split: str, sample_rate: int, image_size: int, images: bool = True) -> SplitData:
    """Read a split's clips, images and prompts (prompt group from :data:`PROMPT_GROUP`).

    Raises:
        FileNotFoundError: missing manifest (with the build command).
        ValueError: a clip at another sample rate, an unknown class in a manifest.
    """
    build_dir = Path(build_dir)
    classes_df = read_table(build_dir, "classes")
    classes = classes_df["class_name"].tolist()
    index = {c: i for i, c in enumerate(classes)}
    audio_df, image_df = read_table(build_dir, "audio", split), read_table(build_dir, "images", split)
    prompts_df = read_table(build_dir, "prompts")
    prompts_df = prompts_df[prompts_df["split_group"] == PROMPT_GROUP[split]]
    for name, df in (("audio", audio_df), ("images", image_df), ("prompts", prompts_df)):
        unknown = sorted(set(df["class_name"]) - set(index))
        if unknown:
            raise ValueError(f"{split} {name} manifest names classes missing from classes.csv: {unknown}")
    audio = [read_mono(build_dir / p, sample_rate) for p in audio_df["path"]]
    if images and len(image_df):
        imgs = torch.stack([transform_image(read_benchmark_image(build_dir / p), image_size) for p in image_df["path"]])
    else:
        imgs = torch.zeros(0, 3, image_size, image_size)
    return SplitData(
        split=split,
        classes=classes,
        families=classes_df["family"].tolist(),
        sample_rate=sample_rate,
        audio=audio,
        audio_labels=audio_df["class_name"].map(index).to_numpy(np.int64),
        images=imgs,
        image_labels=image_df["class_name"].map(index).to_numpy(np.int64),
        prompts=prompts_df["text"].tolist(),
        prompt_labels=prompts_df["class_name"].map(index).to_numpy(np.int64),
    )


# --------------------------------------------------------------------------- augmentation
def crop(wav: np.ndarray, start: int, length: int) -> np.ndarray:
    """``wav[start:start + length]``, zero-padded at the end. Shape: ``(length,)``."""
    seg = wav[start : start + length]
    return np.pad(seg, (0, length - len(seg))) if len(seg) < length else seg


def augment_waveform(x: np.ndarray, rng: np.random.Generator, gain_db: float, noise_prob: float,
                     snr_db: tuple[float, float]) -> np.ndarray:
    """Random gain ``U(-gain_db, gain_db)`` dB, then (with ``noise_prob``) white noise at ``U(snr_db)`` dB SNR.

    A silent crop gets no noise (its SNR is undefined). Shape: ``(n,) -> (n,)`` float32.
    """
    y = x * np.float32(10 ** (rng.uniform(-gain_db, gain_db) / 20))
    if rng.random() < noise_prob:
        rms = float(np.sqrt(np.mean(y.astype(np.float64) ** 2)))
        snr = rng.uniform(*snr_db)
        y = y + (rms * 10 ** (-snr / 20) * rng.standard_normal(len(y))).astype(np.float32)
    return y.astype(np.float32)


def spec_augment(feats: torch.Tensor, rng: np.random.Generator, time_masks: int, time_width: int,
                 freq_masks: int, freq_width: int) -> torch.Tensor:
    """SpecAugment: per item, ``time_masks`` bands of up to ``time_width`` frames and
    ``freq_masks`` bands of up to ``freq_width`` mel bins set to 0 (the normalised mean).

    Shape: ``(B, 1, mel, T) -> (B, 1, mel, T)`` (a new tensor).
    """
    out = feats.clone()
    b, _, n_mel, n_t = out.shape
    for i in range(b):
        for _ in range(time_masks):
            w = int(rng.integers(0, time_width + 1))
            t0 = int(rng.integers(0, max(n_t - w, 0) + 1))
            out[i, :, :, t0 : t0 + w] = 0.0
        for _ in range(freq_masks):
            w = int(rng.integers(0, freq_width + 1))
            f0 = int(rng.integers(0, max(n_mel - w, 0) + 1))
            out[i, :, f0 : f0 + w, :] = 0.0
    return out


def augment_images(x: torch.Tensor, rng: np.random.Generator, scale_low: float, max_rotation_deg: float,
                   flip_prob: float, jitter: float, gray_prob: float = 0.0, shuffle_prob: float = 0.0) -> torch.Tensor:
    """Zoom into a random square of side ``U(scale_low, 1)`` (random position), rotate by
    ``U(+-max_rotation_deg)``, flip horizontally with ``flip_prob``, then jitter contrast
    ``x * U(1 +- jitter)`` and brightness ``+ U(+-jitter)`` (in normalised units); with
    ``gray_prob`` replace the channels by their mean, with ``shuffle_prob`` permute them
    (colour cues differ between drawing styles; shapes less).

    Shape: ``(B, 3, S, S) -> (B, 3, S, S)``.
    """
    b = x.shape[0]
    s = rng.uniform(scale_low, 1.0, b)
    ang = np.deg2rad(rng.uniform(-max_rotation_deg, max_rotation_deg, b))
    flip = np.where(rng.random(b) < flip_prob, -1.0, 1.0)
    tx, ty = rng.uniform(-1, 1, b) * (1 - s), rng.uniform(-1, 1, b) * (1 - s)
    theta = np.stack([
        np.stack([s * np.cos(ang) * flip, -s * np.sin(ang), tx], axis=1),
        np.stack([s * np.sin(ang) * flip, s * np.cos(ang), ty], axis=1),
    ], axis=1)
    grid = F.affine_grid(torch.as_tensor(theta, dtype=x.dtype), list(x.shape), align_corners=False)
    y = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    contrast = torch.as_tensor(rng.uniform(1 - jitter, 1 + jitter, (b, 1, 1, 1)), dtype=x.dtype)
    bright = torch.as_tensor(rng.uniform(-jitter, jitter, (b, 1, 1, 1)), dtype=x.dtype)
    y = y * contrast + bright
    gray = torch.as_tensor(rng.random(b) < gray_prob)
    perms = torch.as_tensor(np.stack([rng.permutation(3) if rng.random() < shuffle_prob else np.arange(3)
                                      for _ in range(b)]))
    y = torch.stack([y[i, perms[i]] for i in range(b)])
    return torch.where(gray[:, None, None, None], y.mean(dim=1, keepdim=True).expand_as(y), y)


def restyle_images(x: torch.Tensor, rng: np.random.Generator, cartoon_prob: float, line_prob: float) -> torch.Tensor:
    """Redraw some images in another drawing style, so that the vision tower learns shapes, not one style's
    rendering (the test split's pictures come from a style no training picture has).

    * *cartoon* (``cartoon_prob``): colours posterised to ``U{3..5}`` levels per channel, and the strongest edges
      (above a random quantile in [0.80, 0.92] of the Sobel magnitude) drawn in black: flat colour with outlines;
    * *line art* (``line_prob``, of the images not made cartoons): black strokes where the edge map exceeds a
      random threshold, on white.

    Works in pixel units: ``x`` is normalised (CLIP mean/std), un-normalised here and normalised again. No random
    number is drawn when both probabilities are 0, so configurations without restyling train exactly as before.

    Shape: ``(B, 3, S, S) -> (B, 3, S, S)``.
    """
    if cartoon_prob <= 0 and line_prob <= 0:
        return x
    b = x.shape[0]
    mean = torch.tensor(CLIP_MEAN, dtype=x.dtype)[:, None, None]
    std = torch.tensor(CLIP_STD, dtype=x.dtype)[:, None, None]
    u = rng.random(b)
    cartoon = u < cartoon_prob
    line = (~cartoon) & (rng.random(b) < line_prob)
    levels = rng.integers(3, 6, b)
    q = rng.uniform(0.80, 0.92, b)
    out = []
    for i in range(b):
        img = x[i]
        if cartoon[i] or line[i]:
            rgb = (img * std + mean).clamp(0, 1)
            edges = edge_map(rgb[None])[0]  # (1, S, S)
            strokes = edges > torch.quantile(edges.flatten(), float(q[i]))
            if cartoon[i]:
                n = float(levels[i] - 1)
                rgb = torch.where(strokes, torch.zeros_like(rgb), torch.round(rgb * n) / n)
            else:
                rgb = torch.where(strokes, torch.zeros_like(rgb), torch.ones_like(rgb))
            img = (rgb - mean) / std
        out.append(img)
    return torch.stack(out)


def generic_words(prompts: list[str], labels: np.ndarray, classes: list[str]) -> list[str]:
    """Words of the prompts that are not about any class: those used by at least half of the classes' prompts
    (the shared templates' words: "the", "sound", "recording", ...), minus every class name's words. Sorted.

    The vocabulary :func:`recompose_prompt` fills prompts with; computed from the training prompts only.
    """
    names = {w for c in classes for w in c.replace("_", " ").lower().split()}
    users: dict[str, set[int]] = {}
    for text, lab in zip(prompts, labels):
        for w in text.lower().split():
            users.setdefault(w, set()).add(int(lab))
    need = max(1, (len(set(int(x) for x in labels)) + 1) // 2)
    return sorted(w for w, who in users.items() if len(who) >= need and w not in names)


def recompose_prompt(name: str, vocab: list[str], rng: np.random.Generator, max_fill: int = 4) -> str:
    """A new prompt for a class: its name (``acoustic_guitar`` -> ``acoustic guitar``) between ``U{0..max_fill}``
    generic words drawn from ``vocab`` before it and as many after it, so that the text tower learns that the class
    name, not the template around it, carries the class (held-out templates put the name in contexts no training
    prompt has)."""
    before, after = rng.integers(0, max_fill + 1, 2)
    words = [vocab[i] for i in rng.integers(0, len(vocab), before + after)] if vocab else []
    return " ".join(words[:before] + [name.replace("_", " ")] + words[before:])


# --------------------------------------------------------------------------- batches
@dataclass
class PairBatch:
    """Model inputs of one step. Shapes: audio ``(B, 1, mel, T)``, images ``(B, 3, S, S)``,
    text ``(B, context_length)`` int64, labels ``(B,)`` int64."""

    audio: torch.Tensor
    images: torch.Tensor
    text: torch.Tensor
    labels: torch.Tensor


def pick(rng: np.random.Generator, labels: np.ndarray, cls: int, k: int) -> np.ndarray:
    """``k`` indices of items of class ``cls`` (without replacement while possible)."""
    idx = np.flatnonzero(labels == cls)
    return rng.choice(idx, size=k, replace=k > len(idx))


def sample_batch(data: SplitData, model, cfg, step: int, per_class: int | None = None, audio: bool = True) -> PairBatch:
    """The batch of ``step``: ``classes_per_batch`` classes x ``per_class`` triples, augmented.

    ``per_class`` defaults to ``cfg.items_per_class``.

    ``cfg`` is a :class:`~mars_core.encoders.train_config.TrainConfig`; ``model`` supplies the
    front end (``prepare_audio_crops``, ``prepare_text``, ``audio_cfg``). With
    ``audio=False`` (the CLIP stage) the audio entry is an empty ``(0,)`` tensor.
    """
    rng = item_rng(cfg.seed, "minibind-batch", step)
    usable = data.usable_classes()
    if len(usable) < 2:
        raise ValueError(f"{data.split}: need >= 2 classes with audio, images and prompts, have {len(usable)}")
    k = len(usable) if cfg.classes_per_batch <= 0 else min(cfg.classes_per_batch, len(usable))
    classes = np.sort(rng.choice(usable, size=k, replace=False))
    per_class = cfg.items_per_class if per_class is None else per_class
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    labels = np.repeat(classes, per_class)
    n_crop = int(round(model.audio_cfg.clip_duration * data.sample_rate))
    crops, image_idx, texts = [], [], []
    for c in classes:
        for i in pick(rng, data.audio_labels, c, per_class) if audio else []:
            wav = data.audio[i]
            start = int(rng.integers(0, max(len(wav) - n_crop, 0) + 1))
            crops.append(augment_waveform(crop(wav, start, n_crop), rng, cfg.gain_db, cfg.noise_prob,
                                          (cfg.snr_db_low, cfg.snr_db_high)))
        image_idx.extend(pick(rng, data.image_labels, c, per_class).tolist())
        texts.extend(data.prompts[j] for j in pick(rng, data.prompt_labels, c, per_class))
    if getattr(cfg, "prompt_recompose_prob", 0.0) > 0:  # no draw otherwise: runs without it are unchanged
        vocab = generic_words(data.prompts, data.prompt_labels, data.classes)
        names = [data.classes[c] for c in classes for _ in range(per_class)]
        redo = rng.random(len(texts)) < cfg.prompt_recompose_prob
        texts = [recompose_prompt(n, vocab, rng) if r else t for t, n, r in zip(texts, names, redo)]
    feats = torch.zeros(0)
    if audio:
        feats = model.prepare_audio_crops(torch.from_numpy(np.stack(crops)))
        feats = spec_augment(feats, rng, cfg.time_masks, cfg.time_mask_frames, cfg.freq_masks, cfg.freq_mask_bins)
    images = augment_images(data.images[image_idx], rng, cfg.image_scale_low, cfg.image_rotation_deg,
                            cfg.flip_prob, cfg.color_jitter, cfg.gray_prob, cfg.channel_shuffle_prob)
    images = restyle_images(images, rng, cfg.cartoon_prob, cfg.line_prob)
    return PairBatch(feats, images.to(model.device), model.prepare_text(texts), torch.from_numpy(labels))


def step_seed(seed: int, step: int) -> int:
    """Seed of the global torch RNG at ``step`` (stochastic depth), a pure function of both."""
    return int(item_rng(seed, "minibind-torch", step).integers(0, 2**62))

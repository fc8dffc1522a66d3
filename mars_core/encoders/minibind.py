"""MiniBind: ImageBind's architecture at a size two CPU cores train in minutes.

The model *is* :class:`~mars_core.encoders.imagebind.ImageBind` (same preprocessors,
pre-norm transformer trunks with ``bias_kv`` in audio, CLS/EOS heads, and the
postprocessors: text with a learnable logit scale clipped at 100, audio with the fixed
scale 20), built from a small :class:`~mars_core.config.EncoderConfig`. Three things
change, each because of the offline, small setting of the ``smoke``/``cpu`` profiles:

1. **Audio front end at the profile's rate** (8 kHz there). ImageBind's Kaldi log-mel
   pipeline is kept as is (25 ms frames, 10 ms hop, pre-emphasis, Hann window, three 2 s
   clips averaged, ``(x + 4.268) / 9.138``, 204 frames); at 8 kHz a frame is 200 samples
   with a 256-point FFT (31 Hz resolution), so ``num_mel_bins`` drops from 128 to 64:
   every one of 64 filters between 20 Hz and 4 kHz covers at least one FFT bin, while
   128 would leave empty (constant ``log eps``) rows. With the 16x16/stride-10 patches
   that is a 5 x 19 grid: 96 tokens instead of 229.
2. **Images at 112 px** (8 x 8 patches of 14 px: 65 tokens instead of 257), resized and
   centre-cropped by ImageBind's own PIL pipeline.
3. **A byte tokenizer** (:class:`ByteTokenizer`, 259 ids: UTF-8 bytes + pad, start, end)
   instead of CLIP BPE: the BPE embedding table alone is 49408 x width parameters
   (12.6 MB in float16 at width 128, more than the rest of the cpu model), and a model
   trained on ~300 prompts learns only a handful of its rows. Bytes need no vocabulary
   file and still spell every class name. ``tokenizer="bpe"`` remains available.

Checkpoints store float16 weights (half the size) and load back to float32.
"""

from __future__ import annotations

import html
import os
import re
import warnings
from dataclasses import asdict, fields, replace
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn

from ..checkpoints import load_checkpoint, save_checkpoint
from ..config import EncoderConfig, Profile, get_profile
from .imagebind import ImageBind, ImageBindConfig, MultiheadSelfAttention, TrunkOutput
from .mobilenet import MobileNetV2Trunk, load_trunk_weights, weights_path
from .preprocess import (CLIP_MEAN, CLIP_STD, AudioPreprocessConfig, line_art, preprocess_audio, preprocess_audio_batch,
                         transform_images)

CHECKPOINT_KIND = "minibind"
ROLES = ("reward", "judge")
_FILE_STEM = {"reward": "minibind", "judge": "judge"}
IMAGE_STYLES = ("as_drawn", "line_art")
"""What the vision tower may read (:attr:`~mars_core.config.EncoderConfig.image_style`)."""
IMAGE_TOWERS = ("vit", "mobilenet_v2")
"""What the vision tower is (:attr:`~mars_core.config.EncoderConfig.image_tower`)."""


class PretrainedImageFeatures(nn.Module):
    """The vision preprocessor of ``image_tower='mobilenet_v2'``: CLIP-normalised images back to RGB in [0, 1],
    then the pretrained :class:`~mars_core.encoders.mobilenet.MobileNetV2Trunk`: frozen (no gradient, weights are
    buffers) or, with ``trainable_blocks`` > 0, its last blocks trained (``EncoderConfig.image_trunk_train_blocks``;
    autograd records only from the first trained block on).

    Shape:
        ``(B, 3, H, W)`` -> ``(B, 160)``.
    """

    def __init__(self, weights: dict[str, torch.Tensor] | None, trainable_blocks: int = 0):
        super().__init__()
        self.backbone = MobileNetV2Trunk(weights, trainable_blocks=trainable_blocks)
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.backbone.trainable_blocks > 0):
            return self.backbone((x * self.std + self.mean).clamp(0.0, 1.0))


class FeatureAdapter(nn.Module):
    """The vision trunk of ``image_tower='mobilenet_v2'``: LayerNorm + Linear from the pooled pretrained features to
    one token of ``width`` (the vision head reads token 0, as it reads the ViT's class token).

    Shape:
        ``(B, C)`` -> ``(B, 1, width)``.
    """

    def __init__(self, channels: int, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(channels)
        self.proj = nn.Linear(channels, width)

    def forward(self, features: torch.Tensor, mask=None) -> torch.Tensor:
        return self.proj(self.norm(features))[:, None, :]


# --------------------------------------------------------------------------- tokenizer
class ByteTokenizer:
    """UTF-8 bytes as tokens: id ``b + 1`` for byte ``b``, 0 = padding, 257 = start, 258 = end.

    The end token has the largest id, so ImageBind's text head finds it with
    ``ids.argmax(-1)``. Text is cleaned like CLIP's (HTML-unescaped twice, whitespace
    collapsed, lower-cased). Sequence: ``[SOT] + bytes`` truncated to
    ``context_length - 1`` entries, then ``EOT``, zero-padded: EOT sits at
    ``min(n_bytes + 1, context_length - 1)``.
    """

    PAD, SOT, EOT = 0, 257, 258
    vocab_size = 259

    def __init__(self, context_length: int = 64):
        if context_length < 2:
            raise ValueError(f"context_length must be >= 2 (start and end tokens), got {context_length}")
        self.context_length = int(context_length)

    @staticmethod
    def clean(text: str) -> str:
        """HTML-unescape twice, collapse whitespace, strip, lower-case."""
        text = html.unescape(html.unescape(text))
        return re.sub(r"\s+", " ", text).strip().lower()

    def encode(self, text: str) -> list[int]:
        """Token ids of one string, without start/end tokens."""
        return [b + 1 for b in self.clean(text).encode("utf-8")]

    def __call__(self, texts: str | Sequence[str]) -> torch.Tensor:
        """Shape: returns ``(N, context_length)`` int64 (a single string gives N = 1)."""
        if isinstance(texts, str):
            texts = [texts]
        out = torch.zeros(len(texts), self.context_length, dtype=torch.long)
        for i, text in enumerate(texts):
            ids = ([self.SOT] + self.encode(text))[: self.context_length - 1] + [self.EOT]
            out[i, : len(ids)] = torch.tensor(ids)
        return out


# --------------------------------------------------------------------------- configs
def imagebind_config(enc: EncoderConfig) -> ImageBindConfig:
    """The :class:`ImageBindConfig` of an encoder section (same towers, other sizes)."""
    if enc.tokenizer not in ("bytes", "bpe"):
        raise ValueError(f"tokenizer must be 'bytes' or 'bpe', got {enc.tokenizer!r}")
    if enc.image_size % enc.patch_size:
        raise ValueError(f"image_size {enc.image_size} is not a multiple of patch_size {enc.patch_size}")
    return ImageBindConfig(
        out_embed_dim=enc.embed_dim,
        vision_embed_dim=enc.vision_width,
        vision_num_blocks=enc.vision_depth,
        vision_num_heads=enc.vision_heads,
        kernel_size=(2, enc.patch_size, enc.patch_size),
        image_size=enc.image_size,
        text_embed_dim=enc.text_width,
        text_num_blocks=enc.text_depth,
        text_num_heads=enc.text_heads,
        context_length=enc.context_length,
        vocab_size=ByteTokenizer.vocab_size if enc.tokenizer == "bytes" else 49408,
        audio_embed_dim=enc.audio_width,
        audio_num_blocks=enc.audio_depth,
        audio_num_heads=enc.audio_heads,
        audio_stride=enc.audio_stride,
        audio_num_mel_bins=enc.num_mel_bins,
        audio_target_len=enc.target_frames,
        audio_drop_path=enc.audio_drop_path,
    )


def audio_preprocess_config(enc: EncoderConfig, sample_rate: int) -> AudioPreprocessConfig:
    """ImageBind's audio pipeline at ``sample_rate`` with the encoder's mel bins and clips."""
    if sample_rate < 1000:
        raise ValueError(f"sample_rate must be >= 1000 Hz, got {sample_rate}")
    seconds = Fraction(enc.clip_seconds).limit_denominator(10**6)
    if seconds <= 0 or (seconds * sample_rate).denominator != 1:
        raise ValueError(f"clip_seconds {enc.clip_seconds} is not a positive whole number of samples at {sample_rate} Hz")
    return AudioPreprocessConfig(
        sample_rate=int(sample_rate),
        clip_duration=int(seconds) if seconds.denominator == 1 else seconds,  # exact, as the clip sampler needs
        clips_per_item=enc.clips_per_item,
        num_mel_bins=enc.num_mel_bins,
        target_length=enc.target_frames,
    )


def encoder_config_from_dict(d: dict) -> EncoderConfig:
    """Rebuild an :class:`EncoderConfig` from ``asdict`` output (unknown keys are an error)."""
    names = {f.name for f in fields(EncoderConfig)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"unknown EncoderConfig fields {unknown} (checkpoint from another version?)")
    return EncoderConfig(**d)


# --------------------------------------------------------------------------- model
class MiniBind(ImageBind):
    """ImageBind's towers at the sizes of an :class:`EncoderConfig`, audio at ``sample_rate``.

    Args:
        config: the encoder section (e.g. ``get_profile("cpu").encoder``).
        sample_rate: native audio rate in Hz (the profile's ``audio.sample_rate``).
        seed: if given, the initial weights are drawn from this seed without touching
            the global RNG; else from the global RNG.

    Example:
        >>> p = get_profile("smoke")
        >>> m = MiniBind(p.encoder, p.audio.sample_rate, seed=0)
        >>> m.embed_text(["a violin"]).shape
        torch.Size([1, 128])
    """

    def __init__(self, config: EncoderConfig, sample_rate: int, seed: int | None = None):
        ib_config = imagebind_config(config)
        audio_cfg = audio_preprocess_config(config, sample_rate)
        if config.init not in ("xavier", "trunc_normal"):
            raise ValueError(f"init must be 'xavier' or 'trunc_normal', got {config.init!r}")
        if config.image_style not in IMAGE_STYLES:
            raise ValueError(f"image_style must be one of {IMAGE_STYLES}, got {config.image_style!r}")
        if config.image_tower not in IMAGE_TOWERS:
            raise ValueError(f"image_tower must be one of {IMAGE_TOWERS}, got {config.image_tower!r}")
        if config.image_trunk_train_blocks and config.image_tower != "mobilenet_v2":
            raise ValueError("image_trunk_train_blocks needs image_tower='mobilenet_v2' (the ViT trains whole), got "
                             f"image_tower={config.image_tower!r}")
        if seed is None:
            super().__init__(ib_config)
            self._build_image_tower(config)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                super().__init__(ib_config)
                self._build_image_tower(config)
        self.encoder_config = config
        self.audio_cfg = audio_cfg
        self.sample_rate = int(sample_rate)
        self._tokenizer = ByteTokenizer(config.context_length) if config.tokenizer == "bytes" else None
        if config.init == "trunc_normal":
            if seed is None:
                self._trunc_normal_init()
            else:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(seed)
                    self._trunc_normal_init()

    def _build_image_tower(self, config: EncoderConfig) -> None:
        """With ``image_tower='mobilenet_v2'``, the ViT's preprocessor and trunk give way to the frozen pretrained
        trunk and a trained adapter (the head, postprocessor and every other tower stay). The pretrained weights
        come from ``checkpoints/mobilenet_v2_block14.pt`` when it exists (a checkpoint's state dict holds them
        too, so loading one does not need the file)."""
        if config.image_tower != "mobilenet_v2":
            return
        weights = load_trunk_weights() if weights_path().is_file() else None
        if weights is None:
            warnings.warn(f"{weights_path()} not found: the pretrained image trunk starts at zero and only a "
                          "checkpoint's state dict fills it (write it with python scripts/convert_mobilenet.py "
                          "--install before training)", stacklevel=3)
        features = PretrainedImageFeatures(weights, config.image_trunk_train_blocks)
        self.modality_preprocessors["vision"] = features
        self.modality_trunks["vision"] = FeatureAdapter(features.backbone.out_channels, config.vision_width)

    @classmethod
    def from_profile(cls, profile: str | Profile | None = None, seed: int | None = None) -> "MiniBind":
        """A fresh MiniBind with the profile's encoder section and audio rate."""
        p = get_profile(profile)
        return cls(p.encoder, p.audio.sample_rate, seed=seed)

    @torch.no_grad()
    def _trunc_normal_init(self) -> None:
        """ViT-style init: truncated normal (std 0.02) for every weight matrix and token."""
        for mod in self.modules():
            if isinstance(mod, (nn.Linear, nn.Conv2d, nn.Conv3d, nn.Embedding)):
                nn.init.trunc_normal_(mod.weight, std=0.02, a=-0.04, b=0.04)
            elif isinstance(mod, MultiheadSelfAttention):
                nn.init.trunc_normal_(mod.in_proj_weight, std=0.02, a=-0.04, b=0.04)
                for p in (mod.bias_k, mod.bias_v):
                    if p is not None:
                        nn.init.trunc_normal_(p, std=0.02, a=-0.04, b=0.04)
        for pre in self.modality_preprocessors.values():
            for name, p in pre.named_parameters():
                if name.endswith(("cls_token", "pos_embed")):
                    nn.init.trunc_normal_(p, std=0.02, a=-0.04, b=0.04)

    # ---- interface hooks -----------------------------------------------------------
    @property
    def tokenizer(self):
        """:class:`ByteTokenizer` or the CLIP BPE tokenizer, at the config's context length."""
        if self._tokenizer is not None:
            return self._tokenizer
        from .tokenizer import get_tokenizer

        return get_tokenizer(None, self.config.context_length)

    def prepare_audio(self, waveforms: list[torch.Tensor]) -> torch.Tensor:
        """Shape: returns ``(N, clips_per_item, 1, num_mel_bins, target_frames)`` on the model's device."""
        return preprocess_audio(waveforms, self.audio_cfg, device=self.device).to(self.dtype)

    def prepare_audio_crops(self, crops: torch.Tensor) -> torch.Tensor:
        """Equal-length crops -> one log-mel clip each (the training input, no clip averaging).

        Shape:
            crops: ``(B, n)`` float at :attr:`sample_rate`, ``n >= 25 ms``;
            returns ``(B, 1, num_mel_bins, target_frames)``.
        """
        if crops.ndim != 2:
            raise ValueError(f"crops must be (B, n), got shape {tuple(crops.shape)}")
        if crops.shape[-1] < self.audio_cfg.window:
            raise ValueError(f"crops have {crops.shape[-1]} samples; the front end needs >= {self.audio_cfg.window}")
        one = replace(self.audio_cfg, clips_per_item=1, clip_duration=Fraction(crops.shape[-1], self.sample_rate))
        return preprocess_audio_batch(crops.float(), one)[:, 0].to(self.device, self.dtype)

    def prepare_images(self, images: list) -> torch.Tensor:
        """Shape: returns ``(N, 3, image_size, image_size)`` float32 (CPU; moved by the caller)."""
        return transform_images(images, self.image_size)

    def trunk_features(self, modality: str, inputs: torch.Tensor) -> TrunkOutput:
        """As :meth:`ImageBind.trunk_features`; with ``image_style='line_art'`` the vision tower reads
        :func:`~mars_core.encoders.preprocess.line_art` of the images (training batches and queries alike)."""
        if modality == "vision" and self.encoder_config.image_style == "line_art":
            lead = inputs.shape[:-3]
            inputs = line_art(inputs.reshape(-1, *inputs.shape[-3:])).reshape(*lead, *inputs.shape[-3:])
        return super().trunk_features(modality, inputs)

    def num_parameters(self) -> dict[str, int]:
        """Parameters per tower (preprocessor + trunk + head + postprocessor) and in total."""
        counts = {m: 0 for m in self.modalities}
        for name, p in self.named_parameters():
            counts[name.split(".")[1]] += p.numel()
        counts["total"] = sum(counts[m] for m in self.modalities)
        return counts


# --------------------------------------------------------------------------- checkpoints
def half_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """State dict with floating tensors of >= 2 elements in float16 (scalars stay float32)."""
    return {
        k: (v.detach().half() if torch.is_floating_point(v) and v.numel() > 1 else v.detach().clone())
        for k, v in model.state_dict().items()
    }


def save_minibind(path: str | os.PathLike, model: MiniBind, *, half: bool = True, **extra) -> Path:
    """Write a MiniBind checkpoint atomically (float16 weights if ``half``), with ``extra`` entries.

    The file holds ``kind``, ``config`` (the encoder section), ``sample_rate``, ``model``
    (the state dict), ``weights_dtype`` and whatever ``extra`` carries (metrics, history).
    """
    state = half_state_dict(model) if half else {k: v.detach().clone() for k, v in model.state_dict().items()}
    return save_checkpoint(
        path,
        config=asdict(model.encoder_config),
        with_rng=False,
        kind=CHECKPOINT_KIND,
        sample_rate=model.sample_rate,
        model=state,
        weights_dtype="float16" if half else "float32",
        **extra,
    )


def load_minibind(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> MiniBind:
    """Load a checkpoint written by :func:`save_minibind`; weights come back as float32, eval mode.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is a checkpoint of something else.
    """
    blob = load_checkpoint(path, map_location=map_location)
    if blob.get("kind") != CHECKPOINT_KIND:
        raise ValueError(f"{path} is not a MiniBind checkpoint (kind={blob.get('kind')!r})")
    model = MiniBind(encoder_config_from_dict(blob["config"]), blob["sample_rate"])
    state = {k: (v.float() if torch.is_floating_point(v) else v) for k, v in blob["model"].items()}
    model.load_state_dict(state)
    return model.to(map_location).eval()


def checkpoints_dir() -> Path:
    """``$MARS_CHECKPOINTS`` or the repository's ``checkpoints/`` folder."""
    env = os.environ.get("MARS_CHECKPOINTS")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "checkpoints"


def shipped_checkpoint(profile: str | Profile | None = None, role: str = "reward") -> Path:
    """Path of the shipped checkpoint: ``checkpoints/minibind_<profile>.pt`` (reward) or ``judge_<profile>.pt``."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    return checkpoints_dir() / f"{_FILE_STEM[role]}_{get_profile(profile).name}.pt"


def load_shipped(profile: str | Profile | None = None, role: str = "reward") -> MiniBind:
    """Load the shipped MiniBind of a profile (``role="judge"``: the independent judge).

    Raises:
        FileNotFoundError: with the command that trains it.
        ValueError: the checkpoint's config differs from the profile's encoder section
            (reward role only; the judge is deliberately different).
    """
    p = get_profile(profile)
    path = shipped_checkpoint(p, role)
    if not path.exists():
        raise FileNotFoundError(
            f"no shipped {role} MiniBind at {path}; train it with "
            f"`python -m mars_core.encoders.train --profile {p.name} --role {role} --out {path.name}`"
        )
    model = load_minibind(path)
    if role == "reward" and model.encoder_config != p.encoder:
        raise ValueError(f"{path} was trained with another encoder config than profile {p.name!r}; retrain it")
    if model.sample_rate != p.audio.sample_rate:
        raise ValueError(f"{path} runs at {model.sample_rate} Hz but profile {p.name!r} at {p.audio.sample_rate} Hz")
    return model

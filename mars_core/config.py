"""Run-size profiles: ``smoke``, ``cpu`` and ``full``.

One code path, three sizes. A profile is a frozen dataclass of frozen sections;
every field carries a docstring right below it (CleanRL style), which
:func:`profile_table` reads back so notebooks can print what each number means.

Choose a profile with :func:`get_profile` (explicit name, else ``MARS_PROFILE``,
else ``smoke``). ``full`` is the paper's front end (16 kHz, 65535-sample clips,
STFT 1024/256, 256 log-frequency bins); ``smoke`` and ``cpu`` only change numbers.
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
    """Signal front end (method.md section 1)."""

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
    """Offline benchmark size and mixing (method.md section 3, offline-data.md)."""

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
    """Query-conditioned U-Net separator (method.md section 2)."""

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
        encoder=EncoderConfig(
            kind="minibind", embed_dim=128,
            audio_width=96, audio_depth=2, audio_heads=4,
            vision_width=64, vision_depth=2, vision_heads=4,
            text_width=64, text_depth=2, text_heads=4,
            image_size=112, num_mel_bins=64, clips_per_item=1,
            tokenizer="bytes", context_length=64,
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
        encoder=EncoderConfig(
            kind="minibind", embed_dim=256,
            audio_width=192, audio_depth=4, audio_heads=6,
            vision_width=128, vision_depth=3, vision_heads=4,
            text_width=128, text_depth=3, text_heads=4,
            image_size=112, num_mel_bins=64, clips_per_item=3,
            tokenizer="bytes", context_length=64,
        ),
    )


def _full() -> Profile:
    return Profile(
        name="full",
        description="Paper scale on a GPU workstation: 16 kHz, 65535-sample clips, 256x256 log-frequency spectrograms.",
    )


_FACTORIES = {"smoke": _smoke, "cpu": _cpu, "full": _full}


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

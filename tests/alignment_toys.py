"""Toy encoders and shared fixtures of the alignment tests (not a test module).

:class:`SpectralToyEncoder` is a fast encoder of the interface with per-modality heads;
``toy_data`` and ``toy_alignment`` build what the test modules' ``data`` and ``aligned`` fixtures hold.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from mars_core.alignment.config import AlignmentConfig
from mars_core.alignment.runner import run_alignment
from mars_core.alignment.sampling import AlignmentData
from mars_core.checkpoints import load_checkpoint
from mars_core.encoders.base import TriModalEncoder


class SpectralToyEncoder(TriModalEncoder):
    """A fast encoder of the interface with separate heads per modality.

    Frozen "trunks": band energies of the spectrum (audio), hashed character trigrams
    (text), colour mean/std (vision), each through a fixed random Linear + tanh.
    """

    sample_rate = 8000
    image_size = 16
    embed_dim = 16

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.trunks = nn.ModuleDict({"audio": nn.Linear(48, 32), "text": nn.Linear(64, 32), "vision": nn.Linear(6, 32)})
        self.heads = nn.ModuleDict({m: nn.Linear(32, 16) for m in ("audio", "text", "vision")})

    def prepare_audio(self, waveforms):
        rows = [torch.fft.rfft(w.float(), n=4096).abs()[:2016].reshape(48, -1).pow(2).mean(1) for w in waveforms]
        return torch.log(1e-3 + torch.stack(rows))

    def prepare_text(self, texts):
        x = torch.zeros(len(texts), 64)
        for i, t in enumerate(texts):
            for j in range(len(t) - 2):
                x[i, zlib.crc32(t[j : j + 3].encode()) % 64] += 1
        return F.normalize(x, dim=-1)

    def prepare_images(self, images):
        arr = [
            np.asarray(
                (im if isinstance(im, Image.Image) else Image.fromarray(np.asarray(im))).convert("RGB").resize((16, 16))
            )
            for im in images
        ]
        return torch.from_numpy(np.stack(arr)).permute(0, 3, 1, 2).float() / 255

    def trunk_features(self, modality, x):
        if modality == "vision":
            x = torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1)
        return torch.tanh(self.trunks[modality](x))

    def head_embeddings(self, modality, features):
        return self.heads[modality](features)

    def freeze_backbone(self):
        self.trunks.requires_grad_(False)
        return list(self.heads.parameters())


class LeakyToyEncoder(SpectralToyEncoder):
    """Broken on purpose: every head call bumps a backbone buffer (like BatchNorm statistics)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("calls", torch.zeros(()))

    def head_embeddings(self, modality, features):
        self.calls += 1
        return super().head_embeddings(modality, features)


def toy_data(build_dir) -> AlignmentData:
    """The smoke profile's alignment datasets of a (fake) build."""
    return AlignmentData.from_build("smoke", build_dir=build_dir)


def _heads(path, prefix):
    return {k: v for k, v in load_checkpoint(path)["heads"].items() if k.startswith(prefix)}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


CFG = AlignmentConfig.for_profile("smoke", steps_per_stage=8, batch_size=6, eval_every=4, n_val_items=8, lr=3e-3,
                                  s2_nce_weight=1.0, s3_nce_weight=1.0)  # every term on: the mechanics under test


def toy_alignment(data: AlignmentData, run_dir):
    """A toy encoder aligned with :data:`CFG`: ``(encoder, run_alignment output, trunk0, heads0, run_dir)``."""
    enc = SpectralToyEncoder()
    trunk0 = {k: v.clone() for k, v in enc.trunks.state_dict().items()}
    heads0 = {k: v.clone() for k, v in enc.heads.state_dict().items()}
    out = run_alignment(enc, data, CFG, run_dir)
    return enc, out, trunk0, heads0, run_dir

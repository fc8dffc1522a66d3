"""The reward stack: the (aligned) frozen encoder and the MLBP target anchor, built once per profile.

MARS-Sep's reward ``R = cos(phi_a(y^), z*)`` needs two trained things (docs/method.md sections 5 and 7):

1. the encoder after **progressive alignment** (:func:`~mars_core.alignment.runner.run_alignment`:
   S1 audio-text, S2 audio-audio, S3 audio-visual; backbone frozen, heads trained);
2. the **MLBP anchor** that fuses the target's audio-query, text and image embeddings into z*
   (:func:`~mars_core.alignment.anchor_fit.fit_mlbp`), trained on that encoder's embeddings.

:func:`load_reward_stack` returns both, training them only when no matching run exists under
``$MARS_DATA/runs/alignment/<profile>-<hash>`` (the hash covers the base encoder's weights, the
benchmark's manifests and both configs, so a changed encoder or dataset never reuses a stale
run; a killed run resumes stage by stage). ``aligned=False`` gives the paper's ablation "RL with
the un-aligned encoder": the base encoder with an anchor fitted to it.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..checkpoints import load_checkpoint
from ..config import Profile, get_profile
from ..data.manifest import benchmark_dir
from ..encoders.base import TriModalEncoder
from ..encoders.load import load_query_encoder
from ..runs import config_hash, encoder_fingerprint, manifest_hash, runs_dir
from .anchor import MLBP_FORM, AnchorConfig, MLBPAnchor, load_mlbp, save_mlbp
from .anchor_fit import fit_mlbp
from .config import AlignmentConfig
from .runner import run_alignment
from .sampling import AlignmentData


@dataclass
class RewardStack:
    """A frozen encoder and its MLBP anchor.

    Attributes:
        encoder: the tri-modal encoder (eval mode, no parameter requires grad).
        anchor: the trained :class:`~mars_core.alignment.anchor.MLBPAnchor` (eval mode, frozen).
        aligned: whether the encoder went through progressive alignment.
        key: 16 hex digits identifying encoder weights + anchor weights (keys RL runs).
        info: run directory, checkpoints and training histories.
    """

    encoder: TriModalEncoder
    anchor: MLBPAnchor
    aligned: bool
    key: str
    info: dict[str, Any] = field(default_factory=dict)

    @torch.no_grad()
    def target_anchor(
        self, e_audio: torch.Tensor | None = None, e_text: torch.Tensor | None = None,
        e_image: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """z* from the target side's embeddings (any may be None: a missing modality).

        Shape:
            each given input ``(N, D)``; returns ``(N, D)``, unit norm.
        """
        return self.anchor(e_audio, e_text, e_image)

    @torch.no_grad()
    def reward(self, waveforms: torch.Tensor, sample_rate: int, z: torch.Tensor) -> torch.Tensor:
        """``R_i = cos(phi_a(waveforms_i), z_i)`` with one batched encoder call.

        Shape:
            waveforms ``(N, T)``; z ``(N, D)``; returns ``(N,)`` float32.
        """
        a = self.encoder.embed_audio(waveforms, sample_rate)
        if z.shape != a.shape:
            raise ValueError(f"anchors {tuple(z.shape)} do not match audio embeddings {tuple(a.shape)}")
        return F.cosine_similarity(a, z.to(a), dim=-1, eps=1e-8).float()


def _freeze(module: torch.nn.Module) -> torch.nn.Module:
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()


def run_directory(profile: str | Profile | None, encoder: TriModalEncoder, align_cfg: AlignmentConfig,
                  anchor_cfg: AnchorConfig, build_dir: str | os.PathLike | None = None,
                  run_root: str | os.PathLike | None = None) -> Path:
    """``<run_root or $MARS_DATA/runs/alignment>/<profile>-<hash>`` of a base encoder, data and configs."""
    prof = get_profile(profile)
    build = Path(build_dir) if build_dir is not None else benchmark_dir(prof.name)
    key = config_hash([encoder_fingerprint(encoder), manifest_hash(build), dataclasses.asdict(align_cfg),
                       dataclasses.asdict(anchor_cfg)])
    return Path(run_root or runs_dir("alignment")) / f"{prof.name}-{key}"


def _load_or_fit_anchor(path: Path, encoder: TriModalEncoder, data: AlignmentData, cfg: AnchorConfig,
                        retrain: bool) -> tuple[MLBPAnchor, dict]:
    if path.exists() and not retrain:
        blob = load_checkpoint(path, rebuild=f"delete it (rm {shlex.quote(str(path))}): the anchor is fitted again "
                               "on next use (or call load_reward_stack(..., retrain=True))")
        if blob.get("config") == dataclasses.asdict(cfg) and blob.get("form") == MLBP_FORM:
            return load_mlbp(path), blob.get("history", {})
    mlbp, history = fit_mlbp(encoder, data.train, cfg, val_items=data.val,
                             metrics_csv=path.with_name(f"metrics_{path.stem}.csv"))
    save_mlbp(path, mlbp, cfg, history=history)
    return mlbp.eval(), history


def load_reward_stack(
    profile: str | Profile | None = None,
    aligned: bool = True,
    *,
    encoder: TriModalEncoder | None = None,
    align_cfg: AlignmentConfig | None = None,
    anchor_cfg: AnchorConfig | None = None,
    build_dir: str | os.PathLike | None = None,
    run_root: str | os.PathLike | None = None,
    retrain: bool = False,
) -> RewardStack:
    """The profile's reward encoder (aligned or not) and MLBP anchor, trained only if needed.

    Args:
        encoder: the base encoder (default: :func:`mars_core.encoders.load.load_query_encoder`, a fresh
            copy; it is modified in place by alignment, so do not pass one you still query with).
        align_cfg, anchor_cfg: default ``AlignmentConfig.for_profile`` / ``AnchorConfig.for_profile``.
        retrain: ignore finished stages and anchors in the run directory.

    Returns:
        a :class:`RewardStack` whose ``info`` holds ``run_dir``, ``checkpoints`` (alignment
        stages) and ``history`` (``{"alignment": {stage: ...}, "anchor": ...}``).
    """
    prof = get_profile(profile)
    enc = encoder if encoder is not None else load_query_encoder(prof)
    align_cfg = align_cfg or AlignmentConfig.for_profile(prof.name)
    anchor_cfg = anchor_cfg or AnchorConfig.for_profile(prof.name)
    run_dir = run_directory(prof, enc, align_cfg, anchor_cfg, build_dir, run_root)
    data = AlignmentData.from_build(prof, build_dir)
    info: dict[str, Any] = {"run_dir": str(run_dir), "checkpoints": {}, "history": {}}
    if aligned:
        out = run_alignment(enc, data, align_cfg, run_dir, resume=not retrain)
        info["checkpoints"], info["history"]["alignment"] = out["checkpoints"], out["history"]
    _freeze(enc)
    anchor, hist = _load_or_fit_anchor(run_dir / f"mlbp_{'aligned' if aligned else 'base'}.pt", enc, data,
                                       anchor_cfg, retrain)
    info["history"]["anchor"] = hist
    _freeze(anchor)
    key = config_hash([encoder_fingerprint(enc), encoder_fingerprint(anchor)])
    return RewardStack(encoder=enc, anchor=anchor, aligned=aligned, key=key, info=info)

"""Trained separators on disk: save and load them, find the shipped or cached one, or train it once.

A run is keyed by :func:`run_config` (sizes, data, separator, training config, query bank key)
through :func:`mars_core.runs.config_hash`: ``$MARS_DATA/runs/supervised/<profile>-<hash>/``.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import asdict
from pathlib import Path

import torch

from .. import distributed
from ..checkpoints import load_checkpoint, save_checkpoint
from ..config import Profile, SeparatorConfig, SupervisedConfig, get_profile
from ..encoders.load import load_query_encoder
from ..encoders.minibind import checkpoints_dir
from ..queries import QueryBank, load_or_build_query_bank
from ..runs import config_hash, runs_dir
from ..separator import QuerySeparator
from .trainer import run_config, train_supervised

SEPARATOR_KIND = "separator"


def save_separator(path: str | os.PathLike, model: QuerySeparator, *, run_cfg: dict, history: dict) -> Path:
    """Write a trained separator atomically: weights, separator config, run config (and its hash), history."""
    return save_checkpoint(path, config=run_cfg, with_rng=False, kind=SEPARATOR_KIND, key=config_hash(run_cfg),
                           separator=asdict(model.cfg), model=model.state_dict(), history=history)


def load_separator(path: str | os.PathLike, map_location: str | torch.device = "cpu",
                   rebuild: str | None = None) -> tuple[QuerySeparator, dict]:
    """Load :func:`save_separator`'s file: ``(model in eval mode, checkpoint dict)``.

    Args:
        map_location: the device the checkpoint's tensors and the returned model go to.
        rebuild: the command an error message gives for an unreadable file (default: delete it and run again).

    Raises:
        FileNotFoundError: no file; ValueError: a checkpoint of something else;
        CheckpointError: an unreadable file (named, with ``rebuild``).
    """
    blob = load_checkpoint(path, map_location=map_location, rebuild=rebuild)
    if blob.get("kind") != SEPARATOR_KIND:
        raise ValueError(f"{path} is not a separator checkpoint (kind={blob.get('kind')!r})")
    sep = dict(blob["separator"], down_channels=tuple(blob["separator"]["down_channels"]))
    model = QuerySeparator(SeparatorConfig(**sep))
    model.load_state_dict(blob["model"])
    return model.to(map_location).eval(), blob  # on map_location like the tensors


def _separator_rebuild_hint(path: Path, profile: Profile) -> str:
    """What to do about an unreadable shipped separator or run ``final.pt`` (the command that rebuilds it)."""
    retrain = f"python -m mars_core.supervised --profile {profile.name} --retrain"
    if path == shipped_separator(profile):
        return (f"restore it (git checkout -- {shlex.quote(str(path))}) or train a new one: {retrain} --out "
                f"{shlex.quote(str(path))}")
    return f"{retrain} (or delete it: rm {shlex.quote(str(path))}, and run again)"


def shipped_separator(profile: str | Profile | None = None) -> Path:
    """``checkpoints/separator_<profile>.pt`` (or under ``$MARS_CHECKPOINTS``)."""
    return checkpoints_dir() / f"separator_{get_profile(profile).name}.pt"


def load_or_train(
    profile: str | Profile | None = None,
    config: SupervisedConfig | None = None,
    *,
    bank: QueryBank | None = None,
    encoder=None,
    run_root: str | os.PathLike | None = None,
    build_dir: str | os.PathLike | None = None,
    retrain: bool = False,
    progress: bool = True,
    device: str | torch.device | None = None,
) -> tuple[QuerySeparator, dict]:
    """A trained separator for ``(profile, config, encoder, data)``, trained only if none exists.

    Looks, in order, for the shipped ``checkpoints/separator_<profile>.pt`` and for
    ``<run_root>/<profile>-<hash>/final.pt``, whose run config must match (``hash`` is
    :func:`config_hash` of :func:`run_config`, which includes the encoder fingerprint and
    the manifest hash); otherwise trains in that run directory (resuming a killed run)
    and writes ``final.pt``.

    Args:
        device: where the model is trained and returned (default: CUDA when available, else CPU).

    Returns:
        ``(model, history)``; ``history["source"]`` says where the model came from.
    """
    prof = get_profile(profile)
    cfg = config or prof.supervised
    if bank is None:
        bank = load_or_build_query_bank(encoder or load_query_encoder(prof), prof, build_dir=build_dir,
                                        progress=progress, rebuild=retrain)
    run_cfg = run_config(prof, cfg, bank)
    run_dir = Path(run_root or runs_dir("supervised")) / f"{prof.name}-{config_hash(run_cfg)}"
    if not retrain:
        for path in (shipped_separator(prof), run_dir / "final.pt"):
            if path.exists():
                model, blob = load_separator(path, rebuild=_separator_rebuild_hint(path, prof))
                if blob["config"] == run_cfg:
                    return model.to(device) if device is not None else model, dict(blob["history"], source=str(path))
    model, history = train_supervised(prof, bank, cfg, run_dir=run_dir, resume=not retrain, build_dir=build_dir,
                                      progress=progress, device=device)
    if distributed.is_main():  # under torchrun, rank 0 writes the file
        save_separator(run_dir / "final.pt", model, run_cfg=run_cfg, history=history)
    return model, dict(history, source=str(run_dir / "final.pt"))

"""Checkpoints written atomically, with config, versions and RNG state, so any run can resume.

``save_checkpoint`` writes to a temporary file in the target directory, fsyncs it and
renames it over the target: a run killed at any moment leaves either the previous
checkpoint or the new one, never a truncated file.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .atomic import atomic_open


def versions() -> dict[str, str]:
    """Versions of the packages a checkpoint depends on."""
    from . import __version__

    return {
        "mars_core": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch (CPU and, if present, CUDA) generator states."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    return obj


def save_checkpoint(path: str | os.PathLike, *, config: Any = None, with_rng: bool = True, **payload: Any) -> Path:
    """Save ``payload`` (state dicts, step, history, ...) atomically with config, versions, RNG state.

    Example:
        >>> save_checkpoint(run / "last.pt", config=profile, model=model.state_dict(),
        ...                 optimizer=opt.state_dict(), step=step, history=history)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = dict(payload)
    blob["config"] = _plain(config)
    blob["versions"] = versions()
    if with_rng:
        blob["rng"] = rng_state()
    with atomic_open(path) as fh:
        torch.save(blob, fh)
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu", restore_rng: bool = False) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`.

    Raises:
        FileNotFoundError: naming the path.
        RuntimeError: for a file that is not a readable checkpoint (named in the message).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        blob = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # truncated or foreign file
        raise RuntimeError(f"{path} is not a readable checkpoint: {exc}") from exc
    if not isinstance(blob, dict) or "versions" not in blob:
        raise RuntimeError(f"{path} was not written by mars_core.checkpoints.save_checkpoint")
    if restore_rng and "rng" in blob:
        set_rng_state(blob["rng"])
    return blob

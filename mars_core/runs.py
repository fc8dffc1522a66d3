"""Run provenance in one place: the hashes that key caches and runs, run folders, and resumable training state.

**Hashes** (each value is part of a cache or run key on disk: none may change):

* :func:`config_hash` -- 16 hex digits of the sha256 of a JSON-able config (keys sorted). It keys
  the supervised and RL run folders and the shipped separators (``key``); the alignment run
  folder hashes the tuple of its parts with it (:mod:`mars_core.alignment.stack`).
* :func:`manifest_hash` -- the full sha256 of a benchmark build's manifests, each hashed with its
  name; files that are absent are skipped (a build without images). It keys the query bank.
* :func:`data_fingerprint` -- 16 hex digits of the sha256 of the raw bytes of every manifest,
  all of which must exist. It keys MiniBind training runs. It differs from :func:`manifest_hash`
  (no names, no separators, truncated), so both stay.
* :func:`encoder_fingerprint` -- the full sha256 of an encoder's class, sample rate and weights.
  It keys the query bank (with :func:`manifest_hash`), the alignment stack and a separator's queries.

``mars_core.data.build`` hashes its build recipe with the same rule as :func:`config_hash`, but
untruncated; it stays in ``data`` (the bottom layer), which must not import this module.

**Run folders**: ``$MARS_DATA/runs/<kind>/<profile>-...`` (:func:`runs_dir`).

**Resumable state** shared by the supervised and the RL trainers: :class:`TrainState`,
:func:`save_last` / :func:`resume_last` (``last.pt``, written atomically with the RNG streams)
and the keep-best rule :func:`keep_if_best`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .checkpoints import load_checkpoint, save_checkpoint
from .data.manifest import SPLITS, data_root

MANIFESTS = ["classes.csv", "prompts.csv"] + [f"{k}/{s}.csv" for k in ("audio", "images") for s in SPLITS]
"""The files of a benchmark build that :func:`manifest_hash` and :func:`data_fingerprint` read, in order."""


# --------------------------------------------------------------------------- hashes
def config_hash(run_cfg: Any) -> str:
    """16 hex digits of the sha256 of a run config as JSON (keys sorted, other objects as ``str``)."""
    return hashlib.sha256(json.dumps(run_cfg, sort_keys=True, default=str).encode()).hexdigest()[:16]


def manifest_hash(build_dir: str | os.PathLike) -> str:
    """sha256 (hex) of the benchmark's manifests: ``classes.csv``, ``prompts.csv`` and every
    ``audio/<split>.csv`` / ``images/<split>.csv`` present, each hashed with its name.

    Raises:
        FileNotFoundError: ``classes.csv`` or ``prompts.csv`` is missing (not a build).
    """
    build_dir = Path(build_dir)
    h = hashlib.sha256()
    for name in MANIFESTS:
        path = build_dir / name
        if not path.exists():
            if name in ("classes.csv", "prompts.csv"):
                raise FileNotFoundError(f"{path} not found: {build_dir} is not a benchmark build")
            continue
        h.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def data_fingerprint(build_dir: str | os.PathLike) -> str:
    """SHA-256 (16 hex) of the manifests of every split plus prompts and classes.

    The manifests hold each file's sha256, so equal fingerprints mean equal data.

    Raises:
        FileNotFoundError: a manifest is missing (the message names it).
    """
    h = hashlib.sha256()
    for rel in MANIFESTS:
        h.update((Path(build_dir) / rel).read_bytes())
    return h.hexdigest()[:16]


def encoder_fingerprint(encoder: torch.nn.Module) -> str:
    """sha256 (hex) of an encoder's identity: class name, native sample rate, a MiniBind's image style when it is
    not the default ``as_drawn`` (so fingerprints from before the option stay valid), and every state-dict entry
    (name, dtype, shape, bytes). Equal weights reading equal inputs give equal fingerprints."""
    h = hashlib.sha256()
    h.update(type(encoder).__name__.encode())
    h.update(str(getattr(encoder, "sample_rate", "")).encode())
    style = getattr(getattr(encoder, "encoder_config", None), "image_style", "as_drawn")
    if style != "as_drawn":
        h.update(f"image_style={style}".encode())
    for name, t in sorted(encoder.state_dict().items()):
        t = t.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


# --------------------------------------------------------------------------- run folders
def runs_dir(kind: str) -> Path:
    """``$MARS_DATA/runs/<kind>``: where the ``kind`` trainer (``supervised``, ``rl``, ``alignment``) keeps its runs."""
    return data_root() / "runs" / kind


# --------------------------------------------------------------------------- resumable state
@dataclass
class TrainState:
    """What a resumed run needs besides model, optimiser and scheduler (supervised and RL trainers)."""

    history: dict
    best_sdr: float = -math.inf
    best_step: int = -1
    best_state: dict | None = None
    wall_s: float = 0.0


def save_last(path: Path, run_cfg: dict, step: int, model, opt, st: Any, **stateful: Any) -> None:
    """Write the resumable ``last.pt`` atomically: weights, optimiser, ``stateful`` objects (anything with
    ``state_dict``: a scheduler, an EMA baseline), the trainer state ``st`` and the RNG streams.
    Shared by the supervised and the RL trainers."""
    save_checkpoint(path, config=run_cfg, step=step, model=model.state_dict(), optimizer=opt.state_dict(),
                    **{k: v.state_dict() for k, v in stateful.items()}, history=st.history, best_sdr=st.best_sdr,
                    best_step=st.best_step, best_state=st.best_state, wall_s=st.wall_s)


def resume_last(path: Path, run_cfg: dict, model, opt, what: str = "a run",
                **stateful: Any) -> tuple[int, TrainState]:
    """Load :func:`save_last`'s file into ``model``, ``opt`` and ``stateful`` (RNG streams restored):
    ``(step, TrainState(history, best_sdr, best_step, best_state, wall_s))``.

    Raises:
        ValueError: the file belongs to ``what`` with another run configuration.
        CheckpointError: the file is unreadable (named, with how to restart the run).
    """
    todo = (f"delete it (rm {shlex.quote(str(path))}) to restart {what} from step 0, or train with resume=False "
            "(command line: --retrain)")
    blob = load_checkpoint(path, restore_rng=True, rebuild=todo)  # CPU tensors; load_state_dict copies them
    if blob["config"] != run_cfg:
        raise ValueError(f"{path} belongs to {what} with another configuration, encoder or data; "
                         "use another run directory or resume=False")
    model.load_state_dict(blob["model"])
    opt.load_state_dict(blob["optimizer"])
    for k, v in stateful.items():
        v.load_state_dict(blob[k])
    return blob["step"], TrainState(blob["history"], blob["best_sdr"], blob["best_step"], blob["best_state"],
                                    blob["wall_s"])


def keep_if_best(st: Any, sdr: float, step: int, model: torch.nn.Module) -> bool:
    """Make ``step`` the best so far (a CPU copy of the weights) when its val SDR beats ``st.best_sdr``.

    ``st`` is a trainer state with ``best_sdr``, ``best_step`` and ``best_state`` (the supervised
    and the RL trainers share this rule). Returns whether it did.
    """
    if not sdr > st.best_sdr:
        return False
    st.best_sdr, st.best_step = sdr, step
    st.best_state = {k: t.detach().cpu().clone() for k, t in model.state_dict().items()}
    return True

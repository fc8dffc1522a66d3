"""Checkpoints written atomically, with config, versions and RNG state, so any run can resume.

``save_checkpoint`` writes to a temporary file in the target directory, fsyncs it and
renames it over the target: a run killed at any moment leaves either the previous
checkpoint or the new one, never a truncated file.

**Safe to load.** Every checkpoint is read with ``torch.load(weights_only=True)``: a file can
hold tensors, numbers, strings, ``None`` and dicts, lists and tuples of them, and nothing
else, so loading a file (even one planted under a shared ``$MARS_DATA``) never runs code.
What is not a tensor is stored in plain form: the config as a plain dict
(``dataclasses.asdict``), versions as ``str``, the NumPy generator state as lists of ints
(the torch generator state is a tensor already). ``save_checkpoint`` refuses a payload that
would not load that way.

Files written before this rule stored ``torch.__version__`` as a ``TorchVersion`` (a ``str``
subclass from torch itself whose unpickling only builds a string); :data:`LEGACY_SAFE_GLOBALS`
allows exactly that class so that those files still load. Anything else that is not plain
(for example the NumPy arrays in a resumable ``last.pt`` from before, or a crafted pickle)
is refused with :class:`UnsafeCheckpointError`, which names the file, the refused objects and
how to rebuild it; nothing in the file is executed.
"""

from __future__ import annotations

import dataclasses
import io
import os
import pickle
import platform
import random
import re
import shlex
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.torch_version import TorchVersion

from . import __version__
from .atomic import atomic_open

LEGACY_SAFE_GLOBALS = (TorchVersion,)
"""Classes a weights-only load accepts beyond torch's defaults: only ``torch.torch_version.TorchVersion``
(a ``str`` subclass; files written before versions were stored as ``str`` hold one)."""


class CheckpointError(RuntimeError):
    """A checkpoint or cache file that cannot be read; the message names the file and how to rebuild it."""

    def __init__(self, message: str, path: Path):
        super().__init__(message)
        self.path = path


class UnsafeCheckpointError(CheckpointError):
    """A file holding objects that a weights-only load refuses (not executed)."""


def rebuild_hint(path: str | os.PathLike) -> str:
    """The default advice for an unreadable file: delete it and run again (caches and runs are rebuilt)."""
    return (f"delete it (rm {shlex.quote(str(path))}) and run the same command again: caches and training runs "
            "are rebuilt on next use; a shipped file under checkpoints/ is restored with "
            f"git checkout -- {shlex.quote(str(path))}")


def versions() -> dict[str, str]:
    """Versions of the packages a checkpoint depends on (plain strings)."""
    return {
        "mars_core": str(__version__),
        "torch": str(torch.__version__),
        "numpy": str(np.__version__),
        "python": platform.python_version(),
    }


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch (CPU and, if present, CUDA) generator states, in weights-only-loadable form.

    Python's state is a tuple of ints; NumPy's is its dict form with the MT19937 key as a list of
    ints; torch's are uint8 tensors.
    """
    np_state = np.random.get_state(legacy=False)
    np_state = {**np_state, "state": {"key": [int(k) for k in np_state["state"]["key"]],
                                      "pos": int(np_state["state"]["pos"])},
                "has_gauss": int(np_state["has_gauss"]), "gauss": float(np_state["gauss"])}
    state = {"python": random.getstate(), "numpy": np_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    np_state = state["numpy"]
    np.random.set_state({**np_state, "state": {"key": np.asarray(np_state["state"]["key"], dtype=np.uint32),
                                               "pos": int(np_state["state"]["pos"])}})
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _plain(obj: Any) -> Any:
    """``obj`` with dataclasses as dicts, NumPy scalars as Python numbers and ``str`` subclasses as ``str``.

    A container is rebuilt only when something inside it changed (a plain ``dict``, or an
    ``OrderedDict`` for an ``OrderedDict``); otherwise the object itself is returned, so a state
    dict keeps its ``_metadata``. Tensors and everything else pass through.
    """
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _plain(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        items = [(k, _plain(v)) for k, v in obj.items()]
        if all(new is old for (_, new), old in zip(items, obj.values())) and type(obj) in (dict, OrderedDict):
            return obj
        return OrderedDict(items) if isinstance(obj, OrderedDict) else dict(items)
    if type(obj) in (list, tuple):
        items = [_plain(v) for v in obj]
        return obj if all(new is old for new, old in zip(items, obj)) else type(obj)(items)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, str) and type(obj) is not str:
        return str(obj)
    return obj


def save_checkpoint(path: str | os.PathLike, *, config: Any = None, with_rng: bool = True, **payload: Any) -> Path:
    """Save ``payload`` (state dicts, step, history, ...) atomically with config, versions, RNG state.

    Example:
        >>> save_checkpoint(run / "last.pt", config=profile, model=model.state_dict(),
        ...                 optimizer=opt.state_dict(), step=step, history=history)

    Raises:
        TypeError: the payload holds objects that :func:`load_checkpoint` (weights-only) would refuse;
            nothing is written and a previous file at ``path`` is kept.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = _plain(dict(payload))
    blob["config"] = _plain(config)
    blob["versions"] = versions()
    if with_rng:
        blob["rng"] = rng_state()
    buf = io.BytesIO()
    torch.save(blob, buf)
    buf.seek(0)
    unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(buf)
    if unsafe:
        raise TypeError(f"save_checkpoint({path}): the payload holds {', '.join(sorted(unsafe))}, which a "
                        "weights-only load refuses; store tensors, numbers, strings, None and dicts/lists/tuples "
                        "of them (e.g. dataclasses.asdict, array.tolist())")
    with atomic_open(path) as fh:
        fh.write(buf.getbuffer())
    return path


def _unsafe_globals(path: Path) -> list[str]:
    """Names of the non-allowed globals a (zip-format) checkpoint refers to, found without unpickling it."""
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception:  # legacy (non-zip) or unreadable file: the names cannot be listed safely
        return []
    allowed = {f"{c.__module__}.{c.__qualname__}" for c in LEGACY_SAFE_GLOBALS}
    return [n for n in names if n not in allowed]


def _first_sentence(exc: BaseException) -> str:
    """The first sentence of an exception's message (torch's zip errors go on for a paragraph)."""
    return str(exc).split("\n")[0].split(". ")[0][:200]


def _unpickler_detail(message: str) -> str:
    """The one line of torch's weights-only error that says what was refused."""
    m = re.search(r"WeightsUnpickler error: ([^\n]*)", message)
    return (m.group(1) if m else message.split("\n")[0]).strip()[:300]


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu", restore_rng: bool = False,
                    rebuild: str | None = None) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`, with ``torch.load(weights_only=True)``.

    Args:
        rebuild: what the error messages tell the user to do about an unreadable file (a command);
            default :func:`rebuild_hint` (delete it and run again).

    Raises:
        FileNotFoundError: naming the path.
        UnsafeCheckpointError: the file holds objects a weights-only load refuses (named; nothing ran).
        CheckpointError (a ``RuntimeError``): a truncated, corrupt or foreign file (named in the message).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    todo = rebuild or rebuild_hint(path)
    try:
        with torch.serialization.safe_globals(list(LEGACY_SAFE_GLOBALS)):
            blob = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = _unpickler_detail(str(exc))
        unsafe = _unsafe_globals(path) or re.findall(r"GLOBAL (\S+) was not an allowed global", detail)
        if unsafe:
            why = (" (a resumable file written before mars_core stored its RNG state as plain lists)"
                   if all(n.startswith("numpy") for n in unsafe) else "")
            raise UnsafeCheckpointError(
                f"{path} is not a readable checkpoint: it holds {', '.join(unsafe)}, which a weights-only load "
                f"refuses{why}. It was not loaded and nothing in it ran. To rebuild it: {todo}", path) from None
        raise CheckpointError(f"{path} is not a readable checkpoint ({path.stat().st_size} bytes; corrupt or "
                              f"foreign: {detail}). To rebuild it: {todo}", path) from None
    except Exception as exc:  # truncated or foreign file
        size = path.stat().st_size
        raise CheckpointError(f"{path} is not a readable checkpoint ({size} bytes; truncated or corrupt: "
                              f"{type(exc).__name__}: {_first_sentence(exc)}). To rebuild it: {todo}", path) from exc
    if not isinstance(blob, dict) or "versions" not in blob:
        raise CheckpointError(f"{path} was not written by mars_core.checkpoints.save_checkpoint. To rebuild it: "
                              f"{todo}", path)
    if restore_rng and "rng" in blob:
        set_rng_state(blob["rng"])
    return blob

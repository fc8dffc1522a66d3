"""Results on disk: provenance (git commit, machine, portable paths), JSON-ready histories, and reading a results directory back."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
import torch

from ..atomic import write_bytes_atomic
from ..data.manifest import data_root

REPO_ROOT = Path(__file__).resolve().parents[2]
"""The repository that holds this package."""


def portable_path(text: str) -> str:
    """``text`` with this machine's repository root written as ``.`` and ``$MARS_DATA`` as itself,
    so a committed ``run.json`` names checkpoints the same way on every machine."""
    root = REPO_ROOT
    return text.replace(str(data_root()), "$MARS_DATA").replace(str(root) + os.sep, "").replace(str(root), ".")


def git_commit(root: str | os.PathLike | None = None) -> dict[str, Any]:
    """``{"commit": 40 hex or None, "dirty": bool or None}`` of the repository holding this package."""
    root = Path(root or REPO_ROOT)
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                capture_output=True, text=True, timeout=10, check=True).stdout
        return {"commit": commit, "dirty": bool(status.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def machine_info() -> dict[str, Any]:
    """Host name, platform, CPU count, torch threads and version, GPU name if any."""
    return {"host": platform.node(), "platform": platform.platform(), "python": platform.python_version(),
            "cpu_count": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def _json_ready(obj: Any) -> Any:
    """Lists of plain numbers/strings from histories (tensors, numpy, nested dicts)."""
    if isinstance(obj, Mapping):
        return {str(k): _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, torch.Tensor):
        obj = obj.detach().cpu().numpy()
    if isinstance(obj, np.ndarray):
        return _json_ready(obj.tolist())
    if isinstance(obj, (list, tuple)):
        return [_json_ready(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, (np.integer, int, bool, str)) or obj is None:
        return obj.item() if isinstance(obj, np.generic) else obj
    return str(obj)


def _write_csv(path: Path, df: pd.DataFrame) -> None:
    write_bytes_atomic(path, df.to_csv(index=False).encode("utf-8"))


@dataclass
class SavedResults:
    """What :func:`load_results` reads back from a results directory."""

    items: pd.DataFrame
    summary: pd.DataFrame
    bootstrap: pd.DataFrame
    run: dict
    histories: dict
    examples: dict[str, np.ndarray]


def load_results(results_dir: str | os.PathLike) -> SavedResults:
    """Read a directory written by :func:`save_results` (histories and examples optional)."""
    d = Path(results_dir)
    if not (d / "summary.csv").exists():
        raise FileNotFoundError(f"{d} holds no summary.csv: run `python -m mars_core.benchmark --out {d}` first")
    read = lambda name: pd.read_csv(d / name, keep_default_na=True)  # noqa: E731
    histories = json.loads((d / "histories.json").read_text()) if (d / "histories.json").exists() else {}
    examples = {}
    if (d / "examples.npz").exists():
        with np.load(d / "examples.npz") as z:
            examples = {k.split("/", 1)[1]: z[k] for k in z.files}
    run = json.loads((d / "run.json").read_text()) if (d / "run.json").exists() else {}
    return SavedResults(read("items.csv"), read("summary.csv"), read("bootstrap.csv"), run, histories, examples)

"""One ``seed_everything`` and per-item random generators.

Data randomness never depends on iteration order or on the process: every item
draws from its own generator ``numpy.random.default_rng([seed, *keys])`` where
string keys (split names, class names) are turned into stable integers with
CRC-32 (Python's ``hash`` is salted per process).
"""

from __future__ import annotations

import os
import random
import zlib

import numpy as np


def stable_int(key: int | str) -> int:
    """A process-independent non-negative integer for an int or a string key."""
    if isinstance(key, (int, np.integer)):
        if key < 0:
            raise ValueError(f"integer keys must be >= 0, got {key}")
        return int(key)
    if isinstance(key, str):
        return zlib.crc32(key.encode("utf-8"))
    raise TypeError(f"keys must be int or str, got {type(key).__name__}")


def item_rng(seed: int, *keys: int | str) -> np.random.Generator:
    """Generator for one item, e.g. ``item_rng(seed, "train", index)``."""
    return np.random.default_rng([stable_int(seed), *(stable_int(k) for k in keys)])


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and PyTorch (CPU and CUDA).

    Args:
        seed: the run's seed.
        deterministic: also ask PyTorch for deterministic kernels (slower on GPU).
    """
    os.environ["PYTHONHASHSEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard dependency
        return
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False

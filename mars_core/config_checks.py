"""Type checks shared by the ``check_config`` functions of the training configs (supervised, RL).

They refuse ``bool`` (a ``True`` is not a step count) and NaN or infinite reals, so a config
check can name the field instead of letting a bad value reach the optimiser.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def is_int(v: Any) -> bool:
    """``v`` is an integer (Python or NumPy), not a ``bool``."""
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def is_real(v: Any) -> bool:
    """``v`` is a finite real number (Python or NumPy int or float), not a ``bool``, NaN or infinity."""
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and math.isfinite(v)


def check_counts(cfg: Any, at_least_one: tuple[str, ...], non_negative: tuple[str, ...],
                 any_integer: tuple[str, ...] = ("seed",)) -> None:
    """Raise ``ValueError`` naming the first field of ``cfg`` that is not an integer in its range:
    ``>= 1`` for ``at_least_one``, ``>= 0`` for ``non_negative``, any integer for ``any_integer``."""
    for name in at_least_one:
        v = getattr(cfg, name)
        if not is_int(v) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    for name in non_negative + any_integer:
        v = getattr(cfg, name)
        if not is_int(v) or (name not in any_integer and v < 0):
            raise ValueError(f"{name} must be an integer{'' if name in any_integer else ' >= 0'}, got {v!r}")

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

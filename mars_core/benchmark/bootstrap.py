"""Paired bootstrap of the mean difference between each learned system and the baseline, over the same items."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from ..seeding import stable_int
from .tables import BASELINE, CI_LEVEL, METRICS, N_RESAMPLES, REFERENCE_SYSTEMS, _order


def bootstrap_mean_ci(d: np.ndarray, n_resamples: int = N_RESAMPLES, level: float = CI_LEVEL,
                      rng: np.random.Generator | int = 0) -> tuple[float, float, float]:
    """Mean of ``d`` and its percentile-bootstrap interval.

    Algorithm (so a notebook can redo it): ``idx = rng.integers(0, n, size=(n_resamples, n))``;
    ``means = d[idx].mean(axis=1)``; interval = ``np.quantile(means, [(1 - level) / 2, (1 + level) / 2])``.
    An empty ``d`` gives NaNs; a single value gives ``(d, d, d)``.

    Shape:
        d: ``(n,)`` finite values (e.g. paired differences).
    """
    d = np.asarray(d, dtype=np.float64)
    if d.ndim != 1 or not np.isfinite(d).all():
        raise ValueError("d must be a 1-D array of finite values")
    if not 0 < level < 1 or n_resamples < 1:
        raise ValueError(f"need 0 < level < 1 and n_resamples >= 1, got {level}, {n_resamples}")
    if len(d) == 0:
        return np.nan, np.nan, np.nan
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    idx = rng.integers(0, len(d), size=(n_resamples, len(d)))
    lo, hi = np.quantile(d[idx].mean(axis=1), [(1 - level) / 2, (1 + level) / 2])
    return float(d.mean()), float(lo), float(hi)


def paired_bootstrap(items: pd.DataFrame, baseline: str = BASELINE, systems: Sequence[str] | None = None,
                     metrics: Sequence[str] = METRICS, n_resamples: int = N_RESAMPLES, level: float = CI_LEVEL,
                     seed: int = 0) -> pd.DataFrame:
    """Paired bootstrap CI of ``mean_i (system_i - baseline_i)`` per (split, pairs, modality, metric).

    Items are paired by their index; a pair where either value is missing (skipped) or
    non-finite is dropped (``n`` counts the pairs used). The generator of a group is
    ``default_rng([seed, crc32("split|pairs|modality")])``: the same for every system and metric
    of the group, and independent of which other systems run. Columns: ``split, pairs, system,
    baseline, modality, metric, n, mean_diff, ci_low, ci_high, level, n_resamples``.
    """
    cols = ["split", "pairs", "system", "baseline", "modality", "metric", "n", "mean_diff", "ci_low", "ci_high",
            "level", "n_resamples"]
    if baseline not in set(items["system"]):
        return pd.DataFrame(columns=cols)
    learned = [s for s in dict.fromkeys(items["system"]) if s not in REFERENCE_SYSTEMS and s != baseline]
    systems = [s for s in (systems or learned) if s != baseline]
    present = [m for m in metrics if m in items.columns]
    rows = []
    base = items[items["system"] == baseline]
    for (split, pairs, modality), b in base.groupby(["split", "pairs", "modality"], sort=False):
        b = b.set_index("item")
        for name in systems:
            s = items[(items["system"] == name) & (items["split"] == split) & (items["pairs"] == pairs)
                      & (items["modality"] == modality)].set_index("item")
            if s.empty:
                continue
            for m in present:
                d = (s[m] - b[m].reindex(s.index)).to_numpy(dtype=float)
                d = d[np.isfinite(d)]
                rng = np.random.default_rng([seed, stable_int(f"{split}|{pairs}|{modality}")])
                mean, lo, hi = bootstrap_mean_ci(d, n_resamples, level, rng)
                rows.append([split, pairs, name, baseline, modality, m, len(d), mean, lo, hi, level, n_resamples])
    return _order(pd.DataFrame(rows, columns=cols), systems)

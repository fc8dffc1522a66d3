"""Where a system gains or loses: the paired change of a benchmark's items, split by whether each item's query
reads as its target (its nearest training-class mean in the query bank,
:func:`~mars_core.evaluation.query_diagnostics.nearest_reference_class`).

A policy that sharpens the separator's masks helps where the query encoder places the query right and hurts where it
places it on another class; the average over items mixes the two. ``scripts/query_placement.py`` prints the table
of a saved run; notebook 05 section 8 shows it for the run it makes.
"""

from __future__ import annotations

import os
from typing import Mapping, Sequence

import pandas as pd

from ..data.manifest import benchmark_dir
from ..evaluation.query_diagnostics import nearest_reference_class
from ..queries import QueryBank
from .bootstrap import bootstrap_mean_ci

KEY_COLUMN = {"image": "query_image_id", "text": "query_text"}
"""The items column that names each item's query, per modality."""


def placement_table(items: pd.DataFrame, nearest: Mapping[str, str], systems: Sequence[str],
                    baseline: str = "supervised", modality: str = "image", metric: str = "sdr",
                    pairs: str = "random") -> pd.DataFrame:
    """Per system, split and placement (``target``: the query reads as the item's target; ``other``): ``n``, the
    baseline's mean ``si_sdri`` and the mean paired change of ``metric`` (system - baseline, matched by split and
    item) with its 95 % bootstrap interval (:func:`~mars_core.benchmark.bootstrap.bootstrap_mean_ci`).

    ``nearest``: query key -> the class it reads as. An item whose query key is not in ``nearest`` is an error;
    an item without a value of ``metric`` for the system or the baseline (a skipped item) is left out of ``n``.

    Raises:
        ValueError: an unknown modality, a system or the baseline without rows, or a query missing from ``nearest``.
    """
    if modality not in KEY_COLUMN:
        raise ValueError(f"modality must be one of {sorted(KEY_COLUMN)}, got {modality!r}")
    rows = items[(items["modality"] == modality) & (items["pairs"] == pairs)]
    base = rows[rows["system"] == baseline].set_index(["split", "item"])
    if base.empty:
        raise ValueError(f"no {modality} rows of {baseline!r} ({pairs} pairs) in the items")
    missing = sorted(set(base[KEY_COLUMN[modality]]) - set(nearest))
    if missing:
        raise ValueError(f"{len(missing)} {modality} queries have no nearest class, e.g. {missing[0]!r}")
    placed = pd.Series([nearest[k] == t for k, t in zip(base[KEY_COLUMN[modality]], base["target"])],
                       index=base.index).map({True: "target", False: "other"})
    out = []
    for system in systems:
        sys_rows = rows[rows["system"] == system].set_index(["split", "item"])
        if sys_rows.empty:
            raise ValueError(f"no {modality} rows of {system!r} ({pairs} pairs) in the items")
        change = (sys_rows[metric] - base[metric]).dropna()
        keys = [change.index.get_level_values("split"), placed.loc[change.index]]
        for (split, where), idx in change.groupby(keys).groups.items():
            mean, lo, hi = bootstrap_mean_ci(change.loc[idx].to_numpy())
            out.append({"system": system, "split": split, "placement": where, "n": len(idx),
                        "baseline_si_sdri": float(base.loc[idx, "si_sdri"].mean()),
                        f"{metric}_change": mean, "ci_low": lo, "ci_high": hi})
    return pd.DataFrame(out)


def query_placement(items: pd.DataFrame, bank: QueryBank, build_dir: str | os.PathLike | None, profile: str,
                    systems: Sequence[str], modality: str = "image", **kw) -> pd.DataFrame:
    """:func:`placement_table` with each query's class read from ``bank`` against the build's training split
    (``build_dir`` None: the profile's build); ``kw``: ``baseline``, ``metric``, ``pairs``."""
    build = build_dir if build_dir is not None else benchmark_dir(profile)
    return placement_table(items, nearest_reference_class(bank, build, modality), systems, modality=modality, **kw)

"""Names of the benchmark (test sets, pair types, systems, metrics) and its tables: tidy items, summary, wide views."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from ..evaluation.evaluate import compact_table
from ..metrics import summarize
from ..queries import EVAL_MODALITIES

SPLITS = ("test", "test_timbre")
"""Test splits: ``test`` (the training timbres, held-out clips) and ``test_timbre`` (another soundfont)."""
PAIR_TYPES = ("random", "hard")
"""``random``: any interferer class; ``hard``: an interferer of the target's family."""
REFERENCE_SYSTEMS = ("mixture", "mixture / 2", "oracle IBM", "oracle IRM", "clean target")
"""Query-blind rows of :func:`~mars_core.evaluation.evaluate.evaluate_references` (``clean target``: judge scores only)."""
BASELINE = "supervised"
"""The system every learned system is compared with in :func:`paired_bootstrap`."""
CONTROLS = ("supervised (continued)", "entropy only", "pathwise")
"""Controls of the RL claims (docs/method.md section 8): the supervised start trained on by supervision for as many
updates as RL makes, the RL preset with its entropy/KL terms only (no policy gradient), and the pathwise gradient of a
differentiable reward (the headroom). Every RL system is also bootstrapped against each control present."""
RL_SYSTEMS = ("MARS-Sep paper", "MARS-Sep plus", "MARS-Sep plus, seed 1", "MARS-Sep plus, seed 2",
              "RL, un-aligned encoder", "MARS-Sep dense", "MARS-Sep dense, seed 1", "MARS-Sep dense, seed 2")
"""The RL systems that are compared with each of :data:`CONTROLS`."""
METRICS = ("sdr", "sir", "sar", "si_sdri", "semantic", "semantic_image", "contamination", "semantic_margin")
"""Columns summarised and bootstrapped (those present)."""
METRIC_UNITS = {"sdr": "dB", "sir": "dB", "sar": "dB", "si_sdri": "dB", "semantic": "points",
                "semantic_image": "points", "contamination": "points", "semantic_margin": "points"}
METRIC_NAMES = {"sdr": "SDR", "sir": "SIR", "sar": "SAR", "si_sdri": "SI-SDRi", "semantic": "semantic score",
                "semantic_image": "image semantic score", "contamination": "contamination",
                "semantic_margin": "semantic margin"}
"""Units and display names of :data:`METRICS` (sentences of :mod:`.reading`, figures)."""
N_RESAMPLES = 2000
"""Bootstrap resamples of the items."""
CI_LEVEL = 0.95
"""Central coverage of the bootstrap percentile interval."""


def _order(df: pd.DataFrame, systems: Sequence[str]) -> pd.DataFrame:
    """Sort rows by test set, pair type, system (reference systems first), query, [metric], item."""
    ranks = {
        "split": list(SPLITS), "pairs": list(PAIR_TYPES),
        "system": [*REFERENCE_SYSTEMS, *systems], "modality": ["-", *EVAL_MODALITIES], "metric": list(METRICS),
    }
    keys = [c for c in ("split", "pairs", "system", "modality", "metric", "item") if c in df.columns]

    def key(col: pd.Series) -> pd.Series:
        if col.name not in ranks:
            return col
        order = {v: i for i, v in enumerate(ranks[col.name])}
        return col.map(lambda v: order.get(v, len(order)))

    return df.sort_values(keys, key=key, kind="stable").reset_index(drop=True)


def tidy_items(frames: Sequence[pd.DataFrame], systems: Sequence[str]) -> pd.DataFrame:
    """One tidy frame: key columns first (``split, pairs, system, modality, item``), then metrics, then metadata."""
    df = pd.concat(frames, ignore_index=True)
    first = ["split", "pairs", "system", "modality", "item", *[m for m in METRICS if m in df.columns]]
    df = df[first + [c for c in df.columns if c not in first]]
    return _order(df, systems)


def summary_table(items: pd.DataFrame, metrics: Sequence[str] = METRICS) -> pd.DataFrame:
    """Mean, sem, median, n, n_skipped per (split, pairs, system, modality, metric)
    (:func:`~mars_core.metrics.summarize`). Rows of a metric a system does not have (the clean
    target's SDR) are dropped: ``n == 0`` and nothing skipped."""
    present = [m for m in metrics if m in items.columns and items[m].notna().any()]
    with np.errstate(invalid="ignore"):  # the mixture's SAR is +inf: its sem is NaN
        out = summarize(items, by=["split", "pairs", "system", "modality"], metrics=present)
    out = out[(out["n"] > 0) | (out["n_skipped"] > 0)]
    return _order(out, list(dict.fromkeys(items["system"])))


def wide_table(summary: pd.DataFrame, split: str = "test", pairs: str = "random",
               metrics: Sequence[str] | None = None, digits: int = 2) -> pd.DataFrame:
    """``mean ± sem`` strings of one test set: one row per (system, query), one column per metric
    (:func:`~mars_core.evaluation.evaluate.compact_table`)."""
    s = summary[(summary["split"] == split) & (summary["pairs"] == pairs)]
    if metrics is not None:
        s = s[s["metric"].isin(list(metrics))]
    wide = compact_table(s.drop(columns=["split", "pairs"]), digits)
    return wide[["system", "modality", *[m for m in METRICS if m in wide.columns]]]


def bootstrap_table(boot: pd.DataFrame, metrics: Sequence[str] = ("sdr", "semantic", "contamination"),
                    digits: int = 2) -> pd.DataFrame:
    """``mean [low, high]`` strings: one row per (system, baseline, query, metric), one column per test set."""
    b = boot[boot["metric"].isin(list(metrics))]
    b = b.assign(test_set=b["split"] + "/" + b["pairs"],
                 value=[f"{m:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]"
                        for m, lo, hi in zip(b["mean_diff"], b["ci_low"], b["ci_high"])])
    index = ["system", "baseline", "modality", "metric"] if "baseline" in b.columns else ["system", "modality", "metric"]
    wide = b.pivot_table(index=index, columns="test_set", values="value", aggfunc="first", sort=False)
    return wide.reset_index().rename_axis(columns=None)


def against(boot: pd.DataFrame, baseline: str = BASELINE) -> pd.DataFrame:
    """The rows of a bootstrap table whose ``baseline`` is ``baseline`` (all rows of a table without that column,
    as written before the controls existed)."""
    return boot[boot["baseline"] == baseline] if "baseline" in boot.columns else boot

"""Reading a benchmark run: sentences generated from its tables, and the comparison with the paper.

Everything here reads the ``summary`` and ``bootstrap`` tables of :mod:`mars_core.benchmark`
(no number is typed by hand, except the paper's own in :data:`PAPER_RESULTS`):

* :func:`change_sentence`, :func:`describe_results`: plain sentences of the reference levels and of
  each learned system's change over the baseline with its paired-bootstrap interval;
* :func:`paper_comparison`, :func:`describe_paper_comparison`: our gains beside the paper's
  (MARS-Sep over OmniSep), their signs, whether the paper's gain lies inside our interval, and the
  ablations' verdicts (:data:`COLLAPSE_DB`, :data:`NEAR_DB`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..queries import EVAL_MODALITIES
from .tables import BASELINE, METRIC_NAMES, METRIC_UNITS, PAIR_TYPES, SPLITS, against

__all__ = ["PAPER_RESULTS", "COLLAPSE_DB", "NEAR_DB", "change_sentence", "describe_results", "paper_comparison",
           "describe_paper_comparison"]

PAPER_RESULTS: dict[str, Any] = {
    "source": "docs/method.md section 9 (MARS-Sep, arXiv 2510.10509): SDR in dB, CLAP score in %",
    "VGGSound-clean+": {
        "n_targets": 100, "ours": "test",
        "sdr": {"text": (6.70, 6.91), "audio": (7.15, 7.33), "image": (6.66, 6.93), "omni": (7.79, 7.93)},
        "clap": {"text": (8.98, 9.03), "audio": (8.60, 8.91), "image": (8.79, 9.19), "omni": (8.85, 9.22)},
    },
    "MUSIC-clean+": {
        "n_targets": 46, "ours": "test_timbre",
        "sdr": {"text": (12.37, 12.91), "audio": (10.37, 11.73), "image": (13.03, 13.64), "omni": (13.29, 13.89)},
    },
    "ablation_text_sdr": {"supervised": 6.70, "RL, un-aligned encoder": 6.71, "aligned encoder, no RL": 0.75,
                          "MARS-Sep": 6.91},
}
"""The paper's numbers as (OmniSep baseline, MARS-Sep) per query; ``ours`` names the split we set beside each
dataset (``test``: in-domain like VGGSound-clean+; ``test_timbre``: cross-domain like MUSIC-clean+)."""


# =========================================================================== lookups
def _boot_row(boot: pd.DataFrame, system: str, split: str, pairs: str, modality: str, metric: str,
              baseline: str = BASELINE):
    boot = against(boot, baseline)
    sel = boot[(boot["system"] == system) & (boot["split"] == split) & (boot["pairs"] == pairs)
               & (boot["modality"] == modality) & (boot["metric"] == metric)]
    return None if sel.empty else sel.iloc[0]


def _mean(summary: pd.DataFrame, system: str, split: str, pairs: str, modality: str, metric: str) -> float:
    sel = summary[(summary["system"] == system) & (summary["split"] == split) & (summary["pairs"] == pairs)
                  & (summary["modality"] == modality) & (summary["metric"] == metric)]
    return float(sel["mean"].iloc[0]) if len(sel) else float("nan")


def _verdict(lo: float, hi: float) -> str:
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "no interval (too few items)"
    if lo > 0:
        return "an improvement (the interval excludes 0)"
    if hi < 0:
        return "a degradation (the interval excludes 0)"
    return "no detectable difference (the interval contains 0)"


def _digits(lo: float, hi: float) -> int:
    """Decimals that keep an interval readable: 2, or 3 when it is narrower than 0.02."""
    return 3 if np.isfinite(hi - lo) and hi - lo < 0.02 else 2


# =========================================================================== sentences
def change_sentence(boot: pd.DataFrame, profile: str, system: str, split: str, pairs: str, modality: str,
                    metric: str, baseline: str = BASELINE) -> str | None:
    """``"At <profile> size, <system> changes <modality>-query <metric> by +x.xx <unit> (95% CI [a, b]) over
    the <baseline> baseline on <split> (<pairs> pairs, n = N): <verdict>."``; ``None`` if not in ``boot``."""
    r = _boot_row(boot, system, split, pairs, modality, metric, baseline)
    if r is None or not r["n"]:
        return None
    unit, pct, k = METRIC_UNITS.get(metric, ""), round(100 * float(r["level"])), _digits(r["ci_low"], r["ci_high"])
    return (f"At {profile} size, {system} changes {modality}-query {METRIC_NAMES.get(metric, metric)} by "
            f"{r['mean_diff']:+.{k}f} {unit} ({pct}% CI [{r['ci_low']:+.{k}f}, {r['ci_high']:+.{k}f}]) over the "
            f"{baseline} baseline on {split} ({pairs} pairs, n = {int(r['n'])}): "
            f"{_verdict(r['ci_low'], r['ci_high'])}.")


def _all_queries(boot: pd.DataFrame, system: str, split: str, pairs: str, metric: str) -> str | None:
    """``"Over the four queries: text +a, image +b, ... dB; k of 4 intervals exclude 0 (j above)."``"""
    rows = [r for m in EVAL_MODALITIES if (r := _boot_row(boot, system, split, pairs, m, metric)) is not None]
    if not rows:
        return None
    k = max(_digits(r["ci_low"], r["ci_high"]) for r in rows)
    vals = ", ".join(f"{r['modality']} {r['mean_diff']:+.{k}f}" for r in rows)
    up = sum(r["ci_low"] > 0 for r in rows)
    down = sum(r["ci_high"] < 0 for r in rows)
    return (f"Over the queries ({split}, {pairs} pairs): {vals} {METRIC_UNITS.get(metric, '')}; "
            f"{up} of {len(rows)} intervals lie above 0 and {down} below.")


def describe_results(summary: pd.DataFrame, boot: pd.DataFrame, profile: str,
                     baseline: str = BASELINE) -> list[str]:
    """Sentences generated from the tables (no number is typed by hand): the reference levels, then per
    learned system its text-query SDR change with the interval, all four queries, the semantic score,
    the contamination on hard pairs and the SDR on the other timbre."""
    lines = []
    mix = _mean(summary, "mixture", "test", "random", "-", "sdr")
    irm = _mean(summary, "oracle IRM", "test", "random", "-", "sdr")
    if np.isfinite(mix) and np.isfinite(irm):
        lines.append(f"On test (random pairs) the mixture scores {mix:.2f} dB SDR and the oracle IRM {irm:.2f} dB: "
                     f"a mask separator has {irm - mix:.2f} dB of room.")
        base = {m: _mean(summary, baseline, "test", "random", m, "sdr") for m in EVAL_MODALITIES}
        if irm > mix and any(np.isfinite(v) for v in base.values()):
            share = ", ".join(f"{m} {100 * (v - mix) / (irm - mix):.0f}%" for m, v in base.items() if np.isfinite(v))
            lines.append(f"The {baseline} baseline covers this share of it: {share}.")
    for s in (list(dict.fromkeys(against(boot, baseline)["system"])) if len(boot) else []):
        for sent in (change_sentence(boot, profile, s, "test", "random", "text", "sdr", baseline),
                     _all_queries(boot, s, "test", "random", "sdr"),
                     change_sentence(boot, profile, s, "test", "random", "text", "semantic", baseline),
                     change_sentence(boot, profile, s, "test", "hard", "text", "contamination", baseline),
                     change_sentence(boot, profile, s, "test_timbre", "random", "text", "sdr", baseline)):
            if sent:
                lines.append(sent)
    for split in SPLITS:
        r, h = (_mean(summary, baseline, split, p, "text", "sdr") for p in PAIR_TYPES)
        if np.isfinite(r) and np.isfinite(h):
            lines.append(f"Hard (same-family) pairs change the {baseline} baseline's text-query SDR on {split} by "
                         f"{h - r:+.2f} dB ({r:.2f} dB on random pairs, {h:.2f} dB on hard ones).")
    return lines


# =========================================================================== the paper's numbers
def paper_comparison(summary: pd.DataFrame, boot: pd.DataFrame, system: str = "MARS-Sep paper",
                     baseline: str = BASELINE) -> pd.DataFrame:
    """Our gain of ``system`` over ``baseline`` next to the paper's gain of MARS-Sep over OmniSep.

    One row per (paper dataset, our split, query, metric) with the paper's baseline, system and gain,
    our baseline mean, gain and CI (random pairs), and ``agreement``: ``same sign, CI excludes 0``,
    ``same sign, CI contains 0``, ``opposite sign`` or ``not measured``; ``paper gain in CI`` says
    whether the paper's gain lies inside our interval. CLAP (paper) is set beside our judge's
    semantic score: different encoders, so compare signs, not sizes. Plus the text-query ablation rows.
    """
    rows = []

    def add(dataset, split, modality, metric, ours_metric, p_base, p_sys, sys_name):
        r = _boot_row(boot, sys_name, split, "random", modality, ours_metric)
        gain, lo, hi = (np.nan,) * 3 if r is None else (r["mean_diff"], r["ci_low"], r["ci_high"])
        p_gain = p_sys - p_base
        if not np.isfinite(gain):
            agree = "not measured"
        elif np.sign(gain) != np.sign(p_gain):
            agree = "opposite sign"
        else:
            agree = "same sign, CI excludes 0" if (lo > 0 or hi < 0) else "same sign, CI contains 0"
        rows.append({"paper dataset": dataset, "our split": split, "system": sys_name, "query": modality,
                     "metric": metric, "paper baseline": p_base, "paper system": p_sys, "paper gain": p_gain,
                     "paper gain %": 100 * p_gain / p_base,
                     "our baseline": _mean(summary, baseline, split, "random", modality, ours_metric),
                     "our gain": gain, "our CI low": lo, "our CI high": hi, "agreement": agree,
                     "paper gain in CI": bool(np.isfinite(lo) and lo <= p_gain <= hi)})

    for dataset in ("VGGSound-clean+", "MUSIC-clean+"):
        d = PAPER_RESULTS[dataset]
        for metric, ours_metric in (("sdr", "sdr"), ("clap", "semantic")):
            for modality, (p_base, p_sys) in d.get(metric, {}).items():
                add(dataset, d["ours"], modality, metric, ours_metric, p_base, p_sys, system)
    abl = PAPER_RESULTS["ablation_text_sdr"]
    for name in ("RL, un-aligned encoder", "aligned encoder, no RL"):
        add("VGGSound-clean+ (ablation)", "test", "text", "sdr", "sdr", abl["supervised"], abl[name], name)
    return pd.DataFrame(rows)


COLLAPSE_DB = -3.0
"""An ablation whose SDR change is below this "collapses" in :func:`describe_paper_comparison`."""
NEAR_DB = 1.0
"""An ablation whose SDR change is within +-this "stays near the baseline"."""


def _ablation_verdict(paper_gain: float, our_gain: float) -> str:
    if paper_gain < COLLAPSE_DB:
        return "collapses in both" if our_gain < COLLAPSE_DB else "collapses in the paper but not here"
    if our_gain < COLLAPSE_DB:
        return "collapses here but not in the paper"
    return "stays near the baseline in both" if abs(our_gain) < NEAR_DB else "moves more here than in the paper"


def describe_paper_comparison(table: pd.DataFrame) -> list[str]:
    """Plain sentences from :func:`paper_comparison`: a tally of where our SDR gains agree with the paper's,
    then one sentence per query and dataset, the semantic-score signs and the two ablations."""
    lines = []
    sdr = table[(table["metric"] == "sdr") & ~table["paper dataset"].str.contains("ablation")]
    measured = sdr[sdr["agreement"] != "not measured"]
    if len(measured):
        lines.append(
            f"Of {len(measured)} SDR comparisons our gain has the paper's sign in "
            f"{int(measured['agreement'].str.startswith('same sign').sum())}, an interval excluding 0 in "
            f"{int((measured['agreement'] == 'same sign, CI excludes 0').sum())}, and the paper's gain lies inside our "
            f"interval in {int(measured['paper gain in CI'].sum())}; our mean gain is "
            f"{measured['our gain'].mean():+.3f} dB against the paper's {measured['paper gain'].mean():+.2f} dB.")
    for _, r in sdr.iterrows():
        if r["agreement"] == "not measured":
            lines.append(f"{r['paper dataset']} {r['query']} query: the paper gains {r['paper gain']:+.2f} dB "
                         f"({r['paper gain %']:+.1f}%); we have no {r['system']} number on {r['our split']}.")
            continue
        rel = (f" ({100 * r['our gain'] / r['our baseline']:+.1f}% of our baseline)"
               if abs(r["our baseline"]) >= 1 else " (our baseline is below 1 dB: no relative gain)")
        k = _digits(r["our CI low"], r["our CI high"])
        outside = "" if r["paper gain in CI"] else "; the paper's gain lies outside our interval"
        lines.append(f"{r['paper dataset']} vs our {r['our split']}, {r['query']} query: paper "
                     f"{r['paper gain']:+.2f} dB ({r['paper gain %']:+.1f}%), ours {r['our gain']:+.{k}f} dB "
                     f"[{r['our CI low']:+.{k}f}, {r['our CI high']:+.{k}f}]{rel}: {r['agreement']}{outside}.")
    clap = table[(table["metric"] == "clap") & (table["agreement"] != "not measured")]
    if len(clap):
        n_same = int(clap["agreement"].str.startswith("same sign").sum())
        lines.append(f"Semantic score (paper: CLAP; ours: the judge MiniBind, another scale): our change has the "
                     f"paper's sign for {n_same} of {len(clap)} queries.")
    for _, r in table[table["paper dataset"].str.contains("ablation")].iterrows():
        if r["agreement"] == "not measured":
            lines.append(f"Ablation '{r['system']}': the paper reports {r['paper gain']:+.2f} dB (text query); "
                         "not run here.")
            continue
        k = _digits(r["our CI low"], r["our CI high"])
        lines.append(f"Ablation '{r['system']}' (text query): paper {r['paper gain']:+.2f} dB, ours "
                     f"{r['our gain']:+.{k}f} dB [{r['our CI low']:+.{k}f}, {r['our CI high']:+.{k}f}]: it "
                     f"{_ablation_verdict(r['paper gain'], r['our gain'])}.")
    return lines

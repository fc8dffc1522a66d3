"""Does a benchmark rerun reproduce a published one? Compare two benchmark folders (``summary.csv``, ``bootstrap.csv``).

    python scripts/compare_runs.py figures/tables_cpu figures/tables_cpu/rerun_fresh_machine

Prints, per system, the largest absolute difference of any summary mean between the runs (every split, pair type,
query and metric); how many of the rerun's paired-bootstrap means lie inside the published run's 95 % intervals
(per system); and, for ``--metric`` (default SDR) on ``--split`` / ``--pairs``, each learned system's change against
``--baseline`` in both runs side by side (``*``: interval above 0, ``-``: below). Rows are matched by split, pair type,
system, baseline, query and metric; rows present in one run only are counted and left out.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

KEYS = ["split", "pairs", "system", "modality", "metric"]
QUERIES = ("text", "image", "audio", "omni")


def summary_differences(published: pd.DataFrame, rerun: pd.DataFrame) -> pd.DataFrame:
    """Per system: the largest ``|mean(rerun) - mean(published)|`` over its matched summary rows, and their count."""
    m = published.merge(rerun, on=KEYS, suffixes=("_pub", "_re"))
    m["diff"] = (m["mean_re"] - m["mean_pub"]).abs()
    return (m.groupby("system", sort=False)["diff"].agg(["max", "count"])
            .rename(columns={"max": "max_abs_diff", "count": "rows"}).reset_index())


def inside_intervals(published: pd.DataFrame, rerun: pd.DataFrame) -> pd.DataFrame:
    """Per system: how many of the rerun's bootstrap means lie in the published ``[ci_low, ci_high]``, of how many."""
    keys = KEYS + ["baseline"]
    m = published.merge(rerun, on=keys, suffixes=("_pub", "_re"))
    m["inside"] = (m["mean_diff_re"] >= m["ci_low_pub"]) & (m["mean_diff_re"] <= m["ci_high_pub"])
    return (m.groupby("system", sort=False)["inside"].agg(["sum", "count"])
            .rename(columns={"sum": "inside", "count": "rows"}).reset_index())


def _cell(row) -> str:
    mark = "*" if row["ci_low"] > 0 else ("-" if row["ci_high"] < 0 else "")
    return f"{row['mean_diff']:+.2f}{mark}"


def side_by_side(published: pd.DataFrame, rerun: pd.DataFrame, split: str, pairs: str, metric: str,
                 baseline: str) -> pd.DataFrame:
    """One row per system with rows against ``baseline`` in either run: its change per query, published | rerun."""
    out = {}
    for name, b in (("published", published), ("rerun", rerun)):
        x = b[(b["split"] == split) & (b["pairs"] == pairs) & (b["metric"] == metric) & (b["baseline"] == baseline)]
        for system, g in x.groupby("system", sort=False):
            g = g.set_index("modality")
            out.setdefault(system, {})[name] = " ".join(_cell(g.loc[q]) if q in g.index else "." for q in QUERIES)
    return pd.DataFrame([{"system": s, **v} for s, v in out.items()])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("published", type=Path, help="folder with summary.csv and bootstrap.csv")
    p.add_argument("rerun", type=Path, help="folder with summary.csv and bootstrap.csv")
    p.add_argument("--split", default="test")
    p.add_argument("--pairs", default="random")
    p.add_argument("--metric", default="sdr")
    p.add_argument("--baseline", default="supervised")
    a = p.parse_args(argv)
    tables = {}
    for name in ("summary", "bootstrap"):
        paths = [d / f"{name}.csv" for d in (a.published, a.rerun)]
        missing = [str(x) for x in paths if not x.is_file()]
        if missing:
            print(f"error: {', '.join(missing)} not found", file=sys.stderr)
            return 2
        tables[name] = [pd.read_csv(x) for x in paths]
    pd.set_option("display.width", 200)
    print("largest |difference| of a summary mean, per system:")
    print(summary_differences(*tables["summary"]).round(4).to_string(index=False))
    print("\nrerun's bootstrap means inside the published 95 % intervals, per system:")
    print(inside_intervals(*tables["bootstrap"]).to_string(index=False))
    print(f"\n{a.metric} against {a.baseline!r}, {a.split} {a.pairs} pairs ({' / '.join(QUERIES)}; "
          "*: interval above 0, -: below):")
    print(side_by_side(*tables["bootstrap"], a.split, a.pairs, a.metric, a.baseline).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())

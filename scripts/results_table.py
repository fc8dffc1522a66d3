"""Print the README's results tables (markdown) from a benchmark run's summary.csv and bootstrap.csv.

    python scripts/results_table.py runs/cpu/benchmark

Rows: the reference systems, the supervised baseline and each learned system, per query kind;
columns: SDR, SI-SDRi (dB) and the judge's semantic score, mean ± standard error (test split,
random pairs unless --split/--pairs say otherwise). A second table: each system's SDR (``--metric``) change over
the supervised baseline with its 95 % paired-bootstrap interval; a third, when the run has controls: each RL
system's change over each control.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

METRICS = ("sdr", "si_sdri", "semantic")


def _row(cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def scores(summary: pd.DataFrame, split: str, pairs: str) -> str:
    t = summary[(summary["split"] == split) & (summary["pairs"] == pairs) & summary["metric"].isin(METRICS)]
    t = t[t["system"] != "clean target"]
    lines = [_row(["system", "query", "SDR (dB)", "SI-SDRi (dB)", "semantic", "n"]), _row(["---"] * 6)]
    for (system, query), g in t.groupby(["system", "modality"], sort=False):
        v = {r.metric: f"{r.mean:.2f} ± {r.sem:.2f}" for r in g.itertuples()}
        lines.append(_row([system, query, *(v.get(m, "") for m in METRICS), int(g["n"].max())]))
    return "\n".join(lines)


def changes(boot: pd.DataFrame, split: str, pairs: str, metric: str = "sdr", controls: bool = False) -> str:
    """Paired-bootstrap rows: against the supervised baseline, or (``controls``) against each control."""
    b = boot[(boot["split"] == split) & (boot["pairs"] == pairs) & (boot["metric"] == metric)]
    if "baseline" in b.columns:
        b = b[(b["baseline"] != "supervised") if controls else (b["baseline"] == "supervised")]
    cols = [c for c in ("system", "baseline", "modality", "mean_diff", "ci_low", "ci_high", "n") if c in b.columns]
    lines = [_row(cols), _row(["---"] * len(cols))]
    for r in b[cols].itertuples(index=False):
        lines.append(_row([f"{x:+.2f}" if isinstance(x, float) else x for x in r]))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("results", type=Path)
    ap.add_argument("--split", default="test")
    ap.add_argument("--pairs", default="random")
    ap.add_argument("--metric", default="sdr", help="metric of the bootstrap tables (default sdr)")
    a = ap.parse_args()
    boot = pd.read_csv(a.results / "bootstrap.csv")
    print(scores(pd.read_csv(a.results / "summary.csv"), a.split, a.pairs))
    print()
    print(changes(boot, a.split, a.pairs, a.metric))
    if "baseline" in boot.columns and (boot["baseline"] != "supervised").any():
        print()
        print(changes(boot, a.split, a.pairs, a.metric, controls=True))


if __name__ == "__main__":
    main()

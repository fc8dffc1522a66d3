"""``python -m mars_core.benchmark``: run the benchmark, or ``figures`` from a results directory."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import pandas as pd

from ..commands import start_command
from ..device import add_device_arguments
from ..encoders.load import add_clap_argument, add_imagebind_argument
from .figures import make_figures
from .harness import run_benchmark
from .reading import describe_paper_comparison, describe_results, paper_comparison
from .registry import SYSTEM_ALIASES
from .tables import N_RESAMPLES, PAIR_TYPES, SPLITS


def _run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mars_core.benchmark", description="The benchmark: every system, every query, both test splits, random and hard pairs.")
    p.add_argument("--profile", default=None, help="smoke, cpu or full (default: $MARS_PROFILE or smoke)")
    p.add_argument("--out", default=None, help="results directory (default: runs/<profile>/benchmark)")
    p.add_argument("--systems", nargs="+", default=None,
                   help=f"subset of the learned systems: names or aliases {list(SYSTEM_ALIASES)} (default: all)")
    p.add_argument("--n-items", type=int, default=None, help="test mixtures per test set (default: the profile's)")
    p.add_argument("--splits", nargs="+", default=list(SPLITS), choices=list(SPLITS))
    p.add_argument("--pairs", nargs="+", default=list(PAIR_TYPES), choices=list(PAIR_TYPES))
    p.add_argument("--seed", type=int, default=0, help="seed of torch/numpy and of the bootstrap")
    p.add_argument("--resamples", type=int, default=N_RESAMPLES, help="bootstrap resamples")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    return add_clap_argument(add_imagebind_argument(add_device_arguments(p)))


def _figures_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mars_core.benchmark figures",
                                description="Figures from a results directory (see mars_core.benchmark.figures).")
    p.add_argument("--csv", required=True, help="results directory written by the benchmark")
    p.add_argument("--out", required=True, help="figure directory (figures/ for the committed cpu figures)")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = "python -m mars_core.benchmark " + " ".join(shlex.quote(a) for a in argv)
    if argv[:1] == ["figures"]:
        args = _figures_parser().parse_args(argv[1:])
        for path in make_figures(args.csv, args.out, command=command):
            print(path)
        return 0
    args = _run_parser().parse_args(argv)
    prof, device = start_command(args)
    out = Path(args.out or Path("runs") / prof.name / "benchmark")
    res = run_benchmark(prof, systems=args.systems, splits=args.splits, pair_types=args.pairs, n_items=args.n_items,
                        seed=args.seed, n_resamples=args.resamples, out=out, command=command, device=device)
    cols = ["split", "pairs", "system", "modality", "metric", "mean", "sem", "n"]
    with pd.option_context("display.width", 200, "display.max_rows", 400):
        print(res.summary[res.summary["metric"].isin(["sdr", "semantic", "contamination"])][cols]
              .round(2).to_string(index=False))
    print("\n".join(describe_results(res.summary, res.bootstrap, prof.name)))
    print("\n".join(describe_paper_comparison(paper_comparison(res.summary, res.bootstrap))))
    if res.missing:
        print("missing systems: " + "; ".join(f"{k} ({v})" for k, v in res.missing.items()))
    print(f"-> {out} ({res.run['wall_s']:.0f} s)")
    return 0

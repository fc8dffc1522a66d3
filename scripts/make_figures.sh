#!/usr/bin/env bash
# Benchmark every system of a profile (queries text/image/audio/omni; test and test_timbre,
# random and hard pairs), then draw the figures from the saved tables.
# Usage: bash scripts/make_figures.sh [cpu|smoke|full]   (default: cpu)
#   cpu  -> tables in runs/cpu/benchmark, the committed figures in figures/ (+ figures/RUN.md:
#           the exact commands, date, machine and git commit, written by the figures step);
#   else -> runs/<profile>/benchmark and runs/<profile>/figures (ignored by git).
# Systems missing their checkpoints are trained first by their loaders (cpu RL: three runs).
set -euo pipefail
cd "$(dirname "$0")/.."
P=${1:-cpu}
PY=.venv/bin/python
# Busy-waiting OpenMP threads made training 5-8x slower on a shared 2-core machine.
export OMP_WAIT_POLICY=PASSIVE MPLBACKEND=Agg
RESULTS="runs/$P/benchmark"
if [ "$P" = cpu ]; then FIGURES=figures; else FIGURES="runs/$P/figures"; fi
"$PY" -m mars_core.data build --profile "$P"
"$PY" -m mars_core.benchmark --profile "$P" --out "$RESULTS"
"$PY" -m mars_core.benchmark figures --csv "$RESULTS" --out "$FIGURES"
echo "[make_figures] $P: tables in $RESULTS, figures in $FIGURES (see $FIGURES/RUN.md)"

#!/usr/bin/env bash
# Set up (idempotent), build the offline benchmark, then execute the notebooks in
# order with papermill. Usage: bash scripts/main.sh [smoke|cpu|full]   (default smoke)
# Executed copies land in runs/<profile>/ (ignored by git).
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE=${1:-${MARS_PROFILE:-smoke}}
case "$PROFILE" in smoke|cpu|full) ;; *) echo "usage: $0 [smoke|cpu|full]" >&2; exit 2;; esac
bash scripts/setup.sh
# MARS_STATIC=1: the executed copies are read as files, so notebook 05 shows its listening view as static
# HTML (players, table) instead of live ipywidgets controls (under papermill, which has no frontend, the live
# widget cell did not return). Open the notebook in JupyterLab for the interactive widget.
# No MPLBACKEND here: the kernels inherit this environment and a non-inline backend (e.g. Agg) would leave the
# executed copies without figures; scripts/check_figures.py fails the run if a copy has none.
export MARS_PROFILE=$PROFILE PYTHONUNBUFFERED=1 MARS_STATIC=1
unset MPLBACKEND
PY=.venv/bin/python
"$PY" -m mars_core.data build --profile "$PROFILE"
mkdir -p "runs/$PROFILE"
for nb in notebooks/[0-9][0-9]_*.ipynb; do
  name=$(basename "$nb")
  echo "[main] $name (profile $PROFILE)"
  t0=$(date +%s)
  "$PY" -m papermill --cwd notebooks -p profile "$PROFILE" "$nb" "runs/$PROFILE/$name"
  echo "[main] $name done in $(( $(date +%s) - t0 )) s -> runs/$PROFILE/$name"
  "$PY" scripts/check_figures.py "runs/$PROFILE/$name"
done

#!/usr/bin/env bash
# Set up (idempotent), build the offline benchmark, then execute the notebooks in
# order with papermill. Usage: bash scripts/main.sh [smoke|cpu|full]   (default smoke)
# Executed copies land in runs/<profile>/ (ignored by git). The Python environment: $MARS_VENV, else an
# active conda environment with torch (environment.yml), else .venv (scripts/pyenv.sh). MARS_DEVICE
# (auto|cpu|cuda[:N], default auto) and MARS_ALLOW_CPU=1 are passed to the notebooks' device parameters.
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
ROOT=$PWD
. scripts/pyenv.sh  # MARS_ENV_KIND, VENV, VPY (the same choice as setup.sh's)
PY=$VPY
DEVICE=${MARS_DEVICE:-auto}
ALLOW_CPU=False; [ "${MARS_ALLOW_CPU:-0}" = 1 ] && ALLOW_CPU=True
describe_torch
"$PY" -m mars_core.data build --profile "$PROFILE"
mkdir -p "runs/$PROFILE"
for nb in notebooks/[0-9][0-9]_*.ipynb; do
  name=$(basename "$nb")
  echo "[main] $name (profile $PROFILE)"
  t0=$(date +%s)
  "$PY" -m papermill --cwd notebooks -p profile "$PROFILE" -p device "$DEVICE" -p allow_cpu "$ALLOW_CPU" \
    "$nb" "runs/$PROFILE/$name"
  echo "[main] $name done in $(( $(date +%s) - t0 )) s -> runs/$PROFILE/$name"
  "$PY" scripts/check_figures.py "runs/$PROFILE/$name"
done

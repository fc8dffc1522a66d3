#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite: unit tests, then every notebook
# executed at the smoke size under nbval. Usage: bash scripts/test.sh [extra pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export MARS_PROFILE=smoke TQDM_DISABLE=1 MPLBACKEND=Agg PYTHONUNBUFFERED=1
PY=.venv/bin/python
t0=$(date +%s)
"$PY" -m mars_core.data build --profile smoke
t1=$(date +%s); echo "[test] smoke benchmark ready in $((t1 - t0)) s"
"$PY" -m pytest tests notebooks --nbval-lax --nbval-current-env -p no:cacheprovider "$@"
echo "[test] pytest finished in $(( $(date +%s) - t1 )) s"

#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite: unit tests, then every notebook
# executed at the smoke size under nbval. Usage: bash scripts/test.sh [extra pytest args]
# Prints the time of each phase (setup, benchmark, pytest) and the 15 slowest tests, also
# when pytest fails; exits with pytest's status.
set -euo pipefail
cd "$(dirname "$0")/.."
# No MPLBACKEND here: inside the notebook kernels it would replace the inline backend and the
# executed notebooks would hold no figure (conftest.py's notebook guard checks for image/png).
export MARS_PROFILE=smoke TQDM_DISABLE=1 PYTHONUNBUFFERED=1
unset MPLBACKEND
PY=.venv/bin/python
t0=$(date +%s)
bash scripts/setup.sh
t1=$(date +%s); echo "[test] setup: $((t1 - t0)) s"
"$PY" -m mars_core.data build --profile smoke
t2=$(date +%s); echo "[test] smoke benchmark ready: $((t2 - t1)) s"
rc=0
"$PY" -m pytest tests notebooks --nbval-lax --nbval-current-env -p no:cacheprovider --durations=15 "$@" || rc=$?
t3=$(date +%s)
echo "[test] times: setup $((t1 - t0)) s, benchmark $((t2 - t1)) s, pytest $((t3 - t2)) s (exit $rc), total $((t3 - t0)) s"
if [ "$rc" -eq 5 ]; then
  echo "[test] pytest collected no tests (exit 5): check the arguments given to scripts/test.sh" >&2
fi
exit "$rc"

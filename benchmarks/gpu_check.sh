#!/usr/bin/env bash
# The GPU check (issue 18, item 7): the full profile end to end at tiny step counts on one GPU, with the
# project's Python environment ($MARS_VENV, else an active conda environment with torch, else .venv:
# scripts/pyenv.sh). Prints supervised and RL steps per second, peak GPU memory and bf16-vs-fp32 agreement of
# the mask and the reward; ImageBind-Huge has random weights unless MARS_IMAGEBIND (or --imagebind PATH) names
# the official file. Target: under 8 minutes on one H100. Not yet run on a GPU.
#   bash benchmarks/gpu_check.sh                       # full profile, batch 4, 1 warm-up + 3 timed steps
#   bash benchmarks/gpu_check.sh --batch 8 --steps 5 --json runs/gpu_check.json
# Arguments go to benchmarks/gpu_check.py (--help lists them); without a CUDA GPU it stops with exit status 2.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
. scripts/pyenv.sh  # MARS_ENV_KIND, VENV, VPY
if [ ! -x "$VPY" ]; then
  echo "gpu_check.sh: no Python at $VPY; run 'bash scripts/setup.sh' or activate the conda environment from environment.yml" >&2
  exit 2
fi
describe_torch
export PYTHONUNBUFFERED=1
exec "$VPY" benchmarks/gpu_check.py "$@"

#!/usr/bin/env bash
# Retrain the shipped MiniBind checkpoints of a profile: the reward/query encoder and the
# independent judge, each with its metrics (.json) next to it in checkpoints/.
# Usage: bash scripts/train_minibind.sh [cpu|smoke]
# Time on 2 CPU cores: about 25 min per cpu model, 1-2 min per smoke model.
set -euo pipefail
cd "$(dirname "$0")/.."
P=${1:-cpu}
PY=.venv/bin/python
# Busy-waiting OpenMP threads made training 5-8x slower on a shared 2-core machine.
export OMP_WAIT_POLICY=PASSIVE
"$PY" -m mars_core.data build --profile "$P"
"$PY" -m mars_core.encoders.train --profile "$P" --role reward --out "checkpoints/minibind_$P.pt"
"$PY" -m mars_core.encoders.train --profile "$P" --role judge --out "checkpoints/judge_$P.pt"

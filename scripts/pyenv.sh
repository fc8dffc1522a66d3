# Sourced by scripts/setup.sh and scripts/main.sh (not run on its own): which Python environment to use.
#   1. $MARS_VENV when set (a virtual environment, created there by setup.sh if missing);
#   2. else an active conda environment ($CONDA_PREFIX) whose python imports torch, e.g. the one from
#      environment.yml (`conda activate mars-sep`): used as it is, with its own CUDA torch, no .venv made;
#   3. else .venv in the repository (created by setup.sh with the pinned CPU torch).
# Sets MARS_ENV_KIND (venv|conda), VENV (its prefix) and VPY (its python); needs ROOT (the repository).
if [ -n "${MARS_VENV:-}" ]; then
  MARS_ENV_KIND=venv VENV=$MARS_VENV
elif [ -n "${CONDA_PREFIX:-}" ] && [ -x "$CONDA_PREFIX/bin/python" ] && "$CONDA_PREFIX/bin/python" -c 'import torch' 2>/dev/null; then
  MARS_ENV_KIND=conda VENV=$CONDA_PREFIX
else
  MARS_ENV_KIND=venv VENV=$ROOT/.venv
fi
VPY=$VENV/bin/python

# One line: the interpreter, torch, its CUDA build and the GPU it sees (or that it runs on the CPU).
describe_torch() {
  "$VPY" - "$MARS_ENV_KIND" <<'PY'
import sys

import torch

gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
print(f"[env] {sys.argv[1]} {sys.prefix}: python {sys.version.split()[0]}, torch {torch.__version__}, "
      f"CUDA build {torch.version.cuda or 'none (CPU build)'}, "
      + (f"{len(gpus)} GPU(s): {', '.join(gpus)}" if gpus else "no GPU visible: runs on the CPU"), flush=True)
PY
}

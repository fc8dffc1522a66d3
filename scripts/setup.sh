#!/usr/bin/env bash
# Set up everything MARS-Sep needs on a fresh Debian/Ubuntu machine. Idempotent:
# a second run checks a stamp and returns in seconds.
#   1. a Python virtual environment in .venv (or $MARS_VENV) with the pinned stack (CPU torch); with an
#      active conda environment whose python imports torch (environment.yml), that one instead, its torch
#      kept (scripts/pyenv.sh); the torch, CUDA and GPU in use are printed,
#   2. the IPython kernel configuration scripts/ipython_kernel_config.py, copied into
#      .venv/etc/ipython/ (it silences one benign kernel log line; see that file),
#   3. the Debian data packages the offline benchmark is built from, unpacked
#      (not installed) into $MARS_DATA/system with `apt-get download` + `dpkg-deb -x`,
#      and one npm package into $MARS_DATA/npm (scripts/fetch_system_data.sh).
# Root (or passwordless sudo) is used only where something is missing: installing Debian's
# python3/python3-venv, `apt-get update` on a machine with empty package lists, and
# installing Debian's npm (scripts/fetch_system_data.sh). Without root step 3 is skipped
# with a warning and the benchmark builder falls back to its pure-PyPI recipe.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
. scripts/pyenv.sh  # MARS_ENV_KIND, VENV, VPY
PY=${PYTHON:-python3}
TORCH_SPEC=${MARS_TORCH_SPEC:-torch==2.13.0}
TORCHAUDIO_SPEC=${MARS_TORCHAUDIO_SPEC:-torchaudio==2.11.0}

log() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }
as_root() {
  if [ "$(id -u)" = 0 ]; then "$@";
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo "$@";
  else return 1; fi
}

# --- 1. Python environment ------------------------------------------------------
if [ "$MARS_ENV_KIND" = conda ]; then
  log "using the active conda environment $VENV (its own torch; no .venv is created)"
elif ! "$PY" -c 'import sys; assert sys.version_info >= (3, 10)' 2>/dev/null; then
  log "python3 >= 3.10 missing: installing Debian's (needs root)"
  as_root apt-get update -qq && as_root apt-get install -y -qq --no-install-recommends python3 python3-venv python3-pip \
    || { echo "error: need python3 >= 3.10 with venv; install it and rerun" >&2; exit 1; }
fi
if [ "$MARS_ENV_KIND" = venv ] && [ ! -x "$VENV/bin/python" ]; then
  if ! "$PY" -m venv "$VENV" 2>/dev/null; then
    log "python3 -m venv failed: installing python3-venv (needs root)"
    rm -rf "$VENV"
    as_root apt-get update -qq && as_root apt-get install -y -qq --no-install-recommends python3-venv \
      || { echo "error: python3-venv is missing and cannot be installed without root" >&2; exit 1; }
    "$PY" -m venv "$VENV"
  fi
fi
STAMP=$VENV/.mars-setup-stamp
want=$(cat requirements.txt requirements-nodeps.txt pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
  log "installing the pinned Python stack into $VENV (about 1.7 GB, 1-3 min)"
  "$VPY" -m pip install -q --upgrade pip
  if [ "$MARS_ENV_KIND" = venv ]; then
    "$VPY" -m pip install -q "$TORCH_SPEC" "$TORCHAUDIO_SPEC"
  fi
  "$VPY" -m pip install -q -r requirements.txt
  if ! "$VPY" -c 'import torchaudio' 2>/dev/null; then
    # PyPI's torchaudio 2.11 ships CUDA-linked extension libraries that do not load
    # beside a CPU torch. Without them torchaudio runs in pure-PyTorch mode, which is
    # all mars_core uses (kaldi fbank, resample, transforms).
    ta=$("$VPY" -c 'import importlib.util,os;print(os.path.dirname(importlib.util.find_spec("torchaudio").origin))')
    log "torchaudio's compiled extension does not load beside this torch: removing $ta/lib/*.so (pure-PyTorch mode)"
    rm -f "$ta"/lib/*.so
    "$VPY" -c 'import torchaudio' || { echo "error: torchaudio still fails to import" >&2; exit 1; }
  fi
  "$VPY" -m pip install -q --no-deps -r requirements-nodeps.txt
  "$VPY" -m pip install -q --no-deps -e .
  echo "$want" > "$STAMP"
else
  log "Python environment up to date ($VENV)"
fi
describe_torch

# --- 2. Kernel configuration (cheap; refreshed on every run) --------------------
install -D -m 644 scripts/ipython_kernel_config.py "$VENV/etc/ipython/ipython_kernel_config.py"

# --- 3. Data packages (unpacked, not installed) --------------------------------
bash scripts/fetch_system_data.sh || log "warning: system data packages unavailable; the builder will use its pure-PyPI recipe"
log "done. Activate with: source $VENV/bin/activate"

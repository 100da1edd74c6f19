#!/usr/bin/env bash
# Zero to dashboards on the embedded default (Gemma 3 270M + shipped Temporal SAE, offline CPU).
# Extra arguments go to `tempolens run` (e.g. --n-prompts 16 --prompt-len 64 --out runs/small).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${TEMPOLENS_VENV:-.venv}"
bash scripts/setup_env.sh embedded,autointerp
. "$VENV/bin/activate"
echo "[quickstart $(date +%H:%M:%S)] tempolens setup (model conversion and corpus, once per cache)"
tempolens setup
# --batches --bulk: also the Neuronpedia formats (off by default), so the run shows all it can write
echo "[quickstart $(date +%H:%M:%S)] tempolens run --batches --bulk $*"
tempolens run --batches --bulk "$@"
echo "[quickstart $(date +%H:%M:%S)] done"

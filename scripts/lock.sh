#!/usr/bin/env bash
# Refresh requirements/lock.txt, the exact versions that CI tests (Python 3.11, Linux x86_64), from the lower
# bounds in pyproject.toml. scripts/setup_env.sh installs with it as a pip constraints file. torch is not pinned
# there: setup_env.sh picks the build for the machine (CPU or CUDA).
#   bash scripts/lock.sh            # then commit requirements/lock.txt with the change that needed it
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS="$(mktemp -d)"
trap 'rm -rf "$TOOLS"' EXIT
"${PYTHON:-python3}" -m venv "$TOOLS/venv"
"$TOOLS/venv/bin/pip" install -q "pip-tools>=7.4,<8"
CUSTOM_COMPILE_COMMAND="bash scripts/lock.sh" "$TOOLS/venv/bin/pip-compile" -q --all-extras --strip-extras \
  --unsafe-package torch --no-emit-index-url --no-emit-find-links --no-emit-trusted-host \
  -c requirements/torch-cpu.txt -o requirements/lock.txt pyproject.toml
echo "wrote requirements/lock.txt ($(grep -c '==' requirements/lock.txt) pins)"

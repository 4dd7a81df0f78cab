#!/usr/bin/env bash
# The page's quick demo as a workshop runs it (tests/e2e/demo.mjs): epochs trained in the
# budget and the clusters' AMI against raw pixels', DEMO_RUNS times (default 1). Run nothing
# else meanwhile: the budget is wall time. Builds dist/ first unless SKIP_BUILD=1.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-tools.sh web test
export PATH="$HOME/.cargo/bin:$PATH"
[ "${SKIP_BUILD:-0}" = 1 ] || trunk build --locked
cd tests/e2e && node demo.mjs

#!/usr/bin/env bash
# The page's quick demo as a workshop runs it, paired with the CLI's (tests/e2e/demo.mjs): epochs
# trained in the budget by each, the page's epochs as a share of the CLI's, and the clusters' AMI
# against raw pixels', DEMO_RUNS times (default 1); DEMO_SETTINGS='{"batch_size":64}' measures settings over
# the preset in both. Run nothing else meanwhile: the budget is
# wall time. Builds dist/ and the CLI first unless SKIP_BUILD=1.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-tools.sh web test
export PATH="$HOME/.cargo/bin:$PATH"
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  trunk build --locked
  cargo build --locked --bin pcl
fi
export PCL_BIN="${PCL_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/debug/pcl}"
cd tests/e2e && node demo.mjs

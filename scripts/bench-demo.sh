#!/usr/bin/env bash
# The page's quick demo as a workshop runs it, paired with the CLI's (tests/e2e/demo.mjs): epochs
# trained in the budget by each, the page's epochs as a share of the CLI's, and the clusters' AMI
# against raw pixels', DEMO_RUNS times (default 1); DEMO_SETTINGS='{"batch_size":64}' measures settings over
# the preset in both; DEMO_DIST=DIR serves another build of the page than dist/ (the release
# build a site runs: `trunk build --release --dist DIR`). Run nothing else meanwhile: the budget
# is wall time. Builds dist/ (unless DEMO_DIST) and the CLI first unless SKIP_BUILD=1.
set -euo pipefail
[ -z "${DEMO_DIST:-}" ] || export DEMO_DIST="$(cd "$DEMO_DIST" && pwd)"
cd "$(dirname "$0")/.."
scripts/install-tools.sh web test
export PATH="$HOME/.cargo/bin:$PATH"
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  [ -n "${DEMO_DIST:-}" ] || trunk build --locked
  cargo build --locked --bin pcl
fi
export PCL_BIN="${PCL_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/debug/pcl}"
cd tests/e2e && node demo.mjs

#!/usr/bin/env bash
# Soak benchmark of the page (issue "nothing crashes"): a long CPU-fallback run in headless
# Chromium; prints the worker's memory and the autosave size after every epoch.
#   scripts/soak-browser.sh                       100 epochs on 500 sample images (~10 min)
#   SOAK_EPOCHS=20 SOAK_IMAGES=200 scripts/soak-browser.sh
#   SOAK_DIVERGE=20 scripts/soak-browser.sh       the weights break at the end of epoch 20; the
#                                                 browser is killed at once and reopened: the
#                                                 stored run must open on an earlier epoch
# Builds dist/ with `trunk build` first unless SKIP_BUILD=1.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-tools.sh web test
export PATH="$HOME/.cargo/bin:$PATH"
[ "${SKIP_BUILD:-0}" = 1 ] || trunk build --locked
cd tests/e2e
if [ -n "${SOAK_DIVERGE:-}" ]; then node soak-diverge.mjs; else node soak.mjs; fi

#!/usr/bin/env bash
# Refreshes docs/screenshots/ (the README's pictures of the page): the dashboard while training
# and after a run at 1366 x 768 and 1920 x 1080, projector mode, the augmentation panel
# (tests/e2e/screenshots.mjs). Builds dist/ first unless SKIP_BUILD=1.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-tools.sh web test
export PATH="$HOME/.cargo/bin:$PATH"
[ "${SKIP_BUILD:-0}" = 1 ] || trunk build --locked
mkdir -p docs/screenshots
cd tests/e2e && node screenshots.mjs

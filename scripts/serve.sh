#!/usr/bin/env bash
# Command 1: install what is missing, then serve the app at http://127.0.0.1:8080
# (the dev profile: dependencies optimised, our crate quick to rebuild).
# Pass --release for the size-tuned build with wasm-opt.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-tools.sh web
export PATH="$HOME/.cargo/bin:$PATH"
exec trunk serve "$@"

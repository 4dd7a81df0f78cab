#!/usr/bin/env bash
# Command 2: install what is missing, then run every check:
#   fmt, clippy (native and wasm32, -D warnings), native tests, the README's Python block, the
#   browser build, browser tests.
# FAST=1 runs only the native checks and tests (no browser build, no Chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TERM_COLOR=never
if [ "${FAST:-0}" = 1 ]; then scripts/install-tools.sh; else scripts/install-tools.sh web test; fi

t0=$(date +%s)
phase() {
  local now; now=$(date +%s)
  printf '\n==> [%4ds] %s\n' $((now - t0)) "$*"
}

phase "cargo fmt --check"
cargo fmt --all --check

phase "cargo clippy (native, all targets; and the lib without the engine feature, as the page has it)"
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo clippy --lib --no-default-features --locked -- -D warnings

phase "cargo test (native: engine, CLI, golden values against numpy / scikit-learn)"
cargo test --locked -- --test-threads=2

if [ "${FAST:-0}" = 1 ]; then phase "done (FAST=1: browser build and tests skipped)"; exit 0; fi

phase "the README's PyTorch block on an exported run (cosine to embeddings.csv)"
scripts/check-readme-snippet.sh

phase "cargo clippy (wasm32: the worker with the engine, the page without it)"
cargo clippy --target wasm32-unknown-unknown --workspace --bins --lib --locked -- -D warnings
cargo clippy --target wasm32-unknown-unknown --bin app --lib --no-default-features --locked -- -D warnings

phase "trunk build (wasm32 app + worker)"
trunk build --locked

phase "browser end-to-end tests (headless Chromium, WebGPU on SwiftShader and CPU fallback)"
# The image tests compare the browser's pixels with the CLI's (the binary cargo test built).
export PCL_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/pcl"
(cd tests/e2e && node --test --test-concurrency=1 --test-reporter=spec \
  app.test.mjs images.test.mjs trainer.test.mjs dashboard.test.mjs recovery.test.mjs site.test.mjs \
  a11y.test.mjs)

phase "all checks passed"

#!/usr/bin/env bash
# Browser training speed: the page's CPU fallback (and WebGPU on SwiftShader with
# BENCH_WEBGPU=1) in headless Chromium on the sample set, 500 images, width 32, batch 64, paired
# with TensorFlow.js 4.22 (wasm SIMD, 1 and 2 threads; WebGPU) running the same encoder and MoCo
# step in the same browser (benches/tfjs, npm packages pinned there and installed on first use,
# served from the machine), and the page's E-step on all 1,870 images. Prints figures and ratios.
#   scripts/bench-browser.sh            dev build (what scripts/serve.sh serves)
#   RELEASE=1 scripts/bench-browser.sh  the release build (scripts/build-site.sh's)
# BENCH_SECONDS (default 60) of training are measured after the first step. Two builds side by
# side, alternating (copies of dist/ before and after a change):
#   BENCH_DISTS="/tmp/dist-a /tmp/dist-b" BENCH_ROUNDS=3 SKIP_BUILD=1 scripts/bench-browser.sh
# BENCH_TFJS=0 leaves TensorFlow.js out, BENCH_ESTEP=0 the E-step, BENCH_NATIVE=0 the native CLI
# (one thread, the same settings, in the same rounds: the page's target is half its speed).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-tools.sh web test
export PATH="$HOME/.cargo/bin:$PATH"
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  if [ "${RELEASE:-0}" = 1 ]; then trunk build --release --locked; else trunk build --locked; fi
fi
# The native CLI runs in the same rounds (one thread), built unless SKIP_BUILD=1.
export PCL_BIN="${PCL_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/debug/pcl}"
if [ "${BENCH_NATIVE:-1}" != 0 ] && [ "${SKIP_BUILD:-0}" != 1 ]; then
  cargo build --locked --bin pcl
fi
if [ "${BENCH_TFJS:-1}" != 0 ] && [ ! -d benches/tfjs/node_modules ]; then
  (cd benches/tfjs && npm ci --no-audit --no-fund)
fi
cd tests/e2e && node bench-browser.mjs

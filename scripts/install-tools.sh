#!/usr/bin/env bash
# Installs what building and testing pcl-studio needs, skipping what is already there.
# Usage: scripts/install-tools.sh [web] [test]
#   web:  wasm32 target, wasm-bindgen-cli (the version in Cargo.lock), trunk, wasm-opt
#   test: the above plus Debian's chromium, lavapipe (a CPU Vulkan driver for native wgpu tests),
#         numpy and Pillow (the README's Python block) and playwright-core from npm
set -euo pipefail
cd "$(dirname "$0")/.."
want_test=0
for a in "$@"; do [ "$a" = test ] && want_test=1; done

step() { printf '\n==> %s\n' "$*"; }
have() { command -v "$1" >/dev/null 2>&1; }
export PATH="$HOME/.cargo/bin:$PATH"

# Tools are build-time only: a fast, non-LTO build of them saves most of their install time.
export CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_OPT_LEVEL=1 \
  CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 CARGO_PROFILE_RELEASE_DEBUG=0 \
  CARGO_PROFILE_RELEASE_STRIP=true

apt_pkgs=()
have wasm-opt || apt_pkgs+=(binaryen)
if [ $want_test = 1 ]; then
  have chromium || apt_pkgs+=(chromium)
  ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1 || apt_pkgs+=(mesa-vulkan-drivers)
  # The README's Python block is run against a run (scripts/check-readme-snippet.sh).
  /usr/bin/python3 -c "import numpy, PIL" 2>/dev/null || apt_pkgs+=(python3-numpy python3-pil)
fi
if [ ${#apt_pkgs[@]} -gt 0 ]; then
  step "apt-get install ${apt_pkgs[*]}"
  if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${apt_pkgs[@]}" >/dev/null
fi

if ! rustup target list --installed | grep -q wasm32-unknown-unknown; then
  step "rustup target add wasm32-unknown-unknown"
  rustup target add wasm32-unknown-unknown
fi

# The CLI must equal the wasm-bindgen crate in Cargo.lock, or the generated glue breaks.
wbg_version=$(awk '/^name = "wasm-bindgen"$/{getline; gsub(/[^0-9.]/,""); print; exit}' Cargo.lock)
if [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$wbg_version" ]; then
  step "cargo install wasm-bindgen-cli@$wbg_version"
  # Not --locked: its lock file names a crate version the registry no longer serves.
  cargo install -q wasm-bindgen-cli --version "$wbg_version" --force
fi

trunk_version=0.21.14
if [ "$(trunk --version 2>/dev/null | awk '{print $2}')" != "$trunk_version" ]; then
  step "cargo install trunk@$trunk_version"
  cargo install -q --locked trunk --version "$trunk_version" --force
fi

if [ $want_test = 1 ] && { [ ! -d tests/e2e/node_modules/playwright-core ] || [ ! -d tests/e2e/node_modules/axe-core ]; }; then
  step "npm install (tests/e2e: playwright-core and axe-core, never a browser download)"
  (cd tests/e2e && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --no-audit --no-fund --silent)
fi

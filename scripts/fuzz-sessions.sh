#!/usr/bin/env bash
# Soak of the session-file fuzz test: hostile truncations, header mutations and bit flips of a
# real session for SECONDS (default 600) instead of CI's fixed 1,500 flips. Not part of CI.
#   scripts/fuzz-sessions.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/pcl-studio-target}"
PCL_FUZZ_SECONDS="${1:-600}" cargo test --locked --test engine session_files -- --nocapture

#!/usr/bin/env bash
# The README's PyTorch block against a run: trains a short run on part of the sample set and a
# few images of odd shapes with transparency, exports it, and runs the block as it stands
# (tests/reference/readme_snippet.py). Uses the pcl binary at $PCL_BIN (default: the debug
# build cargo test made).
set -euo pipefail
cd "$(dirname "$0")/.."
pcl="${PCL_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/debug/pcl}"
# Debian's python3-numpy and python3-pil (install-tools.sh test) where the first python3 on the
# PATH lacks them.
py=python3
for p in python3 /usr/bin/python3; do
  if "$p" -c "import numpy, PIL" 2>/dev/null; then py=$p; break; fi
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$pcl" sample --out "$tmp/images" --limit 48 >/dev/null
"$py" - "$tmp/images/odd shapes" <<'PY'
import sys
from pathlib import Path
import numpy as np
from PIL import Image
out = Path(sys.argv[1]); out.mkdir(parents=True)
rng = np.random.default_rng(7)
for i, (w, h) in enumerate([(90, 40), (40, 90), (37, 36), (300, 120), (20, 20), (64, 200)]):
    yy, xx = np.mgrid[0:h, 0:w]
    rgba = np.stack([255 * xx / w, 255 * yy / h, rng.uniform(0, 255, (h, w)),
                     np.where((xx + yy) % 7 < 5, 255, 90)], -1).astype(np.uint8)
    Image.fromarray(rgba, "RGBA").save(out / f"odd-{i}.png")
PY
"$pcl" train --images "$tmp/images" --out "$tmp/run" --preset quick --epochs 2 --seed 1 \
  --eval-every 100000 >/dev/null 2>"$tmp/train.log" || { cat "$tmp/train.log"; exit 1; }
"$pcl" export --from "$tmp/run" --safetensors "$tmp/encoder.safetensors" >/dev/null
"$py" tests/reference/readme_snippet.py README.md "$tmp/run" "$tmp/encoder.safetensors" "$tmp/images"

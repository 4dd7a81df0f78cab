#!/usr/bin/env bash
# Learning quality with the default settings on a labelled folder: raw pixels vs InfoNCE-only
# (MoCo) vs PCL, by kNN accuracy, k-means AMI / NMI and the linear probe of the last epoch.
# Usage: scripts/quality.sh [IMAGE_DIR] [EPOCHS]   (no IMAGE_DIR: a synthetic 2 x 3-group folder)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
work=${QUALITY_DIR:-$(mktemp -d)}
mkdir -p "$work"
images=${1:-}
epochs=${2:-40}
pcl() { cargo run -q --profile dev --bin pcl -- "$@"; }
if [ -z "$images" ]; then
  images="$work/images"
  pcl synth --out "$images" --per-group 60
fi
echo "== raw pixels"; pcl pixels --images "$images" | tee "$work/pixels.json"
echo "== InfoNCE only"; pcl train --images "$images" --out "$work/moco" --epochs "$epochs" --info-nce-only --eval-every "$epochs"
echo "== PCL"; pcl train --images "$images" --out "$work/pcl" --epochs "$epochs" --eval-every "$epochs"
python3 - "$work" <<'PY'
import json, sys
w = sys.argv[1]
rows = [("raw pixels", json.load(open(f"{w}/pixels.json")))]
for name, d in [("InfoNCE only", "moco"), ("PCL", "pcl")]:
    rows.append((name, json.load(open(f"{w}/{d}/metrics.json"))[-1]))
print(f"\n{'':14s} {'kNN acc':>8s} {'AMI':>6s} {'NMI':>6s} {'linear':>7s}")
for name, m in rows:
    print(f"{name:14s} {m['knn_accuracy']:8.3f} {m['ami']:6.3f} {m['nmi']:6.3f} {m['linear_accuracy']:7.3f}")
PY

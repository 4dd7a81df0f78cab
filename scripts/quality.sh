#!/usr/bin/env bash
# Learning quality of a preset on a labelled folder: raw pixels, the preset's InfoNCE-only run
# (the MoCo baseline) and the preset's PCL run, each with SEEDS seeds; prints mean and standard
# deviation of kNN accuracy, k-means AMI / NMI (K = classes) and the linear probe of the end of
# each run, the best E-step level's AMI against the labels and fine labels, and PCL's AMI gain
# over InfoNCE-only in standard errors.
#
# Usage: scripts/quality.sh [IMAGE_DIR] [PRESET] [SEEDS]
#   IMAGE_DIR  labelled folder (class/[subclass/]image); default: the built-in sample set
#   PRESET     quick | thorough (default quick); runs are timed by the preset's budget, so run
#              nothing else meanwhile
#   SEEDS      default 3
# QUALITY_DIR keeps the runs (default: a temporary folder) and a later call with more SEEDS adds
# only the missing ones (a finished run leaves KIND-SEED.done); PCL_BIN picks the binary (default:
# the build the tests use, made when missing). Extra flags for `pcl train` go in QUALITY_FLAGS.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
work=${QUALITY_DIR:-$(mktemp -d)}
mkdir -p "$work"
images=${1:-}
preset=${2:-quick}
seeds=${3:-3}
if [ -z "${PCL_BIN:-}" ]; then
  cargo build -q --locked --bin pcl
  PCL_BIN="${CARGO_TARGET_DIR:-target}/debug/pcl"
fi
pcl() { "$PCL_BIN" "$@"; }
if [ -z "$images" ]; then
  images="$work/sample"
  [ -d "$images" ] || pcl sample --out "$images" >/dev/null
fi
echo "== $images, preset $preset, $seeds seeds, results in $work"
pcl pixels --images "$images" > "$work/pixels.json"
for seed in $(seq 1 "$seeds"); do
  for kind in moco pcl; do
    flag=(); [ $kind = moco ] && flag=(--info-nce-only)
    out="$work/$kind-$seed"
    [ -f "$out.done" ] && continue
    start=$(date +%s)
    # shellcheck disable=SC2086
    pcl train --images "$images" --out "$out" --preset "$preset" --seed "$seed" "${flag[@]}" \
      ${QUALITY_FLAGS:-} 2> "$work/$kind-$seed.log" >/dev/null
    touch "$out.done"
    echo "$kind seed $seed: $(( $(date +%s) - start )) s"
  done
done
python3 - "$work" "$seeds" <<'PY'
import json, math, sys
w, seeds = sys.argv[1], int(sys.argv[2])
pixels = json.load(open(f"{w}/pixels.json"))
def stats(v):
    m = sum(v) / len(v)
    sd = math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else 0.0
    return m, sd
runs = {}
for kind in ["moco", "pcl"]:
    rows = []
    for s in range(1, seeds + 1):
        ms = json.load(open(f"{w}/{kind}-{s}/metrics.json"))
        last = ms[-1]
        levels = [m for m in ms if m.get("level_ami")]
        best = lambda key: max((max(m[key]) for m in levels if m.get(key)), default=float("nan"))
        last["best_level_ami"] = best("level_ami")
        last["best_level_ami_fine"] = best("level_ami_fine")
        last["epochs"] = last["epoch"]
        last["minutes"] = sum(m["seconds"] for m in ms) / 60
        rows.append(last)
    runs[kind] = rows
keys = ["knn_accuracy", "ami", "nmi", "linear_accuracy", "best_level_ami", "best_level_ami_fine", "epochs", "minutes"]
head = ["kNN", "AMI", "NMI", "linear", "level AMI", "fine AMI", "epochs", "minutes"]
print(f"\n{'':14s}" + "".join(f"{h:>16s}" for h in head))
print(f"{'raw pixels':14s}" + "".join(f"{pixels[k]:16.3f}" for k in keys[:4]))
for name, kind in [("InfoNCE only", "moco"), ("PCL", "pcl")]:
    cells = []
    for k in keys:
        m, sd = stats([r[k] for r in runs[kind]])
        cells.append(f"{m:9.3f} ± {sd:4.3f}")
    print(f"{name:14s}" + "".join(f"{c:>16s}" for c in cells))
(mp, sp), (mm, sm) = stats([r["ami"] for r in runs["pcl"]]), stats([r["ami"] for r in runs["moco"]])
se = math.sqrt(sp ** 2 / seeds + sm ** 2 / seeds)
print(f"\nPCL AMI - InfoNCE-only AMI: {mp - mm:+.3f} ({(mp - mm) / se if se > 0 else float('inf'):.1f} standard errors)")
print(f"PCL AMI / raw pixels' AMI: {mp / pixels['ami']:.2f}; PCL kNN - pixels: {stats([r['knn_accuracy'] for r in runs['pcl']])[0] - pixels['knn_accuracy']:+.3f}")
PY

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
# QUALITY_TORCH=1 adds the PyTorch reference (benches/pcl_torch.py: the official algorithm on the
# same encoder, settings and budget; torch, faiss-cpu, scikit-learn and safetensors in
# .bench-venv, installed on first use), one run per seed, and scores every run again with the
# reference's own metrics (the CLI's runs through `pcl export --safetensors`), so that both
# trainers' figures come from one code: the "py" columns.
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
kinds="moco pcl"
if [ -n "${QUALITY_TORCH:-}" ]; then
  if [ ! -x .bench-venv/bin/python ]; then
    python3 -m venv .bench-venv
    .bench-venv/bin/pip install -q numpy scikit-learn faiss-cpu torch safetensors
  fi
  [ -f "$work/images.json" ] || pcl decode --images "$images" --dump "$work/images.json" >/dev/null
  kinds="moco pcl torch"
  case "$preset" in
    quick) torch_flags=(--width 16 --feature-dim 64 --minutes 2) ;;
    *) torch_flags=(--width 32 --feature-dim 128 --minutes 10) ;;
  esac
  [ -n "${QUALITY_FLAGS:-}" ] && echo "note: QUALITY_FLAGS do not reach the PyTorch reference (the preset's settings)"
fi
for seed in $(seq 1 "$seeds"); do
  for kind in $kinds; do
    flag=(); [ $kind = moco ] && flag=(--info-nce-only)
    out="$work/$kind-$seed"
    [ -f "$out.done" ] && continue
    start=$(date +%s)
    if [ $kind = torch ]; then
      .bench-venv/bin/python benches/pcl_torch.py --dump "$work/images.json" --out "$out" \
        --seed "$seed" "${torch_flags[@]}" > "$work/$kind-$seed.log" 2>&1
    else
      # shellcheck disable=SC2086
      pcl train --images "$images" --out "$out" --preset "$preset" --seed "$seed" "${flag[@]}" \
        ${QUALITY_FLAGS:-} 2> "$work/$kind-$seed.log" >/dev/null
    fi
    touch "$out.done"
    echo "$kind seed $seed: $(( $(date +%s) - start )) s"
  done
  if [ -n "${QUALITY_TORCH:-}" ]; then
    for kind in moco pcl; do
      run="$work/$kind-$seed"
      [ -f "$run.py.json" ] && continue
      pcl export --from "$run" --safetensors "$run/encoder.safetensors" >/dev/null
      .bench-venv/bin/python benches/pcl_torch.py --dump "$work/images.json" --out "$run" \
        --seed "$seed" --score-model "$run/encoder.safetensors" > "$run.py.json"
    done
  fi
done
python3 - "$work" "$seeds" "$kinds" <<'PY'
import json, math, os, sys
w, seeds, kinds = sys.argv[1], int(sys.argv[2]), sys.argv[3].split()
pixels = json.load(open(f"{w}/pixels.json"))
def stats(v):
    m = sum(v) / len(v)
    sd = math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else 0.0
    return m, sd
runs = {}
for kind in kinds:
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
        # The reference's own metrics: its run's, or the CLI's encoder scored by its code.
        py = f"{w}/{kind}-{s}.py.json"
        py = last if kind == "torch" else json.load(open(py)) if os.path.exists(py) else {}
        for k in ["knn_accuracy", "ami", "linear_accuracy"]:
            last["py_" + k] = py.get(k, float("nan"))
        rows.append(last)
    runs[kind] = rows
keys = ["knn_accuracy", "ami", "nmi", "linear_accuracy", "best_level_ami", "best_level_ami_fine", "epochs", "minutes"]
head = ["kNN", "AMI", "NMI", "linear", "level AMI", "fine AMI", "epochs", "minutes"]
if "torch" in kinds:
    keys += ["py_knn_accuracy", "py_ami", "py_linear_accuracy"]
    head += ["kNN (py)", "AMI (py)", "linear (py)"]
print(f"\n{'':14s}" + "".join(f"{h:>16s}" for h in head))
print(f"{'raw pixels':14s}" + "".join(f"{pixels[k]:16.3f}" for k in keys[:4]))
names = {"moco": "InfoNCE only", "pcl": "PCL", "torch": "PyTorch PCL"}
for kind in kinds:
    name, cells = names[kind], []
    for k in keys:
        m, sd = stats([r[k] for r in runs[kind]])
        cells.append(f"{m:9.3f} ± {sd:4.3f}")
    print(f"{name:14s}" + "".join(f"{c:>16s}" for c in cells))
def gain(key, other):
    """PCL's mean of `key` minus `other`'s, and that difference in standard errors."""
    (a, sa), (b, sb) = stats([r[key] for r in runs["pcl"]]), stats([r[key] for r in runs[other]])
    se = math.sqrt(sa ** 2 / seeds + sb ** 2 / seeds)
    return f"{a - b:+.3f} ({(a - b) / se if se > 0 else float('inf'):.1f} standard errors)"
print(f"\nPCL AMI - InfoNCE-only AMI: {gain('ami', 'moco')}")
if "torch" in kinds:
    for key, name in [("py_ami", "AMI"), ("py_knn_accuracy", "kNN"), ("py_linear_accuracy", "linear probe")]:
        print(f"PCL - PyTorch reference, {name} by the reference's code: {gain(key, 'torch')}")
mp = stats([r["ami"] for r in runs["pcl"]])[0]
print(f"PCL AMI / raw pixels' AMI: {mp / pixels['ami']:.2f}; PCL kNN - pixels: {stats([r['knn_accuracy'] for r in runs['pcl']])[0] - pixels['knn_accuracy']:+.3f}")
PY

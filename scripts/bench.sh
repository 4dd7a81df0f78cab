#!/usr/bin/env bash
# Benchmarks: pcl-studio (burn flex CPU; wgpu with BENCH_WGPU=1) beside PyTorch CPU and faiss-cpu
# on the same model, batch and vectors. Installs torch and faiss-cpu into
# .bench-venv on first use. Prints figures and ratios; asserts nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
# The dev profile has every dependency at opt-level 3 (Cargo.toml): the same build the tests use.
ours=$(cargo bench --profile dev --bench train 2>/dev/null | tee /dev/stderr)
if [ ! -x .bench-venv/bin/python ]; then
  python3 -m venv .bench-venv
  .bench-venv/bin/pip install -q numpy faiss-cpu torch
fi
theirs=$(.bench-venv/bin/python benches/compare.py | tee /dev/stderr)
python3 - "$ours" "$theirs" <<'PY'
import re, sys
ours, theirs = sys.argv[1], sys.argv[2]
a = float(re.search(r"model_step\[cpu\].*?: ([\d.]+) img/s", ours).group(1))
full = float(re.search(r"train\[cpu\].*?: ([\d.]+) img/s", ours).group(1))
b = float(re.search(r"torch train img/s: ([\d.]+)", theirs).group(1))
print(f"\nCPU training step (same work as PyTorch's): pcl-studio {a:.1f} img/s, PyTorch {b:.1f} img/s, "
      f"ratio {a / b:.2f}x (target >= 1.0x); with augmentation {full:.1f} img/s")
for k, s, i in re.findall(r"estep\[cpu\] kmeans N=\d+ d=\d+ K=(\d+) iters=20 restarts=1: ([\d.]+) s inertia ([\d.]+)", ours):
    m = re.search(rf"faiss K={k}: ([\d.]+) s inertia ([\d.]+)", theirs)
    fs, fi = float(m.group(1)), float(m.group(2))
    print(f"E-step K={k}: pcl-studio {float(s):.3f} s, faiss {fs:.3f} s, time ratio {float(s) / fs:.2f}x (target <= 1.5x), "
          f"inertia {float(i):.2f} vs {fi:.2f} ({(float(i) / fi - 1) * 100:+.2f}%)")
PY

#!/usr/bin/env bash
# Benchmarks: pcl-studio (burn flex CPU; wgpu with BENCH_WGPU=1) beside PyTorch CPU and faiss-cpu
# on the same model, batch and vectors. Installs torch and faiss-cpu into
# .bench-venv on first use. Prints figures and ratios; asserts nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
# The dev profile has every dependency at opt-level 3 (Cargo.toml): the same build the tests use.
cargo build -q --profile dev --bench train
if [ ! -x .bench-venv/bin/python ]; then
  python3 -m venv .bench-venv
  .bench-venv/bin/pip install -q numpy faiss-cpu torch
fi
# Ours and theirs alternate, BENCH_ROUNDS times (default 3): on a shared machine one pair can be
# off by a third either way, so every ratio below is the median of the paired rounds.
rounds=${BENCH_ROUNDS:-3}
out=$(mktemp -d)
for r in $(seq "$rounds"); do
  echo "== round $r of $rounds" >&2
  cargo bench -q --profile dev --bench train 2>/dev/null | tee "$out/ours.$r" >&2
  .bench-venv/bin/python benches/compare.py | tee "$out/theirs.$r" >&2
done
python3 - "$out" "$rounds" <<'PY'
import re, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
med = statistics.median
ours = [open(f"{out}/ours.{r}").read() for r in range(1, rounds + 1)]
theirs = [open(f"{out}/theirs.{r}").read() for r in range(1, rounds + 1)]
num = lambda pat, text: float(re.search(pat, text).group(1))
a = [num(r"model_step\[cpu\].*?: ([\d.]+) img/s", o) for o in ours]
full = [num(r"train\[cpu\].*?: ([\d.]+) img/s", o) for o in ours]
b = [num(r"torch train img/s: ([\d.]+)", t) for t in theirs]
ratios = [x / y for x, y in zip(a, b)]
print(f"\nCPU training step (same work as PyTorch's), median of {rounds} paired rounds: pcl-studio "
      f"{med(a):.1f} img/s, PyTorch {med(b):.1f} img/s, ratio {med(ratios):.2f}x (target >= 1.0x; "
      f"rounds {', '.join(f'{r:.2f}' for r in ratios)}); with augmentation {med(full):.1f} img/s")
for k in re.findall(r"estep\[cpu\] kmeans N=\d+ d=\d+ K=(\d+) iters", ours[0]):
    pat = rf"estep\[cpu\] kmeans N=\d+ d=\d+ K={k} iters=20 restarts=1: ([\d.]+) s inertia ([\d.]+)"
    s = [num(pat, o) for o in ours]
    i = float(re.search(pat, ours[0]).group(2))
    fs = [num(rf"faiss K={k}: ([\d.]+) s", t) for t in theirs]
    fi = float(re.search(rf"faiss K={k}: [\d.]+ s inertia ([\d.]+)", theirs[0]).group(1))
    ratios = [x / y for x, y in zip(s, fs)]
    print(f"E-step K={k}: pcl-studio {med(s):.3f} s, faiss {med(fs):.3f} s, time ratio {med(ratios):.2f}x "
          f"(target <= 1.5x; rounds {', '.join(f'{r:.2f}' for r in ratios)}), "
          f"inertia {i:.2f} vs {fi:.2f} ({(i / fi - 1) * 100:+.2f}%)")
PY

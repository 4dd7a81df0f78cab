#!/usr/bin/env bash
# The GPU benchmark in one command, for a machine with a GPU; on one without, the same steps run
# on the CPU stand-ins (Mesa's lavapipe for native wgpu, SwiftShader for WebGPU in Chromium) at
# smaller sizes, so that the script is known to work end to end.
#   1. The engine on native wgpu (benches/train.rs): training step images/s at batch 256 (32 px,
#      the tiny encoder, augmentation), its first step, peak GPU memory (nvidia-smi, where there
#      is one); beside it PyTorch CUDA on the same encoder and batch (benches/compare.py), where
#      torch sees a GPU.
#   2. The E-step on N x 128 features at K = 100 / 1,000 / 10,000 (N 50,000; stand-ins 5,000 and
#      K to 1,000), beside faiss-gpu where installed, else k-means in PyTorch CUDA.
#   3. The CLI's quick demo on the sample set on wgpu: kernels built before the first step and
#      how long that took, kernels built in later epochs (0 is right), training images/s.
#   4. The page on WebGPU in headless Chromium beside TensorFlow.js WebGPU (benches/tfjs), the
#      same encoder and step, on the machine's GPU (PCL_CHROMIUM_GPU=1) or SwiftShader.
# Writes target/bench-gpu/bench-gpu.json and bench-gpu.md (the table docs/measurements.md
# quotes) and prints the table. BENCH_GPU_PARTS (default "native estep cli browser") picks parts.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
out=${BENCH_GPU_OUT:-target/bench-gpu}
mkdir -p "$out"
out=$(cd "$out" && pwd)
parts=${BENCH_GPU_PARTS:-native estep cli browser}
has() { [[ " $parts " == *" $1 "* ]]; }

gpu=0
if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then gpu=1; fi
if [ "$gpu" = 1 ]; then
  steps=20 n=50000 ks=100,1000,10000 epochs=6 images=all seconds=60
else
  steps=3 n=5000 ks=100,1000 epochs=3 images=256 seconds=15
  echo "no GPU (no nvidia-smi): the CPU stand-ins at smaller sizes" >&2
fi
python=${PYTHON:-python3}
torch_gpu=0
if [ "$gpu" = 1 ] && "$python" -c "import torch; assert torch.cuda.is_available()" 2>/dev/null; then
  torch_gpu=1
fi

# Peak GPU memory while a command runs (nvidia-smi every 0.2 s), in MiB; empty without one.
peak_mem() {
  if [ "$gpu" != 1 ]; then "$@"; echo "" > "$out/peak"; return; fi
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 > "$out/mem.log" &
  local sampler=$!
  "$@"
  kill "$sampler" 2>/dev/null || true
  sort -n "$out/mem.log" | tail -1 > "$out/peak"
}

if has native || has estep; then
  : > "$out/native.log"; : > "$out/torch.log"
  cargo build --locked -q --profile dev --bench train
  bench_steps=$steps bench_ks=$ks
  has native || bench_steps=0
  has estep || bench_ks=10
  echo "== the engine on wgpu: training step, E-step" >&2
  peak_mem env BENCH_CPU=0 BENCH_WGPU=1 BENCH_STEPS="$bench_steps" BENCH_N="$n" BENCH_KS="$bench_ks" \
    cargo bench --locked -q --profile dev --bench train 2>/dev/null | tee "$out/native.log" >&2
  cp "$out/peak" "$out/native.peak"
  if [ "$torch_gpu" = 1 ]; then
    echo "== PyTorch CUDA: the same step and k-means" >&2
    BENCH_DEVICE=cuda BENCH_STEPS="$bench_steps" BENCH_KS="$bench_ks" "$python" benches/compare.py \
      | tee "$out/torch.log" >&2
  fi
fi

if has cli; then
  cargo build --locked -q --bin pcl
  pcl="${CARGO_TARGET_DIR:-target}/debug/pcl"
  rm -rf "$out/sample" "$out/cli" "$out/cli.log"
  if [ "$images" = all ]; then "$pcl" sample --out "$out/sample"; else "$pcl" sample --out "$out/sample" --limit "$images"; fi
  echo "== the CLI's quick demo on wgpu, $epochs epochs" >&2
  peak_mem "$pcl" train --images "$out/sample" --out "$out/cli" --preset quick --backend wgpu \
    --epochs "$epochs" --eval-every 0 2> "$out/cli.raw"
  tr '\r' '\n' < "$out/cli.raw" | grep -v '^\s*$' > "$out/cli.log" || true
  grep -E "GPU ready|E-step before|device:" "$out/cli.log" >&2 || true
  cp "$out/peak" "$out/cli.peak"
fi

if has browser; then
  rm -f "$out/browser.json"
  if [ ! -f dist/index.html ]; then trunk build --locked; fi
  echo "== the page on WebGPU beside TensorFlow.js WebGPU, ${seconds} s each" >&2
  BENCH_ONLY_WEBGPU=1 BENCH_SECONDS="$seconds" BENCH_JSON="$out/browser.json" \
    PCL_CHROMIUM_GPU="$gpu" SKIP_BUILD=1 BENCH_NATIVE=0 scripts/bench-browser.sh \
    | tee "$out/browser.log" >&2 || echo "the browser part failed: see $out/browser.log" >&2
fi

"$python" - "$out" "$gpu" <<'PY'
import json, os, re, sys
out, gpu = sys.argv[1], sys.argv[2] == "1"
read = lambda f: open(os.path.join(out, f)).read() if os.path.exists(os.path.join(out, f)) else ""
num = lambda pat, text: (lambda m: float(m.group(1)) if m else None)(re.search(pat, text))
native, torch, cli = read("native.log"), read("torch.log"), read("cli.log")
peak = lambda f: (lambda t: float(t) if t.strip() else None)(read(f))
adapter = re.search(r"wgpu adapter: (.*)", native) or re.search(r"device: (.*)", cli)
r = {"gpu": gpu, "adapter": adapter.group(1).strip() if adapter else None, "rows": []}
# A row where this run measured nothing of ours (a part left out, or failed) is left out.
row = lambda what, ours, theirs=None, unit="", note="": ours is not None and r["rows"].append(
    {"what": what, "ours": ours, "theirs": theirs, "unit": unit, "note": note})
torch_note = "PyTorch CUDA" if torch else "PyTorch: no CUDA here, not run"
row("training step, batch 256, 32 px: images/s", num(r"train\[wgpu\].*?: ([\d.]+) img/s", native),
    num(r"torch train img/s: ([\d.]+)", torch), "img/s", torch_note)
row("its first step (kernels built in it)", num(r"train\[wgpu\] first step: ([\d.]+) s", native),
    num(r"torch first step: ([\d.]+) s", torch), "s", torch_note)
row("peak GPU memory", peak("native.peak"), num(r"torch peak GPU memory: ([\d.]+)", torch), "MiB",
    "nvidia-smi (whole device) against torch.cuda.max_memory_allocated" if gpu else "no nvidia-smi here")
for m in re.finditer(r"estep\[wgpu\] kmeans N=(\d+) d=128 K=(\d+) iters=20 restarts=1: ([\d.]+) s inertia ([\d.]+)", native):
    n, k, s, inertia = m.groups()
    theirs = re.search(rf"(faiss|torch-kmeans) K={k}: ([\d.]+) s inertia ([\d.]+)", torch)
    row(f"E-step k-means, {int(n):,} x 128, K = {int(k):,}", float(s),
        float(theirs.group(2)) if theirs else None, "s",
        (f"{theirs.group(1)}; inertia {float(inertia):.1f} against {float(theirs.group(3)):.1f}"
         if theirs else f"inertia {float(inertia):.1f}; no faiss-gpu / PyTorch CUDA here"))
ready = re.search(r"GPU ready: (\d+) kernels built before the first step \(([\d.]+) s\)", cli)
metrics = json.loads(read("cli/metrics.json") or "[]")
if ready:
    row("CLI quick demo: kernels built before the first step", int(ready.group(1)), None, "kernels",
        f"in {float(ready.group(2)):.1f} s")
if metrics:
    later = sum(e.get("kernels_built") or 0 for e in metrics[1:])
    row("CLI quick demo: kernels built after the first epoch", later, None, "kernels",
        f"{len(metrics)} epochs")
    cfg = json.loads(read("cli/config.json") or "{}")
    secs = sum(e["seconds"] for e in metrics[1:])
    steps = re.findall(r"epoch \d+ step \d+/(\d+)", cli)
    if steps and cfg.get("batch_size") and secs > 0:
        imgs = int(steps[-1]) * cfg["batch_size"] * (len(metrics) - 1)
        row("CLI quick demo: epochs after the first, E-steps included", imgs / secs, None, "img/s",
            f"batch {cfg['batch_size']}")
    steady = re.search(r"GPU steps: the first after the preparation ([\d.]+) s, steady ([\d.]+) s", cli)
    if steady:
        row("CLI quick demo: the first step after the preparation", float(steady.group(1)), None, "s",
            f"a steady step: {float(steady.group(2)):.3f} s")
    row("CLI quick demo: peak GPU memory", peak("cli.peak"), None, "MiB", "" if gpu else "no nvidia-smi here")
browser = json.loads(read("browser.json") or "{}").get("results", {})
page = next((v for k, v in browser.items() if k.startswith("page ")), None)
tfjs = browser.get("TensorFlow.js webgpu")
med = lambda v: sorted(v)[len(v) // 2] if v else None
if page or tfjs:
    row("the page on WebGPU: training images/s", med([x["rate"] for x in page or []]),
        med([x["rate"] for x in tfjs or []]), "img/s", "TensorFlow.js WebGPU" + ("" if gpu else ", both on SwiftShader"))
    row("the page on WebGPU: Train to the first step", med([x["firstStep"] for x in page or []]),
        med([x["firstStep"] for x in tfjs or []]), "s", "the page's includes its kernels' preparation")
    k = (page or [{}])[0].get("kernels") or {}
    if k:
        row("the page on WebGPU: kernels built before the first step", int(k["prepared"]), None,
            "kernels", f"in {float(k.get('prepareS', 0)):.1f} s; {k['later']} after the first epoch")
json.dump(r, open(os.path.join(out, "bench-gpu.json"), "w"), indent=1)
fmt = lambda v: "-" if v is None else (f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}" if isinstance(v, float) else str(v))
lines = [f"Device: {r['adapter'] or 'no wgpu adapter'}{'' if gpu else ' (a CPU stand-in: sizes reduced)'}", "",
         "| measure | pcl-studio | the alternative | unit | note |", "|---|---|---|---|---|"]
lines += [f"| {x['what']} | {fmt(x['ours'])} | {fmt(x['theirs'])} | {x['unit']} | {x['note']} |" for x in r["rows"]]
open(os.path.join(out, "bench-gpu.md"), "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY

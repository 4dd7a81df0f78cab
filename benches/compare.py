#!/usr/bin/env python3
"""The same workloads as benches/train.rs in PyTorch CPU and faiss-cpu, for side-by-side ratios;
with BENCH_DEVICE=cuda on the GPU (scripts/bench-gpu.sh): PyTorch CUDA, and faiss-gpu where it
is installed, else k-means in PyTorch (the same Lloyd iterations, on the GPU).

Training: the tiny encoder (conv3x3 3->32 + BatchNorm over 4 ghost batches + ReLU, three stride-2 blocks to 256, GAP,
MLP 256-256-128, L2 norm), two 32x32 views of a batch of 256 (the key batch shuffled across
the chunks), InfoNCE against a 4096-key queue,
backward, SGD step, EMA of the key encoder. E-step: faiss k-means (niter 20, nredo 1) on the very
vectors the Rust bench wrote to $TMPDIR/pcl-bench-x.f32.
"""
import os, sys, tempfile, time
import numpy as np

steps = int(os.environ.get("BENCH_STEPS", 5))
ks = [int(k) for k in os.environ.get("BENCH_KS", "10,100,1000").split(",")]
device = os.environ.get("BENCH_DEVICE", "cpu")

import torch
import torch.nn as nn
import torch.nn.functional as F

torch.manual_seed(0)


class GhostBN(nn.Module):
    """BatchNorm with statistics per chunk of the batch (the chunks as extra channels)."""

    def __init__(self, c, chunks=4):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(c))
        self.bias = nn.Parameter(torch.zeros(c))
        self.chunks = chunks

    def forward(self, x):
        n, c, h, w = x.shape
        g = self.chunks
        y = x.view(g, n // g, c, h, w).transpose(0, 1).reshape(n // g, g * c, h, w)
        y = F.batch_norm(y, None, None, training=True)
        y = y.view(n // g, g, c, h, w).transpose(0, 1).reshape(n, c, h, w)
        return y * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


def block(cin, cout, stride):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), GhostBN(cout), nn.ReLU())


class Encoder(nn.Module):
    def __init__(self, w=32, dim=128):
        super().__init__()
        self.body = nn.Sequential(block(3, w, 1), block(w, 2 * w, 2), block(2 * w, 4 * w, 2),
                                  block(4 * w, 8 * w, 2))
        self.head = nn.Sequential(nn.Linear(8 * w, 8 * w), nn.ReLU(), nn.Linear(8 * w, dim))

    def forward(self, x):
        return F.normalize(self.head(self.body(x).mean((2, 3))), dim=1)


def sync():
    if device == "cuda":
        torch.cuda.synchronize()


q_enc, k_enc = Encoder().to(device), Encoder().to(device)
k_enc.load_state_dict(q_enc.state_dict())
for p in k_enc.parameters():
    p.requires_grad = False
opt = torch.optim.SGD(q_enc.parameters(), lr=0.06, momentum=0.9, weight_decay=5e-4)
queue = F.normalize(torch.randn(4096, 128, device=device), dim=1)
perm = (torch.arange(256, device=device) + 64) % 256
inverse = torch.argsort(perm)


def step():
    x1 = torch.rand(256, 3, 32, 32, device=device)
    x2 = torch.rand(256, 3, 32, 32, device=device)
    q = q_enc(x1)
    with torch.no_grad():
        k = k_enc(x2[perm])[inverse]
    logits = torch.cat([(q * k).sum(1, keepdim=True), q @ queue.T], 1) / 0.2
    loss = F.cross_entropy(logits, torch.zeros(256, dtype=torch.long, device=device))
    opt.zero_grad()
    loss.backward()
    opt.step()
    with torch.no_grad():
        for pk, pq in zip(k_enc.parameters(), q_enc.parameters()):
            pk.mul_(0.99).add_(pq, alpha=0.01)


t = time.perf_counter()
step()
sync()
print(f"torch first step: {time.perf_counter() - t:.3f} s ({device})")
t = time.perf_counter()
for _ in range(steps):
    step()
sync()
secs = time.perf_counter() - t
print(f"torch train img/s: {steps * 256 / secs:.1f} (threads {torch.get_num_threads()}, {device})")
if device == "cuda":
    print(f"torch peak GPU memory: {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")


def torch_kmeans(x, k, iters=20):
    """Lloyd's k-means on the device from k random points (faiss' init), 20 iterations."""
    x = torch.from_numpy(x).to(device)
    gen = torch.Generator(device="cpu").manual_seed(1)
    c = x[torch.randperm(len(x), generator=gen)[:k].to(device)]
    for _ in range(iters + 1):
        d = (x * x).sum(1, keepdim=True) - 2 * x @ c.T + (c * c).sum(1)[None, :]  # [n, k]
        dist, a = d.min(1)
        sums = torch.zeros_like(c).index_add_(0, a, x)
        counts = torch.bincount(a, minlength=k).clamp(min=1)[:, None]
        c = sums / counts
    sync()
    return float(dist.clamp(min=0).sum())


path = os.path.join(tempfile.gettempdir(), "pcl-bench-x.f32")
x = np.fromfile(path, dtype=np.float32).reshape(-1, 128)
try:
    import faiss
    use_faiss = device == "cpu" or faiss.get_num_gpus() > 0
except ImportError:
    if device == "cpu":
        raise
    use_faiss = False
for k in ks:
    t = time.perf_counter()
    if use_faiss:
        km = faiss.Kmeans(128, k, niter=20, nredo=1, seed=1, max_points_per_centroid=100000,
                          min_points_per_centroid=1, gpu=device == "cuda")
        km.train(x)
        D, _ = km.index.search(x, 1)
        inertia = float(D.sum())
    else:
        inertia = torch_kmeans(x, k)
    secs = time.perf_counter() - t
    name = "faiss" if use_faiss else "torch-kmeans"
    print(f"{name} K={k}: {secs:.3f} s inertia {inertia:.4f}")

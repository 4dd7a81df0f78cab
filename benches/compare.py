#!/usr/bin/env python3
"""The same workloads as benches/train.rs in PyTorch CPU and faiss-cpu, for side-by-side ratios.

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


q_enc, k_enc = Encoder(), Encoder()
k_enc.load_state_dict(q_enc.state_dict())
for p in k_enc.parameters():
    p.requires_grad = False
opt = torch.optim.SGD(q_enc.parameters(), lr=0.06, momentum=0.9, weight_decay=5e-4)
queue = F.normalize(torch.randn(4096, 128), dim=1)
perm = (torch.arange(256) + 64) % 256
inverse = torch.argsort(perm)


def step():
    x1, x2 = torch.rand(256, 3, 32, 32), torch.rand(256, 3, 32, 32)
    q = q_enc(x1)
    with torch.no_grad():
        k = k_enc(x2[perm])[inverse]
    logits = torch.cat([(q * k).sum(1, keepdim=True), q @ queue.T], 1) / 0.2
    loss = F.cross_entropy(logits, torch.zeros(256, dtype=torch.long))
    opt.zero_grad()
    loss.backward()
    opt.step()
    with torch.no_grad():
        for pk, pq in zip(k_enc.parameters(), q_enc.parameters()):
            pk.mul_(0.99).add_(pq, alpha=0.01)


step()
t = time.perf_counter()
for _ in range(steps):
    step()
secs = time.perf_counter() - t
print(f"torch train img/s: {steps * 256 / secs:.1f} (threads {torch.get_num_threads()})")

import faiss

path = os.path.join(tempfile.gettempdir(), "pcl-bench-x.f32")
x = np.fromfile(path, dtype=np.float32).reshape(-1, 128)
for k in ks:
    km = faiss.Kmeans(128, k, niter=20, nredo=1, seed=1, max_points_per_centroid=100000,
                      min_points_per_centroid=1)
    t = time.perf_counter()
    km.train(x)
    D, _ = km.index.search(x, 1)
    secs = time.perf_counter() - t
    print(f"faiss K={k}: {secs:.3f} s inertia {float(D.sum()):.4f}")

#!/usr/bin/env python3
"""How much the evaluation's own k-means moves the AMI of one fixed embedding.

For each run folder (`pcl train --out RUN`: its embeddings.csv, first-level folder = label) and
each restart count R: k-means++ with Lloyd iterations, the lowest inertia of R restarts kept,
repeated with SEEDS different k-means seeds; prints the AMI's mean and standard deviation over
those seeds. numpy only, independent of the engine's k-means and AMI (math.lgamma for the
expected mutual information, as scikit-learn's adjusted_mutual_info_score with the arithmetic
mean).

    python3 scripts/eval-noise.py RUN [RUN ...] [--restarts 3,30] [--seeds 5]
"""
import argparse
import csv
import math
import sys

import numpy as np


def load(path):
    rows = list(csv.reader(open(path)))[1:]
    names = sorted({r[1] for r in rows})
    labels = np.array([names.index(r[1]) for r in rows])
    return np.array([[float(v) for v in r[2:]] for r in rows]), labels


def kmeans(x, k, rng, iters=30):
    """k-means++ seeding, then Lloyd; returns (assignments, inertia)."""
    n = len(x)
    sq = (x * x).sum(1)
    dist = lambda c: np.maximum(sq[:, None] - 2 * x @ c.T + (c * c).sum(1)[None], 0)
    centres = [x[rng.integers(n)]]
    best = dist(np.array(centres))[:, 0]
    for _ in range(k - 1):
        i = rng.choice(n, p=best / best.sum())
        centres.append(x[i])
        best = np.minimum(best, dist(x[i : i + 1])[:, 0])
    c = np.array(centres)
    for _ in range(iters):
        a = dist(c).argmin(1)
        counts = np.bincount(a, minlength=k)
        sums = np.zeros_like(c)
        np.add.at(sums, a, x)
        filled = counts > 0
        c[filled] = sums[filled] / counts[filled, None]
    d = dist(c)
    return d.argmin(1), d.min(1).sum()


def ami(truth, pred):
    n = len(truth)
    table = np.zeros((truth.max() + 1, pred.max() + 1))
    np.add.at(table, (truth, pred), 1)
    table = table[table.sum(1) > 0][:, table.sum(0) > 0]
    a, b = table.sum(1), table.sum(0)
    nz = table > 0
    mi = (table[nz] / n * np.log(n * table[nz] / np.outer(a, b)[nz])).sum()
    h = lambda v: -(v / n * np.log(v / n)).sum()
    lg = math.lgamma
    emi = 0.0
    for ai in a:
        for bj in b:
            for nij in range(int(max(1, ai + bj - n)), int(min(ai, bj)) + 1):
                log_p = (lg(ai + 1) + lg(bj + 1) + lg(n - ai + 1) + lg(n - bj + 1) - lg(n + 1)
                         - lg(nij + 1) - lg(ai - nij + 1) - lg(bj - nij + 1)
                         - lg(n - ai - bj + nij + 1))
                emi += nij / n * math.log(n * nij / (ai * bj)) * math.exp(log_p)
    return (mi - emi) / (0.5 * (h(a) + h(b)) - emi)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("runs", nargs="+")
    p.add_argument("--restarts", default="3,30")
    p.add_argument("--seeds", type=int, default=5)
    args = p.parse_args()
    counts = [int(r) for r in args.restarts.split(",")]
    print("run" + "".join(f"   AMI, best of {r:>2} (mean ± sd)" for r in counts))
    for run in args.runs:
        x, y = load(f"{run}/embeddings.csv")
        k = y.max() + 1
        cells = []
        for r in counts:
            scores = []
            for s in range(args.seeds):
                rng = np.random.default_rng(100 + s)
                runs = [kmeans(x, k, rng) for _ in range(r)]
                scores.append(ami(y, min(runs, key=lambda t: t[1])[0]))
            cells.append(f"{np.mean(scores):16.3f} ± {np.std(scores, ddof=1):.3f}")
        print(run + "".join(f"{c:>28s}" for c in cells), flush=True)


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Independent reference values for pcl-studio's numerical code (numpy / scikit-learn).

Run: python3 tests/reference/pcl_reference.py > tests/reference/golden.json
The Rust tests (tests/engine/golden.rs) read golden.json and compare. Inputs are generated here from a
fixed numpy seed and stored in the JSON, so the Rust side needs no RNG agreement.
Loss gradients are analytic (softmax - one_hot) / n, chained through the logits by hand.
"""
import json

import numpy as np
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_mutual_info_score, normalized_mutual_info_score

from official import concentrations

rng = np.random.default_rng(20240601)


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def ce_and_grad_logits(logits, labels):
    """Mean cross-entropy and its gradient w.r.t. the logits."""
    n = logits.shape[0]
    p = softmax(logits)
    loss = -np.log(p[np.arange(n), labels]).mean()
    g = p.copy()
    g[np.arange(n), labels] -= 1.0
    return loss, g / n


out = {}
n, d, r, K = 4, 8, 6, 5
q = unit(rng.normal(size=(n, d)))
k = unit(rng.normal(size=(n, d)))
queue = unit(rng.normal(size=(r, d)))
tau = 0.2

# InfoNCE: logits = [q.k, q.queue^T] / tau, label 0 (MoCo builder.py).
logits = np.concatenate([(q * k).sum(1, keepdims=True), q @ queue.T], axis=1) / tau
loss, g = ce_and_grad_logits(logits, np.zeros(n, dtype=int))
grad_q = (g[:, :1] * k + g[:, 1:] @ queue) / tau
out["info_nce"] = dict(q=q.tolist(), k=k.tolist(), queue=queue.tolist(), tau=tau,
                       loss=float(loss), grad_q=grad_q.tolist())

# ProtoNCE full: logits = q C^T / phi (per column), label = cluster.
C = unit(rng.normal(size=(K, d)))
phi = rng.uniform(0.1, 0.4, size=K)
assign = np.array([0, 3, 3, 4])
logits = (q @ C.T) / phi[None, :]
loss, g = ce_and_grad_logits(logits, assign)
grad_q = (g / phi[None, :]) @ C
out["proto_full"] = dict(q=q.tolist(), centroids=C.tolist(), phi=phi.tolist(),
                         assign=assign.tolist(), loss=float(loss), grad_q=grad_q.tolist())

# ProtoNCE sampled (builder.py): columns = [C[assign]; C[neg]], temps likewise, label = diagonal.
neg = np.array([1, 2])
ids = np.concatenate([assign, neg])
P = C[ids]
t = phi[ids]
logits = (q @ P.T) / t[None, :]
loss, g = ce_and_grad_logits(logits, np.arange(n))
grad_q = (g / t[None, :]) @ P
out["proto_sampled"] = dict(q=q.tolist(), centroids=C.tolist(), phi=phi.tolist(),
                            assign=assign.tolist(), neg=neg.tolist(), loss=float(loss),
                            grad_q=grad_q.tolist())

# Concentration phi exactly as main_pcl.py run_kmeans (alpha = 10).
kc = 6
assign_phi = np.array([0, 0, 0, 1, 1, 2, 3, 3, 3, 3, 4, 4, 4, 4, 4])  # cluster 5 is empty
D = rng.uniform(0.01, 0.5, size=len(assign_phi))  # squared distances, as faiss returns
density = concentrations(assign_phi, D, kc, tau)
out["phi"] = dict(assign=assign_phi.tolist(), sq_dist=D.tolist(), k=kc, tau=tau,
                  phi=density.tolist())

# k-means: three blobs on a circle; sklearn's best of 10 is the optimum here.
centres = np.array([[1.0, 0.0], [-0.5, 0.8], [-0.5, -0.8]])
X = np.concatenate([c + 0.15 * rng.normal(size=(20, 2)) for c in centres])
km = KMeans(n_clusters=3, n_init=10, random_state=0).fit(X)
out["kmeans"] = dict(x=X.tolist(), k=3, inertia=float(km.inertia_),
                     labels=km.labels_.tolist())

# Weighted kNN, leave-one-out, k = 20, weights exp(sim / 0.07), cosine on unit rows.
F = unit(rng.normal(size=(40, 6)) + np.repeat(np.eye(4, 6) * 1.5, 10, axis=0))
y = np.repeat(np.arange(4), 10)
S = F @ F.T
np.fill_diagonal(S, -np.inf)
correct = 0
for i in range(len(F)):
    nn = np.argsort(-S[i])[:20]
    votes = np.zeros(4)
    for j in nn:
        votes[y[j]] += np.exp(S[i, j] / 0.07)
    correct += int(votes.argmax() == y[i])
out["knn"] = dict(feats=F.tolist(), labels=y.tolist(), k=20, t=0.07,
                  accuracy=correct / len(F))

# AMI / NMI (arithmetic normaliser, scikit-learn defaults).
a = rng.integers(0, 4, size=200)
b = np.where(rng.uniform(size=200) < 0.6, a, rng.integers(0, 6, size=200))
out["mutual_info"] = dict(truth=a.tolist(), pred=b.tolist(),
                          ami=float(adjusted_mutual_info_score(a, b)),
                          nmi=float(normalized_mutual_info_score(a, b)))

# Linear probe: the Rust split (SplitMix64 permutation, last fifth held out) re-implemented here,
# then scikit-learn's multinomial logistic regression with the same L2 strength.
M64 = (1 << 64) - 1


class SplitMix:
    def __init__(self, seed):
        self.state = (seed ^ 0x9E3779B97F4A7C15) & M64

    def next(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & M64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
        return z ^ (z >> 31)

    def below(self, n):
        return ((self.next() >> 11) * n) >> 53

    def permutation(self, n):
        p = list(range(n))
        for i in range(n - 1, 0, -1):
            j = self.below(i + 1)
            p[i], p[j] = p[j], p[i]
        return p


from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

nl, dl, cl = 200, 5, 3
yl = rng.integers(0, cl, size=nl)
Xl = rng.normal(size=(nl, dl)) + 1.2 * np.eye(cl, dl)[yl]
order = SplitMix(3).permutation(nl)
n_test = max(nl // 5, 1)
test_idx, train_idx = order[nl - n_test:], order[:nl - n_test]
scaler = StandardScaler().fit(Xl[train_idx])
clf = LogisticRegression(C=1.0 / (1e-4 * len(train_idx)), max_iter=5000)
clf.fit(scaler.transform(Xl[train_idx]), yl[train_idx])
acc = float((clf.predict(scaler.transform(Xl[test_idx])) == yl[test_idx]).mean())
out["linear_probe"] = dict(x=Xl.tolist(), labels=yl.tolist(), seed=3, accuracy=acc)

# AMI at the size the page scores every E-step (1,870 images, 9 classes against 187 clusters):
# the expected mutual information's sum runs over thousands of cells here. Its own generator, so
# that the values above do not move.
big = np.random.default_rng(7)
a = big.integers(0, 9, size=1870)
b = np.where(big.uniform(size=1870) < 0.5, a * 20 + big.integers(0, 20, size=1870),
             big.integers(0, 187, size=1870))
out["mutual_info_large"] = dict(truth=a.tolist(), pred=b.tolist(),
                                ami=float(adjusted_mutual_info_score(a, b)),
                                nmi=float(normalized_mutual_info_score(a, b)))

print(json.dumps(out, indent=1))

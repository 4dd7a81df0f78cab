#!/usr/bin/env python3
"""PCL in PyTorch, the reference a user would reach for: the official code's algorithm (MoCo v2 +
ProtoNCE, main_pcl.py / pcl/builder.py) on this project's tiny encoder, timed by the same budget as
a preset, scored by the same metrics. For `scripts/quality.sh` with QUALITY_TORCH=1.

Same as the thorough preset: encoder (conv3x3 stem of `width` channels, three stride-2 blocks to
8 x width, global average pool, MLP head to `feature_dim`, L2 norm), BatchNorm over 4 ghost
batches with the key batch shuffled across them (MoCo's shuffle BN on one device), batch capped
to an eighth of the images, queue of half the images, tau 0.2, momentum encoder m 0.99, SGD lr
0.03 / momentum 0.9 / weight decay 5e-4 on a cosine schedule that ends at the budget, warm-up a
thirtieth of the run, an E-step before every epoch after it (k-means on the key encoder's
centre-crop embeddings, K = n/100, n/25, n/10, 20 iterations, concentrations as main_pcl.py),
the exact softmax over each level's K prototypes, prototype weight 0.5, augmentation v2 drawn
as the engine draws it. As the official code and unlike this project: no masking of a query's
own older keys in the queue (`--mask-self-negatives` adds it).

Input: `pcl decode --images DIR --dump FILE` (the images exactly as the engine decodes them).
`--score-model FILE` scores an encoder the CLI exported (`pcl export --safetensors`) with this
script's metrics instead of training (its kNN equals the CLI's to the last digit; its linear
probe, on its own split, runs higher than the CLI's), so both trainers are scored by one code.
Output: OUT/metrics.json, a list of per-epoch records in the CLI's format; the last one holds
the final kNN (k 20, weights exp(sim / 0.07), leave-one-out, backbone features), AMI / NMI of
k-means (K = classes, best of 30 restarts) on the embeddings and the linear probe (logistic
regression by 300 full-batch Adam steps on a seeded 80 % split of standardised backbone features);
OUT/embeddings.csv in the CLI's format, so scripts/eval-noise.py reads either trainer's runs.

    python3 benches/pcl_torch.py --dump D.json --out OUT [--minutes 10 | --epochs E] [--seed S]
        [--info-nce-only] [--width 32] [--feature-dim 128] [--proto-weight 0.5] [--threads 2]
"""
import argparse, json, math, os, sys, time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_mutual_info_score, normalized_mutual_info_score

# main_pcl.py's concentration formula, shared with the golden-value script that checks the engine.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "reference"))
from official import concentrations  # noqa: E402

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


class GhostBN(nn.Module):
    """BatchNorm with statistics per chunk of the batch; running statistics for eval mode."""

    def __init__(self, c, chunks):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(c))
        self.bias = nn.Parameter(torch.zeros(c))
        self.register_buffer("running_mean", torch.zeros(c))
        self.register_buffer("running_var", torch.ones(c))
        self.chunks = chunks

    def forward(self, x):
        n, c, h, w = x.shape
        if not self.training:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False)
        g = self.chunks
        y = x.view(g, n // g, c, h, w).transpose(0, 1).reshape(n // g, g * c, h, w)  # [n/g, g c, h, w]
        with torch.no_grad():
            mean = y.mean((0, 2, 3)).view(g, c).mean(0)  # [c]
            var = y.var((0, 2, 3), unbiased=True).view(g, c).mean(0)  # [c]
            self.running_mean.mul_(0.9).add_(0.1 * mean)
            self.running_var.mul_(0.9).add_(0.1 * var)
        y = F.batch_norm(y, None, None, training=True)
        y = y.view(n // g, g, c, h, w).transpose(0, 1).reshape(n, c, h, w)
        return y * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


class Encoder(nn.Module):
    def __init__(self, width, dim, chunks):
        super().__init__()
        w = width

        def block(cin, cout, stride):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), GhostBN(cout, chunks), nn.ReLU())

        self.body = nn.Sequential(block(3, w, 1), block(w, 2 * w, 2), block(2 * w, 4 * w, 2), block(4 * w, 8 * w, 2))
        self.head = nn.Sequential(nn.Linear(8 * w, 8 * w), nn.ReLU(), nn.Linear(8 * w, dim))

    def forward(self, x, backbone=False):
        f = self.body(x).mean((2, 3))  # f: [n, 8w]
        z = F.normalize(self.head(f), dim=1)  # z: [n, dim]
        return (z, f) if backbone else z


def hue_matrices(h):
    """Per-image colour rotation in YIQ (the engine's stand-in for an HSV hue shift): [n, 3, 3]."""
    t = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    ti = torch.tensor([[1.0, 0.956, 0.621], [1.0, -0.272, -0.647], [1.0, -1.106, 1.703]])
    c, s = torch.cos(h * 2 * math.pi), torch.sin(h * 2 * math.pi)
    r = torch.zeros(len(h), 3, 3)
    r[:, 0, 0] = 1
    r[:, 1, 1], r[:, 1, 2], r[:, 2, 1], r[:, 2, 2] = c, -s, s, c
    return ti @ r @ t


def gray(x):
    return 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]  # [n, 1, h, w]


def augment(x, out, gen):
    """Augmentation v2 without blur (off below 64 px, as in the engine): RandomResizedCrop (scale
    0.2-1, ratio 3/4-4/3, torchvision's 10 tries) + flip, jitter (0.4, 0.4, 0.4, 0.1) p 0.8,
    grayscale p 0.2. x: [n, 3, S, S] in [0, 1] -> [n, 3, out, out] normalised."""
    n = x.shape[0]
    u = lambda *s: torch.rand(*s, generator=gen)
    area = 0.2 + 0.8 * u(n, 10)
    ratio = torch.exp(math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * u(n, 10))
    w, h = (area * ratio).sqrt(), (area / ratio).sqrt()
    ok = (w <= 1) & (h <= 1)
    first = torch.where(ok.any(1), ok.float().argmax(1), torch.zeros(n, dtype=torch.long))
    pick = lambda v: torch.where(ok.any(1), v.gather(1, first[:, None])[:, 0], torch.ones(n))
    w, h = pick(w), pick(h)
    cx, cy = (2 * u(n) - 1) * (1 - w), (2 * u(n) - 1) * (1 - h)
    flip = torch.where(u(n) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = w * flip, cx, h, cy
    grid = F.affine_grid(theta, (n, 3, out, out), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    on = u(n) < 0.8
    col = lambda v: v.view(n, 1, 1, 1)
    b = col(torch.where(on, 0.6 + 0.8 * u(n), 1.0))
    c = col(torch.where(on, 0.6 + 0.8 * u(n), 1.0))
    s = torch.where(on, 0.6 + 0.8 * u(n), 1.0)
    hue = torch.where(on, -0.1 + 0.2 * u(n), 0.0)
    s = col(torch.where(u(n) < 0.2, 0.0, s))
    x = (x * b).clamp(0, 1)
    m = gray(x).mean((2, 3), keepdim=True)
    x = ((x - m) * c + m).clamp(0, 1)
    g = gray(x)
    x = (g + (x - g) * s).clamp(0, 1)
    x = (hue_matrices(hue) @ x.reshape(n, 3, -1)).reshape(n, 3, out, out).clamp(0, 1)
    return (x - MEAN) / STD


def center(x, out):
    top = (x.shape[2] - out) // 2
    return (x[:, :, top:top + out, top:top + out] - MEAN) / STD


@torch.no_grad()
def embed(enc, images, out, backbone=False):
    enc.eval()
    parts = [enc(center(images[i:i + 256], out), backbone) for i in range(0, len(images), 256)]
    enc.train()
    if backbone:
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    return torch.cat(parts)


def run_kmeans(x, ks, seed):
    """main_pcl.py's run_kmeans: per level the assignments, unit centroids [k, d] and
    concentrations phi [k] (mean distance / log(Z + 10), <= 1 member -> the largest, clipped to
    the 10th..90th percentile, scaled to mean tau)."""
    levels = []
    xn = x.numpy().astype(np.float32)
    for li, k in enumerate(ks):
        try:
            import faiss
            km = faiss.Kmeans(xn.shape[1], k, niter=20, nredo=1, seed=seed * 100 + li, verbose=False,
                              min_points_per_centroid=1, max_points_per_centroid=1000)
            km.train(xn)
            dist, assign = km.index.search(xn, 1)
            dist, assign, cents = dist[:, 0], assign[:, 0], km.centroids
        except ImportError:
            km = KMeans(k, n_init=1, max_iter=20, random_state=seed * 100 + li).fit(xn)
            assign, cents = km.labels_, km.cluster_centers_
            dist = ((xn - cents[assign]) ** 2).sum(1)
        density = concentrations(assign, dist, k, TAU)
        cents = torch.from_numpy(cents).float()
        levels.append((torch.from_numpy(assign).long(), F.normalize(cents, dim=1), torch.from_numpy(density).float()))
    return levels


def knn_accuracy(f, labels, k=20, t=0.07):
    f = F.normalize(f, dim=1)
    sim = f @ f.T
    sim.fill_diagonal_(-float("inf"))
    top, idx = sim.topk(k, dim=1)
    votes = torch.zeros(len(f), int(labels.max()) + 1, dtype=torch.float64)
    votes.scatter_add_(1, labels[idx], torch.exp(top.double() / t))
    return (votes.argmax(1) == labels).double().mean().item()


def linear_probe(f, labels, seed):
    n, classes = len(f), int(labels.max()) + 1
    order = np.random.default_rng(seed).permutation(n)
    n_test = max(n // 5, 1)
    train, test = order[:n - n_test], order[n - n_test:]
    f = f.double()
    mean, std = f[train].mean(0), f[train].std(0, unbiased=False).clamp_min(1e-6)
    x = (f - mean) / std
    w = torch.zeros(f.shape[1], classes, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=0.05)
    for _ in range(300):
        opt.zero_grad()
        loss = F.cross_entropy(x[train] @ w + b, labels[train]) + 0.5e-4 * ((w ** 2).sum() + (b ** 2).sum())
        loss.backward()
        opt.step()
    with torch.no_grad():
        return ((x[test] @ w + b).argmax(1) == labels[test]).double().mean().item()


def class_ami(z, labels, seed):
    """AMI / NMI of k-means with K = classes, the lowest inertia of 30 restarts."""
    k = int(labels.max()) + 1
    pred = KMeans(k, n_init=30, random_state=seed).fit_predict(z.numpy().astype(np.float64))
    return adjusted_mutual_info_score(labels.numpy(), pred), normalized_mutual_info_score(labels.numpy(), pred)


def scores(z, f, labels, seed):
    """Every metric of the end of a run: z [n, dim] unit embeddings, f [n, 8w] backbone features."""
    ami, nmi = class_ami(z, labels, seed)
    return dict(knn_accuracy=knn_accuracy(f, labels), ami=ami, nmi=nmi,
                linear_accuracy=linear_probe(f, labels, seed))


@torch.no_grad()
def exported_features(path, images, out):
    """Embeddings and backbone features of an encoder the CLI exported, built as the README's
    loader builds it (plain BatchNorm2d with the run's running statistics, eval mode)."""
    from safetensors.torch import load_file
    state = load_file(path)
    w, d = state["backbone.0.weight"].shape[0], state["head.2.weight"].shape[0]

    def block(cin, cout, stride):
        return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
    m = nn.Module()
    m.backbone = nn.Sequential(*block(3, w, 1), *block(w, 2 * w, 2), *block(2 * w, 4 * w, 2),
                               *block(4 * w, 8 * w, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    m.head = nn.Sequential(nn.Linear(8 * w, 8 * w), nn.ReLU(), nn.Linear(8 * w, d))
    m.load_state_dict(state)
    m.eval()
    f = torch.cat([m.backbone(center(images[i:i + 256], out)) for i in range(0, len(images), 256)])
    return F.normalize(m.head(f), dim=1), f


def load(dump):
    d = json.load(open(dump))
    side, names = d["side"], sorted(d["images"])
    x = torch.tensor(np.array([d["images"][k] for k in names], dtype=np.uint8)).float() / 255
    x = x.view(len(names), side, side, 3).permute(0, 3, 1, 2).contiguous()  # [n, 3, S, S]
    top = lambda k: k.split("/")[0]
    classes = sorted({top(k) for k in names})
    labels = torch.tensor([classes.index(top(k)) for k in names])
    return x, labels, names


def main():
    global TAU
    p = argparse.ArgumentParser()
    p.add_argument("--dump", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--epochs", type=int, default=0, help="fixed epochs instead of a budget")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--info-nce-only", action="store_true")
    p.add_argument("--mask-self-negatives", action="store_true")
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--feature-dim", type=int, default=128)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--proto-weight", type=float, default=0.5)
    p.add_argument("--tau", type=float, default=0.2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--score-pixels", action="store_true",
                   help="only score raw pixels (centre crop), to check the scorer against `pcl pixels`")
    p.add_argument("--score-model", metavar="SAFETENSORS",
                   help="only score an encoder the CLI exported (`pcl export --safetensors`) with "
                        "this script's metrics, so that both trainers are scored by the same code")
    a = p.parse_args()
    TAU = a.tau
    torch.set_num_threads(a.threads)
    try:
        import faiss
        faiss.omp_set_num_threads(a.threads)
    except ImportError:
        pass
    torch.manual_seed(a.seed)
    gen = torch.Generator().manual_seed(a.seed)
    images, labels, names = load(a.dump)
    n = len(images)
    if a.score_model:
        z, f = exported_features(a.score_model, images, a.image_size)
        print(json.dumps(scores(z, f, labels, a.seed)))
        return
    if a.score_pixels:
        f = F.normalize(center(images, a.image_size).flatten(1), dim=1)
        print(json.dumps(scores(f, f, labels, 0)))
        return
    batch = min(256, max(n // 8, 16), n // 2)
    chunks = 4
    batch -= batch % chunks
    r = max(min(4096, n // 2), batch)
    ks = sorted({min(max(k, 2), max(n // 2, 2)) for k in (n // 100, n // 25, n // 10)})
    weight = 0.0 if a.info_nce_only else a.proto_weight
    q_enc = Encoder(a.width, a.feature_dim, chunks)
    k_enc = Encoder(a.width, a.feature_dim, chunks)
    k_enc.load_state_dict(q_enc.state_dict())
    for prm in k_enc.parameters():
        prm.requires_grad = False
    opt = torch.optim.SGD(q_enc.parameters(), lr=0.03, momentum=0.9, weight_decay=5e-4)
    queue = F.normalize(torch.randn(r, a.feature_dim, generator=gen), dim=1)  # [r, dim]
    queue_ids = torch.full((r,), -1, dtype=torch.long)
    ptr = 0
    epochs = a.epochs or 60
    warmup = max(1, round(epochs / 30))
    budget = None if a.epochs else a.minutes * 60
    os.makedirs(a.out, exist_ok=True)
    records, levels = [], None
    t_start, train_secs, estep_secs = time.perf_counter(), [], []
    epoch = 0
    while epoch < epochs:
        t0 = time.perf_counter()
        record = {"epoch": epoch + 1}
        if weight > 0 and epoch >= warmup:
            z = embed(k_enc, images, a.image_size)
            levels = run_kmeans(z, ks, a.seed)
            record["level_ami"] = [adjusted_mutual_info_score(labels.numpy(), l[0].numpy()) for l in levels]
            estep_secs.append(time.perf_counter() - t0)
        t1 = time.perf_counter()
        order = torch.randperm(n, generator=gen)
        steps, losses = n // batch, []
        for s in range(steps):
            lr = 0.03 * 0.5 * (1 + math.cos(math.pi * (epoch + s / steps) / epochs))
            for g in opt.param_groups:
                g["lr"] = lr
            idx = order[s * batch:(s + 1) * batch]
            x = images[idx]
            xq, xk = augment(x, a.image_size, gen), augment(x, a.image_size, gen)
            q = q_enc(xq)  # q: [b, dim]
            with torch.no_grad():
                for pq, pk in zip(q_enc.parameters(), k_enc.parameters()):
                    pk.mul_(0.99).add_(pq.detach(), alpha=0.01)
                shuffle = torch.randperm(batch, generator=gen)
                k = k_enc(xk[shuffle])[torch.argsort(shuffle)]  # k: [b, dim]
            l_pos = (q * k).sum(1, keepdim=True)  # [b, 1]
            l_neg = q @ queue.T  # [b, r]
            if a.mask_self_negatives:
                l_neg = l_neg.masked_fill(queue_ids[None, :] == idx[:, None], -float("inf"))
            logits = torch.cat([l_pos, l_neg], 1) / a.tau  # [b, 1 + r]
            loss = F.cross_entropy(logits, torch.zeros(batch, dtype=torch.long))
            if weight > 0 and levels is not None:
                proto = 0
                for assign, cents, phi in levels:
                    proto = proto + F.cross_entropy((q @ cents.T) / phi, assign[idx])  # [b, K] logits
                loss = loss + weight * proto / len(levels)
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                pos = (ptr + torch.arange(batch)) % r
                queue[pos], queue_ids[pos] = k, idx
                ptr = (ptr + batch) % r
            losses.append(loss.item())
        train_secs.append(time.perf_counter() - t1)
        record.update(loss=float(np.mean(losses)), seconds=time.perf_counter() - t0, lr=lr)
        records.append(record)
        epoch += 1
        if budget is not None:
            # Re-plan as the engine does: the epochs whose mean cost fits what is left.
            left = budget - (time.perf_counter() - t_start)
            per = np.mean(train_secs[-5:]) + (np.mean(estep_secs[-5:]) if estep_secs else 0.0)
            epochs = epoch + max(int(left / per), 1) if left > 0.5 * per else epoch
            if epoch < warmup:
                warmup = max(1, round(epochs / 30))
        print(f"epoch {epoch}/{epochs} loss {record['loss']:.3f} {record['seconds']:.2f} s", flush=True)
    z, f = embed(q_enc, images, a.image_size, backbone=True)
    with open(os.path.join(a.out, "embeddings.csv"), "w", newline="") as out:
        import csv
        w = csv.writer(out, lineterminator="\n")
        w.writerow(["path", "label"] + [f"e{i}" for i in range(z.shape[1])])
        for name, row in zip(names, z.tolist()):
            w.writerow([name, name.split("/")[0]] + [f"{v:.6}" for v in row])
    records[-1].update(scores(z, f, labels, a.seed), epochs=epoch)
    json.dump(records, open(os.path.join(a.out, "metrics.json"), "w"), indent=1)
    print(json.dumps({k: records[-1][k] for k in ("knn_accuracy", "ami", "nmi", "linear_accuracy", "epochs")}))


if __name__ == "__main__":
    main()

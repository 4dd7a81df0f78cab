//! Representation quality where labels exist: weighted kNN accuracy (leave-one-out), AMI / NMI
//! of a clustering against labels, and a linear probe. The similarity matrix runs on the device
//! in row blocks; everything else is small host arithmetic.

use burn::prelude::*;

use super::data::Dataset;
use super::error::EngineError;
use super::params::read_all;
use super::records::Phase;
use super::rng::Rng;
use super::tiled::Tiled;
use super::trainer::Trainer;
use super::{augment, kmeans, model, params, rng};

pub use super::records::EvalReport;

/// Weighted kNN (k neighbours by cosine similarity, vote weight exp(sim / t)), each image
/// classified by all the others (leave-one-out). `feats` [n, d] must have unit rows.
pub async fn knn_accuracy(
    feats: &Tiled,
    labels: &[u32],
    k: usize,
    t: f64,
) -> Result<f64, EngineError> {
    let [n, _] = feats.dims();
    if labels.len() != n {
        return Err(EngineError::Shape(format!(
            "kNN: {} labels for {n} feature rows",
            labels.len()
        )));
    }
    let classes = labels.iter().max().map_or(0, |&m| m as usize + 1);
    let k = k.min(n - 1);
    let block = (1 << 22) / n.max(1) + 1;
    let mut correct = 0usize;
    for (first, rows) in feats.row_blocks(block) {
        let b = rows.dims()[0]; // rows: [b, d]
        let sims = feats
            .tiles()
            .iter()
            .map(|(_, t)| rows.clone().matmul(t.clone().transpose()));
        let sim = Tensor::cat(sims.collect(), 1); // sim: [b, n]
        let host = read_all(vec![sim.reshape([b * n])]).await?;
        for (bi, row) in host[0].chunks(n).enumerate() {
            let i = first + bi;
            let mut idx: Vec<usize> = (0..n).filter(|&j| j != i).collect();
            idx.select_nth_unstable_by(k - 1, |&a, &b| row[b].total_cmp(&row[a]));
            let mut votes = vec![0f64; classes];
            for &j in &idx[..k] {
                votes[labels[j] as usize] += (row[j] as f64 / t).exp();
            }
            let pred = argmax(&votes);
            correct += (pred == labels[i] as usize) as usize;
        }
    }
    Ok(correct as f64 / n as f64)
}

fn argmax(v: &[f64]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

struct Contingency {
    n: f64,
    a: Vec<f64>,
    b: Vec<f64>,
    cells: Vec<((usize, usize), f64)>,
}

fn contingency(truth: &[u32], pred: &[u32]) -> Contingency {
    use std::collections::BTreeMap;
    let remap = |v: &[u32]| {
        let mut m = BTreeMap::new();
        let ids: Vec<usize> = v
            .iter()
            .map(|x| {
                let next = m.len();
                *m.entry(*x).or_insert(next)
            })
            .collect();
        (ids, m.len())
    };
    let (t, nt) = remap(truth);
    let (p, np) = remap(pred);
    let mut a = vec![0f64; nt];
    let mut b = vec![0f64; np];
    let mut cells = BTreeMap::new();
    for (&i, &j) in t.iter().zip(&p) {
        a[i] += 1.0;
        b[j] += 1.0;
        *cells.entry((i, j)).or_insert(0f64) += 1.0;
    }
    Contingency {
        n: truth.len() as f64,
        a,
        b,
        cells: cells.into_iter().collect(),
    }
}

fn entropy(counts: &[f64], n: f64) -> f64 {
    counts
        .iter()
        .filter(|&&c| c > 0.0)
        .map(|&c| -(c / n) * (c / n).ln())
        .sum()
}

fn mutual_info(c: &Contingency) -> f64 {
    c.cells
        .iter()
        .map(|&((i, j), nij)| nij / c.n * (c.n * nij / (c.a[i] * c.b[j])).ln())
        .sum::<f64>()
        .max(0.0)
}

/// Expected mutual information of two labelings with these marginals under the permutation
/// model (Vinh et al. 2010), as scikit-learn computes it. Its terms take ln k! from one table
/// (a running sum of logs, exact to about 1e-12 here) instead of nine Lanczos ln Gamma calls
/// each: the page scores every E-step's levels against the labels and the fine labels, and
/// those calls were a twentieth of its epoch.
fn expected_mutual_info(c: &Contingency) -> f64 {
    let n = c.n;
    let total = n as usize;
    let mut lf = Vec::with_capacity(total + 1); // lf[k] = ln k!
    lf.push(0.0f64);
    for k in 1..=total {
        lf.push(lf[k - 1] + (k as f64).ln());
    }
    let mut emi = 0.0;
    for &ai in &c.a {
        for &bj in &c.b {
            let (a, b) = (ai as usize, bj as usize);
            let start = (a + b).saturating_sub(total).max(1);
            let fixed = lf[a] + lf[b] + lf[total - a] + lf[total - b] - lf[total];
            let base = n.ln() - ai.ln() - bj.ln();
            for nij in start..=a.min(b) {
                let gln = fixed - lf[nij] - lf[a - nij] - lf[b - nij] - lf[total + nij - a - b];
                let x = nij as f64;
                emi += x / n * (base + x.ln()) * gln.exp();
            }
        }
    }
    emi
}

/// Normalised mutual information (arithmetic mean of the entropies, scikit-learn's default).
pub fn nmi(truth: &[u32], pred: &[u32]) -> f64 {
    let c = contingency(truth, pred);
    if (c.a.len() == 1 && c.b.len() == 1) || (c.a.is_empty() && c.b.is_empty()) {
        return 1.0;
    }
    let mi = mutual_info(&c);
    let norm = 0.5 * (entropy(&c.a, c.n) + entropy(&c.b, c.n));
    if norm <= 0.0 { 0.0 } else { mi / norm }
}

/// Adjusted mutual information (arithmetic normaliser, scikit-learn's default).
pub fn ami(truth: &[u32], pred: &[u32]) -> f64 {
    let c = contingency(truth, pred);
    if (c.a.len() == 1 && c.b.len() == 1) || (c.a.is_empty() && c.b.is_empty()) {
        return 1.0;
    }
    let mi = mutual_info(&c);
    let emi = expected_mutual_info(&c);
    let norm = 0.5 * (entropy(&c.a, c.n) + entropy(&c.b, c.n));
    let mut den = norm - emi;
    den = if den < 0.0 {
        den.min(-f64::EPSILON)
    } else {
        den.max(f64::EPSILON)
    };
    (mi - emi) / den
}

/// Linear probe: multinomial logistic regression on standardised frozen features, trained by
/// full-batch Adam on a seeded 80% split, accuracy on the other 20%.
pub fn linear_probe(feats: &[f32], d: usize, labels: &[u32], seed: u64) -> f64 {
    let n = labels.len();
    let classes = labels.iter().max().map_or(1, |&m| m as usize + 1);
    let mut order = Rng::new(seed).permutation(n);
    let n_test = (n / 5).max(1);
    let test = order.split_off(n - n_test);
    let train = order;
    // Standardise with training statistics.
    let mut mean = vec![0f64; d];
    let mut var = vec![0f64; d];
    for &i in &train {
        for t in 0..d {
            mean[t] += feats[i * d + t] as f64;
        }
    }
    mean.iter_mut().for_each(|m| *m /= train.len() as f64);
    for &i in &train {
        for t in 0..d {
            var[t] += (feats[i * d + t] as f64 - mean[t]).powi(2);
        }
    }
    let std: Vec<f64> = var
        .iter()
        .map(|v| (v / train.len() as f64).sqrt().max(1e-6))
        .collect();
    // Standardised once, with a constant 1 for the bias: [n, d + 1]. The loop below reads every
    // value 600 times; as rows of one slice its products vectorise.
    let dp = d + 1;
    let mut xs = vec![1f64; n * dp];
    for (i, row) in xs.chunks_exact_mut(dp).enumerate() {
        for (t, v) in row[..d].iter_mut().enumerate() {
            *v = (feats[i * d + t] as f64 - mean[t]) / std[t];
        }
    }
    let row = |i: usize| &xs[i * dp..(i + 1) * dp];
    let (mut w, mut m1, mut m2) = (
        vec![0f64; dp * classes],
        vec![0f64; dp * classes],
        vec![0f64; dp * classes],
    );
    let (lr, b1, b2, l2) = (0.05, 0.9, 0.999, 1e-4);
    let logits = |w: &[f64], x: &[f64], z: &mut [f64]| {
        for (zc, wc) in z.iter_mut().zip(w.chunks_exact(dp)) {
            *zc = dot(wc, x);
        }
    };
    let mut z = vec![0f64; classes];
    let mut g = vec![0f64; dp * classes];
    for step in 1..=300 {
        g.fill(0.0);
        for &i in &train {
            let x = row(i);
            logits(&w, x, &mut z);
            let mx = z.iter().cloned().fold(f64::MIN, f64::max);
            z.iter_mut().for_each(|v| *v = (*v - mx).exp());
            let s: f64 = z.iter().sum();
            for (c, gc) in g.chunks_exact_mut(dp).enumerate() {
                let p = z[c] / s - (labels[i] as usize == c) as usize as f64;
                gc.iter_mut().zip(x).for_each(|(r, v)| *r += p * v);
            }
        }
        let scale = 1.0 / train.len() as f64;
        for j in 0..w.len() {
            let gj = g[j] * scale + l2 * w[j];
            m1[j] = b1 * m1[j] + (1.0 - b1) * gj;
            m2[j] = b2 * m2[j] + (1.0 - b2) * gj * gj;
            let mh = m1[j] / (1.0 - b1.powi(step));
            let vh = m2[j] / (1.0 - b2.powi(step));
            w[j] -= lr * mh / (vh.sqrt() + 1e-8);
        }
    }
    let correct = test
        .iter()
        .filter(|&&i| {
            logits(&w, row(i), &mut z);
            argmax(&z) == labels[i] as usize
        })
        .count();
    correct as f64 / test.len() as f64
}

/// a . b in four running sums (which the compiler keeps in SIMD lanes; one sum in order
/// would not vectorise).
fn dot(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0f64; 4];
    let (ca, cb) = (a.chunks_exact(4), b.chunks_exact(4));
    let tail: f64 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for k in 0..4 {
            acc[k] += x[k] * y[k];
        }
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

/// First two principal components of the rows of `x` [n, d] (power iteration with deflation),
/// for the embedding map.
pub fn pca_2d(x: &[f32], d: usize) -> Vec<[f32; 2]> {
    let n = x.len() / d;
    let mut mean = vec![0f64; d];
    for row in x.chunks(d) {
        for t in 0..d {
            mean[t] += row[t] as f64 / n as f64;
        }
    }
    let centred: Vec<f64> = x
        .chunks(d)
        .flat_map(|r| (0..d).map(|t| r[t] as f64 - mean[t]).collect::<Vec<_>>())
        .collect();
    let mut comps: Vec<Vec<f64>> = Vec::new();
    let mut rng = Rng::new(1);
    for _ in 0..2 {
        let mut v: Vec<f64> = (0..d).map(|_| rng.f32() as f64 - 0.5).collect();
        for _ in 0..100 {
            // w = X^T X v, minus earlier components
            let xv: Vec<f64> = centred
                .chunks(d)
                .map(|r| r.iter().zip(&v).map(|(a, b)| a * b).sum())
                .collect();
            let mut w = vec![0f64; d];
            for (r, s) in centred.chunks(d).zip(&xv) {
                for t in 0..d {
                    w[t] += r[t] * s;
                }
            }
            for c in &comps {
                let p: f64 = w.iter().zip(c).map(|(a, b)| a * b).sum();
                for t in 0..d {
                    w[t] -= p * c[t];
                }
            }
            let norm = w.iter().map(|a| a * a).sum::<f64>().sqrt();
            if norm < 1e-12 {
                break;
            }
            v = w.into_iter().map(|a| a / norm).collect();
        }
        comps.push(v);
    }
    centred
        .chunks(d)
        .map(|r| {
            let p = |c: &Vec<f64>| r.iter().zip(c).map(|(a, b)| a * b).sum::<f64>() as f32;
            [p(&comps[0]), p(&comps[1])]
        })
        .collect()
}
// The evaluations a run reports: the trainer's encoder, and raw pixels as the floor to beat.

/// All label-based metrics of the trainer's current encoder on `data`: kNN on backbone features,
/// AMI / NMI of k-means (K = classes) on the embeddings, linear probe on backbone features.
pub async fn evaluate(
    trainer: &Trainer,
    data: &Dataset,
    labels: &[u32],
) -> Result<EvalReport, EngineError> {
    let encoder = trainer.encoder();
    let mut quiet = |_: Phase| {};
    let embedded = trainer.embed_all(&encoder, data, true, &mut quiet).await?;
    let backbone = embedded.backbone.as_ref().expect("asked for the backbone");
    label_metrics(
        backbone,
        (&embedded.head, trainer.config.feature_dim),
        labels,
        trainer.config.seed,
        trainer.device(),
    )
    .await
}

/// k-means restarts of every evaluation clustering (K = classes; the lowest inertia wins). With 3,
/// the AMI of one fixed embedding of the sample set moved by 0.008-0.015 (sd) between k-means
/// seeds, as much as between training seeds; with 30, by 0.000-0.005 (docs/measurements.md).
/// K is the number of classes, so the restarts cost little beside the embedding pass.
pub const EVAL_KMEANS_RESTARTS: usize = 30;

/// kNN and the linear probe on `features`, AMI / NMI of k-means (K = classes) on `clustered`
/// (with its row length); each [n, d] row-major on the host, `features` with unit rows. The
/// products run on `device`.
pub(crate) async fn label_metrics(
    features: &[f32],
    clustered: (&[f32], usize),
    labels: &[u32],
    seed: u64,
    device: &Device,
) -> Result<EvalReport, EngineError> {
    let d = features.len() / labels.len().max(1);
    if d == 0 || features.len() != labels.len() * d {
        return Err(EngineError::Shape(format!(
            "label metrics: {} feature values for {} labels",
            features.len(),
            labels.len()
        )));
    }
    let tiled = Tiled::from_host(features, d, false, device);
    let knn_accuracy = knn_accuracy(&tiled, labels, 20, 0.07).await?;
    let points = kmeans::Points::new(clustered.0, clustered.1, device)?;
    let clusters = class_clustering(&points, labels, seed).await?;
    Ok(EvalReport {
        knn_accuracy,
        ami: ami(labels, &clusters),
        nmi: nmi(labels, &clusters),
        linear_accuracy: linear_probe(features, d, labels, seed),
    })
}

/// Raw pixels' k-means AMI (K = classes) against the labels and the fine labels, each where the
/// data has them: the line the learned clusterings are drawn against.
pub async fn pixels_ami(
    data: &Dataset,
    image_size: usize,
    seed: u64,
    device: &Device,
) -> Result<(Option<f64>, Option<f64>), EngineError> {
    let (coarse, fine) = (data.eval_labels(), data.eval_fine_labels());
    if coarse.is_none() && fine.is_none() {
        return Ok((None, None));
    }
    let (host, d) = pixel_features(data, image_size, device).await?;
    let points = kmeans::Points::new(&host, d, device)?;
    let coarse = match coarse {
        Some(l) => Some(kmeans_ami(&points, l, seed).await?),
        None => None,
    };
    let fine = match fine {
        Some(l) => Some(kmeans_ami(&points, l, seed).await?),
        None => None,
    };
    Ok((coarse, fine))
}

/// AMI of k-means with K = the number of classes against `labels`.
async fn kmeans_ami(
    points: &kmeans::Points<'_>,
    labels: &[u32],
    seed: u64,
) -> Result<f64, EngineError> {
    Ok(ami(labels, &class_clustering(points, labels, seed).await?))
}

/// The evaluation's clustering: k-means with K = the number of classes of `labels`, the best
/// of [`EVAL_KMEANS_RESTARTS`]; the cluster of every point.
async fn class_clustering(
    points: &kmeans::Points<'_>,
    labels: &[u32],
    seed: u64,
) -> Result<Vec<u32>, EngineError> {
    let classes = labels.iter().max().map_or(1, |&m| m as usize + 1);
    let mut rng = rng::Rng::new(seed);
    let k = classes.min(labels.len());
    let km = kmeans::kmeans_restarts(points, k, 20, EVAL_KMEANS_RESTARTS, &mut rng).await?;
    Ok(km.assignments)
}

/// Every image's centre crop, flattened, as unit rows [n, 3 s s] on the host, and 3 s s. Read
/// back 256 images at a time: the whole could be over a binding's limit (see `tiled`).
async fn pixel_features(
    data: &Dataset,
    image_size: usize,
    device: &Device,
) -> Result<(Vec<f32>, usize), EngineError> {
    let n = data.len();
    let mut parts = Vec::new();
    for start in (0..n).step_by(256) {
        let end = (start + 256).min(n);
        let imgs: Vec<&[u8]> = (start..end).map(|i| data.image(i)).collect();
        let x = augment::center_view(augment::upload(&imgs, data.side, device), image_size);
        parts.push(model::l2_normalize(x.flatten(1, 3)).reshape([-1]));
    }
    let host = params::read_all(parts).await?.concat();
    Ok((host, 3 * image_size * image_size))
}

/// The same metrics on raw pixels (centre crop, flattened, unit rows): the floor that learned
/// features must beat.
pub async fn evaluate_pixels(
    data: &Dataset,
    labels: &[u32],
    image_size: usize,
    device: &Device,
) -> Result<EvalReport, EngineError> {
    let (host, d) = pixel_features(data, image_size, device).await?;
    label_metrics(&host, (&host, d), labels, 0, device).await
}

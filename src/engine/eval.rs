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

/// ln Gamma(x) for x > 0 (Lanczos, g = 7, 9 terms; ~1e-15 relative).
pub fn ln_gamma(x: f64) -> f64 {
    const G: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = G[0];
    let t = x + 7.5;
    for (i, g) in G.iter().enumerate().skip(1) {
        a += g / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
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
/// model (Vinh et al. 2010), as scikit-learn computes it.
fn expected_mutual_info(c: &Contingency) -> f64 {
    let n = c.n;
    let lg = ln_gamma;
    let mut emi = 0.0;
    for &ai in &c.a {
        for &bj in &c.b {
            let start = (ai + bj - n).max(1.0) as usize;
            let end = ai.min(bj) as usize;
            for nij in start..=end {
                let nij = nij as f64;
                let term2 = (n * nij).ln() - ai.ln() - bj.ln();
                let gln = lg(ai + 1.0) + lg(bj + 1.0) + lg(n - ai + 1.0) + lg(n - bj + 1.0)
                    - lg(nij + 1.0)
                    - lg(n + 1.0)
                    - lg(ai - nij + 1.0)
                    - lg(bj - nij + 1.0)
                    - lg(n - ai - bj + nij + 1.0);
                emi += nij / n * term2 * gln.exp();
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
    let x = |i: usize, t: usize| (feats[i * d + t] as f64 - mean[t]) / std[t];
    let (mut w, mut m1, mut m2) = (
        vec![0f64; (d + 1) * classes],
        vec![0f64; (d + 1) * classes],
        vec![0f64; (d + 1) * classes],
    );
    let (lr, b1, b2, l2) = (0.05, 0.9, 0.999, 1e-4);
    let logits = |w: &[f64], i: usize| -> Vec<f64> {
        (0..classes)
            .map(|c| {
                let row = &w[c * (d + 1)..(c + 1) * (d + 1)];
                row[d] + (0..d).map(|t| row[t] * x(i, t)).sum::<f64>()
            })
            .collect()
    };
    for step in 1..=300 {
        let mut g = vec![0f64; (d + 1) * classes];
        for &i in &train {
            let z = logits(&w, i);
            let mx = z.iter().cloned().fold(f64::MIN, f64::max);
            let e: Vec<f64> = z.iter().map(|v| (v - mx).exp()).collect();
            let s: f64 = e.iter().sum();
            for c in 0..classes {
                let p = e[c] / s - (labels[i] as usize == c) as usize as f64;
                let row = &mut g[c * (d + 1)..(c + 1) * (d + 1)];
                for (t, r) in row[..d].iter_mut().enumerate() {
                    *r += p * x(i, t);
                }
                row[d] += p;
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
        .filter(|&&i| argmax(&logits(&w, i)) == labels[i] as usize)
        .count();
    correct as f64 / test.len() as f64
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

//! The E-step's clustering: k-means (k-means++ init, Lloyd iterations on the device, empty
//! clusters repaired by splitting the largest, several restarts keeping the lowest inertia) and
//! the concentration phi of every cluster exactly as the official PCL code computes it.

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::EngineError;
use super::params::read_all;
use super::rng::Rng;

/// One level of a clustering, as the E-step returns it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Level {
    pub k: usize,
    /// Cluster of every image.
    pub assignments: Vec<u32>,
    /// L2-normalised prototypes, row-major [k, d].
    pub centroids: Vec<f32>,
    /// Concentration (temperature) of every prototype.
    pub phi: Vec<f32>,
    pub sizes: Vec<usize>,
    /// Sum of squared distances to the (unnormalised) centroids.
    pub inertia: f64,
}

/// Raw k-means output (centroids not normalised).
#[derive(Clone, Debug)]
pub struct KMeans {
    pub assignments: Vec<u32>,
    /// Squared distance of every point to its centroid.
    pub distances: Vec<f32>,
    pub centroids: Vec<f32>,
    pub inertia: f64,
}

/// Largest [rows, k] distance block computed at once (keeps memory flat for big N x K).
const BLOCK_ELEMS: usize = 1 << 24;

/// k-means++ seeding on the host: each next centre drawn with probability proportional to the
/// squared distance to the nearest centre chosen so far.
pub fn kmeans_pp(x: &[f32], d: usize, k: usize, rng: &mut Rng) -> Vec<f32> {
    let n = x.len() / d;
    let row = |i: usize| &x[i * d..(i + 1) * d];
    let mut centroids = Vec::with_capacity(k * d);
    let first = rng.below(n);
    centroids.extend_from_slice(row(first));
    let mut best: Vec<f32> = (0..n).map(|i| sq(row(i), row(first))).collect();
    for _ in 1..k {
        let total: f64 = best.iter().map(|&v| v as f64).sum();
        let pick = if total <= 0.0 {
            rng.below(n)
        } else {
            let mut target = rng.f32() as f64 * total;
            let mut pick = n - 1;
            for (i, &v) in best.iter().enumerate() {
                target -= v as f64;
                if target < 0.0 {
                    pick = i;
                    break;
                }
            }
            pick
        };
        let c = row(pick).to_vec();
        for (i, b) in best.iter_mut().enumerate() {
            let dist = sq(row(i), &c);
            if dist < *b {
                *b = dist;
            }
        }
        centroids.extend_from_slice(&c);
    }
    centroids
}

/// Squared Euclidean distance, eight lanes at a time so the compiler vectorises it (a plain
/// float sum must keep its order and stays scalar).
fn sq(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(p, q)| (p - q) * (p - q))
        .sum();
    for (pa, pb) in ca.zip(cb) {
        for i in 0..8 {
            let t = pa[i] - pb[i];
            acc[i] += t * t;
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Nearest centroid of every row of `x`: (assignments [n], squared distances [n]) on the device.
fn assign(x: &Tensor<2>, x_sq: &Tensor<2>, c: &Tensor<2>) -> (Tensor<1, Int>, Tensor<1>) {
    let [n, _] = x.dims();
    let [k, _] = c.dims();
    let c_sq = c.clone().square().sum_dim(1).reshape([1, k]); // c_sq: [1, k]
    let rows = (BLOCK_ELEMS / k).max(1);
    let mut ids = Vec::new();
    let mut dists = Vec::new();
    let mut start = 0;
    while start < n {
        let end = (start + rows).min(n);
        let xb = x.clone().slice([start..end, 0..x.dims()[1]]); // xb: [b, d]
        let xb_sq = x_sq.clone().slice([start..end, 0..1]); // xb_sq: [b, 1]
        // dist: [b, k] = |x|^2 - 2 x.c + |c|^2
        let dist = xb_sq - xb.matmul(c.clone().transpose()).mul_scalar(2.0) + c_sq.clone();
        let (min, arg) = dist.min_dim_with_indices(1); // [b, 1] each
        ids.push(arg.reshape([end - start]));
        dists.push(min.clamp_min(0.0).reshape([end - start]));
        start = end;
    }
    (Tensor::cat(ids, 0), Tensor::cat(dists, 0))
}

/// Lloyd's k-means of the rows of `x` ([n, d] on any device), `x_host` its host copy for seeding.
pub async fn kmeans(
    x: &Tensor<2>,
    x_host: &[f32],
    k: usize,
    iters: usize,
    rng: &mut Rng,
) -> Result<KMeans, EngineError> {
    let device = x.device();
    let [n, d] = x.dims();
    if k == 0 || k > n {
        return Err(EngineError::Config(format!(
            "k-means with K = {k} on {n} points: K must be in 1..={n}"
        )));
    }
    if x_host.len() != n * d {
        return Err(EngineError::Shape(format!(
            "k-means host copy has {} values, the device tensor {n} x {d}",
            x_host.len()
        )));
    }
    let x_sq = x.clone().square().sum_dim(1); // x_sq: [n, 1]
    let mut centroids = kmeans_pp(x_host, d, k, rng);
    for _ in 0..iters {
        let c = Tensor::<2>::from_data(TensorData::new(centroids.clone(), [k, d]), &device);
        let (ids, _) = assign(x, &x_sq, &c);
        // The assignments come back (n ints) and the means are summed on the host: O(n d),
        // far cheaper than a [k, n] x [n, d] one-hot product on the device.
        let ids = read_all(vec![ids.float()]).await?;
        let mut sums = vec![0f32; k * d];
        let mut counts = vec![0f32; k];
        for (i, &a) in ids[0].iter().enumerate() {
            let a = a as usize;
            counts[a] += 1.0;
            for (s, v) in sums[a * d..(a + 1) * d]
                .iter_mut()
                .zip(&x_host[i * d..(i + 1) * d])
            {
                *s += v;
            }
        }
        centroids = update_centroids(&sums, &counts, d, rng);
    }
    let c = Tensor::<2>::from_data(TensorData::new(centroids.clone(), [k, d]), &device);
    let (ids, dists) = assign(x, &x_sq, &c);
    let host = read_all(vec![ids.float(), dists]).await?;
    let assignments: Vec<u32> = host[0].iter().map(|&v| v as u32).collect();
    let inertia = host[1].iter().map(|&v| v as f64).sum();
    Ok(KMeans {
        assignments,
        distances: host[1].clone(),
        centroids,
        inertia,
    })
}

/// Means of the clusters; an empty cluster takes half of the largest one: both get its centroid,
/// nudged apart (faiss' repair), so K never shrinks.
pub fn update_centroids(sums: &[f32], counts: &[f32], d: usize, rng: &mut Rng) -> Vec<f32> {
    let k = counts.len();
    let mut counts = counts.to_vec();
    let mut c: Vec<f32> = (0..k * d)
        .map(|i| {
            let n = counts[i / d];
            if n > 0.0 { sums[i] / n } else { 0.0 }
        })
        .collect();
    const EPS: f32 = 1.0 / 1024.0;
    for empty in 0..k {
        if counts[empty] > 0.0 {
            continue;
        }
        // Pick a cluster to split with probability proportional to its size beyond one.
        let total: f32 = counts.iter().map(|&n| (n - 1.0).max(0.0)).sum();
        if total <= 0.0 {
            break;
        }
        let mut r = rng.f32() * total;
        let mut big = 0;
        for (j, &n) in counts.iter().enumerate() {
            r -= (n - 1.0).max(0.0);
            if r < 0.0 {
                big = j;
                break;
            }
        }
        for t in 0..d {
            let v = c[big * d + t];
            let sign = if t % 2 == 0 { 1.0 } else { -1.0 };
            c[empty * d + t] = v * (1.0 + sign * EPS);
            c[big * d + t] = v * (1.0 - sign * EPS);
        }
        counts[empty] = counts[big] / 2.0;
        counts[big] -= counts[empty];
    }
    c
}

/// Best of `restarts` k-means runs (lowest inertia).
pub async fn kmeans_restarts(
    x: &Tensor<2>,
    x_host: &[f32],
    k: usize,
    iters: usize,
    restarts: usize,
    rng: &mut Rng,
) -> Result<KMeans, EngineError> {
    let mut best: Option<KMeans> = None;
    for _ in 0..restarts.max(1) {
        let run = kmeans(x, x_host, k, iters, rng).await?;
        if best.as_ref().is_none_or(|b| run.inertia < b.inertia) {
            best = Some(run);
        }
    }
    Ok(best.expect("at least one restart"))
}

/// Smallest concentration, as a fraction of tau.
pub const PHI_FLOOR: f32 = 0.05;

/// numpy's default (linear) percentile of unsorted values.
pub fn percentile(values: &[f32], q: f64) -> f32 {
    let mut v: Vec<f64> = values.iter().map(|&x| x as f64).collect();
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = q / 100.0 * (v.len() - 1) as f64;
    let lo = rank.floor() as usize;
    let hi = rank.ceil() as usize;
    (v[lo] + (v[hi] - v[lo]) * (rank - lo as f64)) as f32
}

/// Concentration phi per cluster, as main_pcl.py `run_kmeans`:
/// phi = mean_z ||v_z - c|| / log(Z + alpha) for clusters with more than one member; clusters of
/// at most one member get the largest phi; clipped to the 10th..90th percentile; scaled so that
/// mean(phi) = tau.
pub fn concentration(assignments: &[u32], sq_dist: &[f32], k: usize, tau: f64) -> Vec<f32> {
    const ALPHA: f64 = 10.0;
    let mut sum = vec![0f64; k];
    let mut count = vec![0usize; k];
    for (&a, &d) in assignments.iter().zip(sq_dist) {
        sum[a as usize] += (d.max(0.0) as f64).sqrt();
        count[a as usize] += 1;
    }
    let mut phi: Vec<f32> = (0..k)
        .map(|j| {
            if count[j] > 1 {
                (sum[j] / count[j] as f64 / (count[j] as f64 + ALPHA).ln()) as f32
            } else {
                0.0
            }
        })
        .collect();
    let max = phi.iter().cloned().fold(0.0, f32::max);
    for j in 0..k {
        if count[j] <= 1 {
            phi[j] = max;
        }
    }
    let (lo, hi) = (percentile(&phi, 10.0), percentile(&phi, 90.0));
    for p in phi.iter_mut() {
        *p = p.clamp(lo, hi);
    }
    let mean = phi.iter().map(|&p| p as f64).sum::<f64>() / k as f64;
    if mean > 0.0 {
        // Floor (not in the official code): a cluster whose members all coincide has phi = 0,
        // which would divide its logits by zero. At scale this never happens; on a few hundred
        // images with a collapsing early embedding it does, and the loss became NaN.
        for p in phi.iter_mut() {
            *p = ((tau * *p as f64 / mean) as f32).max(PHI_FLOOR * tau as f32);
        }
    } else {
        // Every cluster is a single point or all points coincide: fall back to tau.
        phi.iter_mut().for_each(|p| *p = tau as f32);
    }
    phi
}

/// Rows scaled to unit length (host).
pub fn normalize_rows(x: &mut [f32], d: usize) {
    for row in x.chunks_mut(d) {
        let n = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
        row.iter_mut().for_each(|v| *v /= n);
    }
}

/// One E-step level from features: k-means, phi, normalised prototypes.
pub async fn cluster_level(
    x: &Tensor<2>,
    x_host: &[f32],
    k: usize,
    iters: usize,
    restarts: usize,
    tau: f64,
    rng: &mut Rng,
) -> Result<Level, EngineError> {
    let d = x.dims()[1];
    let km = kmeans_restarts(x, x_host, k, iters, restarts, rng).await?;
    let phi = concentration(&km.assignments, &km.distances, k, tau);
    let mut sizes = vec![0usize; k];
    for &a in &km.assignments {
        sizes[a as usize] += 1;
    }
    let mut centroids = km.centroids;
    normalize_rows(&mut centroids, d);
    Ok(Level {
        k,
        assignments: km.assignments,
        centroids,
        phi,
        sizes,
        inertia: km.inertia,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coinciding_members_do_not_give_zero_concentration() {
        // Clusters 0..3 have members at distance 0 from their centroid; cluster 4 is spread.
        let assign = [0, 0, 1, 1, 2, 2, 3, 3, 4, 4];
        let d = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.5, 0.5];
        let phi = concentration(&assign, &d, 5, 0.2);
        assert!(
            phi.iter().all(|&p| p >= PHI_FLOOR * 0.2 && p.is_finite()),
            "{phi:?}"
        );
        assert!(phi[4] > phi[0]);
    }

    #[test]
    fn empty_clusters_are_refilled_by_splitting() {
        let mut rng = Rng::new(0);
        // Two clusters in 2-D: cluster 1 empty, cluster 0 holds 4 points summing to (4, 8).
        let c = update_centroids(&[4.0, 8.0, 0.0, 0.0], &[4.0, 0.0], 2, &mut rng);
        assert_ne!(c[0..2], c[2..4], "the split centroids differ");
        assert!(
            (c[0] - 1.0).abs() < 0.01 && (c[3] - 2.0).abs() < 0.01,
            "{c:?}"
        );
    }
}

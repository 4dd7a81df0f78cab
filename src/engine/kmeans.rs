//! One file, over 500 lines: seeding, Lloyd and phi share `Points` and are tested together.
//!
//! The E-step's clustering: k-means (k-means++ init, Lloyd iterations on the device or, where a
//! pass is small, on the host; empty clusters repaired by splitting the largest, several restarts
//! keeping the lowest inertia) and the concentration phi of every cluster exactly as the official
//! PCL code computes it.

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::bounded;
use super::config::MAX_FEATURE_DIM;
use super::error::EngineError;
use super::params::read_all;
use super::rng::Rng;
use super::tiled::{TILE_BYTES, Tiled};
use crate::intake::MAX_IMAGES;

/// One level of a clustering, as the E-step returns it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Level {
    pub k: usize,
    /// Cluster of every image.
    #[serde(deserialize_with = "bounded::vec::<_, _, MAX_IMAGES>")]
    pub assignments: Vec<u32>,
    /// L2-normalised prototypes, row-major [k, d].
    #[serde(deserialize_with = "bounded::vec::<_, _, { MAX_IMAGES * MAX_FEATURE_DIM }>")]
    pub centroids: Vec<f32>,
    /// Concentration (temperature) of every prototype.
    #[serde(deserialize_with = "bounded::vec::<_, _, MAX_IMAGES>")]
    pub phi: Vec<f32>,
    #[serde(deserialize_with = "bounded::vec::<_, _, MAX_IMAGES>")]
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
    /// Centroid updates run (fewer than asked when the assignments settled).
    pub iterations: usize,
}

/// Largest [rows, k] score block computed at once: small enough to stay in cache on the CPU and
/// keep memory flat for big N x K, large enough that a GPU gets few dispatches.
const BLOCK_ELEMS: usize = 1 << 20;

/// k-means++ seeding on the host: each next centre drawn with probability proportional to the
/// squared distance to the nearest centre chosen so far.
///
/// Exact, but pruned by the triangle inequality (Raff, "Exact acceleration of k-means++ and
/// k-means||", 2021): no member of a centre `a` can be nearer to a new centre `c` than to `a`
/// when |c - a| >= 2 |x - a| for its farthest member `x`, so whole groups are skipped. The draw
/// walks per-block sums instead of all N distances. At K = 1000 this is several times faster than
/// the plain N x K loop and draws the same centres.
pub fn kmeans_pp(x: &[f32], d: usize, k: usize, rng: &mut Rng) -> Vec<f32> {
    const BLOCK: usize = 64;
    let n = x.len() / d;
    let row = |i: usize| &x[i * d..(i + 1) * d];
    let mut centroids = Vec::with_capacity(k * d);
    let first = rng.below(n);
    centroids.extend_from_slice(row(first));
    // best[i]: squared distance of point i to its nearest centre so far.
    let mut best: Vec<f32> = (0..n).map(|i| sq(row(i), row(first))).collect();
    let mut block_sum: Vec<f64> = best
        .chunks(BLOCK)
        .map(|b| b.iter().map(|&v| v as f64).sum())
        .collect();
    // Members of every centre (stale entries are dropped when a group is next walked) and an
    // upper bound of their `best`.
    let mut owner = vec![0u32; n];
    let mut members: Vec<Vec<u32>> = vec![(0..n as u32).collect()];
    let mut radius: Vec<f32> = vec![best.iter().cloned().fold(0.0, f32::max)];
    for j in 1..k {
        let total: f64 = block_sum.iter().sum();
        let pick = if total <= 0.0 {
            rng.below(n)
        } else {
            let mut target = rng.f32() as f64 * total;
            let mut pick = n - 1;
            'draw: for (b, &bs) in block_sum.iter().enumerate() {
                if target >= bs {
                    target -= bs;
                    continue;
                }
                for (i, &v) in best[b * BLOCK..((b + 1) * BLOCK).min(n)].iter().enumerate() {
                    target -= v as f64;
                    if target < 0.0 {
                        pick = b * BLOCK + i;
                        break 'draw;
                    }
                }
            }
            pick
        };
        let c = row(pick).to_vec();
        let mut moved = Vec::new();
        for a in 0..j {
            // |c - a|^2 / 4 >= |x - a|^2 for every member x: none can move (1e-4: rounding margin).
            let gap = sq(&centroids[a * d..(a + 1) * d], &c) * 0.25;
            if gap > radius[a] * (1.0 + 1e-4) {
                continue;
            }
            let mut keep = Vec::with_capacity(members[a].len());
            let mut new_radius = 0f32;
            for &i in &members[a] {
                let iu = i as usize;
                if owner[iu] != a as u32 {
                    continue; // moved to a later centre earlier on
                }
                if gap <= best[iu] * (1.0 + 1e-4) {
                    let dist = sq(row(iu), &c);
                    if dist < best[iu] {
                        block_sum[iu / BLOCK] -= (best[iu] - dist) as f64;
                        best[iu] = dist;
                        owner[iu] = j as u32;
                        moved.push(i);
                        continue;
                    }
                }
                new_radius = new_radius.max(best[iu]);
                keep.push(i);
            }
            members[a] = keep;
            radius[a] = new_radius;
        }
        radius.push(moved.iter().map(|&i| best[i as usize]).fold(0.0, f32::max));
        members.push(moved);
        centroids.extend_from_slice(&c);
    }
    centroids
}

/// Points k-means++ seeds from: all of them up to this many, else a random subset of
/// `max(SEED_SAMPLE, 3 K)` (scikit-learn's MiniBatchKMeans seeds from 3 K points). The Lloyd
/// iterations that follow see every point; at N = 10,000, K = 1000 the seeding is a third of the
/// time it was on all points and the final inertia within 0.1%.
pub const SEED_SAMPLE: usize = 4096;

/// k-means++ centres from all of `x` or, when it is large, from a random subset.
pub fn seed_centroids(x: &[f32], d: usize, k: usize, rng: &mut Rng) -> Vec<f32> {
    let n = x.len() / d;
    let m = SEED_SAMPLE.max(3 * k);
    if n <= m {
        return kmeans_pp(x, d, k, rng);
    }
    let mut picked = rng.permutation(n);
    picked.truncate(m);
    picked.sort_unstable(); // memory order: the distance loops stream through the rows
    let sample: Vec<f32> = picked
        .iter()
        .flat_map(|&i| x[i * d..(i + 1) * d].iter().copied())
        .collect();
    kmeans_pp(&sample, d, k, rng)
}

/// Squared Euclidean distance: explicit AVX2 + FMA on x86-64 CPUs that have it (picked at run
/// time; the portable loop stayed scalar at this crate's optimisation level, 2.5x slower in the
/// seeding), else sixteen independent lanes (a plain float sum must keep its order).
pub fn sq(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has the features `sq_avx2` is compiled for.
        return unsafe { sq_avx2(a, b) };
    }
    sq_lanes(a, b)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn sq_avx2(a: &[f32], b: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let n = a.len().min(b.len());
    let mut acc0 = _mm256_setzero_ps();
    let mut acc1 = _mm256_setzero_ps();
    let mut i = 0;
    // SAFETY: every load reads 8 floats below `n`, inside both slices.
    unsafe {
        while i + 16 <= n {
            let t0 = _mm256_sub_ps(
                _mm256_loadu_ps(a.as_ptr().add(i)),
                _mm256_loadu_ps(b.as_ptr().add(i)),
            );
            let t1 = _mm256_sub_ps(
                _mm256_loadu_ps(a.as_ptr().add(i + 8)),
                _mm256_loadu_ps(b.as_ptr().add(i + 8)),
            );
            acc0 = _mm256_fmadd_ps(t0, t0, acc0);
            acc1 = _mm256_fmadd_ps(t1, t1, acc1);
            i += 16;
        }
        let mut lanes = [0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), _mm256_add_ps(acc0, acc1));
        lanes.iter().sum::<f32>() + sq_lanes(&a[i..n], &b[i..n])
    }
}

#[inline(always)]
fn sq_lanes(a: &[f32], b: &[f32]) -> f32 {
    const L: usize = 16;
    let mut acc = [0f32; L];
    let (ca, cb) = (a.chunks_exact(L), b.chunks_exact(L));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(p, q)| (p - q) * (p - q))
        .sum();
    for (pa, pb) in ca.zip(cb) {
        let pa: &[f32; L] = pa.try_into().expect("chunk of L");
        let pb: &[f32; L] = pb.try_into().expect("chunk of L");
        for i in 0..L {
            let t = pa[i] - pb[i];
            acc[i] += t * t;
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Nearest centroid of every row of `x`: (assignments [n], |c|^2 - 2 x.c of it [n]) on the
/// device; adding |x|^2 gives the squared distance.
///
/// `x_aug` is `x` with a column of ones ([n, d + 1], in row tiles); the centroids go in as
/// `[-2 c | |c|^2]`, transposed ([d + 1, k], in column tiles where that is over a tile's
/// bytes), so one matmul gives the scores and their row minimum is the nearest centroid.
fn assign(x_aug: &Tiled, centroids: &[f32], k: usize) -> (Tensor<1, Int>, Tensor<1>) {
    let [_, d1] = x_aug.dims();
    let d = d1 - 1;
    let device = x_aug.tiles()[0].1.device();
    let per = (TILE_BYTES / (4 * d1)).clamp(1, k);
    let cts: Vec<Tensor<2>> = (0..k)
        .step_by(per)
        .map(|j0| {
            let j1 = (j0 + per).min(k);
            let mut ct = vec![0f32; d1 * (j1 - j0)];
            for (j, c) in centroids[j0 * d..j1 * d].chunks_exact(d).enumerate() {
                for (t, &v) in c.iter().enumerate() {
                    ct[t * (j1 - j0) + j] = -2.0 * v;
                }
                ct[d * (j1 - j0) + j] = c.iter().map(|v| v * v).sum();
            }
            Tensor::<2>::from_data(TensorData::new(ct, [d1, j1 - j0]), &device) // [d + 1, j1 - j0]
        })
        .collect();
    let rows = (BLOCK_ELEMS / k).max(1);
    let mut ids = Vec::new();
    let mut best_scores = Vec::new();
    for (_, xb) in x_aug.row_blocks(rows) {
        let b = xb.dims()[0]; // xb: [b, d + 1]
        let score = Tensor::cat(
            cts.iter().map(|ct| xb.clone().matmul(ct.clone())).collect(),
            1,
        ); // score: [b, k] = |c|^2 - 2 x.c
        let (min, arg) = score.min_dim_with_indices(1); // min, arg: [b, 1]
        ids.push(arg.reshape([b]));
        best_scores.push(min.reshape([b]));
    }
    (Tensor::cat(ids, 0), Tensor::cat(best_scores, 0))
}

/// Nearest centroid of every host row: (assignments [n], squared distances [n]). Used where the
/// whole pass is small (see [`HOST_ASSIGN_MAX_WORK`]): there a device pass costs more in its
/// readback than in arithmetic.
fn assign_host(x: &[f32], d: usize, centroids: &[f32]) -> (Vec<u32>, Vec<f32>) {
    x.chunks_exact(d)
        .map(|row| {
            let mut best = (0u32, f32::INFINITY);
            for (j, c) in centroids.chunks_exact(d).enumerate() {
                let dist = sq(row, c);
                if dist < best.1 {
                    best = (j as u32, dist);
                }
            }
            best
        })
        .unzip()
}

/// Assignment passes of at most this many multiply-adds (n k d) run on the host. The
/// evaluation's k-means (K = classes, 30 restarts) is of this size: on WebGPU each device pass
/// waited for its own readback, one per Lloyd iteration, which doubled the explorer's time on
/// SwiftShader; on the host the sample set's pass (1,870 x 9 x 128) is about a millisecond.
const HOST_ASSIGN_MAX_WORK: usize = 1 << 22;

/// An update that lowers the inertia by less than this fraction ends the iterations: Lloyd's tail
/// creeps (each further update gains less than the last) and the prototypes are rebuilt every
/// epoch anyway. On the benchmark's N = 10,000, K = 1000 the updates gained 42%, 0.22%, 0.041%,
/// 0.015%, 0.005%: it stops after 3 updates (2 assignment passes fewer than at 1e-4) at an
/// inertia 0.02% above the settled one and 0.1% below faiss' after its 7 iterations.
const SETTLED_GAIN: f64 = 1e-3;

/// The points to cluster, prepared once per E-step for every level and restart: the host copy
/// (seeding, means), every row's squared norm and, built by the first device pass (so levels
/// that run on the host never make it), the device copy with a column of ones (`[x | 1]`, what
/// [`assign`] multiplies) in row tiles.
pub struct Points<'a> {
    device: Device,
    aug: std::cell::OnceCell<Tiled>,
    host: &'a [f32],
    sq_norms: Vec<f32>,
    n: usize,
    d: usize,
}

impl<'a> Points<'a> {
    /// `host`: [n, d] row-major; `device`: where the assignment passes run.
    pub fn new(host: &'a [f32], d: usize, device: &Device) -> Result<Self, EngineError> {
        if d == 0 || !host.len().is_multiple_of(d) {
            return Err(EngineError::Shape(format!(
                "k-means points: {} values are not rows of {d}",
                host.len()
            )));
        }
        let sq_norms = host
            .chunks_exact(d)
            .map(|r| r.iter().map(|v| v * v).sum())
            .collect();
        Ok(Self {
            device: device.clone(),
            aug: std::cell::OnceCell::new(),
            host,
            sq_norms,
            n: host.len() / d,
            d,
        })
    }

    /// `[x | 1]`: [n, d + 1].
    fn augmented(&self) -> &Tiled {
        self.aug
            .get_or_init(|| Tiled::from_host(self.host, self.d, true, &self.device))
    }
}

/// Lloyd's k-means of the prepared points. At most `iters` updates; stops early once an
/// assignment step changes nothing (the next update would give the same centroids) or lowers the
/// inertia by less than `SETTLED_GAIN`.
pub async fn kmeans(
    points: &Points<'_>,
    k: usize,
    iters: usize,
    rng: &mut Rng,
) -> Result<KMeans, EngineError> {
    // Saturating: on wasm32 (32-bit usize) 50,000 images x K = 5,000 x 128 would overflow.
    let work = points.n.saturating_mul(k).saturating_mul(points.d);
    let on_host = work <= HOST_ASSIGN_MAX_WORK;
    lloyd(points, k, iters, rng, on_host).await
}

/// [`kmeans`] with the assignment passes on the host or on the device.
async fn lloyd(
    points: &Points<'_>,
    k: usize,
    iters: usize,
    rng: &mut Rng,
    on_host: bool,
) -> Result<KMeans, EngineError> {
    let Points {
        host: x_host,
        sq_norms: x_sq,
        n,
        d,
        ..
    } = points;
    let (n, d, x_host) = (*n, *d, *x_host);
    if k == 0 || k > n {
        return Err(EngineError::Config(format!(
            "k-means with K = {k} on {n} points: K must be in 1..={n}"
        )));
    }
    let mut centroids = seed_centroids(x_host, d, k, rng);
    let mut previous: Option<Vec<u32>> = None;
    let mut previous_inertia = f64::INFINITY;
    let mut iter = 0;
    loop {
        let (assignments, distances) = if on_host {
            assign_host(x_host, d, &centroids)
        } else {
            let (ids, scores) = assign(points.augmented(), &centroids, k);
            let host = read_all(vec![ids.float(), scores]).await?;
            let distances: Vec<f32> = host[1]
                .iter()
                .zip(x_sq)
                .map(|(s, q)| (s + q).max(0.0))
                .collect();
            (host[0].iter().map(|&v| v as u32).collect(), distances)
        };
        // The means are summed on the host: O(n d), far cheaper than a [k, n] x [n, d] one-hot
        // product on the device.
        let mut sums = vec![0f32; k * d];
        let mut counts = vec![0f32; k];
        for (i, &a) in assignments.iter().enumerate() {
            let a = a as usize;
            counts[a] += 1.0;
            for (s, v) in sums[a * d..(a + 1) * d]
                .iter_mut()
                .zip(&x_host[i * d..(i + 1) * d])
            {
                *s += v;
            }
        }
        let inertia: f64 = distances.iter().map(|&v| v as f64).sum();
        let settled = (previous.as_ref() == Some(&assignments)
            || previous_inertia - inertia < SETTLED_GAIN * inertia)
            && counts.iter().all(|&c| c > 0.0);
        previous_inertia = inertia;
        if iter == iters || settled {
            return Ok(KMeans {
                assignments,
                distances,
                centroids,
                inertia,
                iterations: iter,
            });
        }
        centroids = update_centroids(&sums, &counts, d, rng);
        previous = Some(assignments);
        iter += 1;
    }
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
    points: &Points<'_>,
    k: usize,
    iters: usize,
    restarts: usize,
    rng: &mut Rng,
) -> Result<KMeans, EngineError> {
    let mut best: Option<KMeans> = None;
    for _ in 0..restarts.max(1) {
        let run = kmeans(points, k, iters, rng).await?;
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
    points: &Points<'_>,
    k: usize,
    iters: usize,
    restarts: usize,
    tau: f64,
    rng: &mut Rng,
) -> Result<Level, EngineError> {
    let d = points.d;
    let km = kmeans_restarts(points, k, iters, restarts, rng).await?;
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

    /// Plain k-means++ (every point's distance to every new centre), the reference for the
    /// pruned version.
    fn plain_kmeans_pp(x: &[f32], d: usize, k: usize, rng: &mut Rng) -> Vec<f32> {
        let n = x.len() / d;
        let row = |i: usize| &x[i * d..(i + 1) * d];
        let first = rng.below(n);
        let mut centroids = row(first).to_vec();
        let mut best: Vec<f32> = (0..n).map(|i| sq(row(i), row(first))).collect();
        for _ in 1..k {
            let total: f64 = best.iter().map(|&v| v as f64).sum();
            let mut target = rng.f32() as f64 * total;
            let mut pick = n - 1;
            for (i, &v) in best.iter().enumerate() {
                target -= v as f64;
                if target < 0.0 {
                    pick = i;
                    break;
                }
            }
            let c = row(pick).to_vec();
            for (i, b) in best.iter_mut().enumerate() {
                *b = b.min(sq(row(i), &c));
            }
            centroids.extend_from_slice(&c);
        }
        centroids
    }

    #[test]
    fn pruned_seeding_draws_the_same_centres_as_plain_kmeans_pp() {
        let (n, d) = (600, 20);
        let mut rng = Rng::new(5);
        // Twelve blobs, so that pruning skips most groups.
        let blobs: Vec<f32> = (0..12 * d).map(|_| rng.range(-3.0, 3.0)).collect();
        let x: Vec<f32> = (0..n * d)
            .map(|i| blobs[(i / d % 12) * d + i % d] + rng.range(-0.5, 0.5))
            .collect();
        for k in [1, 7, 60, 300] {
            let pruned = kmeans_pp(&x, d, k, &mut Rng::new(k as u64));
            let plain = plain_kmeans_pp(&x, d, k, &mut Rng::new(k as u64));
            assert_eq!(pruned, plain, "K = {k}");
        }
    }

    #[test]
    fn host_and_device_assignment_passes_give_the_same_clustering() {
        // Three blobs in 16-d plus noise; both paths from the same seed.
        let (n, d, k) = (300, 16, 5);
        let mut rng = Rng::new(7);
        let x: Vec<f32> = (0..n * d)
            .map(|i| ((i / d) % 3) as f32 * 0.5 + rng.f32() - 0.5)
            .collect();
        let points = Points::new(&x, d, &Device::flex()).unwrap();
        let run = |on_host| {
            futures_lite::future::block_on(lloyd(&points, k, 20, &mut Rng::new(3), on_host))
                .unwrap()
        };
        let (host, device) = (run(true), run(false));
        assert_eq!(host.assignments, device.assignments);
        assert_eq!(host.iterations, device.iterations);
        assert!((host.inertia - device.inertia).abs() < 1e-3 * host.inertia);
        assert!(host.iterations > 0 && host.inertia > 0.0);
    }

    #[test]
    fn centroids_over_a_tile_are_tiled_and_give_the_host_assignment() {
        // 20,000 centroids of 1,024 dims: [d + 1, K] is 82 MB, three column tiles.
        let (n, d, k) = (64, 1024, 20_000);
        let mut rng = Rng::new(5);
        let x: Vec<f32> = (0..n * d).map(|_| rng.f32() - 0.5).collect();
        let c: Vec<f32> = (0..k * d).map(|_| rng.f32() - 0.5).collect();
        assert!((d + 1) * k * 4 > 2 * TILE_BYTES);
        let tiled = Tiled::from_host(&x, d, true, &Device::flex());
        let (ids, scores) = assign(&tiled, &c, k);
        let ids: Vec<u32> = ids
            .into_data()
            .convert::<i64>()
            .iter::<i64>()
            .map(|v| v as u32)
            .collect();
        let scores: Vec<f32> = scores.into_data().try_to_vec().unwrap();
        let (want, dist) = assign_host(&x, d, &c);
        assert_eq!(ids, want);
        for (i, (s, w)) in scores.iter().zip(&dist).enumerate() {
            let got = s + x[i * d..(i + 1) * d].iter().map(|v| v * v).sum::<f32>();
            assert!(
                (got - w).abs() < 1e-2 * w.max(1.0),
                "row {i}: {got} against {w}"
            );
        }
    }

    #[test]
    fn points_name_both_sizes_when_the_values_are_not_whole_rows() {
        let err = Points::new(&[0.0; 10], 3, &Device::flex())
            .err()
            .expect("a size mismatch");
        let msg = err.to_string();
        assert!(
            msg.contains("10 values") && msg.contains("rows of 3"),
            "{msg}"
        );
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

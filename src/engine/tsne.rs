//! t-SNE (van der Maaten and Hinton, 2008), exact gradients, for the page's second map: up to a few
//! thousand points, run in slices of iterations so the worker can report progress and answer
//! messages between them. Settings as scikit-learn's defaults: perplexity 30, early
//! exaggeration 12 for the first 250 of 1,000 iterations, momentum 0.5 then 0.8, learning
//! rate max(n / 12 / 4, 50), PCA initialisation scaled to a standard deviation of 1e-4.

use super::rng::Rng;

/// Most points the page lays out with t-SNE: each iteration is quadratic in them, and the
/// affinities take n^2 floats (36 MB at this bound).
pub const MAX_POINTS: usize = 3000;

pub struct Tsne {
    n: usize,
    /// Symmetric joint probabilities, row-major [n, n].
    p: Vec<f32>,
    y: Vec<[f64; 2]>,
    velocity: Vec<[f64; 2]>,
    gains: Vec<[f64; 2]>,
    pub iteration: usize,
    pub iterations: usize,
    learning_rate: f64,
}

const EXAGGERATION: f64 = 12.0;
const EXAGGERATION_ITERS: usize = 250;

impl Tsne {
    /// The affinities of `x` ([n, d] rows) and a starting layout `init` (e.g. the PCA map).
    pub fn new(x: &[f32], d: usize, init: &[[f32; 2]], perplexity: f64) -> Result<Self, String> {
        let n = x.len() / d.max(1);
        if !(4..=MAX_POINTS).contains(&n) || init.len() != n {
            return Err(format!(
                "t-SNE lays out 4 to {MAX_POINTS} points with a starting layout each ({n} given)"
            ));
        }
        let perplexity = perplexity.min((n - 1) as f64 / 3.0);
        let mut dist = vec![0f32; n * n];
        for i in 0..n {
            let xi = &x[i * d..(i + 1) * d];
            for j in i + 1..n {
                let xj = &x[j * d..(j + 1) * d];
                let s: f32 = xi.iter().zip(xj).map(|(a, b)| (a - b) * (a - b)).sum();
                dist[i * n + j] = s;
                dist[j * n + i] = s;
            }
        }
        let mut p = vec![0f32; n * n];
        let target = perplexity.ln();
        // Each point's conditional distribution over its 3 x perplexity nearest neighbours
        // (as scikit-learn's Barnes-Hut method takes it): the rest would get almost nothing.
        let k = ((3.0 * perplexity) as usize + 1).min(n - 1);
        let mut near: Vec<(f32, usize)> = Vec::with_capacity(n);
        let mut probs = vec![0f64; k];
        for i in 0..n {
            near.clear();
            near.extend((0..n).filter(|&j| j != i).map(|j| (dist[i * n + j], j)));
            near.select_nth_unstable_by(k - 1, |a, b| a.0.total_cmp(&b.0));
            let near = &near[..k];
            // Binary search of the precision beta = 1 / (2 sigma^2) for the perplexity,
            // distances shifted by the nearest for stability.
            let d0 = near.iter().map(|x| x.0).fold(f32::INFINITY, f32::min) as f64;
            let (mut beta, mut lo, mut hi) = (1.0f64, 0.0f64, f64::INFINITY);
            for _ in 0..100 {
                let mut sum = 0.0;
                let mut weighted = 0.0;
                for (v, &(dj, _)) in probs.iter_mut().zip(near) {
                    let dd = dj as f64 - d0;
                    *v = (-dd * beta).exp();
                    sum += *v;
                    weighted += dd * *v;
                }
                let sum = sum.max(1e-300);
                let entropy = beta * weighted / sum + sum.ln();
                for v in probs.iter_mut() {
                    *v /= sum;
                }
                if (entropy - target).abs() < 1e-5 {
                    break;
                }
                if entropy > target {
                    lo = beta;
                    beta = if hi.is_finite() {
                        (beta + hi) / 2.0
                    } else {
                        beta * 2.0
                    };
                } else {
                    hi = beta;
                    beta = (beta + lo) / 2.0;
                }
            }
            for (&v, &(_, j)) in probs.iter().zip(near) {
                p[i * n + j] = v as f32;
            }
        }
        for i in 0..n {
            for j in i + 1..n {
                let v = ((p[i * n + j] + p[j * n + i]) / (2.0 * n as f32)).max(1e-12);
                p[i * n + j] = v;
                p[j * n + i] = v;
            }
        }
        // PCA start, scaled to a standard deviation of 1e-4 (scikit-learn's init="pca").
        let mean = |k: usize| init.iter().map(|p| p[k] as f64).sum::<f64>() / n as f64;
        let (m0, m1) = (mean(0), mean(1));
        let sd = (init.iter().map(|p| (p[0] as f64 - m0).powi(2)).sum::<f64>() / n as f64)
            .sqrt()
            .max(1e-12);
        let mut rng = Rng::new(0);
        let y = init
            .iter()
            .map(|p| {
                // A tiny jitter keeps coincident points apart.
                let j = 1e-8 * (rng.f32() as f64 - 0.5);
                [
                    (p[0] as f64 - m0) / sd * 1e-4 + j,
                    (p[1] as f64 - m1) / sd * 1e-4 - j,
                ]
            })
            .collect();
        Ok(Self {
            n,
            p,
            y,
            velocity: vec![[0.0; 2]; n],
            gains: vec![[1.0; 2]; n],
            iteration: 0,
            iterations: 1000,
            learning_rate: (n as f64 / EXAGGERATION / 4.0).max(50.0),
        })
    }

    pub fn done(&self) -> bool {
        self.iteration >= self.iterations
    }

    /// Up to `count` more iterations of gradient descent (with gains, as the reference does).
    pub fn run(&mut self, count: usize) {
        let n = self.n;
        let mut grad = vec![[0f64; 2]; n];
        let kernel = |a: [f64; 2], b: [f64; 2]| {
            let (dx, dy) = (a[0] - b[0], a[1] - b[1]);
            1.0 / (1.0 + dx * dx + dy * dy)
        };
        for _ in 0..count {
            if self.done() {
                return;
            }
            let exaggeration = if self.iteration < EXAGGERATION_ITERS {
                EXAGGERATION
            } else {
                1.0
            };
            let momentum = if self.iteration < EXAGGERATION_ITERS {
                0.5
            } else {
                0.8
            };
            // The Student-t kernel is computed twice (for its sum, then per pair) rather than
            // kept: an n x n buffer would double the memory.
            let mut z = 0.0;
            for i in 0..n {
                for j in i + 1..n {
                    z += 2.0 * kernel(self.y[i], self.y[j]);
                }
            }
            for g in grad.iter_mut() {
                *g = [0.0; 2];
            }
            for i in 0..n {
                for j in i + 1..n {
                    let v = kernel(self.y[i], self.y[j]);
                    let f = 4.0 * (exaggeration * self.p[i * n + j] as f64 - v / z) * v;
                    let dx = f * (self.y[i][0] - self.y[j][0]);
                    let dy = f * (self.y[i][1] - self.y[j][1]);
                    grad[i][0] += dx;
                    grad[i][1] += dy;
                    grad[j][0] -= dx;
                    grad[j][1] -= dy;
                }
            }
            let lr = self.learning_rate;
            let points = self
                .gains
                .iter_mut()
                .zip(&mut self.velocity)
                .zip(&mut self.y);
            for (((gains, velocity), y), grad) in points.zip(&grad) {
                let coords = gains.iter_mut().zip(velocity.iter_mut()).zip(y.iter_mut());
                for (((gain, v), y), &d) in coords.zip(grad) {
                    // Gains grow where the gradient turns against the step, shrink elsewhere.
                    let same = (d > 0.0) == (*v > 0.0);
                    *gain = if same { *gain * 0.8 } else { *gain + 0.2 }.max(0.01);
                    *v = momentum * *v - lr * *gain * d;
                    *y += *v;
                }
            }
            self.iteration += 1;
        }
    }

    /// The layout so far.
    pub fn layout(&self) -> Vec<[f32; 2]> {
        self.y.iter().map(|p| [p[0] as f32, p[1] as f32]).collect()
    }
}

/// Leave-one-out kNN accuracy of `labels` on a 2-D layout (Euclidean, majority of `k`, ties to
/// the nearer): how well a map keeps the classes apart.
pub fn knn_2d(points: &[[f32; 2]], labels: &[u32], k: usize) -> f64 {
    let n = points.len().min(labels.len());
    if n < 2 {
        return 0.0;
    }
    let classes = labels.iter().max().map_or(1, |&m| m as usize + 1);
    let mut right = 0;
    for i in 0..n {
        let mut near: Vec<(f32, usize)> = (0..n)
            .filter(|&j| j != i)
            .map(|j| {
                let (dx, dy) = (points[i][0] - points[j][0], points[i][1] - points[j][1]);
                (dx * dx + dy * dy, j)
            })
            .collect();
        let k = k.clamp(1, near.len());
        near.select_nth_unstable_by(k - 1, |a, b| a.0.total_cmp(&b.0));
        near[..k].sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut votes = vec![0usize; classes];
        for &(_, j) in &near[..k] {
            votes[labels[j] as usize] += 1;
        }
        let best = votes.iter().max().copied().unwrap_or(0);
        let pick = near[..k]
            .iter()
            .map(|&(_, j)| labels[j])
            .find(|&l| votes[l as usize] == best)
            .unwrap_or(0);
        right += usize::from(pick == labels[i]);
    }
    right as f64 / n as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tsne_separates_three_clusters_that_pca_mixes() {
        // Three tight groups in 10-D; a start that piles them together. t-SNE pulls them apart.
        let mut rng = Rng::new(3);
        let (per, d) = (30, 10);
        let mut x = Vec::new();
        let mut labels = Vec::new();
        for c in 0..3 {
            for _ in 0..per {
                for k in 0..d {
                    let centre = if k == c { 1.0 } else { 0.0 };
                    x.push(centre + 0.05 * (rng.f32() - 0.5));
                }
                labels.push(c as u32);
            }
        }
        let n = 3 * per;
        let init: Vec<[f32; 2]> = (0..n).map(|_| [rng.f32(), rng.f32()]).collect();
        let start = knn_2d(&init, &labels, 5);
        let mut t = Tsne::new(&x, d, &init, 30.0).unwrap();
        while !t.done() {
            t.run(100);
        }
        let layout = t.layout();
        assert!(layout.iter().all(|p| p[0].is_finite() && p[1].is_finite()));
        let after = knn_2d(&layout, &labels, 5);
        assert!(start < 0.6, "the random start mixes the groups ({start})");
        assert!(after > 0.95, "t-SNE separates them ({after})");
        assert!(Tsne::new(&x[..3 * d], d, &init[..3], 30.0).is_err());
    }
}

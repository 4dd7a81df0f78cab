//! Normalisation over ghost batches: BatchNorm with the statistics of each chunk of the batch in
//! training mode and running statistics in evaluation mode, or GroupNorm; and the permutation of
//! the key batch across the chunks (shuffled BN) with its inverse.

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::activation::relu;

use crate::engine::rng::Rng;

/// Momentum of the running statistics (PyTorch's BatchNorm default).
pub const BN_MOMENTUM: f64 = 0.1;
pub(super) const EPSILON: f64 = 1e-5;

/// Eight groups where the channels allow (GroupNorm's usual choice), fewer for tiny widths.
pub(super) fn groups_for(channels: usize) -> usize {
    (1..=8)
        .rev()
        .find(|&g| channels.is_multiple_of(g))
        .unwrap_or(1)
}

/// BatchNorm (`groups == 0`) or GroupNorm (`groups` groups of channels), with the affine
/// parameters and BatchNorm's running statistics. The running statistics are parameters without
/// gradient, so checkpoints and exports carry them; SGD leaves them alone (no gradient) and the
/// key encoder keeps its own (`Encoder::running_stats`).
#[derive(Module, Debug)]
pub struct Norm {
    pub(super) gamma: Param<Tensor<1>>,
    pub(super) beta: Param<Tensor<1>>,
    pub(super) running_mean: Param<Tensor<1>>,
    pub(super) running_var: Param<Tensor<1>>,
    pub(super) groups: usize,
}

impl Norm {
    pub(super) fn new(channels: usize, groups: usize, device: &Device) -> Self {
        let fixed = |t: Tensor<1>| Param::initialized(burn::module::ParamId::new(), t);
        Self {
            gamma: Param::from_tensor(Tensor::ones([channels], device)),
            beta: Param::from_tensor(Tensor::zeros([channels], device)),
            running_mean: fixed(Tensor::zeros([channels], device)),
            running_var: fixed(Tensor::ones([channels], device)),
            groups,
        }
    }

    pub(super) fn channels(&self) -> usize {
        self.gamma.dims()[0]
    }

    /// Evaluation mode's scale and shift [1, 1, c], from the running statistics.
    pub(super) fn eval_scale_shift(&self) -> (Tensor<3>, Tensor<3>) {
        let c = self.channels();
        scale_shift(
            self,
            self.running_mean.val().reshape([1, 1, c]),
            self.running_var.val().reshape([1, 1, c]),
        )
    }
}

/// How the normalisation layers compute their statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Batch statistics per chunk of `chunks` equal chunks of the batch (BatchNorm's training
    /// mode over ghost batches); the batch size must be a multiple of `chunks`.
    Train { chunks: usize },
    /// Running statistics (BatchNorm's evaluation mode).
    Eval,
}

/// Per normalisation layer, the batch mean and unbiased variance [c] of one training forward
/// pass, averaged over its chunks (empty for GroupNorm): the input to the running statistics.
pub type BatchStats = Vec<(Tensor<1>, Tensor<1>)>;

/// The largest divisor of `n` that is at most `chunks` (at least 1): ghost batches are equal.
pub(crate) fn chunks_for(n: usize, chunks: usize) -> usize {
    (1..=chunks.max(1).min(n.max(1)))
        .rev()
        .find(|&c| n.is_multiple_of(c))
        .unwrap_or(1)
}

/// Normalisation then ReLU on [n, c, h, w], with the normalisation folded into one scale and
/// shift per (image or chunk, channel): y = relu(x * a + b), a = gamma / sqrt(var + eps),
/// b = beta - mean * a, var = E[x^2] - mean^2. Returns the batch statistics in training mode.
pub(super) fn norm_relu(
    norm: &Norm,
    x: Tensor<4>,
    mode: Mode,
) -> (Tensor<4>, Option<(Tensor<1>, Tensor<1>)>) {
    let [n, c, h, w] = x.dims(); // x: [n, c, h, w]
    if norm.groups > 0 {
        let g = norm.groups;
        let per = c / g;
        let xg = x.reshape([n, g, per * h * w]); // xg: [n, g, per h w]
        let mean = xg.clone().mean_dim(2); // mean: [n, g, 1]
        let var = (xg.clone().square().mean_dim(2) - mean.clone().square()).clamp_min(0.0); // [n, g, 1]
        let per_channel = |t: Tensor<3>| t.repeat_dim(2, per).reshape([n, 1, c]); // [n, 1, c]
        let (a, b) = scale_shift(norm, per_channel(mean), per_channel(var)); // a, b: [n, 1, c]
        let y =
            xg.reshape([n, g, per, h * w]) * a.reshape([n, g, per, 1]) + b.reshape([n, g, per, 1]);
        return (relu(y.reshape([n, c, h, w])), None);
    }
    match mode {
        Mode::Eval => {
            let (a, b) = norm.eval_scale_shift(); // a, b: [1, 1, c]
            let y = x * a.reshape([1, c, 1, 1]) + b.reshape([1, c, 1, 1]);
            (relu(y), None)
        }
        Mode::Train { chunks } => {
            let chunks = chunks_for(n, chunks);
            let xc = x.reshape([chunks, n / chunks, c, h * w]); // xc: [C, n/C, c, hw]
            let mean = xc.clone().mean_dim(3).mean_dim(1); // mean: [C, 1, c, 1]
            let sq = xc.clone().square().mean_dim(3).mean_dim(1); // E[x^2]: [C, 1, c, 1]
            let var = (sq - mean.clone().square()).clamp_min(0.0); // var: [C, 1, c, 1]
            let count = (n / chunks * h * w) as f64;
            let stats = chunk_stats(
                mean.clone().reshape([chunks, c]),
                var.clone().reshape([chunks, c]),
                count,
            );
            let (a, b) = scale_shift(
                norm,
                mean.reshape([chunks, 1, c]),
                var.reshape([chunks, 1, c]),
            ); // [C, 1, c]
            let y = xc * a.reshape([chunks, 1, c, 1]) + b.reshape([chunks, 1, c, 1]);
            (relu(y.reshape([n, c, h, w])), Some(stats))
        }
    }
}

/// Batch mean and unbiased variance [c], averaged over chunks, detached: `mean`, `var` [C, c]
/// are the chunks' statistics over `count` values each.
pub(super) fn chunk_stats(mean: Tensor<2>, var: Tensor<2>, count: f64) -> (Tensor<1>, Tensor<1>) {
    let unbias = count / (count - 1.0).max(1.0);
    let c = mean.dims()[1];
    let m = mean.without_autodiff().mean_dim(0).reshape([c]);
    let v = var
        .without_autodiff()
        .mean_dim(0)
        .reshape([c])
        .mul_scalar(unbias);
    (m, v)
}

/// Mean and variance (any shape ending in channels, [.., c]) folded with gamma and beta into one
/// scale and shift of the same shape: a = gamma / sqrt(var + eps), b = beta - mean * a.
pub(super) fn scale_shift<const D: usize>(
    norm: &Norm,
    mean: Tensor<D>,
    var: Tensor<D>,
) -> (Tensor<D>, Tensor<D>) {
    let c = norm.channels();
    let mut shape = [1; D];
    shape[D - 1] = c;
    let rstd = var.add_scalar(EPSILON).sqrt().recip();
    let a = norm.gamma.val().reshape(shape) * rstd;
    let b = norm.beta.val().reshape(shape) - mean * a.clone();
    (a, b)
}

/// The permutation of a batch of `n` (a multiple of `chunks`) for the key encoder's forward
/// pass: `perm[j]` is the image at position j of the shuffled batch. Chunk c's images go to
/// chunk (c + s) mod C for a random shift s in 1..C, in random order within the chunk, so no key
/// is normalised in the same chunk as its query. With one chunk there is nothing to shuffle.
pub fn shuffle_for_bn(n: usize, chunks: usize, rng: &mut Rng) -> Vec<usize> {
    let chunks = chunks_for(n, chunks);
    if chunks < 2 {
        return (0..n).collect();
    }
    let size = n / chunks;
    let shift = 1 + rng.below(chunks - 1);
    let mut perm = vec![0; n];
    for c in 0..chunks {
        let mut members: Vec<usize> = (c * size..(c + 1) * size).collect();
        rng.shuffle(&mut members);
        let to = (c + shift) % chunks;
        perm[to * size..(to + 1) * size].copy_from_slice(&members);
    }
    perm
}

/// The inverse of a permutation: `inv[perm[j]] = j`.
pub fn inverse_permutation(perm: &[usize]) -> Vec<usize> {
    let mut inv = vec![0; perm.len()];
    for (j, &i) in perm.iter().enumerate() {
        inv[i] = j;
    }
    inv
}

/// The batch in the order `perm` (`shuffle_for_bn`): image perm[j] at j.
pub fn shuffled(images: Tensor<4>, perm: &[usize]) -> Tensor<4> {
    let device = images.device();
    images.select(0, index(perm, &device)) // [n, 3, s, s]
}

/// Rows of the shuffled order `perm` put back in the batch's order.
pub fn unshuffled(rows: Tensor<2>, perm: &[usize]) -> Tensor<2> {
    let device = rows.device();
    rows.select(0, index(&inverse_permutation(perm), &device)) // [n, d]
}

fn index(p: &[usize], device: &Device) -> Tensor<1, Int> {
    let v: Vec<i32> = p.iter().map(|&i| i as i32).collect();
    Tensor::from_data(TensorData::new(v, [p.len()]), device)
}

/// The per-layer average of several slices' batch statistics, each weighted by its images.
pub(crate) fn mean_stats(slices: Vec<(usize, BatchStats)>) -> BatchStats {
    let total: usize = slices.iter().map(|(n, _)| n).sum();
    let mut it = slices.into_iter();
    let Some((n0, first)) = it.next() else {
        return Vec::new();
    };
    let scale = |s: BatchStats, n: usize| -> BatchStats {
        let w = n as f64 / total.max(1) as f64;
        s.into_iter()
            .map(|(m, v)| (m.mul_scalar(w), v.mul_scalar(w)))
            .collect()
    };
    it.fold(scale(first, n0), |acc, (n, s)| {
        acc.into_iter()
            .zip(scale(s, n))
            .map(|((m, v), (m2, v2))| (m + m2, v + v2))
            .collect()
    })
}

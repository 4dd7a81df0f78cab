//! The image encoder: a small CNN backbone and the MLP projection head of PCL v2. (Over 500
//! lines: one type, `Encoder`, with its normalisation and CPU path; splitting them is open.)
//!
//! Normalisation is BatchNorm over ghost batches by default (`NormKind::Batch`), as in the
//! official code: in training mode every chunk of the batch has its own statistics, and the
//! trainer permutes the key batch across chunks (`shuffle_for_bn`) so that no query meets its
//! key inside the same statistics (the intra-batch leak MoCo closes with shuffled BN across
//! GPUs). Evaluation mode (E-step, explorer, exports) uses running statistics. GroupNorm
//! (`NormKind::Group`) has no batch statistics and stays available as a setting.
//!
//! One file, over 500 lines: `Encoder` has two implementations of one forward pass (burn's ops,
//! and the CPU kernels' channels-last `rows`) that must stay equal, and their equality tests
//! sit beside both.

use burn::module::Param;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::relu;

use crate::engine::config::NormKind;
use crate::engine::kernels;
use crate::engine::rng::Rng;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EncoderConfig {
    /// Channels of the stem; the three stride-2 blocks give 2x, 4x, 8x this.
    pub width: usize,
    pub feature_dim: usize,
    #[serde(default)]
    pub norm: NormKind,
}

/// Momentum of the running statistics (PyTorch's BatchNorm default).
pub const BN_MOMENTUM: f64 = 0.1;
const EPSILON: f64 = 1e-5;

impl super::config::PclConfig {
    /// The encoder these settings train.
    pub fn encoder(&self) -> EncoderConfig {
        EncoderConfig::new(self.width, self.feature_dim).with_norm(self.norm)
    }
}

impl EncoderConfig {
    pub fn new(width: usize, feature_dim: usize) -> Self {
        Self {
            width,
            feature_dim,
            norm: NormKind::default(),
        }
    }

    pub fn with_norm(mut self, norm: NormKind) -> Self {
        self.norm = norm;
        self
    }

    pub fn backbone_dim(&self) -> usize {
        self.width * 8
    }

    pub fn init(&self, device: &Device) -> Encoder {
        self.init_with(device, None)
    }

    /// An encoder of zeros, for values that are loaded next: draws nothing from the device's
    /// random numbers, which a concurrent run's initialisation may be using.
    pub fn init_zeros(&self, device: &Device) -> Encoder {
        self.init_with(device, Some(burn::nn::Initializer::Zeros))
    }

    fn init_with(&self, device: &Device, fill: Option<burn::nn::Initializer>) -> Encoder {
        let w = self.width;
        let groups = match self.norm {
            NormKind::Batch => 0,
            NormKind::Group => 1,
        };
        let conv_default = Conv2dConfig::new([1, 1], [3, 3]).initializer;
        let linear_default = LinearConfig::new(1, 1).initializer;
        let linear = |i: usize, o: usize| {
            LinearConfig::new(i, o)
                .with_initializer(fill.clone().unwrap_or(linear_default.clone()))
                .init(device)
        };
        let block = |cin: usize, cout: usize, stride: usize| ConvBlock {
            conv: Conv2dConfig::new([cin, cout], [3, 3])
                .with_stride([stride, stride])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .with_bias(false)
                .with_initializer(fill.clone().unwrap_or(conv_default.clone()))
                .init(device),
            norm: Norm::new(cout, groups * groups_for(cout), device),
        };
        let d = self.backbone_dim();
        Encoder {
            stem: block(3, w, 1),
            blocks: vec![
                block(w, 2 * w, 2),
                block(2 * w, 4 * w, 2),
                block(4 * w, 8 * w, 2),
            ],
            head_hidden: linear(d, d),
            head_out: linear(d, self.feature_dim),
        }
    }
}

/// Eight groups where the channels allow (GroupNorm's usual choice), fewer for tiny widths.
fn groups_for(channels: usize) -> usize {
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
    gamma: Param<Tensor<1>>,
    beta: Param<Tensor<1>>,
    running_mean: Param<Tensor<1>>,
    running_var: Param<Tensor<1>>,
    groups: usize,
}

impl Norm {
    fn new(channels: usize, groups: usize, device: &Device) -> Self {
        let fixed = |t: Tensor<1>| Param::initialized(burn::module::ParamId::new(), t);
        Self {
            gamma: Param::from_tensor(Tensor::ones([channels], device)),
            beta: Param::from_tensor(Tensor::zeros([channels], device)),
            running_mean: fixed(Tensor::zeros([channels], device)),
            running_var: fixed(Tensor::ones([channels], device)),
            groups,
        }
    }

    fn channels(&self) -> usize {
        self.gamma.dims()[0]
    }

    /// Evaluation mode's scale and shift [1, 1, c], from the running statistics.
    fn eval_scale_shift(&self) -> (Tensor<3>, Tensor<3>) {
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

#[derive(Module, Debug)]
pub struct ConvBlock {
    conv: Conv2d,
    norm: Norm,
}

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
fn norm_relu(norm: &Norm, x: Tensor<4>, mode: Mode) -> (Tensor<4>, Option<(Tensor<1>, Tensor<1>)>) {
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
fn chunk_stats(mean: Tensor<2>, var: Tensor<2>, count: f64) -> (Tensor<1>, Tensor<1>) {
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
fn scale_shift<const D: usize>(
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

#[derive(Module, Debug)]
pub struct Encoder {
    stem: ConvBlock,
    blocks: Vec<ConvBlock>,
    head_hidden: Linear,
    head_out: Linear,
}

/// The encoder on the CPU backend, channels-last. flex multiplies per image and computes the
/// input gradient as a transposed convolution; here an activation is a row matrix [n h w, c],
/// every convolution gathers the nine taps of all the pixels of a slice and multiplies them by
/// the weight in one product, and normalisation + ReLU are two passes (`kernels.rs`: fused,
/// with their gradients). Values and gradients equal burn's ops (tested).
mod rows {
    use super::*;

    /// A [co, c, 3, 3] weight as the [9 c, co] matrix whose rows are in (ky, kx, c) order, the
    /// order of `kernels::conv3x3`'s gathered taps. Two copies with contiguous runs (a 2-d
    /// transpose, then whole rows of co): one 4-d permute walked element by element is slower.
    pub fn taps_major(weight: Tensor<4>) -> Tensor<2> {
        let [co, c, kh, kw] = weight.dims();
        let taps = kh * kw;
        weight
            .reshape([co, c * taps])
            .transpose() // [c taps, co]
            .reshape([c, taps, co])
            .swap_dims(0, 1) // [taps, c, co]
            .reshape([taps * c, co])
    }

    /// `norm_relu` on the rows [n hw, c] of n images; in training mode the slice holds whole
    /// chunks.
    pub fn norm_relu(
        norm: &Norm,
        x: Tensor<2>,
        n: usize,
        mode: Mode,
    ) -> (Tensor<2>, Option<(Tensor<1>, Tensor<1>)>) {
        let [rows, c] = x.dims();
        let hw = rows / n;
        let x3 = x.reshape([n, hw, c]); // x3: [n, hw, c]
        let per_image = |t: Tensor<3>, per: usize| t.repeat_dim(2, per).reshape([n, 1, c]); // [n, g, 1] -> [n, 1, c]
        let (a, b, stats) = if norm.groups > 0 {
            let g = norm.groups;
            let per = c / g;
            let count = (hw * per) as f64;
            let m = kernels::moments(x3.clone()); // m: [n, 2, c], sums and sums of squares
            let group = |k: usize| m.clone().narrow(1, k, 1).reshape([n, g, per]).sum_dim(2); // [n, g, 1]
            let mean = group(0).div_scalar(count); // mean: [n, g, 1]
            let var = (group(1).div_scalar(count) - mean.clone().square()).clamp_min(0.0); // [n, g, 1]
            let (a, b) = scale_shift(norm, per_image(mean, per), per_image(var, per)); // [n, 1, c]
            (a, b, None)
        } else {
            match mode {
                Mode::Eval => {
                    let (a, b) = norm.eval_scale_shift(); // a, b: [1, 1, c]
                    (a.repeat_dim(0, n), b.repeat_dim(0, n), None) // [n, 1, c]
                }
                Mode::Train { chunks } => {
                    let chunks = chunks_for(n, chunks);
                    let size = n / chunks;
                    let count = (size * hw) as f64;
                    let m = kernels::moments(x3.clone()) // m: [n, 2, c]
                        .reshape([chunks, size, 2, c])
                        .sum_dim(1); // [C, 1, 2, c]
                    let mean = m
                        .clone()
                        .narrow(2, 0, 1)
                        .reshape([chunks, 1, c])
                        .div_scalar(count); // [C, 1, c]
                    let sq = m.narrow(2, 1, 1).reshape([chunks, 1, c]).div_scalar(count); // [C, 1, c]
                    let var = (sq - mean.clone().square()).clamp_min(0.0); // var: [C, 1, c]
                    let stats = chunk_stats(
                        mean.clone().reshape([chunks, c]),
                        var.clone().reshape([chunks, c]),
                        count,
                    );
                    let (a, b) = scale_shift(norm, mean, var); // a, b: [C, 1, c]
                    let each = |t: Tensor<3>| {
                        t.reshape([chunks, 1, 1, c])
                            .repeat_dim(1, size)
                            .reshape([n, 1, c])
                    }; // [n, 1, c]
                    (each(a), each(b), Some(stats))
                }
            }
        };
        (kernels::affine_relu(x3, a, b).reshape([rows, c]), stats) // [n hw, c]
    }
}

/// Most input pixels the CPU backend's convolutions see at once (64 images of 32x32): a
/// slice's activations stay in cache where a whole batch spills, and larger inputs run in fewer
/// images so the gathered taps of the first block stay small in the browser's 32-bit memory.
/// In training mode with BatchNorm a slice holds whole chunks (their statistics couple images).
const CPU_SLICE_PIXELS: usize = 64 * 32 * 32;

fn on_cpu(device: &Device) -> bool {
    // burn's dispatch device has no "is CPU" query; its Debug names the backend, also when
    // wrapped for autodiff.
    format!("{device:?}").contains("Flex")
}

impl Encoder {
    fn norms(&self) -> impl Iterator<Item = &Norm> {
        std::iter::once(&self.stem)
            .chain(&self.blocks)
            .map(|b| &b.norm)
    }

    fn norms_mut(&mut self) -> impl Iterator<Item = &mut Norm> {
        std::iter::once(&mut self.stem)
            .chain(&mut self.blocks)
            .map(|b| &mut b.norm)
    }

    /// Whether the parameters live on the CPU back end (burn flex).
    pub fn runs_on_cpu(&self) -> bool {
        on_cpu(&self.stem.conv.weight.val().device())
    }

    /// Whether the layers are BatchNorm (with running statistics and training / eval modes).
    pub fn is_batch_norm(&self) -> bool {
        self.stem.norm.groups == 0
    }

    /// The running means and variances of every normalisation layer (detached).
    pub fn running_stats(&self) -> BatchStats {
        self.norms()
            .map(|n| {
                (
                    n.running_mean.val().without_autodiff(),
                    n.running_var.val().without_autodiff(),
                )
            })
            .collect()
    }

    /// Where the running variances sit among the parameters in visiting order (`flat_params`,
    /// a session's tensors): values there must be positive.
    pub fn running_var_positions(&self) -> Vec<usize> {
        struct Find {
            ids: Vec<burn::module::ParamId>,
            index: usize,
            found: Vec<usize>,
        }
        impl burn::module::ModuleVisitor for Find {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                if self.ids.contains(&param.id) {
                    self.found.push(self.index);
                }
                self.index += 1;
            }
        }
        let mut find = Find {
            ids: self.norms().map(|n| n.running_var.id).collect(),
            index: 0,
            found: Vec::new(),
        };
        self.visit(&mut find);
        find.found
    }

    /// Replaces the running statistics (ids kept).
    pub fn with_running_stats(mut self, stats: &BatchStats) -> Self {
        for (norm, (m, v)) in self.norms_mut().zip(stats) {
            let device = norm.running_mean.val().device();
            let set = |p: &Param<Tensor<1>>, t: &Tensor<1>| {
                let mut t = t.clone().to_device(&device);
                if device.is_autodiff() {
                    t = t.autodiff();
                }
                Param::initialized(p.id, t)
            };
            norm.running_mean = set(&norm.running_mean, m);
            norm.running_var = set(&norm.running_var, v);
        }
        self
    }

    /// Running statistics moved towards a forward pass's batch statistics by `momentum`
    /// (PyTorch: running = (1 - momentum) running + momentum batch).
    pub fn update_running_stats(self, batch: &BatchStats, momentum: f64) -> Self {
        if batch.is_empty() {
            return self;
        }
        let old = self.running_stats();
        let new: BatchStats = old
            .into_iter()
            .zip(batch)
            .map(|((m, v), (bm, bv))| {
                let device = m.device();
                let mix = |r: Tensor<1>, b: &Tensor<1>| {
                    r.mul_scalar(1.0 - momentum) + b.clone().to_device(&device).mul_scalar(momentum)
                };
                (mix(m, bm), mix(v, bv))
            })
            .collect();
        self.with_running_stats(&new)
    }

    /// Backbone features in evaluation mode, before the head: the representation evaluated by
    /// kNN and the probe.
    pub fn backbone(&self, images: Tensor<4>) -> Tensor<2> {
        self.backbone_mode(images, Mode::Eval).0
    }

    /// Backbone features in `mode`, with the batch statistics of a training-mode pass.
    pub fn backbone_mode(&self, images: Tensor<4>, mode: Mode) -> (Tensor<2>, BatchStats) {
        if !on_cpu(&images.device()) {
            return self.backbone_nchw(images, mode);
        }
        // The weights as matrices once per call, not once per slice (so their gradients, too,
        // are folded back once).
        let weights: Vec<Tensor<2>> = std::iter::once(&self.stem)
            .chain(&self.blocks)
            .map(|b| rows::taps_major(b.conv.weight.val())) // [9 c, co]
            .collect();
        let [n, _, h, w] = images.dims();
        let mut per_slice = (CPU_SLICE_PIXELS / (h * w)).clamp(1, n.max(1));
        // Ghost batches of `chunk` images: a slice holds whole ones.
        let chunk = match mode {
            Mode::Train { chunks } if self.is_batch_norm() => {
                let chunk = n / chunks_for(n, chunks);
                per_slice = chunk * (per_slice / chunk).max(1);
                Some(chunk)
            }
            _ => None,
        };
        let mut parts = Vec::new();
        let mut slice_stats = Vec::new();
        for s in (0..n).step_by(per_slice) {
            let len = per_slice.min(n - s);
            let slice = images.clone().narrow(0, s, len);
            let mode = chunk.map_or(mode, |c| Mode::Train { chunks: len / c });
            let (f, stats) = self.backbone_rows(slice, &weights, mode);
            parts.push(f);
            slice_stats.push((len, stats));
        }
        (Tensor::cat(parts, 0), mean_stats(slice_stats)) // [n, 8w]
    }

    /// The backbone in burn's ops (channels-first): the GPU path.
    fn backbone_nchw(&self, images: Tensor<4>, mode: Mode) -> (Tensor<2>, BatchStats) {
        let mut stats = Vec::new();
        let mut x = images; // x: [n, 3, s, s]
        for b in std::iter::once(&self.stem).chain(&self.blocks) {
            let (y, st) = norm_relu(&b.norm, b.conv.forward(x), mode); // halves s, doubles channels
            x = y;
            stats.extend(st);
        }
        // x: [n, 8w, s/8, s/8] -> global average pool -> [n, 8w]
        (x.mean_dims(&[2, 3]).flatten(1, 3), stats)
    }

    /// The backbone on the CPU, channels-last (see `rows`), for one slice of images; `weights`:
    /// the stem's and each block's from `rows::taps_major`.
    fn backbone_rows(
        &self,
        images: Tensor<4>,
        weights: &[Tensor<2>],
        mode: Mode,
    ) -> (Tensor<2>, BatchStats) {
        let [n, ch, mut side, _] = images.dims(); // images: [n, 3, s, s]
        let mut x = images.permute([0, 2, 3, 1]).reshape([n * side * side, ch]); // x: [n s s, 3]
        let layers = std::iter::once((&self.stem, 1)).chain(self.blocks.iter().map(|b| (b, 2)));
        let mut stats = Vec::new();
        for ((b, stride), w) in layers.zip(weights) {
            x = kernels::conv3x3(x, w.clone(), n, side, stride); // [n s' s', co]
            let (y, st) = rows::norm_relu(&b.norm, x, n, mode);
            x = y;
            stats.extend(st);
            side = kernels::out_side(side, stride);
        }
        let [m, c] = x.dims(); // x: [n s/8 s/8, 8w] -> global average pool -> [n, 8w]
        (x.reshape([n, m / n, c]).mean_dim(1).reshape([n, c]), stats)
    }

    /// Projects backbone features to the L2-normalised embedding.
    pub fn head(&self, features: Tensor<2>) -> Tensor<2> {
        let h = relu(self.head_hidden.forward(features)); // h: [n, 8w]
        l2_normalize(self.head_out.forward(h)) // [n, feature_dim]
    }

    /// Embedding in evaluation mode: [n, 3, s, s] -> [n, feature_dim], unit rows.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        self.head(self.backbone(images))
    }

    /// Embedding in training mode (BatchNorm over `chunks` ghost batches; the batch a multiple
    /// of `chunks`), with the batch statistics for the running averages.
    pub fn forward_train(&self, images: Tensor<4>, chunks: usize) -> (Tensor<2>, BatchStats) {
        let (f, stats) = self.backbone_mode(images, Mode::Train { chunks });
        (self.head(f), stats)
    }

    /// `forward_train` of the batch permuted by `perm` (`shuffle_for_bn`), rows put back in the
    /// batch's order: the key encoder's shuffled-BN pass.
    pub fn forward_shuffled(
        &self,
        images: Tensor<4>,
        chunks: usize,
        perm: &[usize],
    ) -> (Tensor<2>, BatchStats) {
        let device = images.device();
        let index = |p: &[usize]| {
            let v: Vec<i32> = p.iter().map(|&i| i as i32).collect();
            Tensor::<1, Int>::from_data(TensorData::new(v, [p.len()]), &device)
        };
        let shuffled = images.select(0, index(perm)); // [n, 3, s, s], image perm[j] at j
        let (k, stats) = self.forward_train(shuffled, chunks); // k: [n, d], shuffled order
        (k.select(0, index(&inverse_permutation(perm))), stats) // [n, d], batch order
    }
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

/// Rows scaled to unit L2 norm (with a floor so a zero row stays finite).
pub fn l2_normalize(x: Tensor<2>) -> Tensor<2> {
    let norm = x.clone().square().sum_dim(1).sqrt().clamp_min(1e-12); // norm: [n, 1]
    x / norm
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::{BatchNormConfig, GroupNorm, GroupNormConfig};
    use burn::tensor::Distribution;

    /// Values from the engine's seeded generator, not burn's device RNG (which tests running in
    /// parallel draw from too, so a seed there does not fix the data): the paths round
    /// differently, and a pre-activation within rounding of zero can fall on different sides of
    /// a ReLU and move a gradient, so the data must be fixed for the test to be.
    fn uniform(rng: &mut Rng, shape: Vec<usize>, bound: f32) -> TensorData {
        let len = shape.iter().product();
        let v: Vec<f32> = (0..len).map(|_| rng.range(-bound, bound)).collect();
        TensorData::new(v, shape)
    }

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_into_vec_as().unwrap()
    }

    fn assert_close(a: &[f32], b: &[f32], tol: f32, what: &str) {
        assert_eq!(
            a.len(),
            b.len(),
            "{what}: {} vs {} values",
            a.len(),
            b.len()
        );
        for (p, q) in a.iter().zip(b) {
            assert!((p - q).abs() < tol * (1.0 + q.abs()), "{what}: {p} vs {q}");
        }
    }

    /// An encoder with fixed convolution weights and non-trivial affine parameters and running
    /// statistics.
    fn fixed_encoder(norm: NormKind, device: &Device, rng: &mut Rng) -> Encoder {
        let mut enc = EncoderConfig::new(8, 16).with_norm(norm).init(device);
        for b in std::iter::once(&mut enc.stem).chain(&mut enc.blocks) {
            let dims = b.conv.weight.dims().to_vec();
            let bound = (3.0 / (dims[1] * 9) as f32).sqrt(); // unit variance out of unit variance in
            let w = Tensor::<4>::from_data(uniform(rng, dims, bound), device);
            b.conv.weight = Param::from_tensor(w);
            let c = b.norm.channels();
            let gamma = Tensor::<1>::from_data(uniform(rng, vec![c], 0.5), device).add_scalar(1.0);
            let beta = Tensor::<1>::from_data(uniform(rng, vec![c], 0.3), device);
            b.norm.gamma = Param::from_tensor(gamma);
            b.norm.beta = Param::from_tensor(beta);
        }
        let stats: BatchStats = enc
            .running_stats()
            .into_iter()
            .map(|(m, v)| {
                let c = m.dims()[0];
                let m = Tensor::<1>::from_data(uniform(rng, vec![c], 0.2), &m.device());
                let v =
                    Tensor::<1>::from_data(uniform(rng, vec![c], 0.5), &v.device()).add_scalar(1.0);
                (m, v)
            })
            .collect();
        enc.with_running_stats(&stats)
    }

    /// Gradients of every convolution weight and of one layer's gamma and beta.
    fn conv_and_norm_grads(enc: &Encoder, g: &burn::tensor::Gradients) -> Vec<f32> {
        let mut v = Vec::new();
        for b in std::iter::once(&enc.stem).chain(&enc.blocks) {
            v.extend(values(b.conv.weight.grad(g).unwrap()));
        }
        v.extend(values(enc.blocks[1].norm.gamma.grad(g).unwrap()));
        v.extend(values(enc.blocks[1].norm.beta.grad(g).unwrap()));
        v
    }

    #[test]
    fn cpu_rows_backbone_equals_burn_ops_in_every_mode_with_gradients() {
        let device = Device::flex().autodiff();
        let cases = [
            (NormKind::Group, Mode::Train { chunks: 4 }),
            (NormKind::Batch, Mode::Train { chunks: 4 }),
            (NormKind::Batch, Mode::Eval),
        ];
        for (norm, mode) in cases {
            let mut rng = Rng::new(7);
            let enc = fixed_encoder(norm, &device, &mut rng);
            // 72 images of side 33: odd sides through every stride-2 block (33, 17, 9, 5), and
            // more than one CPU slice (by the pixel budget; whole chunks of 18 in training mode).
            let x = Tensor::<4>::from_data(uniform(&mut rng, vec![72, 3, 33, 33], 1.0), &device);
            let mask = Tensor::<2>::from_data(uniform(&mut rng, vec![72, 64], 1.0), &device);
            let (ours, s1) = enc.backbone_mode(x.clone(), mode);
            let (theirs, s2) = enc.backbone_nchw(x, mode);
            let what = format!("{norm:?} {mode:?}");
            assert_close(&values(ours.clone()), &values(theirs.clone()), 1e-4, &what);
            assert_eq!(s1.len(), s2.len(), "{what}: statistics per layer");
            for ((m1, v1), (m2, v2)) in s1.into_iter().zip(s2) {
                assert_close(&values(m1), &values(m2), 1e-4, &what);
                assert_close(&values(v1), &values(v2), 1e-4, &what);
            }
            // Gradients of a weighted sum (every feature counts differently).
            let g1 = (ours * mask.clone()).sum().backward();
            let g2 = (theirs * mask).sum().backward();
            let (a, b) = (
                conv_and_norm_grads(&enc, &g1),
                conv_and_norm_grads(&enc, &g2),
            );
            assert_close(&a, &b, 1e-3, &what);
        }
    }

    #[test]
    fn batch_norm_per_chunk_equals_burns_batch_norm_with_gradients() {
        // The CPU kernels' path (rows) in training mode against burn's own BatchNorm run on
        // each chunk of the batch separately: values, gradients of x, gamma and beta, and the
        // batch statistics (PyTorch's unbiased variance for the running average).
        let device = Device::flex().autodiff();
        let mut rng = Rng::new(3);
        let (n, c, side, chunks) = (6, 8, 5, 3);
        let ours = Norm {
            gamma: Param::from_tensor(
                Tensor::from_data(uniform(&mut rng, vec![c], 0.5), &device).add_scalar(1.0),
            ),
            beta: Param::from_tensor(Tensor::from_data(uniform(&mut rng, vec![c], 0.5), &device)),
            ..Norm::new(c, 0, &device)
        };
        let theirs = burn::nn::BatchNorm {
            gamma: Param::from_tensor(ours.gamma.val().without_autodiff().autodiff()),
            beta: Param::from_tensor(ours.beta.val().without_autodiff().autodiff()),
            ..BatchNormConfig::new(c).with_momentum(1.0).init(&device)
        };
        let x = Tensor::<4>::from_data(uniform(&mut rng, vec![n, c, side, side], 3.0), &device)
            .require_grad();
        let mask = Tensor::<4>::from_data(uniform(&mut rng, vec![n, c, side, side], 1.0), &device);
        let rows_in = x
            .clone()
            .permute([0, 2, 3, 1])
            .reshape([n * side * side, c]);
        let (y_rows, stats) = rows::norm_relu(&ours, rows_in, n, Mode::Train { chunks });
        let y_ours = y_rows.reshape([n, side, side, c]).permute([0, 3, 1, 2]); // [n, c, s, s]
        let size = n / chunks;
        let parts = (0..chunks)
            .map(|k| relu(theirs.forward(x.clone().narrow(0, k * size, size))))
            .collect();
        let y_theirs = Tensor::cat(parts, 0);
        assert_close(
            &values(y_ours.clone()),
            &values(y_theirs.clone()),
            1e-4,
            "values",
        );
        // The statistics for the running averages: per chunk the mean and the unbiased
        // variance (PyTorch's running_var) of each channel, averaged over the chunks.
        let xs = values(x.clone());
        let count = (size * side * side) as f64;
        let (mut mean, mut var) = (vec![0f64; c], vec![0f64; c]);
        for k in 0..chunks {
            for ch in 0..c {
                let vals: Vec<f64> = (k * size..(k + 1) * size)
                    .flat_map(|i| {
                        let at = (i * c + ch) * side * side;
                        xs[at..at + side * side].iter().map(|&v| v as f64)
                    })
                    .collect();
                let m = vals.iter().sum::<f64>() / count;
                let v = vals.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (count - 1.0);
                mean[ch] += m / chunks as f64;
                var[ch] += v / chunks as f64;
            }
        }
        let (m, v) = stats.expect("training-mode statistics");
        let f = |v: Vec<f64>| v.into_iter().map(|x| x as f32).collect::<Vec<f32>>();
        assert_close(&values(m), &f(mean), 1e-4, "batch mean");
        assert_close(&values(v), &f(var), 1e-4, "batch variance (unbiased)");
        let g1 = (y_ours * mask.clone()).sum().backward();
        let g2 = (y_theirs * mask).sum().backward();
        let grads =
            |g: &burn::tensor::Gradients, gamma: &Param<Tensor<1>>, beta: &Param<Tensor<1>>| {
                let mut v = values(x.grad(g).unwrap());
                v.extend(values(gamma.grad(g).unwrap()));
                v.extend(values(beta.grad(g).unwrap()));
                v
            };
        let a = grads(&g1, &ours.gamma, &ours.beta);
        let b = grads(&g2, &theirs.gamma, &theirs.beta);
        assert_close(&a, &b, 1e-3, "gradients");
    }

    #[test]
    fn eval_mode_uses_the_running_statistics() {
        // In evaluation mode an image's features do not depend on the rest of the batch, and
        // equal burn's BatchNorm in inference with the same running statistics.
        let device = Device::flex();
        let mut rng = Rng::new(5);
        let enc = fixed_encoder(NormKind::Batch, &device, &mut rng);
        let x = Tensor::<4>::from_data(uniform(&mut rng, vec![8, 3, 32, 32], 1.0), &device);
        let all = values(enc.backbone(x.clone()));
        let one = values(enc.backbone(x.clone().narrow(0, 7, 1)));
        assert_close(&all[7 * 64..], &one, 1e-5, "one image alone");
        let (train, _) = enc.backbone_mode(x.clone(), Mode::Train { chunks: 1 });
        let differs = values(train)
            .iter()
            .zip(&all)
            .any(|(a, b)| (a - b).abs() > 1e-3);
        assert!(
            differs,
            "training mode must use batch statistics, not the running ones"
        );
        // Moving the running statistics moves the eval features.
        let stats = enc.running_stats();
        let shifted: BatchStats = stats
            .iter()
            .map(|(m, v)| (m.clone().add_scalar(0.5), v.clone()))
            .collect();
        let moved = values(enc.clone().with_running_stats(&shifted).backbone(x.clone()));
        assert!(moved.iter().zip(&all).any(|(a, b)| (a - b).abs() > 1e-3));
        // burn's BatchNorm in inference mode, stem only.
        let norm = &enc.stem.norm;
        let theirs = burn::nn::BatchNorm {
            gamma: Param::from_tensor(norm.gamma.val()),
            beta: Param::from_tensor(norm.beta.val()),
            running_mean: burn::module::RunningState::new(norm.running_mean.val()),
            running_var: burn::module::RunningState::new(norm.running_var.val()),
            ..BatchNormConfig::new(8).init(&device)
        };
        let conv = enc.stem.conv.forward(x);
        let (ours, _) = norm_relu(norm, conv.clone(), Mode::Eval);
        assert_close(
            &values(ours),
            &values(relu(theirs.forward(conv))),
            1e-4,
            "stem",
        );
    }

    #[test]
    fn running_stats_follow_the_batch_by_the_momentum() {
        let device = Device::flex();
        let enc = EncoderConfig::new(8, 16).init(&device);
        let x = Tensor::<4>::random([8, 3, 32, 32], Distribution::Default, &device);
        let (_, batch) = enc.forward_train(x, 2);
        assert_eq!(batch.len(), 4);
        let before = enc.running_stats();
        let enc = enc.update_running_stats(&batch, 0.25);
        for (((m0, v0), (bm, bv)), (m1, v1)) in
            before.into_iter().zip(&batch).zip(enc.running_stats())
        {
            let want: Vec<f32> = values(m0)
                .iter()
                .zip(values(bm.clone()))
                .map(|(r, b)| 0.75 * r + 0.25 * b)
                .collect();
            assert_close(&values(m1), &want, 1e-5, "mean");
            let want: Vec<f32> = values(v0)
                .iter()
                .zip(values(bv.clone()))
                .map(|(r, b)| 0.75 * r + 0.25 * b)
                .collect();
            assert_close(&values(v1), &want, 1e-5, "var");
        }
    }

    #[test]
    fn no_key_is_normalised_in_the_same_chunk_as_its_query() {
        let mut rng = Rng::new(1);
        for (n, chunks) in [(8, 2), (64, 4), (240, 4), (12, 3), (256, 8)] {
            for _ in 0..20 {
                let perm = shuffle_for_bn(n, chunks, &mut rng);
                let mut sorted = perm.clone();
                sorted.sort();
                assert_eq!(sorted, (0..n).collect::<Vec<_>>(), "a permutation");
                let size = n / chunks;
                for (j, &i) in perm.iter().enumerate() {
                    assert_ne!(
                        j / size,
                        i / size,
                        "image {i}'s key sits in its query's chunk"
                    );
                }
                let inv = inverse_permutation(&perm);
                assert!((0..n).all(|i| perm[inv[i]] == i));
            }
        }
        assert_eq!(shuffle_for_bn(5, 1, &mut rng), vec![0, 1, 2, 3, 4]);
        assert_eq!(chunks_for(10, 4), 2);
        assert_eq!(chunks_for(12, 4), 4);
    }

    #[test]
    fn shuffled_key_pass_is_per_chunk_of_the_shuffled_batch() {
        // The key's embedding of image i is what the encoder gives image i inside the chunk of
        // the shuffled batch it was moved to: a pass over that chunk alone gives the same row.
        // On every backend this machine has: the CPU kernels, and burn's ops on wgpu (in CI
        // on lavapipe), which the browser's WebGPU path runs too.
        let mut devices = vec![Device::flex()];
        let gpu = crate::compute::init_gpu(crate::compute::BackendKind::Wgpu);
        match futures_lite::future::block_on(gpu) {
            Ok((device, _)) => devices.push(device),
            Err(e) => eprintln!("no wgpu adapter, CPU only: {e}"),
        }
        for device in devices {
            let mut rng = Rng::new(9);
            let enc = fixed_encoder(NormKind::Batch, &device, &mut rng);
            let (n, chunks) = (8, 4);
            let x = Tensor::<4>::from_data(uniform(&mut rng, vec![n, 3, 32, 32], 1.0), &device);
            let perm = shuffle_for_bn(n, chunks, &mut rng);
            let (k, _) = enc.forward_shuffled(x.clone(), chunks, &perm);
            let k = values(k);
            let size = n / chunks;
            for c in 0..chunks {
                let members = &perm[c * size..(c + 1) * size];
                let idx: Vec<i32> = members.iter().map(|&i| i as i32).collect();
                let sel = Tensor::<1, Int>::from_data(TensorData::new(idx, [size]), &device);
                let (alone, _) = enc.forward_train(x.clone().select(0, sel), 1);
                let alone = values(alone);
                for (r, &i) in members.iter().enumerate() {
                    assert_close(
                        &k[i * 16..(i + 1) * 16],
                        &alone[r * 16..(r + 1) * 16],
                        1e-4,
                        "key row",
                    );
                    assert_ne!(i / size, c, "key in its query's chunk");
                }
            }
        }
    }

    #[test]
    fn folded_group_norm_equals_burns_with_its_gradients() {
        let device = Device::flex().autodiff();
        let theirs = GroupNormConfig::new(4, 8).init(&device);
        // Non-trivial affine parameters, so that gamma and beta matter.
        let gamma = Tensor::<1>::random([8], Distribution::Default, &device).add_scalar(0.5);
        let beta = Tensor::<1>::random([8], Distribution::Default, &device).sub_scalar(0.5);
        let theirs = GroupNorm {
            gamma: Some(Param::from_tensor(gamma.clone())),
            beta: Some(Param::from_tensor(beta.clone())),
            ..theirs
        };
        let ours = Norm {
            gamma: Param::from_tensor(gamma.without_autodiff().autodiff()),
            beta: Param::from_tensor(beta.without_autodiff().autodiff()),
            ..Norm::new(8, 4, &device)
        };
        let x = Tensor::<4>::random([3, 8, 5, 6], Distribution::Default, &device)
            .mul_scalar(4.0)
            .require_grad();
        let mask = Tensor::<4>::random([3, 8, 5, 6], Distribution::Default, &device);
        let (y_ours, _) = norm_relu(&ours, x.clone(), Mode::Eval);
        let y_theirs = relu(theirs.forward(x.clone()));
        assert_close(
            &values(y_ours.clone()),
            &values(y_theirs.clone()),
            1e-4,
            "values",
        );
        let g1 = (y_ours * mask.clone()).sum().backward();
        let g2 = (y_theirs * mask).sum().backward();
        let mut a = values(x.grad(&g1).unwrap());
        a.extend(values(ours.gamma.grad(&g1).unwrap()));
        a.extend(values(ours.beta.grad(&g1).unwrap()));
        let mut b = values(x.grad(&g2).unwrap());
        b.extend(values(theirs.gamma.as_ref().unwrap().grad(&g2).unwrap()));
        b.extend(values(theirs.beta.as_ref().unwrap().grad(&g2).unwrap()));
        assert_close(&a, &b, 1e-3, "gradients");
    }

    #[test]
    fn shapes_and_unit_norm_for_every_input_size() {
        let device = Device::flex();
        for norm in [NormKind::Batch, NormKind::Group] {
            let enc = EncoderConfig::new(8, 16).with_norm(norm).init(&device);
            for s in [32, 64, 96] {
                let x = Tensor::<4>::random([2, 3, s, s], Distribution::Default, &device);
                let f = enc.backbone(x.clone());
                assert_eq!(f.dims(), [2, 64]);
                let (z, _) = enc.forward_train(x, 2);
                assert_eq!(z.dims(), [2, 16]);
                for n in values(z.square().sum_dim(1)) {
                    assert!((n - 1.0).abs() < 1e-4, "norm {n}");
                }
            }
            // A batch over the CPU slice gives the same features as its images one by one.
            let x = Tensor::<4>::random([70, 3, 32, 32], Distribution::Default, &device);
            let all = values(enc.backbone(x.clone()));
            let last = values(enc.backbone(x.narrow(0, 69, 1)));
            assert_close(&all[69 * 64..], &last, 1e-5, "slices");
        }
        assert_eq!(groups_for(32), 8);
        assert!(on_cpu(&device) && on_cpu(&device.clone().autodiff()));
        assert_eq!(groups_for(12), 6);
    }
}

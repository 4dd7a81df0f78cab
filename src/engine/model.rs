//! The image encoder: a small CNN backbone and the MLP projection head of PCL v2, with two
//! implementations of one forward pass that must stay equal (burn's ops on any device, and the
//! CPU kernels' channels-last rows: `model/rows.rs`; their equality tests: `model/tests.rs`).
//!
//! Normalisation is BatchNorm over ghost batches by default (`NormKind::Batch`), as in the
//! official code: in training mode every chunk of the batch has its own statistics, and the
//! trainer permutes the key batch across chunks (`shuffle_for_bn`) so that no query meets its
//! key inside the same statistics (the intra-batch leak MoCo closes with shuffled BN across
//! GPUs). Evaluation mode (E-step, explorer, exports) uses running statistics. GroupNorm
//! (`NormKind::Group`) has no batch statistics and stays available as a setting. Both, and the
//! permutation, are in `model/norm.rs`.

use burn::module::Param;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::relu;

use crate::engine::config::NormKind;
use crate::engine::kernels;
use serde::{Deserialize, Serialize};

mod norm;
mod rows;
#[cfg(test)]
mod tests;

pub use norm::{
    BN_MOMENTUM, BatchStats, Mode, inverse_permutation, shuffle_for_bn, shuffled, unshuffled,
};
use norm::{Norm, groups_for, norm_relu};
pub(crate) use norm::{chunks_for, mean_stats};
use rows::CPU_SLICE_PIXELS;
pub(crate) use rows::on_cpu;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EncoderConfig {
    /// Channels of the stem; the three stride-2 blocks give 2x, 4x, 8x this.
    pub width: usize,
    pub feature_dim: usize,
    #[serde(default)]
    pub norm: NormKind,
}

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

#[derive(Module, Debug)]
pub struct ConvBlock {
    pub(super) conv: Conv2d,
    pub(super) norm: Norm,
}

#[derive(Module, Debug)]
pub struct Encoder {
    stem: ConvBlock,
    blocks: Vec<ConvBlock>,
    head_hidden: Linear,
    head_out: Linear,
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
        let (k, stats) = self.forward_train(shuffled(images, perm), chunks); // k: [n, d], shuffled order
        (unshuffled(k, perm), stats) // [n, d], batch order
    }
}

/// Rows scaled to unit L2 norm (with a floor so a zero row stays finite).
pub fn l2_normalize(x: Tensor<2>) -> Tensor<2> {
    let norm = x.clone().square().sum_dim(1).sqrt().clamp_min(1e-12); // norm: [n, 1]
    x / norm
}

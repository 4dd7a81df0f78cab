//! The image encoder: a small CNN backbone and the MLP projection head of PCL v2.
//!
//! Normalisation is GroupNorm, not BatchNorm. With BatchNorm the key encoder's batch statistics
//! let a query "find" its positive through the batch (the intra-batch leak MoCo fixes with
//! shuffled BN across GPUs); shuffling needs several devices or ghost batches. GroupNorm has no
//! batch statistics, so there is nothing to leak, training and E-step (eval) behave identically,
//! and any batch size, down to the browser's smallest, works.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{GroupNorm, GroupNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::relu;

use crate::engine::kernels;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EncoderConfig {
    /// Channels of the stem; the three stride-2 blocks give 2x, 4x, 8x this.
    pub width: usize,
    pub feature_dim: usize,
}

impl EncoderConfig {
    pub fn new(width: usize, feature_dim: usize) -> Self {
        Self { width, feature_dim }
    }

    pub fn backbone_dim(&self) -> usize {
        self.width * 8
    }

    pub fn init(&self, device: &Device) -> Encoder {
        let w = self.width;
        let block = |cin: usize, cout: usize, stride: usize| ConvBlock {
            conv: Conv2dConfig::new([cin, cout], [3, 3])
                .with_stride([stride, stride])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .with_bias(false)
                .init(device),
            norm: GroupNormConfig::new(groups_for(cout), cout).init(device),
        };
        let d = self.backbone_dim();
        Encoder {
            stem: block(3, w, 1),
            blocks: vec![
                block(w, 2 * w, 2),
                block(2 * w, 4 * w, 2),
                block(4 * w, 8 * w, 2),
            ],
            head_hidden: LinearConfig::new(d, d).init(device),
            head_out: LinearConfig::new(d, self.feature_dim).init(device),
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

#[derive(Module, Debug)]
pub struct ConvBlock {
    conv: Conv2d,
    norm: GroupNorm,
}

impl ConvBlock {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        norm_relu(&self.norm, self.conv.forward(x))
    }
}

/// GroupNorm then ReLU, with the normalisation folded into one scale and shift per (image,
/// channel): y = x * a + b, a = gamma / sqrt(var + eps), b = beta - mean * a, var = E[x^2] -
/// mean^2. Five passes over the activations instead of burn's eight (and fewer in the backward
/// pass); the same values to float rounding (tested against burn's GroupNorm).
fn norm_relu(norm: &GroupNorm, x: Tensor<4>) -> Tensor<4> {
    let [n, c, h, w] = x.dims(); // x: [n, c, h, w]
    let g = norm.num_groups;
    let per = c / g;
    let xg = x.reshape([n, g, per * h * w]); // xg: [n, g, per h w]
    let mean = xg.clone().mean_dim(2); // mean: [n, g, 1]
    let var = (xg.clone().square().mean_dim(2) - mean.clone().square()).clamp_min(0.0); // [n, g, 1]
    let (a, b) = scale_shift(norm, mean, var, per); // a, b: [n, g, per]
    let y = xg.reshape([n, g, per, h * w]) * a.reshape([n, g, per, 1]) + b.reshape([n, g, per, 1]);
    relu(y.reshape([n, c, h, w])) // [n, c, h, w]
}

/// GroupNorm's per-(image, group) statistics folded with gamma and beta into one scale and
/// shift per (image, channel): a = gamma / sqrt(var + eps), b = beta - mean * a.
fn scale_shift(
    norm: &GroupNorm,
    mean: Tensor<3>,
    var: Tensor<3>,
    per: usize,
) -> (Tensor<3>, Tensor<3>) {
    let g = norm.num_groups;
    let rstd = var.add_scalar(norm.epsilon).sqrt().recip(); // rstd: [n, g, 1]
    match (&norm.gamma, &norm.beta) {
        (Some(gamma), Some(beta)) => {
            let a = gamma.val().reshape([1, g, per]) * rstd; // a: [n, g, per]
            let b = beta.val().reshape([1, g, per]) - mean * a.clone(); // b: [n, g, per]
            (a, b)
        }
        _ => {
            let a = rstd.repeat_dim(2, per); // a: [n, g, per]
            let b = mean.neg() * a.clone(); // b: [n, g, per]
            (a, b)
        }
    }
}

#[derive(Module, Debug)]
pub struct Encoder {
    stem: ConvBlock,
    blocks: Vec<ConvBlock>,
    head_hidden: Linear,
    head_out: Linear,
}

/// The encoder on the CPU backend, channels-last. flex multiplies per image (a 256 x 1152 by
/// 1152 x 16 product for the last block) and computes the input gradient as a transposed
/// convolution; here an activation is a row matrix [n h w, c], every convolution gathers the
/// nine taps of all the pixels of a slice and multiplies them by the weight in one product, and
/// GroupNorm + ReLU are two passes (`kernels.rs`: fused, with their gradients). A training step
/// went from 355 to about 840 img/s (README); values and gradients equal burn's modules
/// (tested).
mod rows {
    use super::*;

    /// A [co, c, 3, 3] weight as the [9 c, co] matrix whose rows are in (ky, kx, c) order, the
    /// order of `kernels::conv3x3`'s gathered taps. Two copies with contiguous runs (a 2-d
    /// transpose, then whole rows of co): one 4-d permute walked element by element, twice as
    /// slow.
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

    /// `norm_relu` on the rows [n hw, c] of n images.
    pub fn norm_relu(norm: &GroupNorm, x: Tensor<2>, n: usize) -> Tensor<2> {
        let [rows, c] = x.dims();
        let hw = rows / n;
        let g = norm.num_groups;
        let per = c / g;
        let count = (hw * per) as f64;
        let x3 = x.reshape([n, hw, c]); // x3: [n, hw, c]
        let m = kernels::moments(x3.clone()); // m: [n, 2, c], sums and sums of squares
        let group = |k: usize| m.clone().narrow(1, k, 1).reshape([n, g, per]).sum_dim(2); // [n, g, 1]
        let mean = group(0).div_scalar(count); // mean: [n, g, 1]
        let var = (group(1).div_scalar(count) - mean.clone().square()).clamp_min(0.0); // var: [n, g, 1]
        let (a, b) = scale_shift(norm, mean, var, per); // a, b: [n, g, per]
        kernels::affine_relu(x3, a.reshape([n, 1, c]), b.reshape([n, 1, c])).reshape([rows, c]) // [n hw, c]
    }
}

/// Most input pixels the CPU backend's convolutions see at once: 64 images of 32x32. GroupNorm
/// couples no two images, so a batch run in slices gives the same numbers and gradients, and a
/// slice's activations stay in cache where a whole batch of 256 spills (at 32 px, training steps
/// with augmentation, 3 runs each, slices of 32 images: 686-696 img/s, 64: 698-719, 128:
/// 631-664, 256: 624-664; peak memory 423, 447, 598, 689 MiB). Counted in pixels, so that larger
/// inputs run in fewer images (96 px: 7) and the gathered taps of the first block stay about
/// 19 MB instead of 170 MB, which matters in the browser's 32-bit memory.
const CPU_SLICE_PIXELS: usize = 64 * 32 * 32;

fn on_cpu(device: &Device) -> bool {
    // burn's dispatch device has no "is CPU" query; its Debug names the backend, also when
    // wrapped for autodiff.
    format!("{device:?}").contains("Flex")
}

impl Encoder {
    /// Backbone features, before the head: the representation evaluated by kNN and the probe.
    pub fn backbone(&self, images: Tensor<4>) -> Tensor<2> {
        if !on_cpu(&images.device()) {
            return self.backbone_nchw(images);
        }
        // The weights as matrices once per call, not once per slice (so their gradients, too,
        // are folded back once).
        let weights: Vec<Tensor<2>> = std::iter::once(&self.stem)
            .chain(&self.blocks)
            .map(|b| rows::taps_major(b.conv.weight.val())) // [9 c, co]
            .collect();
        let [n, _, h, w] = images.dims();
        let per_slice = (CPU_SLICE_PIXELS / (h * w)).clamp(1, n.max(1));
        let parts = (0..n)
            .step_by(per_slice)
            .map(|s| {
                let slice = images.clone().narrow(0, s, per_slice.min(n - s));
                self.backbone_rows(slice, &weights)
            })
            .collect();
        Tensor::cat(parts, 0) // [n, 8w]
    }

    /// The backbone in burn's own modules (channels-first): the GPU path.
    fn backbone_nchw(&self, images: Tensor<4>) -> Tensor<2> {
        let mut x = self.stem.forward(images); // x: [n, w, s, s]
        for b in &self.blocks {
            x = b.forward(x); // halves s, doubles channels
        }
        // x: [n, 8w, s/8, s/8] -> global average pool -> [n, 8w]
        x.mean_dims(&[2, 3]).flatten(1, 3)
    }

    /// The backbone on the CPU, channels-last (see `rows`), for one slice of images; `weights`:
    /// the stem's and each block's from `rows::taps_major`.
    fn backbone_rows(&self, images: Tensor<4>, weights: &[Tensor<2>]) -> Tensor<2> {
        let [n, ch, mut side, _] = images.dims(); // images: [n, 3, s, s]
        let mut x = images.permute([0, 2, 3, 1]).reshape([n * side * side, ch]); // x: [n s s, 3]
        let layers = std::iter::once((&self.stem, 1)).chain(self.blocks.iter().map(|b| (b, 2)));
        for ((b, stride), w) in layers.zip(weights) {
            x = kernels::conv3x3(x, w.clone(), n, side, stride); // [n s' s', co]
            x = rows::norm_relu(&b.norm, x, n);
            side = kernels::out_side(side, stride);
        }
        let [m, c] = x.dims(); // x: [n s/8 s/8, 8w] -> global average pool -> [n, 8w]
        x.reshape([n, m / n, c]).mean_dim(1).reshape([n, c])
    }

    /// Projects backbone features to the L2-normalised embedding.
    pub fn head(&self, features: Tensor<2>) -> Tensor<2> {
        let h = relu(self.head_hidden.forward(features)); // h: [n, 8w]
        l2_normalize(self.head_out.forward(h)) // [n, feature_dim]
    }

    /// Embedding: [n, 3, s, s] -> [n, feature_dim], unit rows.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        self.head(self.backbone(images))
    }
}

/// Rows scaled to unit L2 norm (with a floor so a zero row stays finite).
pub fn l2_normalize(x: Tensor<2>) -> Tensor<2> {
    let norm = x.clone().square().sum_dim(1).sqrt().clamp_min(1e-12); // norm: [n, 1]
    x / norm
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_rows_backbone_equals_burns_modules_with_gradients() {
        let device = Device::flex().autodiff();
        // Inputs and convolution weights from the engine's own seeded generator, not burn's
        // device RNG (which tests running in parallel draw from too, so a seed there does not
        // fix the data): the two paths round differently, and a pre-activation within rounding
        // of zero can fall on different sides of a ReLU and move a gradient by 0.2-0.6%
        // (typical worst difference: 2e-5). These data are fixed, so the test is too.
        let mut rng = crate::engine::rng::Rng::new(7);
        let mut uniform = |shape: Vec<usize>, bound: f32| {
            let len = shape.iter().product();
            let v: Vec<f32> = (0..len).map(|_| rng.range(-bound, bound)).collect();
            TensorData::new(v, shape)
        };
        let mut enc = EncoderConfig::new(8, 16).init(&device);
        for b in std::iter::once(&mut enc.stem).chain(&mut enc.blocks) {
            let dims = b.conv.weight.dims().to_vec();
            let bound = (3.0 / (dims[1] * 9) as f32).sqrt(); // unit variance out of unit variance in
            let w = Tensor::<4>::from_data(uniform(dims, bound), &device);
            b.conv.weight = burn::module::Param::from_tensor(w);
        }
        // 70 images of side 33: two slices (60 + 10, by the pixel budget), and odd sides through
        // every stride-2 block (33, 17, 9, 5).
        let x = Tensor::<4>::from_data(uniform(vec![70, 3, 33, 33], 1.0), &device);
        let mask = Tensor::<2>::from_data(uniform(vec![70, 64], 1.0), &device);
        let values = |t: Tensor<2>| -> Vec<f32> { t.into_data().try_into_vec_as().unwrap() };
        let ours = enc.backbone(x.clone());
        let theirs = enc.backbone_nchw(x);
        for (p, q) in values(ours.clone()).iter().zip(values(theirs.clone())) {
            assert!((p - q).abs() < 1e-4, "{p} vs {q}");
        }
        // Gradients of a weighted sum (every feature counts differently), for every
        // convolution's weight and a GroupNorm's gamma.
        let g1 = (ours * mask.clone()).sum().backward();
        let g2 = (theirs * mask).sum().backward();
        let grads = |g: &_| -> Vec<f32> {
            let mut v = Vec::new();
            for b in std::iter::once(&enc.stem).chain(&enc.blocks) {
                let w = b.conv.weight.grad(g).unwrap();
                v.extend(w.into_data().try_into_vec_as::<f32>().unwrap());
            }
            let gamma = enc.blocks[1].norm.gamma.as_ref().unwrap().grad(g).unwrap();
            v.extend(gamma.into_data().try_into_vec_as::<f32>().unwrap());
            v
        };
        let (a, b) = (grads(&g1), grads(&g2));
        assert_eq!(a.len(), b.len());
        for (p, q) in a.iter().zip(&b) {
            assert!((p - q).abs() < 1e-3 * (1.0 + q.abs()), "{p} vs {q}");
        }
    }

    #[test]
    fn folded_group_norm_equals_burns_with_its_gradients() {
        let device = Device::flex().autodiff();
        let norm = GroupNormConfig::new(4, 8).init(&device);
        // Non-trivial affine parameters, so that gamma and beta matter.
        let gamma = Tensor::<1>::random([8], burn::tensor::Distribution::Default, &device);
        let beta = Tensor::<1>::random([8], burn::tensor::Distribution::Default, &device);
        let norm = GroupNorm {
            gamma: Some(burn::module::Param::from_tensor(gamma.add_scalar(0.5))),
            beta: Some(burn::module::Param::from_tensor(beta.sub_scalar(0.5))),
            ..norm
        };
        let x = Tensor::<4>::random([3, 8, 5, 6], burn::tensor::Distribution::Default, &device)
            .mul_scalar(4.0)
            .require_grad();
        let mask = Tensor::<4>::random([3, 8, 5, 6], burn::tensor::Distribution::Default, &device);
        let values = |t: Tensor<4>| -> Vec<f32> { t.into_data().try_into_vec_as().unwrap() };
        let ours = norm_relu(&norm, x.clone());
        let theirs = relu(norm.forward(x.clone()));
        for (p, q) in values(ours.clone()).iter().zip(values(theirs.clone())) {
            assert!((p - q).abs() < 1e-4, "{p} vs {q}");
        }
        let g1 = (ours * mask.clone()).sum().backward();
        let g2 = (theirs * mask).sum().backward();
        let grads = |g: &_| -> Vec<f32> {
            let mut v: Vec<f32> = x.grad(g).unwrap().into_data().try_into_vec_as().unwrap();
            for p in [&norm.gamma, &norm.beta] {
                let p = p.as_ref().unwrap().grad(g).unwrap();
                v.extend(p.into_data().try_into_vec_as::<f32>().unwrap());
            }
            v
        };
        for (p, q) in grads(&g1).iter().zip(grads(&g2)) {
            assert!((p - q).abs() < 1e-3 * (1.0 + q.abs()), "{p} vs {q}");
        }
    }

    #[test]
    fn shapes_and_unit_norm_for_every_input_size() {
        let device = Device::flex();
        let enc = EncoderConfig::new(8, 16).init(&device);
        for s in [32, 64, 96] {
            let x = Tensor::<4>::random([2, 3, s, s], burn::tensor::Distribution::Default, &device);
            let f = enc.backbone(x.clone());
            assert_eq!(f.dims(), [2, 64]);
            let z = enc.forward(x);
            assert_eq!(z.dims(), [2, 16]);
            let norms: Vec<f32> = z
                .square()
                .sum_dim(1)
                .into_data()
                .try_into_vec_as::<f32>()
                .unwrap();
            for n in norms {
                assert!((n - 1.0).abs() < 1e-4, "norm {n}");
            }
        }
        assert_eq!(groups_for(32), 8);
        // A batch over the CPU slice gives the same features as its images one by one.
        let x = Tensor::<4>::random(
            [70, 3, 32, 32],
            burn::tensor::Distribution::Default,
            &device,
        );
        let all: Vec<f32> = enc
            .backbone(x.clone())
            .into_data()
            .try_into_vec_as()
            .unwrap();
        let last: Vec<f32> = enc
            .backbone(x.narrow(0, 69, 1))
            .into_data()
            .try_into_vec_as()
            .unwrap();
        for (a, b) in all[69 * 64..].iter().zip(&last) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
        assert!(on_cpu(&device) && on_cpu(&device.clone().autodiff()));
        assert_eq!(groups_for(12), 6);
    }
}

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
use burn::tensor::ops::PadMode;
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
    let rstd = var.add_scalar(norm.epsilon).sqrt().recip(); // rstd: [n, g, 1]
    let (a, b) = match (&norm.gamma, &norm.beta) {
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
    };
    let y = xg.reshape([n, g, per, h * w]) * a.reshape([n, g, per, 1]) + b.reshape([n, g, per, 1]);
    relu(y.reshape([n, c, h, w])) // [n, c, h, w]
}

#[derive(Module, Debug)]
pub struct Encoder {
    stem: ConvBlock,
    blocks: Vec<ConvBlock>,
    head_hidden: Linear,
    head_out: Linear,
}

/// A 3x3, stride-1, zero-padded convolution without bias as one matrix product over the nine
/// shifted copies of the input (im2col). For the stem on the CPU backend: flex computes a
/// convolution's weight gradient as a convolution whose kernel is the whole output map, which
/// for 3 input channels at 32x32 took 14 ms per 32 images; this form takes 6 ms (same values).
/// Slower than flex's own convolution where the input gradient is needed, so only the stem,
/// whose input (the images) has none, uses it.
fn conv3x3_as_matmul(x: Tensor<4>, weight: Tensor<4>) -> Tensor<4> {
    let [n, c, h, w] = x.dims(); // x: [n, c, h, w]
    let co = weight.dims()[0]; // weight: [co, c, 3, 3]
    let padded = x
        .swap_dims(0, 1)
        .pad([(0, 0), (0, 0), (1, 1), (1, 1)], PadMode::Constant(0.0)); // padded: [c, n, h + 2, w + 2]
    let shifted: Vec<Tensor<4>> = (0..9)
        .map(|t| {
            let (dy, dx) = (t / 3, t % 3);
            padded.clone().slice([0..c, 0..n, dy..dy + h, dx..dx + w]) // [c, n, h, w]
        })
        .collect();
    // cols: [c * 9, n * h * w], rows in the weight's (channel, ky, kx) order
    let cols = Tensor::stack::<5>(shifted, 1).reshape([c * 9, n * h * w]);
    weight
        .reshape([co, c * 9])
        .matmul(cols) // [co, n * h * w]
        .reshape([co, n, h, w])
        .swap_dims(0, 1) // [n, co, h, w]
}

/// Most images the CPU backend's convolutions see at once. flex's convolutions slow down more
/// than linearly with the batch (a training step at batch 256: 340 img/s in slices of 32, 226
/// whole; 16 is no faster, 64 a little slower), and GroupNorm couples no two images, so a batch
/// run in slices gives the same numbers and gradients.
const CPU_SLICE: usize = 32;

fn on_cpu(device: &Device) -> bool {
    // burn's dispatch device has no "is CPU" query; its Debug names the backend, also when
    // wrapped for autodiff.
    format!("{device:?}").contains("Flex")
}

impl Encoder {
    /// Backbone features, before the head: the representation evaluated by kNN and the probe.
    pub fn backbone(&self, images: Tensor<4>) -> Tensor<2> {
        let n = images.dims()[0];
        let cpu = on_cpu(&images.device());
        if n > CPU_SLICE && cpu {
            let parts = (0..n)
                .step_by(CPU_SLICE)
                .map(|s| {
                    self.backbone_whole(images.clone().narrow(0, s, CPU_SLICE.min(n - s)), cpu)
                })
                .collect();
            return Tensor::cat(parts, 0); // [n, 8w]
        }
        self.backbone_whole(images, cpu)
    }

    /// The backbone on one batch; `cpu`: the images are on the CPU backend.
    fn backbone_whole(&self, images: Tensor<4>, cpu: bool) -> Tensor<2> {
        // images: [n, 3, s, s]
        let mut x = if cpu {
            let y = conv3x3_as_matmul(images, self.stem.conv.weight.val()); // y: [n, w, s, s]
            norm_relu(&self.stem.norm, y)
        } else {
            self.stem.forward(images) // [n, w, s, s]
        };
        for b in &self.blocks {
            x = b.forward(x); // halves s, doubles channels
        }
        // x: [n, 8w, s/8, s/8] -> global average pool -> [n, 8w]
        x.mean_dims(&[2, 3]).flatten(1, 3)
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
    fn stem_as_matmul_equals_the_convolution_and_its_weight_gradient() {
        let device = Device::flex().autodiff();
        let conv = Conv2dConfig::new([3, 8], [3, 3])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .with_bias(false)
            .init(&device);
        let x = Tensor::<4>::random([5, 3, 9, 7], burn::tensor::Distribution::Default, &device);
        let values = |t: Tensor<4>| -> Vec<f32> { t.into_data().try_into_vec_as().unwrap() };
        let a = conv.forward(x.clone());
        let b = conv3x3_as_matmul(x, conv.weight.val());
        for (p, q) in values(a.clone()).iter().zip(values(b.clone())) {
            assert!((p - q).abs() < 1e-5, "{p} vs {q}");
        }
        // Weight gradients of a weighted sum (so that every output position counts differently).
        let mask = Tensor::<4>::random([5, 8, 9, 7], burn::tensor::Distribution::Default, &device);
        let ga = conv
            .weight
            .grad(&(a * mask.clone()).sum().backward())
            .unwrap();
        let gb = conv.weight.grad(&(b * mask).sum().backward()).unwrap();
        for (p, q) in values(ga).iter().zip(values(gb)) {
            assert!((p - q).abs() < 1e-3 * (1.0 + p.abs()), "{p} vs {q}");
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
            .backbone_whole(x.narrow(0, 69, 1), true)
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

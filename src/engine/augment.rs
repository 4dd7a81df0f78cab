//! One file, over 500 lines: the view parameters and the tensor ops that apply them are one
//! recipe, read together; the tests inside check them against each other.
//!
//! Batched, seeded augmentation on the device: two random views per image for training, a centre
//! crop for the E-step and evaluation.
//!
//! Random parameters are drawn on the host from the trainer's [`Rng`] (a few floats per image),
//! then the pixel work runs as tensor ops on whatever device the batch lives on:
//! RandomResizedCrop + flip as one `grid_sample_2d`, colour jitter as per-image affine colour ops,
//! grayscale as zero saturation, Gaussian blur as a grouped (per-image) separable convolution.
//! Jitter applies brightness, contrast, saturation, hue in that fixed order (torchvision shuffles
//! the order per call); hue is a rotation in YIQ space, the linear stand-in for HSV hue shift.

use burn::prelude::*;
use burn::tensor::module::conv2d;
use burn::tensor::ops::{ConvOptions, GridSampleOptions, GridSamplePaddingMode, InterpolateMode};

use super::config::Augmentation;
use super::error::EngineError;
use super::model::on_cpu;
use super::params::read_all;
use super::rng::Rng;

mod host;

/// Per-channel mean and std of natural images (ImageNet), the usual input normalisation.
pub const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Random parameters for one view of a batch.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ViewParams {
    /// Crop centre (x, y) and half-extent (x, y) in the input's [-1, 1] coordinates; a negative
    /// x half-extent flips horizontally.
    pub crop: Vec<[f32; 4]>,
    pub brightness: Vec<f32>,
    pub contrast: Vec<f32>,
    pub saturation: Vec<f32>,
    /// Hue shift as a fraction of the colour circle.
    pub hue: Vec<f32>,
    /// Blur sigma in output pixels (0 = no blur).
    pub blur_sigma: Vec<f32>,
}

impl ViewParams {
    /// One view's parameters for each of `n` images, drawn with the settings `aug`.
    pub fn sample(rng: &mut Rng, n: usize, aug: &Augmentation, out_size: usize) -> Self {
        let f = |v: f64| v as f32;
        let (lo, hi) = (f(1.0 - aug.jitter_strength), f(1.0 + aug.jitter_strength));
        let mut p = ViewParams {
            crop: Vec::with_capacity(n),
            brightness: Vec::with_capacity(n),
            contrast: Vec::with_capacity(n),
            saturation: Vec::with_capacity(n),
            hue: Vec::with_capacity(n),
            blur_sigma: Vec::with_capacity(n),
        };
        for _ in 0..n {
            p.crop.push(random_resized_crop(rng, aug));
            let (b, c, s, h) = if rng.bernoulli(f(aug.jitter_prob)) {
                (
                    rng.range(lo, hi),
                    rng.range(lo, hi),
                    rng.range(lo, hi),
                    rng.range(-f(aug.hue), f(aug.hue)),
                )
            } else {
                (1.0, 1.0, 1.0, 0.0)
            };
            let s = if rng.bernoulli(f(aug.grayscale_prob)) {
                0.0
            } else {
                s
            };
            p.brightness.push(b);
            p.contrast.push(c);
            p.saturation.push(s);
            p.hue.push(h);
            let sigma = if aug.blur_prob > 0.0 && rng.bernoulli(f(aug.blur_prob)) {
                // torchvision's sigma 0.1-2.0 is for 224 px; scale it to this size.
                rng.range(0.1, 2.0) * out_size as f32 / 224.0 * 2.0
            } else {
                0.0
            };
            p.blur_sigma.push(sigma);
        }
        p
    }

    /// What the tensor path decides for the whole batch: whether any image shifts its hue or
    /// is blurred (see [`host::view`]).
    pub fn batch_wide(&self) -> BatchWide {
        BatchWide {
            hue: self.hue.iter().any(|&h| h != 0.0),
            blur: self.blur_sigma.iter().any(|&x| x != 0.0),
        }
    }

    /// The parameters of the images `rows`, in that order.
    pub fn select(&self, rows: impl IntoIterator<Item = usize>) -> Self {
        let mut p = Self::default();
        for i in rows {
            p.crop.push(self.crop[i]);
            p.brightness.push(self.brightness[i]);
            p.contrast.push(self.contrast[i]);
            p.saturation.push(self.saturation[i]);
            p.hue.push(self.hue[i]);
            p.blur_sigma.push(self.blur_sigma[i]);
        }
        p
    }

    /// As plain floats, [`ViewParams::FLOATS`] per image (crop, brightness, contrast,
    /// saturation, hue, blur), for a message.
    pub fn to_floats(&self) -> Vec<f32> {
        (0..self.crop.len())
            .flat_map(|i| {
                let c = self.crop[i];
                [
                    c[0],
                    c[1],
                    c[2],
                    c[3],
                    self.brightness[i],
                    self.contrast[i],
                    self.saturation[i],
                    self.hue[i],
                    self.blur_sigma[i],
                ]
            })
            .collect()
    }

    /// The inverse of [`ViewParams::to_floats`] (`floats` a whole number of images).
    pub fn from_floats(floats: &[f32]) -> Self {
        let mut p = Self::default();
        for f in floats.chunks_exact(Self::FLOATS) {
            p.crop.push([f[0], f[1], f[2], f[3]]);
            p.brightness.push(f[4]);
            p.contrast.push(f[5]);
            p.saturation.push(f[6]);
            p.hue.push(f[7]);
            p.blur_sigma.push(f[8]);
        }
        p
    }

    /// Floats per image in [`ViewParams::to_floats`].
    pub const FLOATS: usize = 9;

    /// The two views' parameters of a training step, in the order the step draws them.
    pub fn pair(rng: &mut Rng, n: usize, aug: &Augmentation, out_size: usize) -> [Self; 2] {
        let first = Self::sample(rng, n, aug, out_size);
        [first, Self::sample(rng, n, aug, out_size)]
    }
}

/// RandomResizedCrop(scale `aug.crop_scale`, ratio 3/4-4/3) + horizontal flip p 0.5 where
/// `aug.flip`, as torchvision draws them (10 tries, then the central full crop).
fn random_resized_crop(rng: &mut Rng, aug: &Augmentation) -> [f32; 4] {
    let (log_lo, log_hi) = ((3.0f32 / 4.0).ln(), (4.0f32 / 3.0).ln());
    let [area_lo, area_hi] = aug.crop_scale.map(|v| v as f32);
    let mut wh = (1.0, 1.0);
    for _ in 0..10 {
        let area = rng.range(area_lo, area_hi);
        let ratio = rng.range(log_lo, log_hi).exp();
        let w = (area * ratio).sqrt();
        let h = (area / ratio).sqrt();
        if w <= 1.0 && h <= 1.0 {
            wh = (w, h);
            break;
        }
    }
    let (w, h) = wh;
    let cx = rng.range(-(1.0 - w), 1.0 - w + f32::EPSILON);
    let cy = rng.range(-(1.0 - h), 1.0 - h + f32::EPSILON);
    let flip = if aug.flip && rng.bernoulli(0.5) {
        -1.0
    } else {
        1.0
    };
    [cx, cy, w * flip, h]
}

fn column(values: &[f32], device: &Device) -> Tensor<4> {
    let n = values.len();
    Tensor::from_data(TensorData::new(values.to_vec(), [n, 1, 1, 1]), device)
}

/// Pixel centres of an `s`-pixel axis in [-1, 1] coordinates (align_corners = false).
fn axis(s: usize) -> Vec<f32> {
    (0..s)
        .map(|i| (2 * i + 1) as f32 / s as f32 - 1.0)
        .collect()
}

/// One augmented view: `images` [n, 3, S, S] in [0, 1] -> normalised [n, 3, s, s].
pub fn augment(images: Tensor<4>, p: &ViewParams, out_size: usize) -> Tensor<4> {
    let device = images.device();
    let [n, _, _, _] = images.dims();
    let s = out_size;
    let col =
        |f: &dyn Fn(&[f32; 4]) -> f32| column(&p.crop.iter().map(f).collect::<Vec<_>>(), &device);
    // grid: [n, s, s, 2] sampling positions, x then y.
    let bx = Tensor::<4>::from_data(TensorData::new(axis(s), [1, 1, s, 1]), &device);
    let by = Tensor::<4>::from_data(TensorData::new(axis(s), [1, s, 1, 1]), &device);
    let gx = (col(&|c| c[0]) + col(&|c| c[2]) * bx).expand([n, s, s, 1]); // gx: [n, s, s, 1]
    let gy = (col(&|c| c[1]) + col(&|c| c[3]) * by).expand([n, s, s, 1]); // gy: [n, s, s, 1]
    let grid = Tensor::cat(vec![gx, gy], 3); // grid: [n, s, s, 2]
    let options = GridSampleOptions {
        mode: InterpolateMode::Bilinear,
        padding_mode: GridSamplePaddingMode::Border,
        align_corners: false,
    };
    let x = images.grid_sample_2d(grid, options); // x: [n, 3, s, s]
    let x = jitter(x, p, &device);
    let x = blur(x, &p.blur_sigma);
    normalize(x)
}

/// Brightness, contrast, saturation (0 = grayscale), hue, then clamp to [0, 1].
fn jitter(x: Tensor<4>, p: &ViewParams, device: &Device) -> Tensor<4> {
    let [n, _, s, _] = x.dims();
    let x = x * column(&p.brightness, device);
    let x = x.clamp(0.0, 1.0);
    let mean = gray(x.clone()).mean_dims(&[2, 3]); // mean: [n, 1, 1, 1]
    let x = ((x - mean.clone()) * column(&p.contrast, device) + mean).clamp(0.0, 1.0);
    let g = gray(x.clone()); // g: [n, 1, s, s]
    let x = (g.clone() + (x - g) * column(&p.saturation, device)).clamp(0.0, 1.0);
    if p.hue.iter().all(|&h| h == 0.0) {
        return x;
    }
    // Per-image colour matrix T^-1 R(theta) T with T = RGB -> YIQ.
    let m: Vec<f32> = p.hue.iter().flat_map(|&h| hue_matrix(h)).collect();
    let m = Tensor::<3>::from_data(TensorData::new(m, [n, 3, 3]), device); // m: [n, 3, 3]
    let flat = x.reshape([n, 3, s * s]); // flat: [n, 3, s*s]
    m.matmul(flat).reshape([n, 3, s, s]).clamp(0.0, 1.0)
}

/// Luma (ITU-R 601, as torchvision's grayscale): [n, 3, h, w] -> [n, 1, h, w].
fn gray(x: Tensor<4>) -> Tensor<4> {
    let [n, _, h, w] = x.dims();
    let r = x.clone().slice([0..n, 0..1, 0..h, 0..w]);
    let g = x.clone().slice([0..n, 1..2, 0..h, 0..w]);
    let b = x.slice([0..n, 2..3, 0..h, 0..w]);
    r.mul_scalar(0.299) + g.mul_scalar(0.587) + b.mul_scalar(0.114)
}

fn hue_matrix(h: f32) -> [f32; 9] {
    const T: [[f32; 3]; 3] = [
        [0.299, 0.587, 0.114],
        [0.596, -0.274, -0.322],
        [0.211, -0.523, 0.312],
    ];
    const TI: [[f32; 3]; 3] = [
        [1.0, 0.956, 0.621],
        [1.0, -0.272, -0.647],
        [1.0, -1.106, 1.703],
    ];
    let (sin, cos) = (h * std::f32::consts::TAU).sin_cos();
    let r = [[1.0, 0.0, 0.0], [0.0, cos, -sin], [0.0, sin, cos]];
    let mul = |a: &[[f32; 3]; 3], b: &[[f32; 3]; 3]| {
        let mut o = [[0.0f32; 3]; 3];
        for i in 0..3 {
            for j in 0..3 {
                o[i][j] = (0..3).map(|k| a[i][k] * b[k][j]).sum();
            }
        }
        o
    };
    let m = mul(&TI, &mul(&r, &T));
    [
        m[0][0], m[0][1], m[0][2], m[1][0], m[1][1], m[1][2], m[2][0], m[2][1], m[2][2],
    ]
}

/// Separable Gaussian blur with one sigma per image: the batch is folded into channels and a
/// grouped convolution gives each image its own kernel.
fn blur(x: Tensor<4>, sigmas: &[f32]) -> Tensor<4> {
    if sigmas.iter().all(|&s| s == 0.0) {
        return x;
    }
    let device = x.device();
    let [n, c, h, w] = x.dims();
    let k = (h / 10) | 1; // blur_kernel's width
    let half = k / 2;
    let mut weights = Vec::with_capacity(n * c * k);
    for &sigma in sigmas {
        let kernel = blur_kernel(sigma, h);
        for _ in 0..c {
            weights.extend_from_slice(&kernel);
        }
    }
    let folded = x.reshape([1, n * c, h, w]); // folded: [1, n*c, h, w]
    let wx = Tensor::<4>::from_data(TensorData::new(weights.clone(), [n * c, 1, 1, k]), &device);
    let wy = Tensor::<4>::from_data(TensorData::new(weights, [n * c, 1, k, 1]), &device);
    let y = conv2d(
        folded,
        wx,
        None,
        ConvOptions::new([1, 1], [0, half], [1, 1], n * c),
    );
    let y = conv2d(
        y,
        wy,
        None,
        ConvOptions::new([1, 1], [half, 0], [1, 1], n * c),
    );
    y.reshape([n, c, h, w])
}

/// One image's blur kernel at `size` px: odd, about a tenth of the image wide (as in MoCo v2),
/// normalised; sigma 0 keeps the image.
fn blur_kernel(sigma: f32, size: usize) -> Vec<f32> {
    let k = (size / 10) | 1;
    let half = k / 2;
    if sigma == 0.0 {
        return (0..k).map(|i| if i == half { 1.0 } else { 0.0 }).collect();
    }
    let raw: Vec<f32> = (0..k)
        .map(|i| {
            let d = i as f32 - half as f32;
            (-d * d / (2.0 * sigma * sigma)).exp()
        })
        .collect();
    let sum: f32 = raw.iter().sum();
    raw.into_iter().map(|v| v / sum).collect()
}

/// What the tensor path does to a whole batch or not at all: the hue matrix (which at 0 is
/// the identity only to about 2e-3) and the blur. A part of a batch computed elsewhere takes
/// the whole batch's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BatchWide {
    pub hue: bool,
    pub blur: bool,
}

/// One view of the stored images `pixels` (RGB, `side` px) computed on the host: normalised
/// [n, 3, s, s] row-major, `wide` as for the batch they belong to ([`ViewParams::batch_wide`]).
pub fn host_view(
    pixels: &[&[u8]],
    side: usize,
    p: &ViewParams,
    out_size: usize,
    wide: BatchWide,
) -> Vec<f32> {
    host::view(pixels, side, p, out_size, wide)
}

/// A training step's two views of the stored images `pixels` (RGB, `side` px), [n, 3, s, s]
/// each, normalised, on `device`: on the CPU computed on the host ([`host::view`]), elsewhere
/// with the tensor ops of [`augment`]. The same views either way (host.rs's test).
pub fn pair_views(
    pixels: &[&[u8]],
    side: usize,
    params: &[ViewParams; 2],
    out_size: usize,
    device: &Device,
) -> [Tensor<4>; 2] {
    let shape = [pixels.len(), 3, out_size, out_size];
    if on_cpu(device) {
        return params.each_ref().map(|p| {
            let v = host::view(pixels, side, p, out_size, p.batch_wide());
            Tensor::from_data(TensorData::new(v, shape), device)
        });
    }
    let x = upload(pixels, side, device); // x: [n, 3, S, S]
    params.each_ref().map(|p| augment(x.clone(), p, out_size))
}

/// The un-augmented view: centre crop `out_size` of [n, 3, S, S], normalised.
pub fn center_view(images: Tensor<4>, out_size: usize) -> Tensor<4> {
    let [n, c, h, w] = images.dims();
    let (top, left) = ((h - out_size) / 2, (w - out_size) / 2);
    normalize(images.slice([0..n, 0..c, top..top + out_size, left..left + out_size]))
}

fn normalize(x: Tensor<4>) -> Tensor<4> {
    let device = x.device();
    let mean = Tensor::<4>::from_data(TensorData::new(MEAN.to_vec(), [1, 3, 1, 1]), &device);
    let std = Tensor::<4>::from_data(TensorData::new(STD.to_vec(), [1, 3, 1, 1]), &device);
    (x - mean) / std
}

/// Pairs of training views to look at: for each of `pixels` (stored RGB, `side` px), the two
/// views a training step would give it, their parameters drawn with `aug` from an RNG seeded
/// `seed` exactly as a step draws its batch's ([`ViewParams::pair`]), as RGB bytes of
/// `out_size` px: `[image][view]`.
pub async fn view_pairs(
    pixels: &[&[u8]],
    side: usize,
    aug: &Augmentation,
    seed: u64,
    out_size: usize,
    device: &Device,
) -> Result<Vec<[Vec<u8>; 2]>, EngineError> {
    let n = pixels.len();
    if n == 0 {
        return Ok(Vec::new());
    }
    let params = ViewParams::pair(&mut Rng::new(seed), n, aug, out_size);
    let plane = out_size * out_size;
    let flat = |v: Tensor<4>| denormalize(v).reshape([n * 3 * plane]); // [n*3*s*s] in [0, 1]
    let read = read_all(Vec::from(
        pair_views(pixels, side, &params, out_size, device).map(flat),
    ))
    .await?;
    let rgb = |v: &[f32], i: usize| -> Vec<u8> {
        let base = i * 3 * plane;
        (0..plane)
            .flat_map(|p| {
                (0..3)
                    .map(move |c| (v[base + c * plane + p] * 255.0).round().clamp(0.0, 255.0) as u8)
            })
            .collect()
    };
    Ok((0..n)
        .map(|i| [rgb(&read[0], i), rgb(&read[1], i)])
        .collect())
}

/// The inverse of [`normalize`]: back to [0, 1] pixels.
fn denormalize(x: Tensor<4>) -> Tensor<4> {
    let device = x.device();
    let mean = Tensor::<4>::from_data(TensorData::new(MEAN.to_vec(), [1, 3, 1, 1]), &device);
    let std = Tensor::<4>::from_data(TensorData::new(STD.to_vec(), [1, 3, 1, 1]), &device);
    x * std + mean
}

/// Host u8 RGB images (HWC, `side` x `side`) -> device tensor [n, 3, side, side] in [0, 1].
pub fn upload(pixels: &[&[u8]], side: usize, device: &Device) -> Tensor<4> {
    let n = pixels.len();
    let plane = side * side;
    let mut data = vec![0f32; n * 3 * plane];
    for (i, img) in pixels.iter().enumerate() {
        let base = i * 3 * plane;
        for (p, rgb) in img.chunks_exact(3).enumerate() {
            data[base + p] = rgb[0] as f32 / 255.0;
            data[base + plane + p] = rgb[1] as f32 / 255.0;
            data[base + 2 * plane + p] = rgb[2] as f32 / 255.0;
        }
    }
    Tensor::from_data(TensorData::new(data, [n, 3, side, side]), device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::config::AugPreset;

    fn checker(n: usize, side: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|k| {
                (0..side * side)
                    .flat_map(|i| {
                        let v = if (i / side + i % side + k).is_multiple_of(2) {
                            220
                        } else {
                            30
                        };
                        [v, v / 2, 255 - v]
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn views_have_the_training_shape_are_finite_and_seeded() {
        let device = Device::flex();
        for (stored, out) in [(36, 32), (72, 64)] {
            let imgs = checker(4, stored);
            let refs: Vec<&[u8]> = imgs.iter().map(|v| v.as_slice()).collect();
            let x = upload(&refs, stored, &device);
            let aug = AugPreset::V2.recipe(out);
            let p1 = ViewParams::sample(&mut Rng::new(3), 4, &aug, out);
            let p2 = ViewParams::sample(&mut Rng::new(3), 4, &aug, out);
            assert_eq!(p1, p2);
            let v = augment(x.clone(), &p1, out);
            assert_eq!(v.dims(), [4, 3, out, out]);
            let vals: Vec<f32> = v.into_data().try_into_vec_as().unwrap();
            assert!(vals.iter().all(|x| x.is_finite()));
            // Normalised [0, 1] pixels stay within these bounds.
            assert!(vals.iter().all(|&x| (-2.2..=2.7).contains(&x)));
            let c = center_view(x, out);
            assert_eq!(c.dims(), [4, 3, out, out]);
        }
    }

    #[test]
    fn identity_parameters_reproduce_the_image() {
        // A full-size, unflipped crop with neutral colours is the bilinear resample of the whole
        // image; at equal sizes that is the image itself.
        let device = Device::flex();
        let imgs = checker(2, 8);
        let refs: Vec<&[u8]> = imgs.iter().map(|v| v.as_slice()).collect();
        let x = upload(&refs, 8, &device);
        let p = ViewParams {
            crop: vec![[0.0, 0.0, 1.0, 1.0]; 2],
            brightness: vec![1.0; 2],
            contrast: vec![1.0; 2],
            saturation: vec![1.0; 2],
            hue: vec![0.0; 2],
            blur_sigma: vec![0.0; 2],
        };
        let a: Vec<f32> = augment(x.clone(), &p, 8)
            .into_data()
            .try_into_vec_as()
            .unwrap();
        let b: Vec<f32> = normalize(x).into_data().try_into_vec_as().unwrap();
        let max = a
            .iter()
            .zip(&b)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(max < 1e-4, "max diff {max}");
        // Hue rotation by 0 is the identity; by a full turn too.
        for h in [0.0, 1.0] {
            let m = hue_matrix(h);
            for (i, v) in m.iter().enumerate() {
                let id = if i % 4 == 0 { 1.0 } else { 0.0 };
                assert!((v - id).abs() < 2e-3, "{m:?}");
            }
        }
    }

    #[test]
    fn grayscale_and_flip_do_what_they_say() {
        let device = Device::flex();
        let imgs = checker(1, 8);
        let refs: Vec<&[u8]> = imgs.iter().map(|v| v.as_slice()).collect();
        let x = upload(&refs, 8, &device);
        let mut p = ViewParams {
            crop: vec![[0.0, 0.0, -1.0, 1.0]],
            brightness: vec![1.0],
            contrast: vec![1.0],
            saturation: vec![0.0],
            hue: vec![0.0],
            blur_sigma: vec![0.0],
        };
        let v: Vec<f32> = augment(x.clone(), &p, 8)
            .into_data()
            .try_into_vec_as()
            .unwrap();
        // Gray: the three channels, un-normalised, are equal.
        let px = |c: usize, i: usize| v[c * 64 + i] * STD[c] + MEAN[c];
        for i in 0..64 {
            assert!((px(0, i) - px(1, i)).abs() < 1e-4 && (px(1, i) - px(2, i)).abs() < 1e-4);
        }
        p.saturation = vec![1.0];
        let f: Vec<f32> = augment(x.clone(), &p, 8)
            .into_data()
            .try_into_vec_as()
            .unwrap();
        let o: Vec<f32> = normalize(x).into_data().try_into_vec_as().unwrap();
        for r in 0..8 {
            for c in 0..8 {
                assert!((f[r * 8 + c] - o[r * 8 + 7 - c]).abs() < 1e-4);
            }
        }
    }

    #[test]
    fn view_pairs_follow_the_seed_and_the_settings() {
        let device = Device::flex();
        let imgs = checker(3, 36);
        let refs: Vec<&[u8]> = imgs.iter().map(|v| v.as_slice()).collect();
        let recipe = AugPreset::V2.recipe(32);
        let pairs = |aug: &Augmentation, seed| {
            futures_lite::future::block_on(view_pairs(&refs, 36, aug, seed, 32, &device)).unwrap()
        };
        let a = pairs(&recipe, 7);
        assert_eq!(a.len(), 3);
        assert!(
            a.iter()
                .all(|p| p[0].len() == 32 * 32 * 3 && p[1].len() == 32 * 32 * 3)
        );
        assert_eq!(a, pairs(&recipe, 7), "the same seed, the same views");
        assert_ne!(a, pairs(&recipe, 8), "another seed, other views");
        assert!(
            a.iter().all(|p| p[0] != p[1]),
            "the two views of an image differ"
        );
        // The views are the training step's: the pixels of `augment` with the parameters a
        // step draws from the same RNG state.
        let x = upload(&refs, 36, &device);
        let [p1, _] = ViewParams::pair(&mut Rng::new(7), 3, &recipe, 32);
        let v: Vec<f32> = denormalize(augment(x, &p1, 32))
            .into_data()
            .try_into_vec_as()
            .unwrap();
        let red = (v[0] * 255.0).round().clamp(0.0, 255.0) as u8; // image 0, pixel 0, red
        assert_eq!(a[0][0][0], red);
        // Everything switched off: both views are the whole image, resampled, in its colours.
        let off = Augmentation {
            crop_scale: [1.0, 1.0],
            flip: false,
            jitter_strength: 0.0,
            jitter_prob: 0.0,
            hue: 0.0,
            grayscale_prob: 0.0,
            blur_prob: 0.0,
        };
        let plain = pairs(&off, 7);
        assert!(plain.iter().all(|p| p[0] == p[1]));
        // Grey views only: R = G = B in every pixel.
        let grey = pairs(
            &Augmentation {
                grayscale_prob: 1.0,
                ..off
            },
            7,
        );
        assert!(
            grey[0][0]
                .chunks(3)
                .all(|c| c[0].abs_diff(c[1]) <= 1 && c[1].abs_diff(c[2]) <= 1)
        );
        assert_ne!(grey, plain);
    }
}

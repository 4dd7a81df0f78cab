//! The encoder on the CPU backend, channels-last. flex multiplies per image and computes the
//! input gradient as a transposed convolution; here an activation is a row matrix [n h w, c],
//! every convolution gathers the nine taps of all the pixels of a slice and multiplies them by
//! the weight in one product, and normalisation + ReLU are two passes (`kernels.rs`: fused,
//! with their gradients). Values and gradients equal burn's ops (tested).
use burn::prelude::*;

use super::norm::{Mode, Norm, chunk_stats, chunks_for, scale_shift};
use crate::engine::kernels;

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

/// Most input pixels the CPU backend's convolutions see at once (64 images of 32x32): a
/// slice's activations stay in cache where a whole batch spills, and larger inputs run in fewer
/// images so the gathered taps of the first block stay small in the browser's 32-bit memory.
/// In training mode with BatchNorm a slice holds whole chunks (their statistics couple images).
pub(super) const CPU_SLICE_PIXELS: usize = 64 * 32 * 32;

pub(crate) fn on_cpu(device: &Device) -> bool {
    // burn's dispatch device has no "is CPU" query; its Debug names the backend, also when
    // wrapped for autodiff.
    format!("{device:?}").contains("Flex")
}

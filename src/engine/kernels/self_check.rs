//! The kernels against plain loops, run by the build that uses them: natively by `cargo test`,
//! and in the browser's worker (`pclKernelCheck`, debug builds), where the tap gather copies
//! through v128 registers and the matrix product runs tile-gemm's wasm lanes; code that the
//! native tests compile differently.

use burn::prelude::*;

use super::{affine_relu, conv3x3, out_side};
use crate::engine::rng::Rng;

/// (side, stride, input channels, output channels): every copy path of the gather (3 channels,
/// a multiple of 4, neither), stride 1 and 2, and products that cross tile-gemm's blocks (k =
/// 9 x 32 = 288 > 256, m = 2 x 81 = 162 > 64 rows).
const CONV_SHAPES: [(usize, usize, usize, usize); 5] = [
    (6, 1, 3, 9),
    (5, 2, 8, 5),
    (6, 2, 5, 16),
    (9, 1, 32, 12),
    (4, 2, 16, 33),
];

/// The largest relative difference |ours - loops| / (1 + |loops|) over the values and the
/// gradients (of a random weighting of the output) of `conv3x3` for [`CONV_SHAPES`] and of
/// `affine_relu`; a correct build gives about 1e-6.
pub fn kernels_self_check() -> f32 {
    let device = Device::flex().autodiff();
    let mut rng = Rng::new(11);
    let mut worst = 0f32;
    let mut compare = |ours: Vec<f32>, loops: &[f32]| {
        assert_eq!(ours.len(), loops.len(), "self-check sizes");
        for (p, q) in ours.iter().zip(loops) {
            worst = worst.max((p - q).abs() / (1.0 + q.abs()));
        }
    };
    let host =
        |t: Tensor<2>| -> Vec<f32> { t.into_data().try_to_vec::<f32>().expect("f32 values") };
    let draw = |rng: &mut Rng, len: usize, lo: f32, hi: f32| -> Vec<f32> {
        (0..len).map(|_| rng.range(lo, hi)).collect()
    };
    let n = 2;
    for (side, stride, c, co) in CONV_SHAPES {
        let k = 9 * c;
        let out = out_side(side, stride);
        let m = n * out * out;
        let x = draw(&mut rng, n * side * side * c, -1.0, 1.0);
        let w = draw(&mut rng, k * co, -1.0, 1.0);
        let g = draw(&mut rng, m * co, -1.0, 1.0);
        let (y, dx, dw) = conv_loops(&x, &w, &g, [n, side, stride, c, co]);

        let xt = Tensor::<2>::from_data(TensorData::new(x, [n * side * side, c]), &device)
            .require_grad();
        let wt = Tensor::<2>::from_data(TensorData::new(w, [k, co]), &device).require_grad();
        let gt = Tensor::<2>::from_data(TensorData::new(g, [m, co]), &device);
        let yt = conv3x3(xt.clone(), wt.clone(), n, side, stride);
        let grads = (yt.clone() * gt).sum().backward();
        compare(host(yt.without_autodiff()), &y);
        compare(host(xt.grad(&grads).expect("dx")), &dx);
        compare(host(wt.grad(&grads).expect("dw")), &dw);
    }

    let (hw, c) = (7, 6);
    let x = draw(&mut rng, n * hw * c, -1.0, 1.0);
    let a = draw(&mut rng, n * c, 0.5, 1.5);
    let b = draw(&mut rng, n * c, -0.5, 0.5);
    let g = draw(&mut rng, n * hw * c, -1.0, 1.0);
    let (mut y, mut dx) = (vec![0f32; x.len()], vec![0f32; x.len()]);
    let (mut da, mut db) = (vec![0f32; n * c], vec![0f32; n * c]);
    for (i, (&xi, &gi)) in x.iter().zip(&g).enumerate() {
        let j = i / (hw * c) * c + i % c;
        let z = xi * a[j] + b[j];
        if z > 0.0 {
            y[i] = z;
            dx[i] = gi * a[j];
            da[j] += gi * xi;
            db[j] += gi;
        }
    }
    let t3 = |v: Vec<f32>, rows: usize| {
        Tensor::<3>::from_data(TensorData::new(v, [n, rows, c]), &device).require_grad()
    };
    let (xt, at, bt) = (t3(x, hw), t3(a, 1), t3(b, 1));
    let gt = Tensor::<3>::from_data(TensorData::new(g, [n, hw, c]), &device);
    let yt = affine_relu(xt.clone(), at.clone(), bt.clone());
    let grads = (yt.clone() * gt).sum().backward();
    let flat = |t: Tensor<3>, rows: usize| host(t.reshape([n * rows, c]));
    compare(flat(yt.without_autodiff(), hw), &y);
    compare(flat(xt.grad(&grads).expect("dx"), hw), &dx);
    compare(flat(at.grad(&grads).expect("da"), 1), &da);
    compare(flat(bt.grad(&grads).expect("db"), 1), &db);
    worst
}

/// A 3x3, padding-1 convolution of channels-last images as nested loops, and the gradients of
/// sum(y * g): (y [m, co], dx [n side side, c], dw [9 c, co]).
fn conv_loops(
    x: &[f32],
    w: &[f32],
    g: &[f32],
    [n, side, stride, c, co]: [usize; 5],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let out = out_side(side, stride);
    let mut y = vec![0f32; n * out * out * co];
    let mut dx = vec![0f32; x.len()];
    let mut dw = vec![0f32; w.len()];
    for i in 0..n {
        for oy in 0..out {
            for ox in 0..out {
                let row = (i * out + oy) * out + ox;
                for ky in 0..3 {
                    for kx in 0..3 {
                        let (iy, ix) = (oy * stride + ky, ox * stride + kx);
                        if iy == 0 || ix == 0 || iy > side || ix > side {
                            continue; // padding
                        }
                        let src = ((i * side + iy - 1) * side + ix - 1) * c;
                        for ci in 0..c {
                            let wrow = ((ky * 3 + kx) * c + ci) * co;
                            for o in 0..co {
                                y[row * co + o] += x[src + ci] * w[wrow + o];
                                dx[src + ci] += g[row * co + o] * w[wrow + o];
                                dw[wrow + o] += g[row * co + o] * x[src + ci];
                            }
                        }
                    }
                }
            }
        }
    }
    (y, dx, dw)
}

#[cfg(test)]
mod tests {
    #[test]
    fn kernels_equal_plain_loops() {
        let worst = super::kernels_self_check();
        assert!(worst < 1e-4, "largest relative difference {worst}");
    }
}

//! One file, over 500 lines: each kernel beside its gradient, which must stay its exact
//! transpose, and their tests.
//!
//! Three fused kernels for the CPU backend's channels-last encoder (`model/rows.rs`),
//! each with its gradient written out and registered with burn's autodiff. Composed from burn's
//! tensor ops, each was several passes over the activations with an allocation per pass (the
//! gather needed a copy of its input with a zero row appended, every matrix product's output a
//! zero-filled buffer copied once more to align it, GroupNorm + ReLU five passes forward and
//! about ten backward); here each is one pass forward and one backward.
//!
//! - `conv3x3`: the nine taps of every output pixel gathered into a row (zero in the padding),
//!   times the weight; gradients: dW = cols^T dy, and dcols = dy W^T summed back per pixel.
//! - `moments`: per image and channel, the sum and the sum of squares over the pixels;
//!   gradient: g_sum + 2 x g_sumsq.
//! - `affine_relu`: relu(x * a + b), a and b per image and channel; gradients: dz = dy [y > 0],
//!   dx = dz a, da = sum dz x, db = sum dz.
//!
//! Only for tensors on burn's flex backend, plain or wrapped for autodiff (`model/rows.rs` calls
//! them only there; elsewhere they panic);
//! values and gradients are checked against the same maths in burn ops (tests below and the
//! encoder tests in `model/tests.rs`).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::prelude::*;
use tile_gemm::Operand;

mod self_check;
pub use self_check::kernels_self_check;

type Ad = Autodiff<Flex>;

/// The f32 values of a flex tensor, contiguous (copied only if it was a strided view).
fn contiguous(t: &FlexTensor) -> FlexTensor {
    if t.as_slice::<f32>().is_some() {
        t.clone()
    } else {
        t.to_contiguous()
    }
}

fn vals(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>()
        .expect("a contiguous f32 tensor (see `contiguous`)")
}

fn flex(values: Vec<f32>, shape: &[usize]) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape.to_vec()))
}

/// Runs `f` on every item: in burn's rayon pool natively, in order on wasm32 (no threads).
fn each<T: Send, F: Fn(usize, T) + Sync + Send>(items: Vec<T>, f: F) {
    #[cfg(not(target_arch = "wasm32"))]
    {
        use rayon::prelude::*;
        items
            .into_par_iter()
            .enumerate()
            .for_each(|(i, item)| f(i, item));
    }
    #[cfg(target_arch = "wasm32")]
    items
        .into_iter()
        .enumerate()
        .for_each(|(i, item)| f(i, item));
}

/// `len` values made chunk by chunk (`chunk` values each, with the matching item of `extras`)
/// by `fill`, in parallel. Each chunk is zeroed in its own task just before `fill` writes it,
/// while it is in cache: a zero-filled Vec costs a whole-buffer, single-threaded memset by the
/// allocator or fresh pages zeroed by the kernel.
fn build<T, F>(len: usize, chunk: usize, extras: Vec<T>, fill: F) -> Vec<f32>
where
    T: Send,
    F: Fn(usize, &mut [f32], T) + Sync + Send,
{
    let mut v: Vec<f32> = Vec::with_capacity(len);
    let parts: Vec<_> = v.spare_capacity_mut()[..len]
        .chunks_mut(chunk)
        .zip(extras)
        .collect();
    assert_eq!(parts.len(), len.div_ceil(chunk), "one extra per chunk");
    each(parts, |i, (part, extra)| {
        part.fill(core::mem::MaybeUninit::new(0.0));
        // SAFETY: every element of `part` was initialised on the line above.
        let part = unsafe { &mut *(part as *mut [core::mem::MaybeUninit<f32>] as *mut [f32]) };
        fill(i, part, extra);
    });
    // SAFETY: the chunks cover 0..len (asserted) and each was initialised in its task.
    unsafe { v.set_len(len) };
    v
}

/// `build` without extras.
fn build_plain<F: Fn(usize, &mut [f32]) + Sync + Send>(
    len: usize,
    chunk: usize,
    fill: F,
) -> Vec<f32> {
    build(len, chunk, vec![(); len.div_ceil(chunk)], |i, part, ()| {
        fill(i, part)
    })
}

/// dst [m, n] = lhs [m, k] x rhs [k, n], row-major: `tile_gemm` in the browser, gemm (in
/// burn's rayon pool) natively.
#[cfg(target_arch = "wasm32")]
fn matmul(m: usize, k: usize, n: usize, lhs: Operand, rhs: Operand) -> Vec<f32> {
    tile_gemm::matmul(m, k, n, &lhs, &rhs)
}

#[cfg(not(target_arch = "wasm32"))]
fn matmul(m: usize, k: usize, n: usize, lhs: Operand, rhs: Operand) -> Vec<f32> {
    tile_gemm::check_product(m, k, n, &lhs, &rhs);
    let parallelism = gemm::Parallelism::Rayon(0);
    let mut dst: Vec<f32> = Vec::with_capacity(m * n);
    // SAFETY: the operands hold every element the strides reach (asserted above); dst has room
    // for m x n, and gemm writes each of them (no read of dst: read_dst is false) before
    // set_len makes them visible.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.spare_capacity_mut().as_mut_ptr().cast::<f32>(),
            1,
            n as isize,
            false,
            lhs.data.as_ptr(),
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.data.as_ptr(),
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
        dst.set_len(m * n);
    }
    dst
}

fn rows_of(data: &[f32], cols: usize) -> Operand<'_> {
    Operand {
        data,
        row_stride: cols,
        col_stride: 1,
    }
}

fn transposed(data: &[f32], cols: usize) -> Operand<'_> {
    Operand {
        data,
        row_stride: 1,
        col_stride: cols,
    }
}

/// Output side of a 3x3, padding-1 convolution with `stride` over `side` input pixels.
pub fn out_side(side: usize, stride: usize) -> usize {
    (side - 1) / stride + 1
}

/// Along one axis: the input coordinate that kernel offset `k` of output coordinate `o` reads,
/// or None in the padding.
#[inline(always)]
fn tap_axis(o: usize, k: usize, stride: usize, side: usize) -> Option<usize> {
    (o * stride + k).checked_sub(1).filter(|&v| v < side)
}

/// The input pixel (y, x) of tap (ky, kx) of output pixel (oy, ox), or None in the padding.
#[cfg(test)]
fn tap_source(oy: usize, ox: usize, t: usize, stride: usize, side: usize) -> Option<usize> {
    Some(tap_axis(oy, t / 3, stride, side)? * side + tap_axis(ox, t % 3, stride, side)?)
}

fn taps_forward(x: &[f32], n: usize, side: usize, c: usize, stride: usize) -> Vec<f32> {
    let out = out_side(side, stride);
    build_plain(n * out * out * 9 * c, out * out * 9 * c, |i, dst| {
        let src = &x[i * side * side * c..(i + 1) * side * side * c];
        for (oy, rows) in dst.chunks_exact_mut(out * 9 * c).enumerate() {
            for (ox, row) in rows.chunks_exact_mut(9 * c).enumerate() {
                for ky in 0..3 {
                    let Some(iy) = tap_axis(oy, ky, stride, side) else {
                        continue; // padding row: its taps stay zero
                    };
                    for kx in 0..3 {
                        if let Some(ix) = tap_axis(ox, kx, stride, side) {
                            let s = (iy * side + ix) * c;
                            copy_floats(&mut row[(ky * 3 + kx) * c..][..c], &src[s..s + c]);
                        }
                    }
                }
            }
        }
    })
}

/// `dst.copy_from_slice(src)` for one tap's channels. On wasm32 a slice copy of unknown length
/// is `memory.copy`, which V8 runs as a call into C: for runs of 3-256 floats the call is most
/// of the cost (a twentieth of a training step). Multiples of 4 go through v128 registers (the
/// volatile load keeps LLVM from turning the loop back into `memory.copy`), and the stem's 3
/// channels through fixed-size copies, which compile to plain loads and stores.
#[inline(always)]
fn copy_floats(dst: &mut [f32], src: &[f32]) {
    assert_eq!(dst.len(), src.len(), "a tap's channels");
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    {
        use core::arch::wasm32::{v128, v128_store};
        /// A v128 at any address: its volatile read needs no 16-byte alignment.
        #[repr(C, packed)]
        #[derive(Clone, Copy)]
        struct Unaligned(v128);
        if dst.len().is_multiple_of(4) {
            for (d, s) in dst.chunks_exact_mut(4).zip(src.chunks_exact(4)) {
                // SAFETY: both chunks hold exactly 4 f32 (16 bytes); neither access needs
                // alignment (`Unaligned` is packed, v128_store is unaligned).
                unsafe {
                    let v = core::ptr::read_volatile(s.as_ptr().cast::<Unaligned>());
                    v128_store(d.as_mut_ptr().cast::<v128>(), v.0);
                }
            }
            return;
        }
        if dst.len() == 3 {
            dst[..3].copy_from_slice(&src[..3]);
            return;
        }
    }
    dst.copy_from_slice(src);
}

/// For input coordinate `i` of a 3x3, padding-1 convolution with `stride` and `out` outputs
/// along an axis: the (output coordinate, kernel offset) pairs that read it.
fn readers(i: usize, stride: usize, out: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..3).filter_map(move |k| {
        let t = (i + 1).checked_sub(k)?;
        (t % stride == 0 && t / stride < out).then_some((t / stride, k))
    })
}

/// The gradient of `taps_forward`: each input pixel sums the taps that read it (a gather, so
/// every value is written once and images run in parallel).
fn taps_backward(dcols: &[f32], n: usize, side: usize, c: usize, stride: usize) -> Vec<f32> {
    let out = out_side(side, stride);
    build_plain(n * side * side * c, side * side * c, |i, dst| {
        let src = &dcols[i * out * out * 9 * c..(i + 1) * out * out * 9 * c];
        for (s, d_px) in dst.chunks_exact_mut(c).enumerate() {
            let (iy, ix) = (s / side, s % side);
            for (oy, ky) in readers(iy, stride, out) {
                for (ox, kx) in readers(ix, stride, out) {
                    let row = (oy * out + ox) * 9 + ky * 3 + kx;
                    for (d, g) in d_px.iter_mut().zip(&src[row * c..(row + 1) * c]) {
                        *d += g;
                    }
                }
            }
        }
    })
}

fn moments_forward(x: &[f32], n: usize, hw: usize, c: usize) -> Vec<f32> {
    let mut m = vec![0f32; n * 2 * c];
    let per_image: Vec<&mut [f32]> = m.chunks_mut(2 * c).collect();
    each(per_image, |i, mi| {
        let (sum, sumsq) = mi.split_at_mut(c);
        for px in x[i * hw * c..(i + 1) * hw * c].chunks_exact(c) {
            for ((s, q), v) in sum.iter_mut().zip(sumsq.iter_mut()).zip(px) {
                *s += v;
                *q += v * v;
            }
        }
    });
    m
}

fn moments_backward(x: &[f32], g: &[f32], n: usize, hw: usize, c: usize) -> Vec<f32> {
    build_plain(n * hw * c, hw * c, |i, dst| {
        let (g_sum, g_sumsq) = g[i * 2 * c..(i + 1) * 2 * c].split_at(c);
        let src = &x[i * hw * c..(i + 1) * hw * c];
        for (d_px, x_px) in dst.chunks_exact_mut(c).zip(src.chunks_exact(c)) {
            for (((d, v), gs), gq) in d_px.iter_mut().zip(x_px).zip(g_sum).zip(g_sumsq) {
                *d = gs + 2.0 * v * gq;
            }
        }
    })
}

fn affine_relu_forward(x: &[f32], a: &[f32], b: &[f32], n: usize, hw: usize, c: usize) -> Vec<f32> {
    build_plain(n * hw * c, hw * c, |i, dst| {
        let (ai, bi) = (&a[i * c..(i + 1) * c], &b[i * c..(i + 1) * c]);
        let src = &x[i * hw * c..(i + 1) * hw * c];
        for (y_px, x_px) in dst.chunks_exact_mut(c).zip(src.chunks_exact(c)) {
            for (((y, v), s), t) in y_px.iter_mut().zip(x_px).zip(ai).zip(bi) {
                // A compare and select, not `f32::max`: on wasm32 LLVM makes `max`'s NaN rule
                // four calls to fmaxf per vector (the forward's slowest loop in the browser).
                let z = v * s + t;
                *y = if z > 0.0 { z } else { 0.0 };
            }
        }
    })
}

type AffineGrads = (Vec<f32>, Vec<f32>, Vec<f32>);

/// (dx, da, db) of relu(x * a + b) from x, a, the output y and its gradient dy.
fn affine_relu_backward(state: [&[f32]; 4], n: usize, hw: usize, c: usize) -> AffineGrads {
    let [x, a, y, dy] = state;
    let mut da = vec![0f32; n * c];
    let mut db = vec![0f32; n * c];
    let per_image: Vec<_> = da.chunks_mut(c).zip(db.chunks_mut(c)).collect();
    let dx = build(n * hw * c, hw * c, per_image, |i, dxi, (dai, dbi)| {
        let ai = &a[i * c..(i + 1) * c];
        let range = i * hw * c..(i + 1) * hw * c;
        let (xi, yi, dyi) = (&x[range.clone()], &y[range.clone()], &dy[range]);
        for p in 0..hw {
            let px = p * c..(p + 1) * c;
            let rows = dxi[px.clone()].iter_mut().zip(&xi[px.clone()]);
            let rows = rows.zip(&yi[px.clone()]).zip(&dyi[px]);
            for ((((d, v), out), g), ((s, da), db)) in
                rows.zip(ai.iter().zip(dai.iter_mut()).zip(dbi.iter_mut()))
            {
                let dz = if *out > 0.0 { *g } else { 0.0 };
                *d = dz * s;
                *da += dz * v;
                *db += dz;
            }
        }
    });
    (dx, da, db)
}

/// Whether a float tensor is on flex wrapped for autodiff (else plain flex).
fn tracked<const D: usize>(t: &Tensor<D>) -> bool {
    format!("{:?}", t.device()).contains("Autodiff")
}

fn plain<const D: usize>(t: Tensor<D>) -> FlexTensor {
    contiguous(
        &t.try_into_primitive::<Flex>()
            .expect("a tensor on burn's flex backend"),
    )
}

fn wrapped<const D: usize>(t: Tensor<D>) -> burn::backend::tensor::FloatTensor<Ad> {
    t.try_into_primitive::<Ad>()
        .expect("a tensor on burn's flex backend with autodiff")
}

/// A 3x3, padding-1 convolution without bias with `stride` on n images, channels-last:
/// x [n side side, c], w [9 c, co] (rows in (ky, kx, c) order) -> [n out out, co].
pub fn conv3x3(x: Tensor<2>, w: Tensor<2>, n: usize, side: usize, stride: usize) -> Tensor<2> {
    let c = x.dims()[1];
    let [k, co] = w.dims();
    assert_eq!(k, 9 * c, "conv3x3: weight rows {k} for {c} input channels");
    let out = out_side(side, stride);
    let m = n * out * out;
    let forward = |x: &FlexTensor, w: &FlexTensor| {
        let cols = taps_forward(vals(x), n, side, c, stride); // cols: [m, 9 c]
        let y = matmul(m, k, co, rows_of(&cols, k), rows_of(vals(w), co)); // y: [m, co]
        (cols, flex(y, &[m, co]))
    };
    if !tracked(&x) {
        return Tensor::from_primitive::<Flex>(forward(&plain(x), &plain(w)).1);
    }

    #[derive(Debug)]
    struct ConvBackward;
    impl Backward<Flex, 2> for ConvBackward {
        type State = (Vec<f32>, FlexTensor, [usize; 4]); // cols, w, (n, side, c, stride)
        fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
            let dy = contiguous(&grads.consume::<Flex>(&ops.node));
            let (cols, w, [n, side, c, stride]) = ops.state;
            let [k, co] = w.layout().shape().dims::<2>();
            let m = cols.len() / k;
            let [px, pw] = ops.parents;
            if let Some(node) = pw {
                // dW: [9 c, co] = cols^T [9 c, m] x dy [m, co]
                let dw = matmul(k, m, co, transposed(&cols, k), rows_of(vals(&dy), co));
                grads.register::<Flex>(node.id, flex(dw, &[k, co]));
            }
            if let Some(node) = px {
                // dcols: [m, 9 c] = dy [m, co] x W^T [co, 9 c], then summed back per pixel
                let dcols = matmul(m, co, k, rows_of(vals(&dy), co), transposed(vals(&w), co));
                let dx = taps_backward(&dcols, n, side, c, stride);
                grads.register::<Flex>(node.id, flex(dx, &[n * side * side, c]));
            }
        }
    }
    let (xp, xg) = wrapped(x).into_parts();
    let (wp, wg) = wrapped(w).into_parts();
    let (xp, wp) = (contiguous(&xp), contiguous(&wp));
    let (cols, y) = forward(&xp, &wp);
    let out = match ConvBackward
        .prepare::<NoCheckpointing>([xg, wg])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish((cols, wp, [n, side, c, stride]), y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    };
    Tensor::from_primitive::<Ad>(out)
}

/// x [n, hw, c] -> [n, 2, c]: per image and channel, the sum over the hw pixels and the sum of
/// squares.
pub fn moments(x: Tensor<3>) -> Tensor<3> {
    let [n, hw, c] = x.dims();
    if !tracked(&x) {
        let x = plain(x);
        let m = moments_forward(vals(&x), n, hw, c);
        return Tensor::from_primitive::<Flex>(flex(m, &[n, 2, c]));
    }

    #[derive(Debug)]
    struct MomentsBackward;
    impl Backward<Flex, 1> for MomentsBackward {
        type State = FlexTensor; // x
        fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
            let g = contiguous(&grads.consume::<Flex>(&ops.node));
            let x = ops.state;
            let [n, hw, c] = x.layout().shape().dims::<3>();
            if let [Some(node)] = ops.parents {
                let dx = moments_backward(vals(&x), vals(&g), n, hw, c);
                grads.register::<Flex>(node.id, flex(dx, &[n, hw, c]));
            }
        }
    }
    let (xp, xg) = wrapped(x).into_parts();
    let xp = contiguous(&xp);
    let m = flex(moments_forward(vals(&xp), n, hw, c), &[n, 2, c]);
    let out = match MomentsBackward
        .prepare::<NoCheckpointing>([xg])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(xp, m),
        OpsKind::UnTracked(prep) => prep.finish(m),
    };
    Tensor::from_primitive::<Ad>(out)
}

/// relu(x * a + b): x [n, hw, c], a and b [n, 1, c] (one scale and shift per image and channel).
pub fn affine_relu(x: Tensor<3>, a: Tensor<3>, b: Tensor<3>) -> Tensor<3> {
    let [n, hw, c] = x.dims();
    if !tracked(&x) {
        let (x, a, b) = (plain(x), plain(a), plain(b));
        let y = affine_relu_forward(vals(&x), vals(&a), vals(&b), n, hw, c);
        return Tensor::from_primitive::<Flex>(flex(y, &[n, hw, c]));
    }

    #[derive(Debug)]
    struct AffineReluBackward;
    impl Backward<Flex, 3> for AffineReluBackward {
        type State = [FlexTensor; 3]; // x, a, y
        fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
            let dy = contiguous(&grads.consume::<Flex>(&ops.node));
            let [x, a, y] = ops.state;
            let [n, hw, c] = x.layout().shape().dims::<3>();
            let state = [vals(&x), vals(&a), vals(&y), vals(&dy)];
            let (dx, da, db) = affine_relu_backward(state, n, hw, c);
            let [px, pa, pb] = ops.parents;
            for (node, g, shape) in [
                (px, dx, [n, hw, c]),
                (pa, da, [n, 1, c]),
                (pb, db, [n, 1, c]),
            ] {
                if let Some(node) = node {
                    grads.register::<Flex>(node.id, flex(g, &shape));
                }
            }
        }
    }
    let (xp, xg) = wrapped(x).into_parts();
    let (ap, ag) = wrapped(a).into_parts();
    let (bp, bg) = wrapped(b).into_parts();
    let (xp, ap, bp) = (contiguous(&xp), contiguous(&ap), contiguous(&bp));
    let y = flex(
        affine_relu_forward(vals(&xp), vals(&ap), vals(&bp), n, hw, c),
        &[n, hw, c],
    );
    let out = match AffineReluBackward
        .prepare::<NoCheckpointing>([xg, ag, bg])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish([xp, ap, y.clone()], y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    };
    Tensor::from_primitive::<Ad>(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;
    use burn::tensor::activation::relu;

    fn close(a: Tensor<2>, b: Tensor<2>, what: &str) {
        let a: Vec<f32> = a.into_data().try_into_vec_as().unwrap();
        let b: Vec<f32> = b.into_data().try_into_vec_as().unwrap();
        assert_eq!(a.len(), b.len(), "{what}: sizes");
        for (p, q) in a.iter().zip(&b) {
            assert!((p - q).abs() < 1e-4 * (1.0 + q.abs()), "{what}: {p} vs {q}");
        }
    }

    /// Each kernel against the same maths in burn ops, values and gradients of a weighted sum,
    /// on plain flex and on flex with autodiff.
    #[test]
    fn kernels_equal_burn_ops_with_gradients() {
        let device = Device::flex().autodiff();
        device.seed(3);
        let (n, hw, c) = (3, 10, 8);
        let x = Tensor::<3>::random([n, hw, c], Distribution::Default, &device)
            .sub_scalar(0.5)
            .require_grad();
        let a = Tensor::<3>::random([n, 1, c], Distribution::Default, &device).require_grad();
        let b = Tensor::<3>::random([n, 1, c], Distribution::Default, &device)
            .sub_scalar(0.5)
            .require_grad();
        let w = Tensor::<3>::random([n, hw, c], Distribution::Default, &device);
        let flat = |t: Tensor<3>| t.reshape([n * hw, c]);

        // affine_relu
        let ours = affine_relu(x.clone(), a.clone(), b.clone());
        let theirs = relu(x.clone() * a.clone() + b.clone());
        close(flat(ours.clone()), flat(theirs.clone()), "affine_relu");
        let g1 = (ours * w.clone()).sum().backward();
        let g2 = (theirs * w.clone()).sum().backward();
        close(flat(x.grad(&g1).unwrap()), flat(x.grad(&g2).unwrap()), "dx");
        let row = |t: Tensor<3>| t.reshape([n, c]);
        close(row(a.grad(&g1).unwrap()), row(a.grad(&g2).unwrap()), "da");
        close(row(b.grad(&g1).unwrap()), row(b.grad(&g2).unwrap()), "db");

        // moments
        let wm = Tensor::<3>::random([n, 2, c], Distribution::Default, &device);
        let ours = moments(x.clone());
        let theirs = Tensor::cat(vec![x.clone().sum_dim(1), x.clone().square().sum_dim(1)], 1);
        let two = |t: Tensor<3>| t.reshape([n * 2, c]);
        close(two(ours.clone()), two(theirs.clone()), "moments");
        let g1 = (ours * wm.clone()).sum().backward();
        let g2 = (theirs * wm).sum().backward();
        close(
            flat(x.grad(&g1).unwrap()),
            flat(x.grad(&g2).unwrap()),
            "moments dx",
        );

        // conv3x3, stride 1 and 2, odd and even sides, 3, 5 and 8 channels: against the gather
        // from a zero-padded copy times the weight, in burn ops
        for (side, stride, c) in [
            (5, 1, 8),
            (5, 2, 8),
            (4, 2, 8),
            (6, 1, 3),
            (6, 2, 5),
            (9, 2, 8),
            (3, 2, 8),
            (2, 2, 8),
        ] {
            let xs = Tensor::<2>::random([2 * side * side, c], Distribution::Default, &device)
                .require_grad();
            let ws = Tensor::<2>::random([9 * c, 5], Distribution::Default, &device)
                .sub_scalar(0.5)
                .require_grad();
            let out = out_side(side, stride);
            let idx: Vec<i64> = (0..2 * out * out * 9)
                .map(|k| {
                    let (i, p, t) = (k / (out * out * 9), k / 9 % (out * out), k % 9);
                    tap_source(p / out, p % out, t, stride, side)
                        .map_or((2 * side * side) as i64, |s| (i * side * side + s) as i64)
                })
                .collect();
            let len = idx.len();
            let idx = Tensor::<1, Int>::from_data(TensorData::new(idx, [len]), &device);
            let padded = Tensor::cat(vec![xs.clone(), Tensor::zeros([1, c], &device)], 0);
            let cols = padded.select(0, idx).reshape([2 * out * out, 9 * c]);
            let theirs = cols.matmul(ws.clone());
            let ours = conv3x3(xs.clone(), ws.clone(), 2, side, stride);
            close(ours.clone(), theirs.clone(), "conv3x3");
            let wt = Tensor::<2>::random([2 * out * out, 5], Distribution::Default, &device);
            let g1 = (ours * wt.clone()).sum().backward();
            let g2 = (theirs * wt).sum().backward();
            close(xs.grad(&g1).unwrap(), xs.grad(&g2).unwrap(), "conv3x3 dx");
            close(ws.grad(&g1).unwrap(), ws.grad(&g2).unwrap(), "conv3x3 dw");
        }

        // Plain flex (no autodiff) gives the same values.
        let plain = Device::flex();
        let xp = Tensor::<3>::from_data(x.clone().into_data(), &plain);
        let ap = Tensor::<3>::from_data(a.clone().into_data(), &plain);
        let bp = Tensor::<3>::from_data(b.clone().into_data(), &plain);
        let y_plain = affine_relu(xp.clone(), ap, bp);
        let y_ad = affine_relu(x.clone(), a, b).without_autodiff();
        close(flat(y_plain), flat(y_ad), "affine_relu plain");
        let m_plain = moments(xp);
        close(
            m_plain.reshape([n * 2, c]),
            moments(x).without_autodiff().reshape([n * 2, c]),
            "moments plain",
        );
    }

    #[test]
    fn tap_source_reads_padding_as_none() {
        // side 4, stride 2: output (0, 0) has taps at input (-1..=1, -1..=1).
        let taps: Vec<Option<usize>> = (0..9).map(|t| tap_source(0, 0, t, 2, 4)).collect();
        assert_eq!(
            taps,
            vec![
                None,
                None,
                None,
                None,
                Some(0),
                Some(1),
                None,
                Some(4),
                Some(5)
            ]
        );
        // output (1, 1): input rows/cols 1..=3, all inside.
        assert_eq!(tap_source(1, 1, 8, 2, 4), Some(3 * 4 + 3));
    }
}

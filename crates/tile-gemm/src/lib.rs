//! pcl-studio's matrix product for its CPU kernels in the browser: one thread, blocked and
//! packed, with a micro-kernel of 4 rows x 8 columns (8 accumulators of 4 lanes) sized for
//! V8's code on wasm SIMD. gemm's own wasm kernel is 12 x 4 (12 accumulators, with 3 rows of A
//! and a broadcast of B live beside them: all 16 of the x86-64 vector registers V8 allocates
//! from). Alone, in Chromium on the 2-core machine, the 12 x 4 loop peaked at 25-27 GFLOP/s and
//! a 4 x 8 one at 31-33; in the page's training step this crate made the step 1.06-1.10x
//! faster than gemm (docs/measurements.md). Natively the CPU kernels keep using gemm (AVX-512,
//! threads).
//!
//! A crate of its own for its build settings: the project's own code builds with debug
//! assertions in the dev profile (the page's test hooks need them), and those checks on every
//! slice step and pointer access cost this loop two thirds of its speed; dependencies build at
//! full speed (Cargo.toml's profiles).
//!
//! dst [m, n] = lhs [m, k] x rhs [k, n]: for each block of `KC` steps of k, rhs is packed into
//! panels of 8 columns ([kc, 8] each, zero past n); for each block of `MC` rows, lhs is packed
//! into tiles of 4 rows ([kc, 4] each, zero past m); every (tile, panel) pair is one call of the
//! micro-kernel, whose 4 x 8 result is stored (first block of k) or added (later blocks).
//! The same code runs natively with plain arrays for lanes, so the tests check the blocking,
//! packing and edges on every target.

/// One operand of a product: its values and the strides between rows and between columns (a
/// transposed operand is the same buffer with the strides swapped).
pub struct Operand<'a> {
    pub data: &'a [f32],
    pub row_stride: usize,
    pub col_stride: usize,
}

impl Operand<'_> {
    /// The index of the last element of a `rows` x `cols` view.
    fn last(&self, rows: usize, cols: usize) -> usize {
        (rows - 1) * self.row_stride + (cols - 1) * self.col_stride
    }
}

const MR: usize = 4;
const NR: usize = 8;
const KC: usize = 256;
const MC: usize = 64;

// Lanes move in and out as arrays, not through pointers: the dev profile checks every raw
// pointer access (alignment, null), which kept this code at a third of its speed.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod lanes {
    use core::arch::wasm32::{f32x4_add, f32x4_mul, f32x4_splat, v128};

    #[derive(Clone, Copy)]
    pub struct F4(v128);

    impl F4 {
        #[inline(always)]
        pub fn splat(x: f32) -> Self {
            F4(f32x4_splat(x))
        }
        #[inline(always)]
        pub fn from_array(a: [f32; 4]) -> Self {
            // SAFETY: 16 bytes to 16 bytes, every bit pattern valid for both.
            F4(unsafe { core::mem::transmute::<[f32; 4], v128>(a) })
        }
        #[inline(always)]
        pub fn to_array(self) -> [f32; 4] {
            // SAFETY: as in from_array.
            unsafe { core::mem::transmute::<v128, [f32; 4]>(self.0) }
        }
        #[inline(always)]
        pub fn add(self, o: F4) -> Self {
            F4(f32x4_add(self.0, o.0))
        }
        /// self + a b, rounded twice (as the scalar loop would).
        #[inline(always)]
        pub fn mul_add(self, a: F4, b: F4) -> Self {
            F4(f32x4_add(self.0, f32x4_mul(a.0, b.0)))
        }
    }
}

#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
mod lanes {
    #[derive(Clone, Copy)]
    pub struct F4([f32; 4]);

    impl F4 {
        #[inline(always)]
        pub fn splat(x: f32) -> Self {
            F4([x; 4])
        }
        #[inline(always)]
        pub fn from_array(a: [f32; 4]) -> Self {
            F4(a)
        }
        #[inline(always)]
        pub fn to_array(self) -> [f32; 4] {
            self.0
        }
        #[inline(always)]
        pub fn add(self, o: F4) -> Self {
            F4(core::array::from_fn(|i| self.0[i] + o.0[i]))
        }
        #[inline(always)]
        pub fn mul_add(self, a: F4, b: F4) -> Self {
            F4(core::array::from_fn(|i| self.0[i] + a.0[i] * b.0[i]))
        }
    }
}

use lanes::F4;

/// Panics unless lhs [m, k] x rhs [k, n] is a non-empty product whose operands hold every value
/// their strides reach (the checks of every product, here and gemm's natively).
pub fn check_product(m: usize, k: usize, n: usize, lhs: &Operand, rhs: &Operand) {
    assert!(m > 0 && k > 0 && n > 0, "empty product {m}x{k} by {k}x{n}");
    assert!(
        lhs.last(m, k) < lhs.data.len() && rhs.last(k, n) < rhs.data.len(),
        "operands of {} and {} values for {m}x{k} by {k}x{n}",
        lhs.data.len(),
        rhs.data.len()
    );
}

/// dst [m, n] = lhs [m, k] x rhs [k, n], row-major.
pub fn matmul(m: usize, k: usize, n: usize, lhs: &Operand, rhs: &Operand) -> Vec<f32> {
    check_product(m, k, n, lhs, rhs);
    let panels = n.div_ceil(NR);
    let mut dst = vec![0f32; m * n];
    let mut packed_rhs = vec![0f32; KC.min(k) * panels * NR];
    let mut packed_lhs = vec![0f32; KC.min(k) * MC.min(m.next_multiple_of(MR))];
    for k0 in (0..k).step_by(KC) {
        let kc = KC.min(k - k0);
        pack_rhs(rhs, k0, kc, n, &mut packed_rhs[..kc * panels * NR]);
        for i0 in (0..m).step_by(MC) {
            let mc = MC.min(m - i0);
            let tiles = mc.div_ceil(MR);
            pack_lhs(lhs, i0, mc, k0, kc, &mut packed_lhs[..kc * tiles * MR]);
            for (p, panel) in packed_rhs.chunks_exact(kc * NR).take(panels).enumerate() {
                for (t, tile) in packed_lhs.chunks_exact(kc * MR).take(tiles).enumerate() {
                    let acc = micro_kernel(kc, tile, panel);
                    let (row, col) = (i0 + t * MR, p * NR);
                    write_tile(&acc, &mut dst, n, row, col, m - row, n - col, k0 == 0);
                }
            }
        }
    }
    dst
}

/// Columns `[p * 8, p * 8 + 8)` of rows `k0..k0 + kc` of rhs, panel after panel, each [kc, 8].
fn pack_rhs(rhs: &Operand, k0: usize, kc: usize, n: usize, out: &mut [f32]) {
    for (p, panel) in out.chunks_exact_mut(kc * NR).enumerate() {
        let (col, width) = (p * NR, NR.min(n - p * NR));
        for (kk, row) in panel.chunks_exact_mut(NR).enumerate() {
            let start = (k0 + kk) * rhs.row_stride + col * rhs.col_stride;
            if rhs.col_stride == 1 {
                row[..width].copy_from_slice(&rhs.data[start..start + width]);
            } else {
                let strided = rhs.data[start..].iter().step_by(rhs.col_stride);
                for (v, x) in row[..width].iter_mut().zip(strided) {
                    *v = *x;
                }
            }
            row[width..].fill(0.0);
        }
    }
}

/// Rows `[i0 + t * 4, i0 + t * 4 + 4)` (clipped to `mc`) of columns `k0..k0 + kc` of lhs, tile
/// after tile, each [kc, 4] (zero past the last row).
fn pack_lhs(lhs: &Operand, i0: usize, mc: usize, k0: usize, kc: usize, out: &mut [f32]) {
    for (t, tile) in out.chunks_exact_mut(kc * MR).enumerate() {
        let height = MR.min(mc - t * MR);
        let start = (i0 + t * MR) * lhs.row_stride + k0 * lhs.col_stride;
        if lhs.row_stride == 1 && height == MR {
            // a column's 4 rows are side by side
            for (kk, col) in tile.chunks_exact_mut(MR).enumerate() {
                let at = start + kk * lhs.col_stride;
                col.copy_from_slice(&lhs.data[at..at + MR]);
            }
            continue;
        }
        for r in 0..MR {
            let values = (r < height).then(|| {
                let first = start + r * lhs.row_stride;
                lhs.data[first..].iter().step_by(lhs.col_stride)
            });
            let column = tile[r..].iter_mut().step_by(MR);
            match values {
                Some(values) => column.zip(values).for_each(|(v, x)| *v = *x),
                None => column.for_each(|v| *v = 0.0),
            }
        }
    }
}

/// Four values of a slice of at least four.
#[inline(always)]
fn four(v: &[f32]) -> F4 {
    F4::from_array([v[0], v[1], v[2], v[3]])
}

/// The 4 x 8 product of a packed tile [kc, 4] and a packed panel [kc, 8]: row r in
/// accumulators 2r (columns 0-3) and 2r + 1 (columns 4-7).
#[inline(always)]
fn micro_kernel(kc: usize, tile: &[f32], panel: &[f32]) -> [F4; 2 * MR] {
    let mut acc = [F4::splat(0.0); 2 * MR];
    debug_assert!(tile.len() == kc * MR && panel.len() == kc * NR);
    // One exit test: with a `.take(kc)` beside the zip, the release build (fat LTO) made this a
    // loop that tests at the top and keeps every accumulator in two locals, and the page
    // trained 0.80x as fast as the dev build (docs/measurements.md).
    for (a, b) in tile.chunks_exact(MR).zip(panel.chunks_exact(NR)) {
        let (b0, b1) = (four(&b[..4]), four(&b[4..]));
        for r in 0..MR {
            let ar = F4::splat(a[r]);
            acc[2 * r] = acc[2 * r].mul_add(ar, b0);
            acc[2 * r + 1] = acc[2 * r + 1].mul_add(ar, b1);
        }
    }
    acc
}

/// Stores (`first`) or adds a tile's result at (row, col) of dst, clipped to `rows` x `cols`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn write_tile(
    acc: &[F4; 2 * MR],
    dst: &mut [f32],
    n: usize,
    row: usize,
    col: usize,
    rows: usize,
    cols: usize,
    first: bool,
) {
    let full = rows >= MR && cols >= NR;
    for r in 0..rows.min(MR) {
        let at = &mut dst[(row + r) * n + col..][..cols.min(NR)];
        if full {
            let (lo, hi) = at.split_at_mut(4);
            for (half, v) in [(lo, acc[2 * r]), (hi, acc[2 * r + 1])] {
                let sum = if first { v } else { four(half).add(v) };
                half.copy_from_slice(&sum.to_array());
            }
        } else {
            let (lo, hi) = (acc[2 * r].to_array(), acc[2 * r + 1].to_array());
            for (d, v) in at.iter_mut().zip(lo.iter().chain(&hi)) {
                *d = if first { *v } else { *d + v };
            }
        }
    }
}

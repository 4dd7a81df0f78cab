//! `tile_gemm`, the CPU kernels' matrix product in the browser, against the product in f64:
//! the same code runs here natively with plain arrays for its lanes, so its blocking, packing
//! and edges are checked on every target (the browser runs it with wasm SIMD lanes).

use pcl_studio::engine::rng::Rng;
use tile_gemm::{Operand, matmul};

/// The product in f64, element by element.
fn reference(m: usize, k: usize, n: usize, lhs: &Operand, rhs: &Operand) -> Vec<f64> {
    let mut out = vec![0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            out[i * n + j] = (0..k)
                .map(|p| {
                    let a = lhs.data[i * lhs.row_stride + p * lhs.col_stride] as f64;
                    a * rhs.data[p * rhs.row_stride + j * rhs.col_stride] as f64
                })
                .sum();
        }
    }
    out
}

#[test]
fn products_equal_the_reference_for_every_edge_and_stride() {
    let mut rng = Rng::new(1);
    // tile edges (m % 4, n % 8), several k blocks (k > 256) and several row blocks (m > 64)
    for &(m, k, n) in &[
        (1, 1, 1),
        (4, 3, 8),
        (27, 5, 32),
        (5, 256, 9),
        (67, 300, 13),
        (130, 513, 24),
        (64, 27, 32),
    ] {
        let a: Vec<f32> = (0..m * k).map(|_| rng.range(-0.5, 0.5)).collect();
        let b: Vec<f32> = (0..k * n).map(|_| rng.range(-0.5, 0.5)).collect();
        // row-major, and transposed storage of each operand
        let lhs_forms = [
            Operand {
                data: &a,
                row_stride: k,
                col_stride: 1,
            },
            Operand {
                data: &a,
                row_stride: 1,
                col_stride: m,
            },
        ];
        let rhs_forms = [
            Operand {
                data: &b,
                row_stride: n,
                col_stride: 1,
            },
            Operand {
                data: &b,
                row_stride: 1,
                col_stride: k,
            },
        ];
        for lhs in &lhs_forms {
            for rhs in &rhs_forms {
                let want = reference(m, k, n, lhs, rhs);
                let got = matmul(m, k, n, lhs, rhs);
                assert_eq!(got.len(), m * n);
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    let tol = 1e-5 * (k as f64).sqrt() * (1.0 + w.abs());
                    assert!(
                        (*g as f64 - w).abs() <= tol,
                        "{m}x{k}x{n} strides {}/{} by {}/{}: [{i}] {g} against {w}",
                        lhs.row_stride,
                        lhs.col_stride,
                        rhs.row_stride,
                        rhs.col_stride
                    );
                }
            }
        }
    }
}

#[test]
#[should_panic(expected = "operands of")]
fn operands_too_short_are_refused() {
    let a = [1f32; 5];
    let b = [1f32; 6];
    let lhs = Operand {
        data: &a,
        row_stride: 3,
        col_stride: 1,
    };
    let rhs = Operand {
        data: &b,
        row_stride: 2,
        col_stride: 1,
    };
    matmul(2, 3, 2, &lhs, &rhs);
}

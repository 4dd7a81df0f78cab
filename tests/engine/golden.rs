//! Golden values: every number here was produced by tests/reference/pcl_reference.py
//! (numpy / scikit-learn), stored in tests/reference/golden.json beside it.

use burn::prelude::*;
use pcl_studio::engine::eval::{ami, knn_accuracy, nmi};
use pcl_studio::engine::kmeans::{Points, concentration, kmeans_restarts};
use pcl_studio::engine::loss::{info_nce, proto_full, proto_sampled};
use pcl_studio::engine::rng::Rng;
use pcl_studio::engine::tiled::Tiled;
use serde_json::Value;

fn golden() -> Value {
    let text = include_str!("../reference/golden.json");
    serde_json::from_str(text).expect("golden.json parses")
}

fn matrix(v: &Value) -> (Vec<f32>, [usize; 2]) {
    let rows = v.as_array().expect("rows");
    let cols = rows[0].as_array().expect("cols").len();
    let flat = rows
        .iter()
        .flat_map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
        })
        .collect();
    (flat, [rows.len(), cols])
}

fn vector(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn ints(v: &Value) -> Vec<i32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap() as i32)
        .collect()
}

fn tensor2(v: &Value, device: &Device) -> Tensor<2> {
    let (data, shape) = matrix(v);
    Tensor::from_data(TensorData::new(data, shape), device)
}

fn int1(v: &Value, device: &Device) -> Tensor<1, Int> {
    let x = ints(v);
    let n = x.len();
    Tensor::from_data(TensorData::new(x, [n]), device)
}

pub(crate) fn assert_close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * (1.0 + w.abs()),
            "{what}[{i}]: got {g}, want {w}"
        );
    }
}

/// Runs `f(q)` with q a leaf that requires grad; returns (loss, dloss/dq).
fn loss_and_grad(q: &Value, f: impl Fn(Tensor<2>) -> Tensor<1>) -> (f32, Vec<f32>) {
    let device = Device::flex().autodiff();
    let q = tensor2(q, &device).require_grad();
    let loss = f(q.clone());
    let grads = loss.backward();
    let g = q.grad(&grads).expect("q has a gradient");
    let l = loss.into_data().try_into_vec_as::<f32>().unwrap()[0];
    (l, g.into_data().try_into_vec_as::<f32>().unwrap())
}

#[test]
fn info_nce_matches_numpy() {
    let g = &golden()["info_nce"];
    let (loss, grad) = loss_and_grad(&g["q"], |q| {
        let dev = q.device();
        info_nce(
            q,
            tensor2(&g["k"], &dev),
            tensor2(&g["queue"], &dev),
            g["tau"].as_f64().unwrap(),
            None,
        )
        .0
    });
    assert_close(&[loss], &[g["loss"].as_f64().unwrap() as f32], 1e-5, "loss");
    assert_close(&grad, &matrix(&g["grad_q"]).0, 1e-4, "grad");
}

#[test]
fn proto_full_matches_numpy() {
    let g = &golden()["proto_full"];
    let (loss, grad) = loss_and_grad(&g["q"], |q| {
        let dev = q.device();
        let phi = vector(&g["phi"]);
        let k = phi.len();
        proto_full(
            q,
            tensor2(&g["centroids"], &dev),
            Tensor::from_data(TensorData::new(phi, [k]), &dev),
            int1(&g["assign"], &dev),
        )
    });
    assert_close(&[loss], &[g["loss"].as_f64().unwrap() as f32], 1e-5, "loss");
    assert_close(&grad, &matrix(&g["grad_q"]).0, 1e-4, "grad");
}

#[test]
fn proto_sampled_matches_numpy() {
    let g = &golden()["proto_sampled"];
    let (loss, grad) = loss_and_grad(&g["q"], |q| {
        let dev = q.device();
        let phi = vector(&g["phi"]);
        let k = phi.len();
        proto_sampled(
            q,
            tensor2(&g["centroids"], &dev),
            Tensor::from_data(TensorData::new(phi, [k]), &dev),
            int1(&g["assign"], &dev),
            Some(int1(&g["neg"], &dev)),
        )
    });
    assert_close(&[loss], &[g["loss"].as_f64().unwrap() as f32], 1e-5, "loss");
    assert_close(&grad, &matrix(&g["grad_q"]).0, 1e-4, "grad");
}

#[test]
fn concentration_matches_the_official_formula() {
    let g = &golden()["phi"];
    let assign: Vec<u32> = ints(&g["assign"]).into_iter().map(|x| x as u32).collect();
    let phi = concentration(
        &assign,
        &vector(&g["sq_dist"]),
        g["k"].as_u64().unwrap() as usize,
        g["tau"].as_f64().unwrap(),
    );
    assert_close(&phi, &vector(&g["phi"]), 1e-5, "phi");
}

#[test]
fn kmeans_reaches_sklearn_inertia_and_partition() {
    let g = &golden()["kmeans"];
    let device = Device::flex();
    let (host, [_, d]) = matrix(&g["x"]);
    let points = Points::new(&host, d, &device).unwrap();
    let km = futures_lite::future::block_on(kmeans_restarts(&points, 3, 20, 3, &mut Rng::new(0)))
        .unwrap();
    let want = g["inertia"].as_f64().unwrap();
    assert!(
        (km.inertia - want).abs() <= 1e-3 * want,
        "inertia {} vs sklearn {want}",
        km.inertia
    );
    let labels: Vec<u32> = ints(&g["labels"]).into_iter().map(|x| x as u32).collect();
    assert!(
        (ami(&labels, &km.assignments) - 1.0).abs() < 1e-9,
        "same partition"
    );
}

#[test]
fn knn_matches_numpy() {
    let g = &golden()["knn"];
    let device = Device::flex();
    let labels: Vec<u32> = ints(&g["labels"]).into_iter().map(|x| x as u32).collect();
    let (feats, [_, d]) = matrix(&g["feats"]);
    let acc = futures_lite::future::block_on(knn_accuracy(
        &Tiled::from_host(&feats, d, false, &device),
        &labels,
        g["k"].as_u64().unwrap() as usize,
        g["t"].as_f64().unwrap(),
    ))
    .unwrap();
    assert!(
        (acc - g["accuracy"].as_f64().unwrap()).abs() < 1e-9,
        "accuracy {acc}"
    );
}

#[test]
fn ami_and_nmi_match_sklearn() {
    let g = &golden()["mutual_info"];
    let t: Vec<u32> = ints(&g["truth"]).into_iter().map(|x| x as u32).collect();
    let p: Vec<u32> = ints(&g["pred"]).into_iter().map(|x| x as u32).collect();
    assert!(
        (ami(&t, &p) - g["ami"].as_f64().unwrap()).abs() < 1e-9,
        "ami {}",
        ami(&t, &p)
    );
    assert!(
        (nmi(&t, &p) - g["nmi"].as_f64().unwrap()).abs() < 1e-9,
        "nmi {}",
        nmi(&t, &p)
    );
    assert!((ami(&t, &t) - 1.0).abs() < 1e-12);
    // At the size the page scores every E-step: 9 classes against 187 clusters of 1,870.
    let g = &golden()["mutual_info_large"];
    let t: Vec<u32> = ints(&g["truth"]).into_iter().map(|x| x as u32).collect();
    let p: Vec<u32> = ints(&g["pred"]).into_iter().map(|x| x as u32).collect();
    let (want, got) = (g["ami"].as_f64().unwrap(), ami(&t, &p));
    assert!((got - want).abs() < 1e-9, "ami {got}, scikit-learn {want}");
    assert!((nmi(&t, &p) - g["nmi"].as_f64().unwrap()).abs() < 1e-9);
}

#[test]
fn linear_probe_matches_sklearn_logistic_regression() {
    // Same split (the Python script re-implements the Rust RNG), same L2 strength; the optimisers
    // differ (Adam here, lbfgs there), so accuracy may differ by a point or two of 40.
    let g = &golden()["linear_probe"];
    let (x, [_, d]) = matrix(&g["x"]);
    let labels: Vec<u32> = ints(&g["labels"]).into_iter().map(|x| x as u32).collect();
    let acc = pcl_studio::engine::eval::linear_probe(&x, d, &labels, g["seed"].as_u64().unwrap());
    let want = g["accuracy"].as_f64().unwrap();
    assert!(
        (acc - want).abs() <= 0.05,
        "linear probe {acc} vs sklearn {want}"
    );
    // Labels that carry no signal give chance-level accuracy, not a perfect score.
    let shuffled: Vec<u32> = (0..labels.len() as u32).map(|i| (i * 7 + 3) % 3).collect();
    assert!(pcl_studio::engine::eval::linear_probe(&x, d, &shuffled, 3) < 0.5);
}

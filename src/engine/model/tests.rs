//! The encoder's two forward passes (burn's ops, the CPU rows) against each other and
//! against burn's own BatchNorm and GroupNorm.

use super::norm::*;
use super::rows::{self, on_cpu};
use super::*;
use crate::engine::rng::Rng;
use burn::nn::{BatchNormConfig, GroupNorm, GroupNormConfig};
use burn::tensor::Distribution;

/// Values from the engine's seeded generator, not burn's device RNG (which tests running in
/// parallel draw from too, so a seed there does not fix the data): the paths round
/// differently, and a pre-activation within rounding of zero can fall on different sides of
/// a ReLU and move a gradient, so the data must be fixed for the test to be.
fn uniform(rng: &mut Rng, shape: Vec<usize>, bound: f32) -> TensorData {
    let len = shape.iter().product();
    let v: Vec<f32> = (0..len).map(|_| rng.range(-bound, bound)).collect();
    TensorData::new(v, shape)
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_into_vec_as().unwrap()
}

fn assert_close(a: &[f32], b: &[f32], tol: f32, what: &str) {
    assert_eq!(
        a.len(),
        b.len(),
        "{what}: {} vs {} values",
        a.len(),
        b.len()
    );
    for (p, q) in a.iter().zip(b) {
        assert!((p - q).abs() < tol * (1.0 + q.abs()), "{what}: {p} vs {q}");
    }
}

/// An encoder with fixed convolution weights and non-trivial affine parameters and running
/// statistics.
fn fixed_encoder(norm: NormKind, device: &Device, rng: &mut Rng) -> Encoder {
    let mut enc = EncoderConfig::new(8, 16).with_norm(norm).init(device);
    for b in std::iter::once(&mut enc.stem).chain(&mut enc.blocks) {
        let dims = b.conv.weight.dims().to_vec();
        let bound = (3.0 / (dims[1] * 9) as f32).sqrt(); // unit variance out of unit variance in
        let w = Tensor::<4>::from_data(uniform(rng, dims, bound), device);
        b.conv.weight = Param::from_tensor(w);
        let c = b.norm.channels();
        let gamma = Tensor::<1>::from_data(uniform(rng, vec![c], 0.5), device).add_scalar(1.0);
        let beta = Tensor::<1>::from_data(uniform(rng, vec![c], 0.3), device);
        b.norm.gamma = Param::from_tensor(gamma);
        b.norm.beta = Param::from_tensor(beta);
    }
    let stats: BatchStats = enc
        .running_stats()
        .into_iter()
        .map(|(m, v)| {
            let c = m.dims()[0];
            let m = Tensor::<1>::from_data(uniform(rng, vec![c], 0.2), &m.device());
            let v = Tensor::<1>::from_data(uniform(rng, vec![c], 0.5), &v.device()).add_scalar(1.0);
            (m, v)
        })
        .collect();
    enc.with_running_stats(&stats)
}

/// Gradients of every convolution weight and of one layer's gamma and beta.
fn conv_and_norm_grads(enc: &Encoder, g: &burn::tensor::Gradients) -> Vec<f32> {
    let mut v = Vec::new();
    for b in std::iter::once(&enc.stem).chain(&enc.blocks) {
        v.extend(values(b.conv.weight.grad(g).unwrap()));
    }
    v.extend(values(enc.blocks[1].norm.gamma.grad(g).unwrap()));
    v.extend(values(enc.blocks[1].norm.beta.grad(g).unwrap()));
    v
}

#[test]
fn cpu_rows_backbone_equals_burn_ops_in_every_mode_with_gradients() {
    let device = Device::flex().autodiff();
    let cases = [
        (NormKind::Group, Mode::Train { chunks: 4 }),
        (NormKind::Batch, Mode::Train { chunks: 4 }),
        (NormKind::Batch, Mode::Eval),
    ];
    for (norm, mode) in cases {
        let mut rng = Rng::new(7);
        let enc = fixed_encoder(norm, &device, &mut rng);
        // 72 images of side 33: odd sides through every stride-2 block (33, 17, 9, 5), and
        // more than one CPU slice (by the pixel budget; whole chunks of 18 in training mode).
        let x = Tensor::<4>::from_data(uniform(&mut rng, vec![72, 3, 33, 33], 1.0), &device);
        let mask = Tensor::<2>::from_data(uniform(&mut rng, vec![72, 64], 1.0), &device);
        let (ours, s1) = enc.backbone_mode(x.clone(), mode);
        let (theirs, s2) = enc.backbone_nchw(x, mode);
        let what = format!("{norm:?} {mode:?}");
        assert_close(&values(ours.clone()), &values(theirs.clone()), 1e-4, &what);
        assert_eq!(s1.len(), s2.len(), "{what}: statistics per layer");
        for ((m1, v1), (m2, v2)) in s1.into_iter().zip(s2) {
            assert_close(&values(m1), &values(m2), 1e-4, &what);
            assert_close(&values(v1), &values(v2), 1e-4, &what);
        }
        // Gradients of a weighted sum (every feature counts differently).
        let g1 = (ours * mask.clone()).sum().backward();
        let g2 = (theirs * mask).sum().backward();
        let (a, b) = (
            conv_and_norm_grads(&enc, &g1),
            conv_and_norm_grads(&enc, &g2),
        );
        assert_close(&a, &b, 1e-3, &what);
    }
}

#[test]
fn batch_norm_per_chunk_equals_burns_batch_norm_with_gradients() {
    // The CPU kernels' path (rows) in training mode against burn's own BatchNorm run on
    // each chunk of the batch separately: values, gradients of x, gamma and beta, and the
    // batch statistics (PyTorch's unbiased variance for the running average).
    let device = Device::flex().autodiff();
    let mut rng = Rng::new(3);
    let (n, c, side, chunks) = (6, 8, 5, 3);
    let ours = Norm {
        gamma: Param::from_tensor(
            Tensor::from_data(uniform(&mut rng, vec![c], 0.5), &device).add_scalar(1.0),
        ),
        beta: Param::from_tensor(Tensor::from_data(uniform(&mut rng, vec![c], 0.5), &device)),
        ..Norm::new(c, 0, &device)
    };
    let theirs = burn::nn::BatchNorm {
        gamma: Param::from_tensor(ours.gamma.val().without_autodiff().autodiff()),
        beta: Param::from_tensor(ours.beta.val().without_autodiff().autodiff()),
        ..BatchNormConfig::new(c).with_momentum(1.0).init(&device)
    };
    let x = Tensor::<4>::from_data(uniform(&mut rng, vec![n, c, side, side], 3.0), &device)
        .require_grad();
    let mask = Tensor::<4>::from_data(uniform(&mut rng, vec![n, c, side, side], 1.0), &device);
    let rows_in = x
        .clone()
        .permute([0, 2, 3, 1])
        .reshape([n * side * side, c]);
    let (y_rows, stats) = rows::norm_relu(&ours, rows_in, n, Mode::Train { chunks });
    let y_ours = y_rows.reshape([n, side, side, c]).permute([0, 3, 1, 2]); // [n, c, s, s]
    let size = n / chunks;
    let parts = (0..chunks)
        .map(|k| relu(theirs.forward(x.clone().narrow(0, k * size, size))))
        .collect();
    let y_theirs = Tensor::cat(parts, 0);
    assert_close(
        &values(y_ours.clone()),
        &values(y_theirs.clone()),
        1e-4,
        "values",
    );
    // The statistics for the running averages: per chunk the mean and the unbiased
    // variance (PyTorch's running_var) of each channel, averaged over the chunks.
    let xs = values(x.clone());
    let count = (size * side * side) as f64;
    let (mut mean, mut var) = (vec![0f64; c], vec![0f64; c]);
    for k in 0..chunks {
        for ch in 0..c {
            let vals: Vec<f64> = (k * size..(k + 1) * size)
                .flat_map(|i| {
                    let at = (i * c + ch) * side * side;
                    xs[at..at + side * side].iter().map(|&v| v as f64)
                })
                .collect();
            let m = vals.iter().sum::<f64>() / count;
            let v = vals.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (count - 1.0);
            mean[ch] += m / chunks as f64;
            var[ch] += v / chunks as f64;
        }
    }
    let (m, v) = stats.expect("training-mode statistics");
    let f = |v: Vec<f64>| v.into_iter().map(|x| x as f32).collect::<Vec<f32>>();
    assert_close(&values(m), &f(mean), 1e-4, "batch mean");
    assert_close(&values(v), &f(var), 1e-4, "batch variance (unbiased)");
    let g1 = (y_ours * mask.clone()).sum().backward();
    let g2 = (y_theirs * mask).sum().backward();
    let grads = |g: &burn::tensor::Gradients, gamma: &Param<Tensor<1>>, beta: &Param<Tensor<1>>| {
        let mut v = values(x.grad(g).unwrap());
        v.extend(values(gamma.grad(g).unwrap()));
        v.extend(values(beta.grad(g).unwrap()));
        v
    };
    let a = grads(&g1, &ours.gamma, &ours.beta);
    let b = grads(&g2, &theirs.gamma, &theirs.beta);
    assert_close(&a, &b, 1e-3, "gradients");
}

#[test]
fn eval_mode_uses_the_running_statistics() {
    // In evaluation mode an image's features do not depend on the rest of the batch, and
    // equal burn's BatchNorm in inference with the same running statistics.
    let device = Device::flex();
    let mut rng = Rng::new(5);
    let enc = fixed_encoder(NormKind::Batch, &device, &mut rng);
    let x = Tensor::<4>::from_data(uniform(&mut rng, vec![8, 3, 32, 32], 1.0), &device);
    let all = values(enc.backbone(x.clone()));
    let one = values(enc.backbone(x.clone().narrow(0, 7, 1)));
    assert_close(&all[7 * 64..], &one, 1e-5, "one image alone");
    let (train, _) = enc.backbone_mode(x.clone(), Mode::Train { chunks: 1 });
    let differs = values(train)
        .iter()
        .zip(&all)
        .any(|(a, b)| (a - b).abs() > 1e-3);
    assert!(
        differs,
        "training mode must use batch statistics, not the running ones"
    );
    // Moving the running statistics moves the eval features.
    let stats = enc.running_stats();
    let shifted: BatchStats = stats
        .iter()
        .map(|(m, v)| (m.clone().add_scalar(0.5), v.clone()))
        .collect();
    let moved = values(enc.clone().with_running_stats(&shifted).backbone(x.clone()));
    assert!(moved.iter().zip(&all).any(|(a, b)| (a - b).abs() > 1e-3));
    // burn's BatchNorm in inference mode, stem only.
    let norm = &enc.stem.norm;
    let theirs = burn::nn::BatchNorm {
        gamma: Param::from_tensor(norm.gamma.val()),
        beta: Param::from_tensor(norm.beta.val()),
        running_mean: burn::module::RunningState::new(norm.running_mean.val()),
        running_var: burn::module::RunningState::new(norm.running_var.val()),
        ..BatchNormConfig::new(8).init(&device)
    };
    let conv = enc.stem.conv.forward(x);
    let (ours, _) = norm_relu(norm, conv.clone(), Mode::Eval);
    assert_close(
        &values(ours),
        &values(relu(theirs.forward(conv))),
        1e-4,
        "stem",
    );
}

#[test]
fn running_stats_follow_the_batch_by_the_momentum() {
    let device = Device::flex();
    let enc = EncoderConfig::new(8, 16).init(&device);
    let x = Tensor::<4>::random([8, 3, 32, 32], Distribution::Default, &device);
    let (_, batch) = enc.forward_train(x, 2);
    assert_eq!(batch.len(), 4);
    let before = enc.running_stats();
    let enc = enc.update_running_stats(&batch, 0.25);
    for (((m0, v0), (bm, bv)), (m1, v1)) in before.into_iter().zip(&batch).zip(enc.running_stats())
    {
        let want: Vec<f32> = values(m0)
            .iter()
            .zip(values(bm.clone()))
            .map(|(r, b)| 0.75 * r + 0.25 * b)
            .collect();
        assert_close(&values(m1), &want, 1e-5, "mean");
        let want: Vec<f32> = values(v0)
            .iter()
            .zip(values(bv.clone()))
            .map(|(r, b)| 0.75 * r + 0.25 * b)
            .collect();
        assert_close(&values(v1), &want, 1e-5, "var");
    }
}

#[test]
fn no_key_is_normalised_in_the_same_chunk_as_its_query() {
    let mut rng = Rng::new(1);
    for (n, chunks) in [(8, 2), (64, 4), (240, 4), (12, 3), (256, 8)] {
        for _ in 0..20 {
            let perm = shuffle_for_bn(n, chunks, &mut rng);
            let mut sorted = perm.clone();
            sorted.sort();
            assert_eq!(sorted, (0..n).collect::<Vec<_>>(), "a permutation");
            let size = n / chunks;
            for (j, &i) in perm.iter().enumerate() {
                assert_ne!(
                    j / size,
                    i / size,
                    "image {i}'s key sits in its query's chunk"
                );
            }
            let inv = inverse_permutation(&perm);
            assert!((0..n).all(|i| perm[inv[i]] == i));
        }
    }
    assert_eq!(shuffle_for_bn(5, 1, &mut rng), vec![0, 1, 2, 3, 4]);
    assert_eq!(chunks_for(10, 4), 2);
    assert_eq!(chunks_for(12, 4), 4);
}

#[test]
fn shuffled_key_pass_is_per_chunk_of_the_shuffled_batch() {
    // The key's embedding of image i is what the encoder gives image i inside the chunk of
    // the shuffled batch it was moved to: a pass over that chunk alone gives the same row.
    // On every backend this machine has: the CPU kernels, and burn's ops on wgpu (in CI
    // on lavapipe), which the browser's WebGPU path runs too.
    let mut devices = vec![Device::flex()];
    let gpu = crate::compute::init_gpu(crate::compute::BackendKind::Wgpu);
    match futures_lite::future::block_on(gpu) {
        Ok((device, _)) => devices.push(device),
        Err(e) => eprintln!("no wgpu adapter, CPU only: {e}"),
    }
    for device in devices {
        let mut rng = Rng::new(9);
        let enc = fixed_encoder(NormKind::Batch, &device, &mut rng);
        let (n, chunks) = (8, 4);
        let x = Tensor::<4>::from_data(uniform(&mut rng, vec![n, 3, 32, 32], 1.0), &device);
        let perm = shuffle_for_bn(n, chunks, &mut rng);
        let (k, _) = enc.forward_shuffled(x.clone(), chunks, &perm);
        let k = values(k);
        let size = n / chunks;
        for c in 0..chunks {
            let members = &perm[c * size..(c + 1) * size];
            let idx: Vec<i32> = members.iter().map(|&i| i as i32).collect();
            let sel = Tensor::<1, Int>::from_data(TensorData::new(idx, [size]), &device);
            let (alone, _) = enc.forward_train(x.clone().select(0, sel), 1);
            let alone = values(alone);
            for (r, &i) in members.iter().enumerate() {
                assert_close(
                    &k[i * 16..(i + 1) * 16],
                    &alone[r * 16..(r + 1) * 16],
                    1e-4,
                    "key row",
                );
                assert_ne!(i / size, c, "key in its query's chunk");
            }
        }
    }
}

#[test]
fn folded_group_norm_equals_burns_with_its_gradients() {
    let device = Device::flex().autodiff();
    let theirs = GroupNormConfig::new(4, 8).init(&device);
    // Non-trivial affine parameters, so that gamma and beta matter.
    let gamma = Tensor::<1>::random([8], Distribution::Default, &device).add_scalar(0.5);
    let beta = Tensor::<1>::random([8], Distribution::Default, &device).sub_scalar(0.5);
    let theirs = GroupNorm {
        gamma: Some(Param::from_tensor(gamma.clone())),
        beta: Some(Param::from_tensor(beta.clone())),
        ..theirs
    };
    let ours = Norm {
        gamma: Param::from_tensor(gamma.without_autodiff().autodiff()),
        beta: Param::from_tensor(beta.without_autodiff().autodiff()),
        ..Norm::new(8, 4, &device)
    };
    let x = Tensor::<4>::random([3, 8, 5, 6], Distribution::Default, &device)
        .mul_scalar(4.0)
        .require_grad();
    let mask = Tensor::<4>::random([3, 8, 5, 6], Distribution::Default, &device);
    let (y_ours, _) = norm_relu(&ours, x.clone(), Mode::Eval);
    let y_theirs = relu(theirs.forward(x.clone()));
    assert_close(
        &values(y_ours.clone()),
        &values(y_theirs.clone()),
        1e-4,
        "values",
    );
    let g1 = (y_ours * mask.clone()).sum().backward();
    let g2 = (y_theirs * mask).sum().backward();
    let mut a = values(x.grad(&g1).unwrap());
    a.extend(values(ours.gamma.grad(&g1).unwrap()));
    a.extend(values(ours.beta.grad(&g1).unwrap()));
    let mut b = values(x.grad(&g2).unwrap());
    b.extend(values(theirs.gamma.as_ref().unwrap().grad(&g2).unwrap()));
    b.extend(values(theirs.beta.as_ref().unwrap().grad(&g2).unwrap()));
    assert_close(&a, &b, 1e-3, "gradients");
}

#[test]
fn shapes_and_unit_norm_for_every_input_size() {
    let device = Device::flex();
    for norm in [NormKind::Batch, NormKind::Group] {
        let enc = EncoderConfig::new(8, 16).with_norm(norm).init(&device);
        for s in [32, 64, 96] {
            let x = Tensor::<4>::random([2, 3, s, s], Distribution::Default, &device);
            let f = enc.backbone(x.clone());
            assert_eq!(f.dims(), [2, 64]);
            let (z, _) = enc.forward_train(x, 2);
            assert_eq!(z.dims(), [2, 16]);
            for n in values(z.square().sum_dim(1)) {
                assert!((n - 1.0).abs() < 1e-4, "norm {n}");
            }
        }
        // A batch over the CPU slice gives the same features as its images one by one.
        let x = Tensor::<4>::random([70, 3, 32, 32], Distribution::Default, &device);
        let all = values(enc.backbone(x.clone()));
        let last = values(enc.backbone(x.narrow(0, 69, 1)));
        assert_close(&all[69 * 64..], &last, 1e-5, "slices");
    }
    assert_eq!(groups_for(32), 8);
    assert!(on_cpu(&device) && on_cpu(&device.clone().autodiff()));
    assert_eq!(groups_for(12), 6);
}

//! `cargo bench --bench train`: prints training throughput, E-step time and peak memory.
//! Figures, not assertions. Knobs: BENCH_STEPS (default 5; 0 skips training), BENCH_KS (default 10,100,1000),
//! BENCH_N (default 10000), BENCH_WGPU=1 to also time the native wgpu backend, BENCH_CPU=0 to leave
//! the CPU out (scripts/bench-gpu.sh).
//! scripts/bench.sh runs this beside PyTorch CPU and faiss-cpu and prints the ratios.

use std::time::Instant;

use burn::prelude::*;
use futures_lite::future::block_on;
use pcl_studio::engine::data::planted_groups;
use pcl_studio::engine::kmeans::{Points, cluster_level, kmeans_restarts, seed_centroids};
use pcl_studio::engine::rng::Rng;
use pcl_studio::engine::{Event, PclConfig, Trainer};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<f64>().ok())
            })
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn train_img_s(device: &Device, label: &str, steps: usize) {
    // 2048 images, 36 px stored: enough that the trainer keeps the full batch of 256.
    let data = planted_groups(4, 4, 128, 36, 0);
    let config = PclConfig {
        batch_size: 256,
        epochs: 100,
        warmup_epochs: 100,
        ..PclConfig::default()
    };
    let mut t = Trainer::new(&config, &data, device).expect("trainer");
    assert_eq!(
        t.config.batch_size, 256,
        "the data set is large enough for batch 256"
    );
    // The first step (kernel compilation, allocation) timed on its own.
    let start = Instant::now();
    block_on(t.advance(&data, &mut |_| {})).expect("step");
    println!(
        "train[{label}] first step: {:.3} s",
        start.elapsed().as_secs_f64()
    );
    let start = Instant::now();
    let mut done = 0;
    while done < steps {
        if let Event::Step(_) = block_on(t.advance(&data, &mut |_| {})).expect("step") {
            done += 1;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "train[{label}] tiny encoder 32x32 batch 256: {:.1} img/s ({:.3} s/step)",
        (steps * 256) as f64 / secs,
        secs / steps as f64
    );
}

/// The step PyTorch's side of the comparison times: random 32x32 inputs, no augmentation;
/// query forward, key forward, InfoNCE against a 4096-key queue, backward, SGD, EMA.
fn model_step_img_s(device: &Device, label: &str, steps: usize) {
    use pcl_studio::engine::loss::info_nce;
    use pcl_studio::engine::model::{EncoderConfig, l2_normalize};
    use pcl_studio::engine::params::{Sgd, ema_update, read_all};
    let ad = device.clone().autodiff();
    let mut model = EncoderConfig::new(32, 128).init(&ad);
    let mut key = model.valid();
    let mut sgd = Sgd::new(0.9, 5e-4);
    let dist = burn::tensor::Distribution::Default;
    let queue = l2_normalize(Tensor::<2>::random([4096, 128], dist, device));
    let perm: Vec<usize> = (0..256).map(|i| (i + 64) % 256).collect();
    let mut step = |model: &mut pcl_studio::engine::model::Encoder,
                    key: &mut pcl_studio::engine::model::Encoder| {
        let x1 = Tensor::<4>::random([256, 3, 32, 32], dist, device);
        let x2 = Tensor::<4>::random([256, 3, 32, 32], dist, device);
        // BatchNorm over 4 chunks; the key batch shuffled across them (a fixed permutation:
        // the host-side shuffle is not what is timed).
        let (q, _) = model.forward_train(x1.autodiff(), 4);
        let (k, _) = key.forward_shuffled(x2, 4, &perm);
        let (loss, _) = info_nce(q, k, queue.clone(), 0.2, None);
        let grads = loss.backward();
        *model = sgd.step(model.clone(), &grads, 0.06);
        *key = ema_update(key.clone(), model, 0.99);
        block_on(read_all(vec![loss.without_autodiff()])).expect("read");
    };
    step(&mut model, &mut key);
    let start = Instant::now();
    for _ in 0..steps {
        step(&mut model, &mut key);
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "model_step[{label}] tiny encoder 32x32 batch 256, no augmentation: {:.1} img/s",
        (steps * 256) as f64 / secs
    );
}

fn estep(device: &Device, label: &str, n: usize, ks: &[usize]) {
    let d = 128;
    let mut rng = Rng::new(0);
    // Gaussian blobs on the sphere: 50 true centres, noise 0.3.
    let centres: Vec<f32> = (0..50 * d).map(|_| rng.range(-1.0, 1.0)).collect();
    let mut x = vec![0f32; n * d];
    for i in 0..n {
        let c = rng.below(50);
        for j in 0..d {
            x[i * d + j] = centres[c * d + j] + rng.range(-0.3, 0.3);
        }
    }
    pcl_studio::engine::kmeans::normalize_rows(&mut x, d);
    std::fs::write(
        std::env::temp_dir().join("pcl-bench-x.f32"),
        x.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>(),
    )
    .ok();
    for &k in ks {
        let start = Instant::now();
        seed_centroids(&x, d, k, &mut Rng::new(1));
        let seeding = start.elapsed().as_secs_f64();
        let start = Instant::now();
        let points = Points::new(&x, d, device).expect("points");
        let km = block_on(kmeans_restarts(&points, k, 20, 1, &mut Rng::new(1))).expect("kmeans");
        let secs = start.elapsed().as_secs_f64();
        println!(
            "estep[{label}] kmeans N={n} d={d} K={k} iters=20 restarts=1: {secs:.3} s inertia {:.4} \
             (k-means++ seeding {seeding:.3} s, {} updates until settled)",
            km.inertia, km.iterations
        );
        let start = Instant::now();
        let level =
            block_on(cluster_level(&points, k, 20, 1, 0.2, &mut Rng::new(1))).expect("level");
        println!(
            "estep[{label}] level with phi K={k}: {:.3} s (phi mean {:.3})",
            start.elapsed().as_secs_f64(),
            level.phi.iter().sum::<f32>() / k as f32
        );
    }
}

fn main() {
    pcl_studio::alloc::keep_freed_memory();
    let steps = env("BENCH_STEPS", 5);
    let n = env("BENCH_N", 10_000);
    let ks: Vec<usize> = std::env::var("BENCH_KS")
        .unwrap_or_else(|_| "10,100,1000".into())
        .split(',')
        .filter_map(|k| k.trim().parse().ok())
        .collect();
    if std::env::var("BENCH_CPU").map_or(true, |v| v != "0") {
        let cpu = Device::flex();
        if steps > 0 {
            train_img_s(&cpu, "cpu", steps);
            model_step_img_s(&cpu, "cpu", steps);
        }
        estep(&cpu, "cpu", n, &ks);
    }
    if std::env::var("BENCH_WGPU").is_ok_and(|v| v == "1") {
        match block_on(pcl_studio::compute::init_gpu(
            pcl_studio::compute::BackendKind::Wgpu,
        )) {
            Ok((gpu, info)) => {
                println!("wgpu adapter: {} ({})", info.adapter, info.api);
                if steps > 0 {
                    train_img_s(&gpu, "wgpu", steps);
                    model_step_img_s(&gpu, "wgpu", steps);
                }
                estep(&gpu, "wgpu", n, &ks);
            }
            Err(e) => println!("wgpu: no adapter ({e})"),
        }
    }
    println!("peak memory: {:.0} MiB", peak_rss_mib());
}

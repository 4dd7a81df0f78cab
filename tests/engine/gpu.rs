//! The native wgpu path, where the machine has an adapter (in CI: Mesa's lavapipe, a CPU Vulkan
//! driver). Without one each test says so and checks that the failure is an error, not a panic.
//! One test at a time on the GPU: the kernel counter is the process's.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::{Mutex, OnceLock};

use burn::prelude::*;
use futures_lite::future::block_on;
use pcl_studio::compute::{BackendKind, init_gpu, probe_step};
use pcl_studio::engine::data::planted_groups;
use pcl_studio::engine::records::{EpochRecord, KernelCounts};
use pcl_studio::engine::session::{Options, Session, Update};
use pcl_studio::engine::{PclConfig, Trainer};

static GPU: Mutex<()> = Mutex::new(());

/// The wgpu device (initialised once per process), or None (said on stderr) where this
/// machine has no adapter.
fn gpu() -> Option<Device> {
    static DEVICE: OnceLock<Result<(Device, pcl_studio::compute::BackendInfo), String>> =
        OnceLock::new();
    match DEVICE
        .get_or_init(|| block_on(init_gpu(BackendKind::Wgpu)))
        .clone()
    {
        Ok((device, info)) => {
            eprintln!("wgpu adapter: {} ({})", info.adapter, info.api);
            assert_eq!(info.kind, BackendKind::Wgpu);
            assert!(!info.limits.is_empty());
            Some(device)
        }
        Err(e) => {
            eprintln!("no wgpu adapter on this machine, so only the error path is checked: {e}");
            assert!(!e.is_empty());
            None
        }
    }
}

#[test]
fn wgpu_training_step_runs_where_an_adapter_exists() {
    let _one = GPU.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(device) = gpu() {
        let loss = block_on(probe_step(&device)).expect("probe step on wgpu");
        assert!(loss.is_finite() && loss > 0.0, "loss {loss}");
    }
}

/// A run as the page drives it (E-steps, the explorer after them, labels), 4 epochs.
fn page_run(device: &Device, prepare: bool) -> (Vec<EpochRecord>, Vec<f32>, Option<KernelCounts>) {
    let data = Rc::new(planted_groups(2, 2, 16, 36, 3)); // 64 images, 4 groups
    let config = PclConfig {
        width: 8,
        feature_dim: 16,
        batch_size: 16,
        epochs: 4,
        warmup_epochs: 1,
        num_clusters: vec![3, 6],
        kmeans_restarts: 1,
        seed: 3,
        ..PclConfig::default()
    };
    let trainer = Trainer::new(&config, &data, device).expect("trainer");
    let options = Options {
        prepare_kernels: prepare,
        ..Options::page()
    };
    let t = Rc::new(Cell::new(0.0));
    let clock = Box::new(move || {
        t.set(t.get() + 0.01);
        t.get()
    });
    let mut session = Session::new(trainer, data, options, clock, false);
    let mut epochs = Vec::new();
    let mut prepared = None;
    while !session.ended() {
        block_on(session.tick(&mut |u| match u {
            Update::Epoch(e) => epochs.push(e),
            Update::Prepared { kernels, .. } => prepared = kernels,
            Update::Failed(f) => panic!("{f}"),
            _ => {}
        }));
    }
    let counts = session.status().kernels;
    if prepare {
        assert_eq!(
            counts.map(|c| c.prepared),
            prepared,
            "the status and the update agree"
        );
    }
    let losses = session.trainer().history.iter().map(|s| s.loss).collect();
    (epochs, losses, counts)
}

#[test]
fn wgpu_run_builds_its_kernels_before_its_first_step_and_none_after_its_first_epoch() {
    let _one = GPU.lock().unwrap_or_else(|e| e.into_inner());
    let Some(device) = gpu() else { return };
    let (epochs, losses, counts) = page_run(&device, true);
    let counts = counts.expect("a prepared run counts its kernels");
    eprintln!(
        "kernels: {counts:?}; per epoch {:?}",
        epochs.iter().map(|e| e.kernels_built).collect::<Vec<_>>()
    );
    assert!(counts.counted, "the counter is on");
    assert!(
        counts.prepared > 20,
        "the preparation built the run's kernels: {counts:?}"
    );
    assert_eq!(epochs.len(), 4);
    for e in &epochs[1..] {
        assert_eq!(e.kernels_built, Some(0), "epoch {} built kernels", e.epoch);
    }
    assert_eq!(counts.later, 0);
    // The preparation works on a copy: the run itself is the run without it.
    let (_, unprepared, _) = page_run(&device, false);
    assert_eq!(losses.len(), unprepared.len());
    for (i, (a, b)) in losses.iter().zip(&unprepared).enumerate() {
        assert!(
            (a - b).abs() <= 1e-4 * a.abs().max(1.0),
            "step {i}: {a} against {b}"
        );
    }
}

/// A wgpu device created with WebGPU's default limits (128 MiB per storage binding, 256 MiB per
/// buffer), as a browser gives one without asking for more; None where there is no adapter.
fn default_limits_gpu() -> Option<Device> {
    // The kernel counter is switched on before any device reads cubecl's configuration.
    pcl_studio::engine::pipelines::count();
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
    let adapter =
        block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default())).ok()?;
    let (device, queue) = block_on(
        adapter.request_device(&wgpu::DeviceDescriptor {
            required_features: adapter
                .features()
                .difference(wgpu::Features::MAPPABLE_PRIMARY_BUFFERS),
            required_limits: wgpu::Limits::default(),
            ..Default::default()
        }),
    )
    .expect("a device with the default limits");
    let backend = adapter.get_info().backend;
    let setup = burn::tensor::wgpu::WgpuSetup {
        instance,
        adapter,
        device,
        queue,
        backend,
    };
    Some(
        Device::wgpu_options()
            .setup(setup)
            .init()
            .expect("burn on that device"),
    )
}

/// The project's largest data (50,000 images) with the largest features (1,024-d: 205 MB of
/// them, over the 128 MiB a binding may hold): an E-step on a device with the default limits.
#[test]
fn wgpu_e_step_on_50000_images_stays_within_the_default_limits() {
    let _one = GPU.lock().unwrap_or_else(|e| e.into_inner());
    let Some(device) = default_limits_gpu() else {
        eprintln!("no wgpu adapter on this machine: nothing to check");
        return;
    };
    let data = planted_groups(5, 5, 2000, 36, 1); // 50,000 images in 25 groups
    assert_eq!(data.len(), pcl_studio::intake::MAX_IMAGES);
    let config = PclConfig {
        width: 4,
        feature_dim: pcl_studio::engine::config::MAX_FEATURE_DIM,
        batch_size: 256,
        epochs: 1,
        warmup_epochs: 0,
        num_clusters: vec![25, 250],
        kmeans_iters: 2,
        kmeans_restarts: 1,
        ..PclConfig::default()
    };
    let features = data.len() * config.feature_dim * 4;
    assert!(
        features > 128 << 20,
        "{features} bytes fit one binding: no test of the tiles"
    );
    let mut trainer = Trainer::new(&config, &data, &device).expect("trainer");
    let t0 = std::time::Instant::now();
    match block_on(trainer.advance(&data, &mut |_| {})).expect("the E-step") {
        pcl_studio::engine::Event::EStep { levels, .. } => {
            assert_eq!(levels.len(), 2);
            for l in &levels {
                assert!(l.inertia.is_finite() && l.inertia > 0.0, "{l:?}");
            }
            let c = trainer.clustering.as_ref().expect("clusters");
            let sizes: usize = c.levels[1].sizes.iter().sum();
            assert_eq!(sizes, 50_000, "every image in a cluster");
        }
        other => panic!("the first unit of work is the E-step, not {other:?}"),
    }
    eprintln!(
        "E-step on 50,000 images, 1,024-d: {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}

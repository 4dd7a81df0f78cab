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

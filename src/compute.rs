//! Choosing the compute device: the GPU through wgpu (WebGPU in a browser) when there is one,
//! else burn's pure-Rust CPU backend (flex), and describing what was chosen.

use burn::prelude::*;

use crate::engine::EngineError;
use crate::engine::loss::info_nce;
use crate::engine::model::{EncoderConfig, l2_normalize};
use crate::engine::params::{Sgd, read_all};

pub use crate::backend::{BackendInfo, BackendKind};

/// How wgpu describes the adapter it got, in our terms.
fn info_from_setup(kind: BackendKind, setup: &burn::tensor::wgpu::WgpuSetup) -> BackendInfo {
    let info = setup.adapter.get_info();
    let l = setup.adapter.limits();
    let name = if info.name.is_empty() {
        format!("{:?} adapter", info.backend)
    } else {
        info.name.clone()
    };
    // A software adapter (lavapipe, SwiftShader) says so: the CPU emulating a GPU.
    let name = if info.device_type == wgpu::DeviceType::Cpu {
        format!("{name} (software: the CPU emulating a GPU)")
    } else {
        name
    };
    BackendInfo {
        workers: 1,
        choice: None,
        kind,
        adapter: name,
        api: match kind {
            BackendKind::Webgpu => "WebGPU".into(),
            _ => format!("{:?}", info.backend),
        },
        limits: vec![
            ("maxBufferSize".into(), l.max_buffer_size),
            (
                "maxStorageBufferBindingSize".into(),
                l.max_storage_buffer_binding_size,
            ),
            (
                "maxComputeWorkgroupSizeX".into(),
                l.max_compute_workgroup_size_x as u64,
            ),
            (
                "maxComputeInvocationsPerWorkgroup".into(),
                l.max_compute_invocations_per_workgroup as u64,
            ),
        ],
        notice: None,
        detail: None,
    }
}

/// Initialises the GPU through wgpu; `kind` says how it is reported (Webgpu in a browser).
pub async fn init_gpu(kind: BackendKind) -> Result<(Device, BackendInfo), String> {
    crate::engine::pipelines::count();
    let (device, setup) = Device::wgpu_options()
        .init_with_setup_async()
        .await
        .map_err(|e| format!("{e}"))?;
    Ok((device, info_from_setup(kind, &setup)))
}

/// The GPU when `prefer_gpu` and one initialises, else the CPU with a notice saying why.
pub async fn init_or_cpu(prefer_gpu: bool, gpu_kind: BackendKind) -> (Device, BackendInfo) {
    if !prefer_gpu {
        return (
            Device::flex(),
            BackendInfo::cpu(Some(
                "GPU use is switched off; training runs on the CPU.".into(),
            )),
        );
    }
    match init_gpu(gpu_kind).await {
        Ok(pair) => pair,
        Err(e) => {
            let mut info = BackendInfo::cpu(Some(
                "No usable GPU adapter was found, so training runs on the CPU (slower).".into(),
            ));
            info.detail = Some(e);
            (Device::flex(), info)
        }
    }
}

/// Images per second of the quick demo's training step on `device` (width 16, 64-d features,
/// `batch` images of 32 px, BatchNorm over 4 ghost batches, the key batch shuffled, InfoNCE,
/// backward, SGD): one step first to build its kernels, then `timed` steps timed by `now_ms`.
pub async fn step_rate(
    device: &Device,
    batch: usize,
    timed: usize,
    now_ms: &dyn Fn() -> f64,
) -> Result<f64, EngineError> {
    device.seed(1);
    let ad = device.clone().autodiff();
    let mut model = EncoderConfig::new(16, 64).init(&ad);
    let mut sgd = Sgd::new(0.9, 1e-4);
    let dist = burn::tensor::Distribution::Default;
    let queue = l2_normalize(Tensor::<2>::random([64, 64], dist, device));
    let perm: Vec<usize> = (0..batch).rev().collect();
    let mut t0 = 0.0;
    for step in 0..=timed {
        if step == 1 {
            t0 = now_ms();
        }
        let x1 = Tensor::<4>::random([batch, 3, 32, 32], dist, device);
        let x2 = Tensor::<4>::random([batch, 3, 32, 32], dist, device);
        let (q, _) = model.forward_train(x1.autodiff(), 4); // q: [batch, 64]
        let (k, _) = model.valid().forward_shuffled(x2, 4, &perm); // k: [batch, 64]
        let (loss, _) = info_nce(q, k, queue.clone(), 0.2, None);
        let grads = loss.backward();
        model = sgd.step(model, &grads, 0.03);
        let mut read = vec![loss.without_autodiff()];
        read.extend(
            crate::engine::params::flat_params(&model)
                .into_iter()
                .take(1),
        );
        read_all(read).await?;
    }
    let seconds = (now_ms() - t0) / 1000.0;
    Ok((batch * timed) as f64 / seconds.max(1e-6))
}

/// One real training step of a small encoder on `device` (forward, InfoNCE, backward, SGD),
/// its loss read back asynchronously: proves the whole training path works on this device.
pub async fn probe_step(device: &Device) -> Result<f32, EngineError> {
    device.seed(0);
    let ad = device.clone().autodiff();
    let model = EncoderConfig::new(8, 16).init(&ad);
    let dist = burn::tensor::Distribution::Default;
    let x1 = Tensor::<4>::random([4, 3, 32, 32], dist, device);
    let x2 = x1.clone() + Tensor::<4>::random([4, 3, 32, 32], dist, device).mul_scalar(0.1);
    let queue = l2_normalize(Tensor::<2>::random([8, 16], dist, device));
    // Training mode: BatchNorm over two chunks, the key batch shuffled across them.
    let (q, _) = model.forward_train(x1.autodiff(), 2); // q: [4, 16]
    let (k, _) = model.valid().forward_shuffled(x2, 2, &[2, 3, 0, 1]); // k: [4, 16]
    let (loss, _) = info_nce(q, k, queue, 0.2, None);
    let grads = loss.backward();
    let mut sgd = Sgd::new(0.9, 1e-4);
    let model = sgd.step(model, &grads, 0.03);
    // Reading the updated weights too makes the optimizer step actually run before we report.
    let mut read = vec![loss.without_autodiff()];
    read.extend(
        crate::engine::params::flat_params(&model)
            .into_iter()
            .take(1),
    );
    let values = read_all(read).await?;
    Ok(values[0][0])
}

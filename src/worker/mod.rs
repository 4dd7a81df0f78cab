//! The Web Worker: owns the compute device, the decoded images and every tensor; talks to the
//! page only through [`crate::protocol`] messages. A run is an engine
//! [`Session`](crate::engine::session::Session); its driver here passes the page's requests
//! (pause, export, neighbours) to it between units of work and posts what it reports.

mod batch;
mod decode;
mod helpers;
mod load;
mod run;

use load::{Source, load};
use run::{Request, import, request, train};

use std::cell::RefCell;
use std::rc::Rc;

use burn::prelude::Device;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use web_sys::{DedicatedWorkerGlobalScope, MessageEvent};

use crate::backend::{Choice, ChoiceKind};
use crate::compute::{BackendInfo, BackendKind, init_or_cpu, probe_step, step_rate};
use crate::engine::augment;
use crate::engine::session::Command;
use crate::engine::{Dataset, PclConfig};
use crate::protocol::{FromWorker, RunState, TRAIN_SIZE, ToHelper, ToWorker, ViewPairs};

/// Side of the stored images in the browser: the training size plus crop room.
const STORE_SIDE: usize = PclConfig::stored_size(TRAIN_SIZE);

struct State {
    device: Option<Device>,
    /// Whether the device is a GPU (its runs build their kernels before the first step).
    gpu: bool,
    data: Rc<Dataset>,
    /// The state of the live run, if any (its driver owns it; see `drive`).
    run: Option<RunState>,
    /// Counts runs: a driver whose run was replaced ends.
    generation: u64,
    loading: bool,
    /// Raw pixels' AMI for the data set it was computed on: computed once, drawn as the line
    /// to beat.
    pixels_ami: Option<PixelsAmi>,
    /// Helper workers sharing the steps on the CPU fallback.
    helpers: Option<Rc<helpers::Pool>>,
    /// Test hook (`ToWorker::SimulateDivergence`) for the runs started from now on.
    diverge_after_epoch: Option<usize>,
}

/// Raw pixels' AMI against the labels and the fine labels, and the data set's address and size.
#[derive(Clone, Copy)]
struct PixelsAmi {
    data: (usize, usize),
    scores: (Option<f64>, Option<f64>),
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State {
        device: None,
        gpu: false,
        data: Rc::new(Dataset::new(STORE_SIDE)),
        run: None,
        generation: 0,
        loading: false,
        pixels_ami: None,
        helpers: None,
        diverge_after_epoch: None,
    });
}

fn scope() -> DedicatedWorkerGlobalScope {
    js_sys::global().unchecked_into()
}

fn post(msg: FromWorker) {
    let _ = scope().post_message(&msg.to_json().into());
}

/// Posts `[json, bytes]`, transferring the bytes' buffer (no copy).
fn post_bytes(msg: FromWorker, bytes: &[u8]) {
    let array = js_sys::Uint8Array::from(bytes);
    let pair = js_sys::Array::of2(&msg.to_json().into(), &array);
    let _ = scope().post_message_with_transfer(&pair, &js_sys::Array::of1(&array.buffer()));
}

fn error(msg: impl Into<String>) {
    post(FromWorker::Error(msg.into()));
}

pub(crate) fn now_ms() -> f64 {
    js_sys::Reflect::get(&js_sys::global(), &"performance".into())
        .ok()
        .and_then(|p| p.dyn_into::<web_sys::Performance>().ok())
        .map_or(0.0, |p| p.now())
}

/// Lets the worker's event loop run (messages from the page) before going on.
pub(crate) async fn sleep_ms(ms: i32) {
    let promise = js_sys::Promise::new(&mut |resolve, _| {
        let _ = scope().set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, ms);
    });
    let _ = wasm_bindgen_futures::JsFuture::from(promise).await;
}

/// Whether this browser exposes WebGPU to workers (`navigator.gpu`).
fn has_webgpu() -> bool {
    js_sys::Reflect::get(&scope().navigator(), &"gpu".into())
        .map(|g| !g.is_undefined() && !g.is_null())
        .unwrap_or(false)
}

/// The browser's own description of its WebGPU adapter (`GPUAdapter.info`), which wgpu does not
/// pass through: "vendor architecture (description)".
async fn browser_adapter_name() -> Option<String> {
    let get = |o: &JsValue, k: &str| js_sys::Reflect::get(o, &k.into()).ok();
    let gpu = get(&scope().navigator().into(), "gpu")?;
    let request: js_sys::Function = get(&gpu, "requestAdapter")?.dyn_into().ok()?;
    let promise: js_sys::Promise = request.call0(&gpu).ok()?.dyn_into().ok()?;
    let adapter = wasm_bindgen_futures::JsFuture::from(promise).await.ok()?;
    let info = get(&adapter, "info")?;
    let field = |k: &str| {
        get(&info, k)
            .and_then(|v| v.as_string())
            .filter(|s| !s.is_empty())
    };
    let mut name: Vec<String> = [field("vendor"), field("architecture")]
        .into_iter()
        .flatten()
        .collect();
    if let Some(d) = field("description") {
        name.push(format!("({d})"));
    }
    let fallback = get(&info, "isFallbackAdapter")
        .or_else(|| get(&adapter, "isFallbackAdapter"))
        .and_then(|v| v.as_bool())
        .unwrap_or(false);
    let joined = name.join(" ");
    if fallback || joined.to_lowercase().contains("swiftshader") {
        name.push("(software: the CPU emulating a GPU)".into());
    }
    (!name.is_empty()).then(|| name.join(" "))
}

/// Reports a trap that no panic announced (out of memory aborts, `unreachable`): plain JS, so
/// it works while the wasm instance is broken; once per worker (a panic's own trap follows
/// its message and is not reported twice).
const ON_TRAP: &str = r#"
if (self.__pclCrashed) return;
self.__pclCrashed = true;
const why = String((e && (e.reason || e.message)) || e);
self.postMessage(JSON.stringify({ Crashed: 'the compute worker stopped without a message (' + why + '; out of memory?)' }));
"#;

pub fn start() {
    std::panic::set_hook(Box::new(|info| {
        let _ = js_sys::Reflect::set(&js_sys::global(), &"__pclCrashed".into(), &true.into());
        post(FromWorker::Crashed(format!(
            "the compute worker crashed: {info}"
        )));
    }));
    let on_trap = js_sys::Function::new_with_args("e", ON_TRAP);
    for event in ["error", "unhandledrejection"] {
        let _ = scope().add_event_listener_with_callback(event, &on_trap);
    }
    // `pclKernelCheck()` (debug builds): the CPU kernels against plain loops in this very wasm
    // (its v128 copies and tile-gemm lanes), for the end-to-end test.
    #[cfg(debug_assertions)]
    {
        let check = Closure::<dyn Fn() -> f32>::new(crate::engine::kernels::kernels_self_check);
        let _ = js_sys::Reflect::set(&js_sys::global(), &"pclKernelCheck".into(), check.as_ref());
        check.forget();
    }
    let on_message = Closure::<dyn FnMut(MessageEvent)>::new(|e: MessageEvent| {
        let data = e.data();
        let (text, payload) = match data.dyn_ref::<js_sys::Array>() {
            Some(pair) => (pair.get(0).as_string(), pair.get(1)),
            None => (data.as_string(), JsValue::UNDEFINED),
        };
        let text = text.unwrap_or_default();
        // A helper's work from the worker that started it, or the page's message.
        if let Some(job) = ToHelper::from_json(&text) {
            return wasm_bindgen_futures::spawn_local(helpers::handle(job, payload));
        }
        match ToWorker::from_json(&text) {
            Ok(msg) => wasm_bindgen_futures::spawn_local(handle(msg, payload)),
            Err(err) => error(err),
        }
    });
    scope().set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    on_message.forget();
    post(FromWorker::Ready {
        build: crate::protocol::BUILD_ID.into(),
    });
}

fn device() -> Option<Device> {
    STATE.with_borrow(|s| s.device.clone())
}

/// Whether a run is training or paused (a finished one does not hold its images).
fn busy_training() -> bool {
    STATE.with_borrow(|s| matches!(s.run, Some(RunState::Training | RunState::Paused)))
}

async fn handle(msg: ToWorker, payload: JsValue) {
    match msg {
        ToWorker::Start {
            force_cpu,
            workers,
            force_webgpu,
        } => start_device(force_cpu, workers, force_webgpu).await,
        ToWorker::AddFiles { paths } => {
            let files: Vec<web_sys::Blob> = js_sys::Array::from(&payload)
                .iter()
                .filter_map(|f| f.dyn_into().ok())
                .collect();
            if files.len() != paths.len() {
                return error(format!(
                    "{} files arrived for {} paths",
                    files.len(),
                    paths.len()
                ));
            }
            load(Source::Files(paths.into_iter().zip(files).collect())).await
        }
        ToWorker::LoadSample { limit } => load(Source::Sample(limit)).await,
        ToWorker::RestoreImages { names, labels } => {
            let bytes = js_sys::Uint8Array::new(&payload).to_vec();
            load(Source::Decoded(names, labels, bytes)).await
        }
        ToWorker::ClearImages => {
            if busy_training() {
                return error("stop the run before removing its images");
            }
            STATE.with_borrow_mut(|s| {
                s.data = Rc::new(Dataset::new(STORE_SIDE));
                s.run = None;
                s.generation += 1;
            });
            post(FromWorker::ImagesCleared);
        }
        ToWorker::Train { config } => train(config).await,
        ToWorker::Pause => request(Request::Run(Command::Pause)),
        ToWorker::Resume => request(Request::Run(Command::Resume)),
        ToWorker::Stop => request(Request::Run(Command::Stop)),
        ToWorker::Export(kind) => request(Request::Export(kind)),
        ToWorker::Import { autosave } => {
            let bytes = js_sys::Uint8Array::new(&payload).to_vec();
            import(bytes, autosave).await
        }
        ToWorker::SimulateCrash if cfg!(debug_assertions) => {
            panic!("simulated crash (test hook)")
        }
        ToWorker::SimulateAbort if cfg!(debug_assertions) => core::arch::wasm32::unreachable(),
        ToWorker::SimulateDivergence { epoch } if cfg!(debug_assertions) => {
            STATE.with_borrow_mut(|s| s.diverge_after_epoch = Some(epoch))
        }
        ToWorker::SimulateCrash | ToWorker::SimulateAbort | ToWorker::SimulateDivergence { .. } => {
            error("test hooks are only in development builds")
        }
        ToWorker::Neighbours { index } => request(Request::Neighbours(index)),
        ToWorker::Tsne => request(Request::Tsne),
        ToWorker::Views { config, count } => views(config, count).await,
    }
}

/// The augmentation panel's pairs: the training views of a few of the stored images.
async fn views(mut config: PclConfig, count: usize) {
    let Some(device) = device() else {
        return error("the compute device is not ready yet");
    };
    config.image_size = TRAIN_SIZE;
    if let Err(e) = config.check() {
        return error(e.to_string());
    }
    let data = STATE.with_borrow(|s| s.data.clone());
    let indices = data.preview_indices(count.min(64));
    let pixels: Vec<&[u8]> = indices.iter().map(|&i| data.image(i)).collect();
    let (aug, size) = (config.aug(), config.view_side());
    match augment::view_pairs(&pixels, data.side, &aug, config.seed, size, &device).await {
        Ok(pairs) => {
            let bytes: Vec<u8> = pairs.into_iter().flatten().flatten().collect();
            let seed = config.seed;
            let msg = FromWorker::Views(ViewPairs {
                indices,
                seed,
                size,
                config,
                pixels: Vec::new(),
            });
            post_bytes(msg, &bytes);
        }
        Err(e) => error(e.to_string()),
    }
}

/// Images a step of the device-choosing measurement trains (small: a software adapter trains a
/// few images a second).
const CHOICE_BATCH: usize = 16;

async fn start_device(force_cpu: bool, workers: Option<usize>, force_webgpu: bool) {
    let (mut device, mut info) = if force_cpu {
        init_or_cpu(false, BackendKind::Webgpu).await
    } else if !has_webgpu() {
        (
            Device::flex(),
            BackendInfo::cpu(Some(
                "This browser does not offer WebGPU, so training runs on the CPU (slower). \
                 Chrome, Edge and recent Safari and Firefox have WebGPU."
                    .into(),
            )),
        )
    } else {
        init_or_cpu(true, BackendKind::Webgpu).await
    };
    if info.kind == BackendKind::Webgpu
        && let Some(name) = browser_adapter_name().await
    {
        info.adapter = name;
    }
    let workers_wanted = helpers::workers_for(workers);
    info.choice = Some(if force_cpu || force_webgpu {
        Choice {
            how: ChoiceKind::Forced,
            webgpu_img_s: None,
            cpu_img_s: None,
        }
    } else if info.kind != BackendKind::Webgpu {
        Choice {
            how: ChoiceKind::Only,
            webgpu_img_s: None,
            cpu_img_s: None,
        }
    } else {
        // Both are here: a few steps of the quick demo's training on each, the faster kept.
        // A software adapter (the CPU emulating a GPU) loses to the CPU fallback by far.
        let webgpu = step_rate(&device, CHOICE_BATCH, 1, &now_ms).await.ok();
        let one = step_rate(&Device::flex(), CHOICE_BATCH, 3, &now_ms)
            .await
            .ok();
        // The helpers share the steps: about four fifths of a worker's rate each.
        let cpu = one.map(|r| r * (1.0 + 0.8 * (workers_wanted - 1) as f64));
        if Choice::cpu_is_faster(webgpu, cpu) {
            device = Device::flex();
            let adapter = info.adapter.clone();
            info = BackendInfo::cpu(Some(format!(
                "WebGPU is here ({adapter}) but trains slower than the CPU on this machine, so \
                 training runs on the CPU."
            )));
        }
        Choice {
            how: ChoiceKind::Measured,
            webgpu_img_s: webgpu,
            cpu_img_s: cpu,
        }
    });
    // The CPU fallback shares steps with helper workers, started now so their wasm loads
    // while the images do.
    let pool = (info.kind == BackendKind::Cpu)
        .then(|| helpers::workers_for(workers))
        .filter(|&n| n > 1)
        .map(|n| Rc::new(helpers::Pool::start(n - 1)));
    info.workers = 1 + pool.as_ref().map_or(0, |p| p.started());
    STATE.with_borrow_mut(|s| {
        s.device = Some(device.clone());
        s.gpu = info.kind != BackendKind::Cpu;
        s.helpers = pool;
    });
    post(FromWorker::Backend(info));
    let t0 = now_ms();
    match probe_step(&device).await {
        Ok(loss) => post(FromWorker::ProbeStep {
            loss,
            millis: now_ms() - t0,
        }),
        Err(e) => error(e.to_string()),
    }
}

//! The Web Worker: owns the compute device and every tensor; talks to the page only through
//! [`crate::protocol`] messages.

use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use web_sys::{DedicatedWorkerGlobalScope, MessageEvent};

use crate::compute::{BackendInfo, BackendKind, init_or_cpu, probe_step};
use crate::protocol::{FromWorker, ToWorker};

fn scope() -> DedicatedWorkerGlobalScope {
    js_sys::global().unchecked_into()
}

fn post(msg: FromWorker) {
    let _ = scope().post_message(&msg.to_json().into());
}

fn now_ms() -> f64 {
    js_sys::Reflect::get(&js_sys::global(), &"performance".into())
        .ok()
        .and_then(|p| p.dyn_into::<web_sys::Performance>().ok())
        .map_or(0.0, |p| p.now())
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
    (!name.is_empty()).then(|| name.join(" "))
}

pub fn start() {
    std::panic::set_hook(Box::new(|info| {
        post(FromWorker::Error(format!("worker panicked: {info}")));
    }));
    let on_message = Closure::<dyn FnMut(MessageEvent)>::new(|e: MessageEvent| {
        let text = e.data().as_string().unwrap_or_default();
        match serde_json::from_str::<ToWorker>(&text) {
            Ok(msg) => wasm_bindgen_futures::spawn_local(handle(msg)),
            Err(err) => post(FromWorker::Error(format!("bad message to worker: {err}"))),
        }
    });
    scope().set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    on_message.forget();
    post(FromWorker::Ready);
}

async fn handle(msg: ToWorker) {
    match msg {
        ToWorker::Start { force_cpu } => {
            let (device, info) = if force_cpu {
                init_or_cpu(false, BackendKind::Webgpu).await
            } else if !has_webgpu() {
                (
                    burn::prelude::Device::flex(),
                    BackendInfo::cpu(Some(
                        "This browser does not offer WebGPU, so training runs on the CPU \
                         (slower). Chrome, Edge and recent Safari and Firefox have WebGPU."
                            .into(),
                    )),
                )
            } else {
                init_or_cpu(true, BackendKind::Webgpu).await
            };
            let mut info = info;
            if info.kind == BackendKind::Webgpu
                && let Some(name) = browser_adapter_name().await
            {
                info.adapter = name;
            }
            post(FromWorker::Backend(info));
            let t0 = now_ms();
            match probe_step(&device).await {
                Ok(loss) => post(FromWorker::ProbeStep {
                    loss,
                    millis: now_ms() - t0,
                }),
                Err(e) => post(FromWorker::Error(e.to_string())),
            }
        }
    }
}

//! Helper workers for the CPU fallback: more instances of this worker's wasm, started by the
//! worker, each computing parts of training steps (`engine::parallel`). Browsers give a wasm
//! instance one thread and no shared memory without cross-origin isolation, so this is how a
//! step uses more than one core. A helper that crashes or answers wrongly is let go and the
//! trainer does its part.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use burn::prelude::Device;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use web_sys::{MessageEvent, Worker};

use super::{post, scope};
use crate::engine::model::{Encoder, EncoderConfig};
use crate::engine::parallel::{Helpers, Reply, SliceJob, SliceResult, run_job};
use crate::protocol::{FromWorker, ToWorker};

/// At most this many workers share a step (the batch has 4 BatchNorm chunks by default).
pub(super) const MAX_WORKERS: usize = 4;

/// The script that starts a worker (trunk's loader), next to this worker's own.
const WORKER_URL: &str = "./worker_loader.js";

/// The answer a helper owes: its id and how to resolve or reject the awaiting promise.
struct Pending {
    id: u64,
    resolve: js_sys::Function,
    reject: js_sys::Function,
}

struct Helper {
    worker: Worker,
    ready: Rc<Cell<bool>>,
    dead: Rc<Cell<bool>>,
    pending: Rc<RefCell<Option<Pending>>>,
    // Kept alive as long as the helper.
    _on_message: Closure<dyn FnMut(MessageEvent)>,
}

pub(crate) struct Pool {
    helpers: Vec<Helper>,
    next_id: Cell<u64>,
}

/// How many workers to train with: `asked` if given, else one per core, at most
/// [`MAX_WORKERS`].
pub(super) fn workers_for(asked: Option<usize>) -> usize {
    let cores = scope().navigator().hardware_concurrency() as usize;
    asked.unwrap_or(cores).clamp(1, MAX_WORKERS)
}

impl Pool {
    /// Starts `count` helpers; each says `Ready` when its wasm has loaded.
    pub(super) fn start(count: usize) -> Self {
        let helpers = (0..count).filter_map(|_| start_helper().ok()).collect();
        Self {
            helpers,
            next_id: Cell::new(0),
        }
    }

    /// Helpers started (some may still be loading).
    pub(super) fn started(&self) -> usize {
        self.helpers.len()
    }

    fn usable(&self) -> impl Iterator<Item = &Helper> {
        self.helpers
            .iter()
            .filter(|h| h.ready.get() && !h.dead.get())
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        for h in &self.helpers {
            h.worker.terminate();
        }
    }
}

fn start_helper() -> Result<Helper, JsValue> {
    let worker = Worker::new(WORKER_URL)?;
    let ready = Rc::new(Cell::new(false));
    let dead = Rc::new(Cell::new(false));
    let pending: Rc<RefCell<Option<Pending>>> = Rc::new(RefCell::new(None));
    let on_message = {
        let (ready, dead, pending) = (ready.clone(), dead.clone(), pending.clone());
        Closure::<dyn FnMut(MessageEvent)>::new(move |e: MessageEvent| {
            let data = e.data();
            let text = match data.dyn_ref::<js_sys::Array>() {
                Some(pair) => pair.get(0).as_string(),
                None => data.as_string(),
            };
            let settle = |id: u64, ok: Result<JsValue, JsValue>| {
                let p = pending.borrow_mut().take_if(|p| p.id == id);
                if let Some(p) = p {
                    let _ = match ok {
                        Ok(v) => p.resolve.call1(&JsValue::NULL, &v),
                        Err(v) => p.reject.call1(&JsValue::NULL, &v),
                    };
                }
            };
            match FromWorker::from_json(&text.unwrap_or_default()) {
                Ok(FromWorker::Ready) => ready.set(true),
                Ok(FromWorker::PartDone { id, .. }) => settle(id, Ok(data)),
                Ok(FromWorker::PartFailed { id, error }) => {
                    dead.set(true);
                    settle(id, Err(error.into()))
                }
                Ok(FromWorker::Crashed(why) | FromWorker::Error(why)) => {
                    dead.set(true);
                    if let Some(p) = pending.borrow_mut().take() {
                        let _ = p.reject.call1(&JsValue::NULL, &why.into());
                    }
                }
                _ => {}
            }
        })
    };
    worker.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    Ok(Helper {
        worker,
        ready,
        dead,
        pending,
        _on_message: on_message,
    })
}

impl Helpers for Pool {
    fn ready(&self) -> usize {
        self.usable().count()
    }

    fn submit(&self, index: usize, job: SliceJob) -> Reply {
        let Some(helper) = self.usable().nth(index) else {
            return Box::pin(async { Err("no such helper".to_string()) });
        };
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let mut parts = None;
        let promise = js_sys::Promise::new(&mut |resolve, reject| {
            parts = Some(Pending {
                id,
                resolve,
                reject,
            })
        });
        *helper.pending.borrow_mut() = parts;
        let (header, floats) = job.to_parts();
        let array = js_sys::Float32Array::from(floats);
        let message = ToWorker::Part { id, header }.to_json();
        let pair = js_sys::Array::of2(&message.into(), &array);
        let sent = helper
            .worker
            .post_message_with_transfer(&pair, &js_sys::Array::of1(&array.buffer()));
        if sent.is_err() {
            helper.dead.set(true);
        }
        Box::pin(async move {
            if sent.is_err() {
                return Err("the helper could not be reached".to_string());
            }
            let answer = wasm_bindgen_futures::JsFuture::from(promise)
                .await
                .map_err(|e| e.as_string().unwrap_or_else(|| format!("{e:?}")))?;
            let pair: js_sys::Array = answer.unchecked_into();
            let Ok(FromWorker::PartDone { header, .. }) =
                FromWorker::from_json(&pair.get(0).as_string().unwrap_or_default())
            else {
                return Err("the helper's answer is not a part".to_string());
            };
            let floats = js_sys::Float32Array::new(&pair.get(1)).to_vec();
            SliceResult::from_parts(&header, floats).map_err(|e| e.to_string())
        })
    }
}

thread_local! {
    /// A helper's encoder between jobs (its values are replaced by each job).
    static ENCODER: RefCell<Option<(EncoderConfig, Encoder)>> = const { RefCell::new(None) };
}

/// A helper's side: computes the part and answers the worker that sent it.
pub(super) async fn compute_part(id: u64, header: String, payload: JsValue) {
    let floats = js_sys::Float32Array::new(&payload).to_vec();
    let mut cache = ENCODER.take();
    let result = match SliceJob::from_parts(&header, floats) {
        Ok(job) => run_job(&job, &Device::flex(), &mut cache).await,
        Err(e) => Err(e),
    };
    ENCODER.set(cache);
    match result {
        Ok(out) => {
            let (header, floats) = out.to_parts();
            let array = js_sys::Float32Array::from(floats);
            let message = FromWorker::PartDone { id, header }.to_json();
            let pair = js_sys::Array::of2(&message.into(), &array);
            let _ = scope().post_message_with_transfer(&pair, &js_sys::Array::of1(&array.buffer()));
        }
        Err(e) => post(FromWorker::PartFailed {
            id,
            error: e.to_string(),
        }),
    }
}

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

use super::scope;
use crate::engine::parallel::{
    EmbedJob, EmbedReply, EmbedResult, HelperModels, Helpers, KeysResult, SliceJob, SliceResult,
    Submitted, finish_part, prepare_part, run_embed, run_keys,
};
use crate::protocol::{BUILD_ID, FromHelper, FromWorker, ToHelper};

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
    /// The keys, then the result, of the job in hand.
    keys: Rc<RefCell<Option<Pending>>>,
    pending: Rc<RefCell<Option<Pending>>>,
    // Kept alive as long as the helper.
    _on_message: Closure<dyn FnMut(MessageEvent)>,
}

pub(crate) struct Pool {
    helpers: Vec<Helper>,
    next_id: Cell<u64>,
    /// The helper and job id behind each index of the step in hand (for `send_keys`).
    assigned: RefCell<Vec<(usize, u64)>>,
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
            assigned: RefCell::new(Vec::new()),
        }
    }

    /// Helpers started (some may still be loading).
    pub(super) fn started(&self) -> usize {
        self.helpers.len()
    }

    /// Positions in `helpers` of those ready and alive.
    fn usable(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.helpers.len())
            .filter(|&i| self.helpers[i].ready.get() && !self.helpers[i].dead.get())
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
    let keys: Rc<RefCell<Option<Pending>>> = Rc::new(RefCell::new(None));
    let pending: Rc<RefCell<Option<Pending>>> = Rc::new(RefCell::new(None));
    let on_message = {
        let (ready, dead) = (ready.clone(), dead.clone());
        let (keys, pending) = (keys.clone(), pending.clone());
        Closure::<dyn FnMut(MessageEvent)>::new(move |e: MessageEvent| {
            let data = e.data();
            let text = match data.dyn_ref::<js_sys::Array>() {
                Some(pair) => pair.get(0).as_string(),
                None => data.as_string(),
            };
            let settle =
                |slot: &RefCell<Option<Pending>>, id: u64, ok: Result<&JsValue, JsValue>| {
                    let p = slot.borrow_mut().take_if(|p| p.id == id);
                    if let Some(p) = p {
                        let _ = match ok {
                            Ok(v) => p.resolve.call1(&JsValue::NULL, v),
                            Err(v) => p.reject.call1(&JsValue::NULL, &v),
                        };
                    }
                };
            let text = text.unwrap_or_default();
            match FromHelper::from_json(&text) {
                Some(FromHelper::PartKeys { id, .. }) => return settle(&keys, id, Ok(&data)),
                Some(FromHelper::PartDone { id, .. } | FromHelper::Embedded { id, .. }) => {
                    return settle(&pending, id, Ok(&data));
                }
                Some(FromHelper::PartFailed { id, error }) => {
                    dead.set(true);
                    settle(&keys, id, Err(error.clone().into()));
                    return settle(&pending, id, Err(error.into()));
                }
                None => {}
            }
            match FromWorker::from_json(&text) {
                // A helper of another build (a site updated meanwhile) is not used.
                Ok(FromWorker::Ready { build }) if build == BUILD_ID => ready.set(true),
                Ok(FromWorker::Ready { .. }) => dead.set(true),
                Ok(FromWorker::Crashed(why) | FromWorker::Error(why)) => {
                    dead.set(true);
                    for slot in [&keys, &pending] {
                        if let Some(p) = slot.borrow_mut().take() {
                            let _ = p.reject.call1(&JsValue::NULL, &why.clone().into());
                        }
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
        keys,
        pending,
        _on_message: on_message,
    })
}

/// A promise and how to settle it, for the answer `id`.
fn promise(id: u64) -> (js_sys::Promise, Pending) {
    let mut parts = None;
    let promise = js_sys::Promise::new(&mut |resolve, reject| {
        parts = Some((resolve, reject));
    });
    let (resolve, reject) = parts.expect("the executor runs at once");
    (
        promise,
        Pending {
            id,
            resolve,
            reject,
        },
    )
}

/// Awaits `[json, Float32Array]` from a helper: the JSON and the floats.
async fn answer(promise: js_sys::Promise) -> Result<(FromHelper, Vec<f32>), String> {
    let answer = wasm_bindgen_futures::JsFuture::from(promise)
        .await
        .map_err(|e| e.as_string().unwrap_or_else(|| format!("{e:?}")))?;
    let pair: js_sys::Array = answer.unchecked_into();
    let msg = FromHelper::from_json(&pair.get(0).as_string().unwrap_or_default())
        .ok_or("the helper's answer is not a helper's message")?;
    Ok((msg, js_sys::Float32Array::new(&pair.get(1)).to_vec()))
}

/// Posts `[json, Float32Array]`, transferring the floats' buffer.
fn post_floats(target: &Worker, json: String, floats: &[f32]) -> Result<(), JsValue> {
    let array = js_sys::Float32Array::from(floats);
    let pair = js_sys::Array::of2(&json.into(), &array);
    target.post_message_with_transfer(&pair, &js_sys::Array::of1(&array.buffer()))
}

impl Helpers for Pool {
    fn ready(&self) -> usize {
        self.usable().count()
    }

    fn submit(&self, index: usize, job: SliceJob) -> Submitted {
        let failed = |why: &'static str| Submitted {
            keys: Box::pin(async move { Err(why.to_string()) }),
            result: Box::pin(async move { Err(why.to_string()) }),
        };
        let Some(at) = self.usable().nth(index) else {
            return failed("no such helper");
        };
        let helper = &self.helpers[at];
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let mut assigned = self.assigned.borrow_mut();
        if index == 0 {
            assigned.clear();
        }
        assigned.push((at, id));
        let (keys, on_keys) = promise(id);
        let (result, on_result) = promise(id);
        *helper.keys.borrow_mut() = Some(on_keys);
        *helper.pending.borrow_mut() = Some(on_result);
        let (header, floats) = job.to_parts();
        if post_floats(
            &helper.worker,
            ToHelper::Part { id, header }.to_json(),
            floats,
        )
        .is_err()
        {
            helper.dead.set(true);
            return failed("the helper could not be reached");
        }
        Submitted {
            keys: Box::pin(async move {
                match answer(keys).await? {
                    (FromHelper::PartKeys { header, .. }, floats) => {
                        KeysResult::from_parts(&header, floats).map_err(|e| e.to_string())
                    }
                    _ => Err("the helper's answer is not keys".to_string()),
                }
            }),
            result: Box::pin(async move {
                match answer(result).await? {
                    (FromHelper::PartDone { header, .. }, floats) => {
                        SliceResult::from_parts(&header, floats).map_err(|e| e.to_string())
                    }
                    _ => Err("the helper's answer is not a part".to_string()),
                }
            }),
        }
    }

    fn embed(&self, index: usize, job: EmbedJob) -> EmbedReply {
        let Some(at) = self.usable().nth(index) else {
            return Box::pin(async { Err("no such helper".to_string()) });
        };
        let helper = &self.helpers[at];
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let (result, on_result) = promise(id);
        *helper.pending.borrow_mut() = Some(on_result);
        let asked = (
            job.header.rows,
            job.header.encoder.feature_dim,
            if job.header.with_backbone {
                job.header.encoder.backbone_dim()
            } else {
                0
            },
        );
        let (header, floats) = job.to_parts();
        if post_floats(
            &helper.worker,
            ToHelper::Embed { id, header }.to_json(),
            floats,
        )
        .is_err()
        {
            helper.dead.set(true);
            return Box::pin(async { Err("the helper could not be reached".to_string()) });
        }
        Box::pin(async move {
            match answer(result).await? {
                (FromHelper::Embedded { header, .. }, floats) => {
                    EmbedResult::from_parts(&header, floats, asked).map_err(|e| e.to_string())
                }
                _ => Err("the helper's answer is not embeddings".to_string()),
            }
        })
    }

    fn send_keys(&self, index: usize, keys: Vec<f32>) {
        let Some(&(at, id)) = self.assigned.borrow().get(index) else {
            return;
        };
        let helper = &self.helpers[at];
        if post_floats(&helper.worker, ToHelper::PartKeys { id }.to_json(), &keys).is_err() {
            helper.dead.set(true);
            if let Some(p) = helper.pending.borrow_mut().take() {
                let _ = p
                    .reject
                    .call1(&JsValue::NULL, &"the helper could not be reached".into());
            }
        }
    }
}

thread_local! {
    /// A helper's encoders between jobs (their values are replaced by each job).
    static MODELS: RefCell<HelperModels> = RefCell::new(HelperModels::default());
    /// A helper's job waiting for its query rows' keys: the job id and how to hand them over.
    static KEYS_IN: RefCell<Option<(u64, js_sys::Function)>> = const { RefCell::new(None) };
}

/// A helper's side of a message from the worker that started it.
pub(super) async fn handle(msg: ToHelper, payload: JsValue) {
    match msg {
        ToHelper::Part { id, header } => compute_part(id, header, payload).await,
        ToHelper::PartKeys { id } => keys_arrived(id, payload),
        ToHelper::Embed { id, header } => compute_embed(id, header, payload).await,
    }
}

/// A helper's side: its keys, then (with the keys of its rows from the worker) its part.
async fn compute_part(id: u64, header: String, payload: JsValue) {
    let floats = js_sys::Float32Array::new(&payload).to_vec();
    let mut models = MODELS.take();
    let result = helper_job(id, &header, floats, &mut models).await;
    MODELS.set(models);
    match result {
        Ok(out) => {
            let (header, floats) = out.to_parts();
            // A worker that cannot be answered has gone; nothing is left to do.
            let _ = post_to_parent(FromHelper::PartDone { id, header }, floats);
        }
        Err(e) => post_failed(id, e),
    }
}

/// A helper's side of an embedding job.
async fn compute_embed(id: u64, header: String, payload: JsValue) {
    let floats = js_sys::Float32Array::new(&payload).to_vec();
    let mut models = MODELS.take();
    let result = match EmbedJob::from_parts(&header, floats) {
        Ok(job) => run_embed(&job, &Device::flex(), &mut models).await,
        Err(e) => Err(e),
    };
    MODELS.set(models);
    match result {
        Ok(out) => {
            let (header, floats) = out.to_parts();
            let _ = post_to_parent(FromHelper::Embedded { id, header }, floats);
        }
        Err(e) => post_failed(id, e.to_string()),
    }
}

/// A helper's word that job `id` failed.
fn post_failed(id: u64, error: String) {
    let _ = scope().post_message(&FromHelper::PartFailed { id, error }.to_json().into());
}

/// A helper's `[json, Float32Array]` to the worker that started it, transferring the floats.
fn post_to_parent(msg: FromHelper, floats: &[f32]) -> Result<(), String> {
    let array = js_sys::Float32Array::from(floats);
    let pair = js_sys::Array::of2(&msg.to_json().into(), &array);
    scope()
        .post_message_with_transfer(&pair, &js_sys::Array::of1(&array.buffer()))
        .map_err(|e| format!("{e:?}"))
}

async fn helper_job(
    id: u64,
    header: &str,
    floats: Vec<f32>,
    models: &mut HelperModels,
) -> Result<SliceResult, String> {
    let device = Device::flex();
    let job = SliceJob::from_parts(header, floats).map_err(|e| e.to_string())?;
    let keys = run_keys(&job, &device, models)
        .await
        .map_err(|e| e.to_string())?;
    // Ready for the worker's answer before it can come.
    let (arrived, on_keys) = promise(id);
    KEYS_IN.set(Some((id, on_keys.resolve)));
    let (header, floats) = keys.to_parts();
    post_to_parent(FromHelper::PartKeys { id, header }, floats)?;
    // The part's queries and other inputs while the keys are on their way.
    let part = prepare_part(&job, &device, models).map_err(|e| e.to_string())?;
    let rows = wasm_bindgen_futures::JsFuture::from(arrived)
        .await
        .map_err(|e| format!("{e:?}"))?;
    let rows = js_sys::Float32Array::new(&rows).to_vec();
    finish_part(part, rows).await.map_err(|e| e.to_string())
}

/// A helper's side: the keys of its rows arrived from the worker.
fn keys_arrived(id: u64, payload: JsValue) {
    if let Some((waiting, resolve)) = KEYS_IN.take() {
        if waiting == id {
            let _ = resolve.call1(&JsValue::NULL, &payload);
        } else {
            KEYS_IN.set(Some((waiting, resolve)));
        }
    }
}

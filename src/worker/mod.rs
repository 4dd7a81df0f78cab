//! The Web Worker: owns the compute device, the decoded images and every tensor; talks to the
//! page only through [`crate::protocol`] messages. A run is an engine
//! [`Session`](crate::engine::session::Session); its driver here passes the page's requests
//! (pause, export, neighbours) to it between units of work and posts what it reports.

mod decode;

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use burn::prelude::Device;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use web_sys::{DedicatedWorkerGlobalScope, MessageEvent};

use crate::compute::{BackendInfo, BackendKind, init_or_cpu, probe_step};
use crate::engine::config::too_few_images;
use crate::engine::explore;
use crate::engine::session::{Command, Failure, Options, Session, Update};
use crate::engine::{Dataset, EngineError, PclConfig, Trainer};
use crate::intake::{MAX_IMAGES, Skipped, eta_seconds};
use crate::protocol::{ExportKind, FromWorker, ImagesAdded, Phase, RunState, RunStatus, ToWorker};

/// Files whose decoding runs at once while loading.
const DECODE_IN_FLIGHT: usize = 8;

/// Side of the stored images in the browser: the default 32-px training plus crop room.
const STORE_SIDE: usize = 36;

struct State {
    device: Option<Device>,
    data: Rc<Dataset>,
    /// The state of the live run, if any (its driver owns it; see `drive`).
    run: Option<RunState>,
    /// Counts runs: a driver whose run was replaced ends.
    generation: u64,
    loading: bool,
    /// Raw pixels' AMI for the data set it was computed on: computed once, drawn as the line
    /// to beat.
    pixels_ami: Option<PixelsAmi>,
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
        data: Rc::new(Dataset::new(STORE_SIDE)),
        run: None,
        generation: 0,
        loading: false,
        pixels_ami: None,
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
    (!name.is_empty()).then(|| name.join(" "))
}

pub fn start() {
    std::panic::set_hook(Box::new(|info| {
        post(FromWorker::Crashed(format!(
            "the compute worker crashed: {info}"
        )));
    }));
    let on_message = Closure::<dyn FnMut(MessageEvent)>::new(|e: MessageEvent| {
        let data = e.data();
        let (text, payload) = match data.dyn_ref::<js_sys::Array>() {
            Some(pair) => (pair.get(0).as_string(), pair.get(1)),
            None => (data.as_string(), JsValue::UNDEFINED),
        };
        match ToWorker::from_json(&text.unwrap_or_default()) {
            Ok(msg) => wasm_bindgen_futures::spawn_local(handle(msg, payload)),
            Err(err) => error(err),
        }
    });
    scope().set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    on_message.forget();
    post(FromWorker::Ready);
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
        ToWorker::Start { force_cpu } => start_device(force_cpu).await,
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
        ToWorker::SimulateCrash => panic!("simulated crash (test hook)"),
        ToWorker::Neighbours { index } => request(Request::Neighbours(index)),
    }
}

async fn start_device(force_cpu: bool) {
    let (device, mut info) = if force_cpu {
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
    STATE.with_borrow_mut(|s| s.device = Some(device.clone()));
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

enum Source {
    Files(Vec<(String, web_sys::Blob)>),
    Sample(Option<usize>),
    /// Images the page kept (thumbnails are the stored pixels), restored after a reload.
    Decoded(Vec<String>, Vec<String>, Vec<u8>),
}

/// Splits a label path ("coarse/fine" or "coarse") into the dataset's two labels.
fn label_parts(label: &str) -> (Option<&str>, Option<&str>) {
    if label.is_empty() {
        (None, None)
    } else {
        (
            Some(label.split('/').next().unwrap_or(label)),
            label.contains('/').then_some(label),
        )
    }
}

async fn load(source: Source) {
    if busy_training() {
        return error("stop the run before adding images (a run trains on a fixed set)");
    }
    if STATE.with_borrow(|s| s.loading) {
        return error("images are still loading; wait for them to finish");
    }
    STATE.with_borrow_mut(|s| s.loading = true);
    let t0 = now_ms();
    let mut batch = Batch::default();
    let result = match source {
        Source::Files(files) => {
            let total = files.len();
            let mut last_post = 0.0;
            let mut done = 0;
            // A few files in flight at once: the browser decodes them in parallel.
            for chunk in files.chunks(DECODE_IN_FLIGHT) {
                let mut started = Vec::with_capacity(chunk.len());
                for (path, blob) in chunk {
                    let over = count() + batch.names.len() + started.len() >= MAX_IMAGES;
                    let pending = if over {
                        Err(format!("over the limit of {MAX_IMAGES} images"))
                    } else {
                        decode::start_decode(blob).await
                    };
                    started.push((path.clone(), pending));
                }
                for (path, pending) in started {
                    let decoded = match pending {
                        Ok(p) => decode::finish_decode(p, STORE_SIDE).await,
                        Err(reason) => Err(reason),
                    };
                    match decoded {
                        Ok(rgb) => {
                            let label = label_of(&path);
                            batch.add(path, label, rgb);
                        }
                        Err(reason) => batch.skipped.push(Skipped { file: path, reason }),
                    }
                    done += 1;
                }
                if now_ms() - last_post > 150.0 {
                    last_post = now_ms();
                    post(FromWorker::Loading {
                        done,
                        total,
                        eta_s: eta_seconds(done, total, (now_ms() - t0) / 1000.0),
                    });
                    // Thumbnails appear while the rest decodes.
                    if batch.names.len() >= 256 {
                        batch.flush(t0, false);
                    }
                }
            }
            Ok(())
        }
        Source::Sample(limit) => decode::load_sample(limit, STORE_SIDE, &mut batch).await,
        Source::Decoded(names, labels, bytes) => {
            let per = STORE_SIDE * STORE_SIDE * 3;
            if bytes.len() != names.len() * per || labels.len() != names.len() {
                Err(format!(
                    "restored images: {} bytes for {} names, expected {}",
                    bytes.len(),
                    names.len(),
                    names.len() * per
                ))
            } else {
                for ((name, label), rgb) in names.into_iter().zip(labels).zip(bytes.chunks(per)) {
                    batch.add(name, label, rgb.to_vec());
                }
                Ok(())
            }
        }
    };
    STATE.with_borrow_mut(|s| s.loading = false);
    batch.flush(t0, true);
    if let Err(e) = result {
        error(e);
    }
}

fn label_of(path: &str) -> String {
    match crate::intake::labels_of(path) {
        (_, Some(fine)) => fine,
        (Some(coarse), None) => coarse,
        _ => String::new(),
    }
}

fn count() -> usize {
    STATE.with_borrow(|s| s.data.len())
}

/// Decoded images not yet added to the store and announced to the page.
#[derive(Default)]
pub(crate) struct Batch {
    names: Vec<String>,
    labels: Vec<String>,
    pixels: Vec<u8>,
    skipped: Vec<Skipped>,
}

impl Batch {
    pub(crate) fn add(&mut self, name: String, label: String, rgb: Vec<u8>) {
        self.names.push(name);
        self.labels.push(label);
        self.pixels.extend_from_slice(&rgb);
    }

    /// Adds the batch to the store and sends it (with its pixels, for thumbnails) to the page.
    fn flush(&mut self, t0: f64, last: bool) {
        let batch = std::mem::take(self);
        let per = STORE_SIDE * STORE_SIDE * 3;
        let (total, memory) = STATE.with_borrow_mut(|s| {
            let data = Rc::make_mut(&mut s.data);
            for (i, (name, label)) in batch.names.iter().zip(&batch.labels).enumerate() {
                let (coarse, fine) = label_parts(label);
                let rgb = &batch.pixels[i * per..(i + 1) * per];
                data.push_labelled(name.clone(), rgb, coarse, fine)
                    .expect("decoded at the store size");
            }
            (data.len(), data.memory_bytes())
        });
        let msg = FromWorker::Images(ImagesAdded {
            side: STORE_SIDE,
            names: batch.names,
            labels: batch.labels,
            skipped: batch.skipped,
            total,
            memory_bytes: memory,
            seconds: (now_ms() - t0) / 1000.0,
            last,
        });
        post_bytes(msg, &batch.pixels);
    }
}

// ---- training ----------------------------------------------------------------------------

/// What the page asks of the live run; the run's driver takes these between units of work.
enum Request {
    Run(Command),
    Export(ExportKind),
    Neighbours(usize),
}

thread_local! {
    static REQUESTS: RefCell<VecDeque<Request>> = const { RefCell::new(VecDeque::new()) };
}

/// Hands a request to the live run, or says why there is none.
fn request(r: Request) {
    if STATE.with_borrow(|s| s.run.is_none()) {
        match r {
            Request::Run(_) => {}
            Request::Export(_) => error("nothing to export yet: train first"),
            Request::Neighbours(_) => error("no embedding yet: train for an epoch first"),
        }
        return;
    }
    REQUESTS.with_borrow_mut(|q| q.push_back(r));
}

async fn train(config: PclConfig) {
    if busy_training() {
        return error("a run is already going; stop it first");
    }
    let Some(device) = device() else {
        return error("the compute device is not ready yet");
    };
    let data = STATE.with_borrow(|s| s.data.clone());
    if data.len() < crate::engine::config::MIN_IMAGES {
        return error(too_few_images(data.len()));
    }
    let mut config = config;
    config.image_size = 32;
    match Trainer::new(&config, &data, &device) {
        Ok(t) => start_run(t, false, None),
        Err(e) => error(e.to_string()),
    }
}

async fn import(bytes: Vec<u8>, autosave: bool) {
    if busy_training() {
        return error("stop the current run before opening a session");
    }
    let Some(device) = device() else {
        return error("the compute device is not ready yet");
    };
    let data = STATE.with_borrow(|s| s.data.clone());
    match Trainer::load(&bytes, &data, &device) {
        Ok(t) => {
            post(FromWorker::History(t.history.clone()));
            // A finished run goes straight to its final view; any other waits for Resume.
            let paused = !t.is_done();
            start_run(t, paused, Some(Phase::Resumed { autosave }));
        }
        Err(e) => error(format!("cannot open this session: {e}")),
    }
}

/// Starts the driver of a new run (any earlier run's driver ends at its next turn).
fn start_run(trainer: Trainer, paused: bool, phase: Option<Phase>) {
    let data = STATE.with_borrow(|s| s.data.clone());
    let mut session = Session::new(
        trainer,
        data.clone(),
        Options::page(),
        Box::new(|| now_ms() / 1000.0),
        paused,
    );
    if let Some(p) = STATE.with_borrow(|s| s.pixels_ami)
        && p.data == data_id(&data)
    {
        session = session.with_pixels_ami(p.scores);
    }
    if let Some(phase) = phase {
        post(FromWorker::Status(RunStatus {
            phase,
            ..session.status()
        }));
    }
    let generation = STATE.with_borrow_mut(|s| {
        s.generation += 1;
        s.run = Some(session.state());
        s.generation
    });
    REQUESTS.with_borrow_mut(VecDeque::clear);
    wasm_bindgen_futures::spawn_local(drive(session, generation));
}

fn data_id(data: &Rc<Dataset>) -> (usize, usize) {
    (Rc::as_ptr(data) as usize, data.len())
}

/// Message plumbing around the run: requests in, updates out, until another run replaces it
/// or its images are removed. It outlives the end of training, for exports and neighbours.
async fn drive(mut session: Session, generation: u64) {
    loop {
        if STATE.with_borrow(|s| s.generation) != generation {
            return;
        }
        for r in REQUESTS.with_borrow_mut(std::mem::take) {
            match r {
                Request::Run(c) => session.command(c),
                Request::Export(kind) => export(&session, kind).await,
                Request::Neighbours(index) => neighbours(&session, index),
            }
        }
        let worked = session.tick(&mut post_update).await;
        let state = session.state();
        let pixels = session.pixels_ami().map(|scores| PixelsAmi {
            data: data_id(session.data()),
            scores,
        });
        STATE.with_borrow_mut(|s| {
            if s.generation == generation {
                s.run = Some(state);
                s.pixels_ami = pixels.or(s.pixels_ami);
            }
        });
        sleep_ms(if worked { 0 } else { 40 }).await;
    }
}

fn post_update(update: Update) {
    match update {
        Update::Status(s) => post(FromWorker::Status(s)),
        Update::Steps(records) => post(FromWorker::Steps(records)),
        Update::EStep { epoch, levels } => post(FromWorker::EStepDone { epoch, levels }),
        Update::Explored(report) => post(FromWorker::Explore(report)),
        Update::Checkpoint { epoch, bytes } => post_bytes(FromWorker::Autosave { epoch }, &bytes),
        Update::Failed(f @ Failure::DeviceLost(_)) => post(FromWorker::Crashed(f.to_string())),
        Update::Failed(f) => error(f.to_string()),
        Update::Warning(w) => error(w),
        // The page shows epochs through the status and the explorer's metrics.
        Update::Epoch(_) | Update::Replanned { .. } => {}
    }
}

fn neighbours(session: &Session, index: usize) {
    let found = session
        .embeddings()
        .filter(|(e, d)| index < e.len() / d)
        .map(|(e, d)| explore::neighbours(e, d, index, 12));
    match found {
        Some(neighbours) => post(FromWorker::Neighbours { index, neighbours }),
        None => error("no embedding yet: train for an epoch first"),
    }
}

async fn export(session: &Session, kind: ExportKind) {
    let t = session.trainer();
    let result = match kind {
        ExportKind::Session => t.save().await.map(|b| (b, "pcl-session.pclstudio")),
        ExportKind::Model => t.save_model().await.map(|b| (b, "pcl-encoder.bin")),
        ExportKind::Clusters => Ok((
            explore::clusters_json(t, session.data()).into_bytes(),
            "pcl-clusters.json",
        )),
        ExportKind::Embeddings => match session.embeddings() {
            Some((emb, d)) => Ok((
                explore::embeddings_csv(session.data(), emb, d).into_bytes(),
                "pcl-embeddings.csv",
            )),
            None => Err(EngineError::Config("no embeddings yet".into())),
        },
    };
    match result {
        Ok((bytes, name)) => post_bytes(
            FromWorker::File {
                kind,
                name: name.into(),
            },
            &bytes,
        ),
        Err(e) => error(format!("export failed: {e}")),
    }
}

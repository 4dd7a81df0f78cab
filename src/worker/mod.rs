//! The Web Worker: owns the compute device, the decoded images and every tensor; talks to the
//! page only through [`crate::protocol`] messages. The training loop owns the trainer only
//! while a step runs and puts it back between steps, so commands (pause, export, neighbours)
//! are handled between steps.

mod decode;

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use burn::prelude::Device;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use web_sys::{DedicatedWorkerGlobalScope, MessageEvent};

use crate::compute::{BackendInfo, BackendKind, init_or_cpu, probe_step};
use crate::engine::config::too_few_images;
use crate::engine::explore::{clusters_json, embeddings_csv, explore, neighbours};
use crate::engine::{Dataset, EngineError, Event, PclConfig, Phase, Trainer};
use crate::intake::{MAX_IMAGES, Skipped, eta_seconds};
use crate::protocol::{ExportKind, FromWorker, ImagesAdded, RunState, RunStatus, ToWorker};

/// Autosaves follow epochs, but at most one per this many milliseconds.
const AUTOSAVE_MIN_MS: f64 = 2000.0;

/// Files whose decoding runs at once while loading.
const DECODE_IN_FLIGHT: usize = 8;

/// Side of the stored images in the browser: the default 32-px training plus crop room.
const STORE_SIDE: usize = 36;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Control {
    Run,
    Pause,
    Stop,
}

struct State {
    device: Option<Device>,
    data: Rc<Dataset>,
    /// `None` while the loop runs a step with it (or before any run).
    trainer: Option<Trainer>,
    looping: bool,
    loading: bool,
    /// Host embeddings [n, d] of the last explore pass, for neighbour queries.
    embeddings: Option<(Vec<f32>, usize)>,
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
        trainer: None,
        looping: false,
        loading: false,
        embeddings: None,
        pixels_ami: None,
    });
    static CONTROL: Cell<Control> = const { Cell::new(Control::Run) };
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

fn busy_training() -> bool {
    STATE.with_borrow(|s| s.looping)
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
                s.trainer = None;
                s.embeddings = None;
            });
            post(FromWorker::ImagesCleared);
        }
        ToWorker::Train { config } => train(config).await,
        ToWorker::Pause => CONTROL.set(Control::Pause),
        ToWorker::Resume => CONTROL.set(Control::Run),
        ToWorker::Stop => CONTROL.set(Control::Stop),
        ToWorker::Export(kind) => export(kind).await,
        ToWorker::Import { autosave } => {
            let bytes = js_sys::Uint8Array::new(&payload).to_vec();
            import(bytes, autosave).await
        }
        ToWorker::SimulateCrash => panic!("simulated crash (test hook)"),
        ToWorker::Neighbours { index } => {
            let found = STATE.with_borrow(|s| {
                s.embeddings
                    .as_ref()
                    .filter(|(e, d)| index < e.len() / d)
                    .map(|(e, d)| neighbours(e, *d, index, 12))
            });
            match found {
                Some(neighbours) => post(FromWorker::Neighbours { index, neighbours }),
                None => error("no embedding yet: train for an epoch first"),
            }
        }
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

// ---- training ---------------------------------------------------------------------------

fn status(trainer: &Trainer, n: usize, state: RunState, phase: String, rate: &Rate) -> RunStatus {
    let spe = trainer.steps_per_epoch(n);
    let left_steps = (trainer.config.epochs.saturating_sub(trainer.epoch)) * spe;
    let left_steps = left_steps.saturating_sub(trainer.step);
    RunStatus {
        state,
        epoch: trainer.epoch,
        epochs: trainer.config.epochs,
        step: trainer.step,
        steps_per_epoch: spe,
        phase,
        images_per_s: rate.images_per_s(),
        eta_s: rate.step_s().map(|s| s * left_steps as f64),
        config: Some(trainer.config.clone()),
    }
}

/// Recent step times, for images/s and the ETA.
#[derive(Default)]
struct Rate {
    recent: Vec<(f64, usize)>,
}

impl Rate {
    fn push(&mut self, seconds: f64, images: usize) {
        self.recent.push((seconds, images));
        if self.recent.len() > 20 {
            self.recent.remove(0);
        }
    }
    fn step_s(&self) -> Option<f64> {
        (!self.recent.is_empty())
            .then(|| self.recent.iter().map(|r| r.0).sum::<f64>() / self.recent.len() as f64)
    }
    fn images_per_s(&self) -> f64 {
        let s: f64 = self.recent.iter().map(|r| r.0).sum();
        let n: usize = self.recent.iter().map(|r| r.1).sum();
        if s > 0.0 { n as f64 / s } else { 0.0 }
    }
}

fn phase_words(p: &Phase) -> String {
    match p {
        Phase::Embedding { done, total } => format!("E-step: embedding images {done}/{total}"),
        Phase::KMeans { level, levels, k } => {
            format!("E-step: k-means level {} of {levels} (K = {k})", level + 1)
        }
        Phase::Training => "augment + train".into(),
    }
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
        Ok(t) => run(t).await,
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
            let what = if autosave { "autosave" } else { "session" };
            post(FromWorker::Status(RunStatus {
                phase: format!("resumed from the {what} at epoch {}", t.epoch),
                ..status(
                    &t,
                    data.len(),
                    RunState::Paused,
                    String::new(),
                    &Rate::default(),
                )
            }));
            if t.is_done() {
                STATE.with_borrow_mut(|s| s.trainer = Some(t));
                finish(RunState::Done).await;
            } else {
                CONTROL.set(Control::Pause);
                run(t).await
            }
        }
        Err(e) => error(format!("cannot open this session: {e}")),
    }
}

/// The training loop: one `advance` per iteration, commands checked between them.
async fn run(trainer: Trainer) {
    let data = STATE.with_borrow(|s| s.data.clone());
    let n = data.len();
    STATE.with_borrow_mut(|s| {
        s.trainer = Some(trainer);
        s.looping = true;
    });
    if CONTROL.get() == Control::Stop {
        CONTROL.set(Control::Run);
    }
    let mut rate = Rate::default();
    let mut last_status = 0.0;
    // Step records and autosaves are batched so a fast backend does not flood the page.
    let mut unsent: Vec<crate::engine::StepRecord> = Vec::new();
    let mut last_autosave = now_ms();
    let mut paused_reported = false;
    // Active seconds of this run in this worker (pauses excluded), for a time budget.
    let (mut active_secs, mut estep_secs, mut epochs_timed) = (0.0, 0.0, 0);
    let end_state = loop {
        match CONTROL.get() {
            Control::Stop => break RunState::Done,
            Control::Pause => {
                if !paused_reported {
                    paused_reported = true;
                    if let Some(t) = take_trainer().await {
                        post(FromWorker::Status(status(
                            &t,
                            n,
                            RunState::Paused,
                            "paused".into(),
                            &rate,
                        )));
                        autosave(&t).await;
                        put_trainer(t);
                    }
                }
                sleep_ms(40).await;
                continue;
            }
            Control::Run => paused_reported = false,
        }
        let Some(mut t) = take_trainer().await else {
            break RunState::Error;
        };
        let t0 = now_ms();
        // E-step phases are reported live from a snapshot of where the run is.
        let snapshot = status(&t, n, RunState::Training, String::new(), &rate);
        let last = Cell::new(last_status);
        let event = t
            .advance(&data, &mut |p: Phase| {
                if now_ms() - last.get() > 200.0 {
                    last.set(now_ms());
                    post(FromWorker::Status(RunStatus {
                        phase: phase_words(&p),
                        ..snapshot.clone()
                    }));
                }
            })
            .await;
        last_status = last.get();
        let seconds = (now_ms() - t0) / 1000.0;
        active_secs += seconds;
        match event {
            Ok(Event::Step(record)) => {
                rate.push(seconds, t.config.batch_size);
                let epoch_done = record.epoch_done;
                if epoch_done {
                    epochs_timed += 1;
                    t.fit_to_budget(active_secs, estep_secs, epochs_timed);
                }
                unsent.push(record);
                if now_ms() - last_status > 100.0 || epoch_done {
                    last_status = now_ms();
                    post(FromWorker::Steps(std::mem::take(&mut unsent)));
                    post(FromWorker::Status(status(
                        &t,
                        n,
                        RunState::Training,
                        phase_words(&Phase::Training),
                        &rate,
                    )));
                }
                // After every epoch, but not more often than every 2 s.
                if epoch_done && now_ms() - last_autosave > AUTOSAVE_MIN_MS {
                    last_autosave = now_ms();
                    autosave(&t).await;
                }
                put_trainer(t);
            }
            Ok(Event::EStep { epoch, levels }) => {
                post(FromWorker::EStepDone { epoch, levels });
                put_trainer(t);
                let t1 = now_ms();
                explore_now().await;
                // The explorer's pass is part of each E-step's cost in the budget.
                let explore_secs = (now_ms() - t1) / 1000.0;
                active_secs += explore_secs;
                estep_secs += seconds + explore_secs;
            }
            Ok(Event::Done) => {
                put_trainer(t);
                break RunState::Done;
            }
            Err(EngineError::Device(m)) => {
                put_trainer(t);
                post(FromWorker::Crashed(format!(
                    "the GPU stopped answering ({m})"
                )));
                break RunState::Error;
            }
            Err(e) => {
                put_trainer(t);
                error(match e {
                    EngineError::NonFinite(m) => format!(
                        "training stopped: the loss became {m}. The last good state is kept; \
                         try a lower learning rate."
                    ),
                    other => other.to_string(),
                });
                break RunState::Error;
            }
        }
        sleep_ms(0).await;
    };
    if !unsent.is_empty() {
        post(FromWorker::Steps(unsent));
    }
    CONTROL.set(Control::Run);
    finish(end_state).await;
}

/// Takes the trainer from the shared slot, waiting while an export holds it.
async fn take_trainer() -> Option<Trainer> {
    for _ in 0..6000 {
        if let Some(t) = STATE.with_borrow_mut(|s| s.trainer.take()) {
            return Some(t);
        }
        sleep_ms(10).await;
    }
    None
}

fn put_trainer(t: Trainer) {
    STATE.with_borrow_mut(|s| s.trainer = Some(t));
}

async fn finish(state: RunState) {
    STATE.with_borrow_mut(|s| s.looping = false);
    explore_now().await;
    if let Some(t) = take_trainer().await {
        let n = STATE.with_borrow(|s| s.data.len());
        post(FromWorker::Status(status(
            &t,
            n,
            state,
            match state {
                RunState::Done if t.is_done() => "finished".into(),
                RunState::Done => "stopped".into(),
                _ => "stopped by an error".into(),
            },
            &Rate::default(),
        )));
        if state == RunState::Done {
            autosave(&t).await;
        }
        put_trainer(t);
    }
}

/// Clusters, map and metrics of the current state, sent to the page.
async fn explore_now() {
    let data = STATE.with_borrow(|s| s.data.clone());
    let Some(t) = take_trainer().await else {
        return;
    };
    let result = explore(&t, &data, &mut |_| {}).await;
    let (d, size) = (t.config.feature_dim, t.config.image_size);
    put_trainer(t);
    match result {
        Ok((mut report, host)) => {
            if let Some(m) = report.metrics.as_mut() {
                (m.pixels_ami, m.pixels_ami_fine) = pixels_baseline(&data, size).await;
            }
            STATE.with_borrow_mut(|s| s.embeddings = Some((host, d)));
            post(FromWorker::Explore(Box::new(report)));
        }
        Err(e) => error(format!("could not compute the clusters view: {e}")),
    }
}

/// Raw pixels' AMI for `data` (cached per data set).
async fn pixels_baseline(data: &Rc<Dataset>, image_size: usize) -> (Option<f64>, Option<f64>) {
    let id = (Rc::as_ptr(data) as usize, data.len());
    if let Some(p) = STATE.with_borrow(|s| s.pixels_ami)
        && p.data == id
    {
        return p.scores;
    }
    let Some(device) = device() else {
        return (None, None);
    };
    let scores = crate::engine::pixels_ami(data, image_size, 0, &device)
        .await
        .unwrap_or((None, None));
    STATE.with_borrow_mut(|s| s.pixels_ami = Some(PixelsAmi { data: id, scores }));
    scores
}

async fn autosave(t: &Trainer) {
    match t.save().await {
        Ok(bytes) => post_bytes(FromWorker::Autosave { epoch: t.epoch }, &bytes),
        Err(e) => error(format!("autosave failed (training goes on): {e}")),
    }
}

async fn export(kind: ExportKind) {
    let Some(t) = take_trainer().await else {
        return error("nothing to export yet: train first");
    };
    let result = match kind {
        ExportKind::Session => t.save().await.map(|b| (b, "pcl-session.pclstudio")),
        ExportKind::Model => t.save_model().await.map(|b| (b, "pcl-encoder.bin")),
        ExportKind::Clusters => {
            let data = STATE.with_borrow(|s| s.data.clone());
            Ok((clusters_json(&t, &data).into_bytes(), "pcl-clusters.json"))
        }
        ExportKind::Embeddings => {
            let data = STATE.with_borrow(|s| s.data.clone());
            match STATE.with_borrow(|s| s.embeddings.clone()) {
                Some((emb, d)) => Ok((
                    embeddings_csv(&data, &emb, d).into_bytes(),
                    "pcl-embeddings.csv",
                )),
                None => Err(EngineError::Config("no embeddings yet".into())),
            }
        }
    };
    put_trainer(t);
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

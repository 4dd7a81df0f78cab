//! The Leptos view: spawns the worker, forwards its messages to [`PageState`], renders it.
//! Image pixels (thumbnails: the very pixels the worker trains on) live in a plain store here,
//! outside the reactive state; a version signal says when they changed.
//!
//! (Over 500 lines by its development-build test hooks; the worker link, lesson loading and the
//! App are still one shell: splitting them is issue 34's page-shell item.)

use std::cell::RefCell;

use leptos::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use web_sys::{MessageEvent, Worker};

use super::cards::{
    BackendCard, CompareCard, ExploreCard, GuideCard, ImagesCard, KeepCard, LiveCard, TrainCard,
    ViewsCard,
};
use super::lesson::{Lesson, MAX_LESSON_BYTES};
use super::state::{PageState, Recovery};
use super::{js, storage};
use crate::intake::Label;
use crate::protocol::{FromWorker, ToWorker};

/// Where this browser remembers the measured device (`localStorage`).
pub(crate) const DEVICE_KEY: &str = "pcl-studio-device";

/// trunk emits the worker's loader under this fixed name (Trunk.toml: filehash = false).
const WORKER_URL: &str = "./worker_loader.js";

#[derive(Default)]
pub(crate) struct Store {
    pub side: usize,
    pub names: Vec<String>,
    pub labels: Vec<Label>,
    pub pixels: Vec<u8>,
    /// The images' fingerprint (`storage`), computed once per set of images.
    pub fingerprint: Option<String>,
}

/// The worker, and messages held back until it says Ready (earlier ones would be lost: its
/// handler is installed only once its wasm has loaded), each with what it transfers.
#[derive(Default)]
struct Link {
    worker: Option<Worker>,
    ready: bool,
    pending: Vec<(JsValue, Option<js_sys::Array>)>,
}

thread_local! {
    /// Set when the worker crashed: resume the autosave once the new worker's device is ready.
    static RECOVERING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// Which worker is the page's: moves on whenever one is let go, so that a let-go worker's
    /// late events are dropped (a panic reports itself twice: its own message, then the error
    /// event of the worker's death).
    static GENERATION: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    static WORKER: RefCell<Link> = RefCell::new(Link::default());
    /// A lesson's session bytes, held until its images and the device are ready.
    static LESSON: RefCell<Option<JsValue>> = const { RefCell::new(None) };
    pub(crate) static STORE: RefCell<Store> = RefCell::new(Store::default());
    /// The augmentation panel's last views (development builds: `window.pclViews()`).
    #[cfg(debug_assertions)]
    static SHOWN_VIEWS: RefCell<Option<crate::protocol::ViewPairs>> = const { RefCell::new(None) };
}

fn post_to(w: &Worker, message: &JsValue, transfer: Option<&js_sys::Array>) {
    let _ = match transfer {
        Some(t) => w.post_message_with_transfer(message, t),
        None => w.post_message(message),
    };
}

fn post(message: JsValue, transfer: Option<js_sys::Array>) {
    WORKER.with_borrow_mut(|link| match (&link.worker, link.ready) {
        (Some(w), true) => post_to(w, &message, transfer.as_ref()),
        _ => link.pending.push((message, transfer)),
    });
}

pub(crate) fn send(msg: ToWorker) {
    post(msg.to_json().into(), None);
}

pub(crate) fn send_with(msg: ToWorker, payload: &JsValue) {
    post(
        js_sys::Array::of2(&msg.to_json().into(), payload).into(),
        None,
    );
}

/// Sends `buffer` (an ArrayBuffer) to the worker without a copy: this side loses it.
pub(crate) fn send_transfer(msg: ToWorker, buffer: &JsValue) {
    let message = js_sys::Array::of2(&msg.to_json().into(), buffer);
    post(message.into(), Some(js_sys::Array::of1(buffer)));
}

/// The worker listens now: send what waited.
fn worker_ready() {
    WORKER.with_borrow_mut(|link| {
        link.ready = true;
        if let Some(w) = &link.worker {
            for (m, transfer) in link.pending.drain(..) {
                post_to(w, &m, transfer.as_ref());
            }
        }
    });
}

pub fn mount() {
    // Test hooks only in development builds (`trunk build`, which the browser tests use); the
    // release build (`--release`, the static site) has none.
    #[cfg(debug_assertions)]
    expose_pixels();
    leptos::mount::mount_to_body(App);
}

#[cfg(debug_assertions)]
/// `window.pclImages()` -> `{side, names, pixels}`: the stored pixels, for the end-to-end test
/// that compares them with the CLI's decoding of the same files.
fn expose_pixels() {
    let f = Closure::<dyn Fn() -> JsValue>::new(|| {
        STORE.with_borrow(|s| {
            let o = js_sys::Object::new();
            let names: js_sys::Array = s.names.iter().map(|n| JsValue::from(n.as_str())).collect();
            let _ = js_sys::Reflect::set(&o, &"side".into(), &(s.side as u32).into());
            let _ = js_sys::Reflect::set(&o, &"names".into(), &names);
            let _ = js_sys::Reflect::set(
                &o,
                &"pixels".into(),
                &js_sys::Uint8Array::from(&s.pixels[..]),
            );
            o.into()
        })
    });
    if let Some(w) = web_sys::window() {
        let _ = js_sys::Reflect::set(&w, &"pclImages".into(), f.as_ref());
    }
    f.forget();
    // `window.pclViews()` -> `{seed, size, names, pixels}`: the augmentation panel's views, for
    // the test that compares them with the CLI's (`pcl views`).
    let views = Closure::<dyn Fn() -> JsValue>::new(|| {
        let Some(v) = SHOWN_VIEWS.with_borrow(Clone::clone) else {
            return JsValue::NULL;
        };
        let o = js_sys::Object::new();
        let names: js_sys::Array = STORE.with_borrow(|s| {
            v.indices
                .iter()
                .map(|&i| JsValue::from(s.names.get(i).map_or("", String::as_str)))
                .collect()
        });
        let _ = js_sys::Reflect::set(&o, &"seed".into(), &(v.seed as f64).into());
        let _ = js_sys::Reflect::set(&o, &"size".into(), &(v.size as u32).into());
        let _ = js_sys::Reflect::set(&o, &"names".into(), &names);
        let _ = js_sys::Reflect::set(
            &o,
            &"pixels".into(),
            &js_sys::Uint8Array::from(&v.pixels[..]),
        );
        o.into()
    });
    if let Some(w) = web_sys::window() {
        let _ = js_sys::Reflect::set(&w, &"pclViews".into(), views.as_ref());
    }
    views.forget();
    // `window.pclSimulateCrash()`: the end-to-end test of crash recovery.
    let crash = Closure::<dyn Fn()>::new(|| send(ToWorker::SimulateCrash));
    if let Some(w) = web_sys::window() {
        let _ = js_sys::Reflect::set(&w, &"pclSimulateCrash".into(), crash.as_ref());
    }
    crash.forget();
    // `window.pclFetchOwn(path, max)`: the lesson reader, with a limit a test can reach.
    let fetch_own =
        Closure::<dyn Fn(String, f64) -> js_sys::Promise>::new(|path: String, max: f64| {
            wasm_bindgen_futures::future_to_promise(async move {
                js::fetch_own(&path, max as u64)
                    .await
                    .map(|b| js_sys::ArrayBuffer::from(b).byte_length().into())
                    .map_err(JsValue::from)
            })
        });
    if let Some(w) = web_sys::window() {
        let _ = js_sys::Reflect::set(&w, &"pclFetchOwn".into(), fetch_own.as_ref());
    }
    fetch_own.forget();
    // `window.pclSimulateDivergence(epoch)`: runs from now on break their weights at the end of
    // that epoch (behind a finite loss).
    let diverge = Closure::<dyn Fn(u32)>::new(|epoch: u32| {
        send(ToWorker::SimulateDivergence {
            epoch: epoch as usize,
        })
    });
    if let Some(w) = web_sys::window() {
        let _ = js_sys::Reflect::set(&w, &"pclSimulateDivergence".into(), diverge.as_ref());
    }
    diverge.forget();
    // `window.pclSimulateAbort()`: a worker that dies without a message (out of memory).
    let abort = Closure::<dyn Fn()>::new(|| send(ToWorker::SimulateAbort));
    if let Some(w) = web_sys::window() {
        let _ = js_sys::Reflect::set(&w, &"pclSimulateAbort".into(), abort.as_ref());
    }
    abort.forget();
}

fn on_worker_message(state: RwSignal<PageState>, version: RwSignal<usize>, e: MessageEvent) {
    let data = e.data();
    let (text, payload) = match data.dyn_ref::<js_sys::Array>() {
        Some(pair) => (pair.get(0).as_string(), Some(pair.get(1))),
        None => (data.as_string(), None),
    };
    let mut msg =
        FromWorker::from_json(&text.unwrap_or_default()).unwrap_or_else(FromWorker::Error);
    let bytes = payload.map(|p| js_sys::Uint8Array::new(&p));
    if let (FromWorker::Views(v), Some(b)) = (&mut msg, &bytes) {
        v.pixels = b.to_vec();
        #[cfg(debug_assertions)]
        SHOWN_VIEWS.set(Some(v.clone()));
    }
    match (&msg, &bytes) {
        (FromWorker::Images(added), Some(b)) => {
            STORE.with_borrow_mut(|s| {
                s.side = added.side;
                s.names.extend(added.names.iter().cloned());
                s.labels.extend(added.labels.iter().cloned());
                s.pixels.extend(b.to_vec());
                s.fingerprint = None;
            });
            version.update(|v| *v += 1);
        }
        (FromWorker::ImagesCleared, _) => {
            STORE.with_borrow_mut(|s| {
                s.pixels.clear();
                s.names.clear();
                s.labels.clear();
                s.fingerprint = None;
            });
            version.update(|v| *v += 1);
        }
        (FromWorker::File { name, .. }, Some(b)) => js::download(b, name),
        (FromWorker::Autosave { epoch }, Some(b)) => {
            storage::store_autosave(state, *epoch, b.clone())
        }
        _ => {}
    }
    if let FromWorker::Backend(info) = &msg
        && let Some(choice) = info
            .choice
            .filter(|c| c.how == crate::backend::ChoiceKind::Measured)
    {
        let cpu = info.kind == crate::backend::BackendKind::Cpu;
        let remember = crate::backend::Remembered { cpu, choice };
        if let Ok(text) = serde_json::to_string(&remember) {
            js::store(DEVICE_KEY, Some(&text));
        }
    }
    let ready = matches!(&msg, FromWorker::Ready { build } if build == crate::protocol::BUILD_ID);
    let device_ready = matches!(msg, FromWorker::ProbeStep { .. });
    let mut reply = None;
    state.update(|s| reply = s.apply(msg));
    if let Some(r) = reply {
        // The start message goes first, before anything the user did while the worker loaded.
        WORKER.with_borrow(|link| {
            if let Some(w) = &link.worker {
                // `?crash-at-start` (development builds): every worker panics before it starts,
                // the end-to-end test of a start-up failure. Sent before Start, so the crash
                // always comes before the probe step.
                #[cfg(debug_assertions)]
                if ready && js::query_flag("crash-at-start") {
                    let _ = w.post_message(&ToWorker::SimulateCrash.to_json().into());
                }
                let _ = w.post_message(&r.to_json().into());
            }
        });
    }
    if ready {
        worker_ready();
    }
    open_lesson_session(state);
    recover(state, version);
    if device_ready
        && RECOVERING.replace(false)
        && let Err(e) = storage::resume_own()
    {
        state.update(|s| s.error = Some(format!("could not resume after the crash: {e}")));
    }
}

/// Opens what the page's address asks for (`?sample=N&session=PATH`, see [`super::lesson`]): the
/// sample set at once, the session once it has arrived and the images are loaded.
fn open_lesson(state: RwSignal<PageState>) {
    let asked = Lesson::from_params(
        js::query_param("sample").as_deref(),
        js::query_param("session").as_deref(),
    );
    let lesson = match asked {
        Ok(Some(lesson)) => lesson,
        Ok(None) => return,
        Err(e) => return state.update(|s| s.error = Some(e)),
    };
    state.update(|s| s.lesson = Some(lesson.words()));
    if let Some(limit) = lesson.sample {
        send(ToWorker::LoadSample { limit });
    }
    let Some(path) = lesson.session else {
        return;
    };
    leptos::task::spawn_local(async move {
        match js::fetch_own(&path, MAX_LESSON_BYTES).await {
            Ok(bytes) => {
                LESSON.set(Some(bytes));
                open_lesson_session(state);
            }
            Err(e) => state.update(|s| {
                s.lesson = None;
                s.error = Some(format!("the lesson did not open: {e}"));
            }),
        }
    });
}

/// Sends the lesson's session once it, a finished load of images and the device are all here.
fn open_lesson_session(state: RwSignal<PageState>) {
    let waiting =
        |s: &PageState| s.probe.is_none() || s.images.loads == 0 || s.images.loading.is_some();
    if state.with_untracked(waiting) {
        return;
    }
    if let Some(bytes) = LESSON.take() {
        send_transfer(ToWorker::Import { autosave: false }, &bytes);
        state.update(|s| s.lesson = None);
    }
}

/// Acts on a crash the state has judged (`PageState::crashed`): the old worker goes (its wasm
/// may be poisoned: a panic aborts), and a new one starts after the back-off, or none.
fn recover(state: RwSignal<PageState>, version: RwSignal<usize>) {
    let Some(recovery) = state.try_update(|s| s.recovery.take()).flatten() else {
        return;
    };
    WORKER.with_borrow_mut(|link| {
        if let Some(w) = link.worker.take() {
            w.terminate();
        }
        *link = Link::default();
    });
    GENERATION.set(GENERATION.get().wrapping_add(1));
    if let Recovery::Restart { delay_ms, .. } = recovery {
        RECOVERING.set(true);
        let restart = Closure::once_into_js(move || start_worker(state, version));
        if let Some(w) = web_sys::window() {
            let _ = w.set_timeout_with_callback_and_timeout_and_arguments_0(
                restart.unchecked_ref(),
                delay_ms as i32,
            );
        }
    }
}

fn start_worker(state: RwSignal<PageState>, version: RwSignal<usize>) {
    match Worker::new(WORKER_URL) {
        Ok(worker) => {
            let generation = GENERATION.get();
            let current = move || GENERATION.get() == generation;
            let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |e: MessageEvent| {
                if current() {
                    on_worker_message(state, version, e)
                }
            });
            worker.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
            // The page lives as long as the worker: both handlers stay for the page's lifetime.
            on_message.forget();
            let on_error = Closure::<dyn FnMut(web_sys::Event)>::new(move |_| {
                // A worker that dies without a word (out of memory aborts, no panic) is a crash
                // too, also one that replaced a crashed worker; a crash that already explained
                // itself let its worker go, so its error event is not `current`.
                if current() {
                    state.update(|s| {
                        s.recovery = Some(s.crashed(
                            "the compute worker stopped without a message (out of memory?)",
                        ))
                    });
                    recover(state, version);
                }
            });
            worker.set_onerror(Some(on_error.as_ref().unchecked_ref()));
            on_error.forget();
            WORKER.with_borrow_mut(|link| link.worker = Some(worker));
        }
        Err(e) => state.update(|s| s.error = Some(format!("cannot start the worker: {e:?}"))),
    }
}

#[component]
fn App() -> impl IntoView {
    let backend = js::query_param("backend");
    // A device this browser measured before is used again without measuring (until the user
    // asks for a new measurement); the address's choice comes first.
    let remembered = js::stored(DEVICE_KEY)
        .and_then(|t| serde_json::from_str::<crate::backend::Remembered>(&t).ok())
        .filter(|_| backend.is_none() && !js::query_flag("cpu"));
    let backend =
        backend.or_else(|| remembered.map(|r| if r.cpu { "cpu" } else { "webgpu" }.to_string()));
    let mut page = PageState::new(js::query_flag("cpu") || backend.as_deref() == Some("cpu"));
    page.force_webgpu = backend.as_deref() == Some("webgpu");
    page.remembered = remembered;
    page.workers = js::query_param("workers").and_then(|w| w.parse().ok());
    let state = RwSignal::new(page);
    let version = RwSignal::new(0usize);
    start_worker(state, version);
    open_lesson(state);
    storage::claim(state);
    // The offer to resume is made when an earlier session left an autosave.
    leptos::task::spawn_local(async move {
        if let Ok(record) = js::idb_get("session").await
            && record.is_object()
        {
            let field = |k: &str| {
                js_sys::Reflect::get(&record, &k.into())
                    .ok()
                    .and_then(|v| v.as_f64())
                    .unwrap_or(0.0) as usize
            };
            let (epoch, images) = (field("epoch"), field("images"));
            state.update(|s| s.autosave_offer = Some((epoch, images)));
        }
    });

    // Projector mode (`?present`, or the header's button): larger type, the essentials only.
    let present = RwSignal::new(js::query_flag("present"));
    Effect::new(move |_| {
        let class = if present.get() { "present" } else { "" };
        if let Some(body) = web_sys::window()
            .and_then(|w| w.document())
            .and_then(|d| d.body())
        {
            body.set_class_name(class);
        }
    });
    view! {
        <header>
            <h1>"pcl-studio"</h1>
            <button class="present-toggle" data-testid="present" aria-pressed=move || present.get().to_string()
                on:click=move |_| present.update(|p| *p = !*p)
                title="Larger type and only the essentials, for a projector">"Projector mode"</button>
            <p class="lede">
                "Prototypical Contrastive Learning in your browser: a small image encoder learns "
                "from your own pictures without labels, clustering them at several granularities "
                "as it goes. Everything runs on this machine; no image leaves it."
            </p>
        </header>
        // Two columns on a laptop or a projector: what the user does on the left, what the run
        // shows on the right; after a run its clusters across the width, right below them; the
        // rest after that (one column on narrow screens).
        <main class="dashboard">
            <div class="controls">
                <AutosaveOffer state />
                <LessonNotice state />
                <ImagesCard state version />
                <TrainCard state />
            </div>
            <div class="shows">
                <LiveCard state version />
            </div>
            <div class="wide">
                <CompareCard state version />
                <ExploreCard state version />
            </div>
            <div class="controls">
                <KeepCard state />
                <BackendCard state />
            </div>
            <div class="shows">
                <ViewsCard state />
                <GuideCard state version />
            </div>
        </main>
    }
}

#[component]
fn AutosaveOffer(state: RwSignal<PageState>) -> impl IntoView {
    let resume = move |_| {
        leptos::task::spawn_local(async move {
            if let Err(e) = storage::resume_stored(state).await {
                state.update(|s| s.error = Some(format!("cannot resume: {e}")));
            }
        })
    };
    let discard = move |_| leptos::task::spawn_local(storage::discard(state));
    let owner = move || state.with(|s| s.owns_autosave);
    let offer = Memo::new(move |_| state.with(|s| s.autosave_offer));
    move || {
        offer.get().map(|(epoch, images)| {
            view! {
                <section class="card notice" data-testid="autosave-offer">
                    <p>
                        {format!(
                            "An earlier run was saved in this browser at epoch {epoch} on {images} \
                             images."
                        )}
                        {move || (!owner()).then_some(
                            " Another tab of pcl-studio owns it: only that tab can discard it."
                        )}
                    </p>
                    <button data-testid="resume-autosave" on:click=resume>"Resume it"</button>
                    " "
                    <button data-testid="discard-autosave" on:click=discard disabled=move || !owner()
                        title="Only the tab that owns the autosave can discard it">"Discard"</button>
                </section>
            }
        })
    }
}

#[component]
fn LessonNotice(state: RwSignal<PageState>) -> impl IntoView {
    let words = Memo::new(move |_| state.with(|s| s.lesson.clone()));
    move || {
        words.get().map(|w| {
            view! { <section class="card notice" data-testid="lesson" role="status"><p>{w}</p></section> }
        })
    }
}

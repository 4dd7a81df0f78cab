//! The Leptos view: spawns the worker, forwards its messages to [`PageState`], renders it.
//! Image pixels (thumbnails: the very pixels the worker trains on) live in a plain store here,
//! outside the reactive state; a version signal says when they changed.

use std::cell::RefCell;

use leptos::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use web_sys::{MessageEvent, Worker};

use super::cards::{BackendCard, ExploreCard, GuideCard, ImagesCard, KeepCard, TrainCard};
use super::js;
use super::lesson::{Lesson, MAX_LESSON_BYTES};
use super::state::{PageState, Recovery};
use crate::intake::Label;
use crate::protocol::{FromWorker, ToWorker};

/// trunk emits the worker's loader under this fixed name (Trunk.toml: filehash = false).
const WORKER_URL: &str = "./worker_loader.js";

#[derive(Default)]
pub(crate) struct Store {
    pub side: usize,
    pub names: Vec<String>,
    pub labels: Vec<Label>,
    pub pixels: Vec<u8>,
}

/// The worker, and messages held back until it says Ready (earlier ones would be lost: its
/// handler is installed only once its wasm has loaded).
#[derive(Default)]
struct Link {
    worker: Option<Worker>,
    ready: bool,
    pending: Vec<JsValue>,
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
}

fn post(message: JsValue) {
    WORKER.with_borrow_mut(|link| match (&link.worker, link.ready) {
        (Some(w), true) => {
            let _ = w.post_message(&message);
        }
        _ => link.pending.push(message),
    });
}

pub(crate) fn send(msg: ToWorker) {
    post(msg.to_json().into());
}

pub(crate) fn send_with(msg: ToWorker, payload: &JsValue) {
    post(js_sys::Array::of2(&msg.to_json().into(), payload).into());
}

/// The worker listens now: send what waited.
fn worker_ready() {
    WORKER.with_borrow_mut(|link| {
        link.ready = true;
        if let Some(w) = &link.worker {
            for m in link.pending.drain(..) {
                let _ = w.post_message(&m);
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
    // `window.pclSimulateCrash()`: the end-to-end test of crash recovery.
    let crash = Closure::<dyn Fn()>::new(|| send(ToWorker::SimulateCrash));
    if let Some(w) = web_sys::window() {
        let _ = js_sys::Reflect::set(&w, &"pclSimulateCrash".into(), crash.as_ref());
    }
    crash.forget();
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
    let msg = FromWorker::from_json(&text.unwrap_or_default()).unwrap_or_else(FromWorker::Error);
    let bytes = payload.map(|p| js_sys::Uint8Array::new(&p));
    match (&msg, &bytes) {
        (FromWorker::Images(added), Some(b)) => {
            STORE.with_borrow_mut(|s| {
                s.side = added.side;
                s.names.extend(added.names.iter().cloned());
                s.labels.extend(added.labels.iter().cloned());
                s.pixels.extend(b.to_vec());
            });
            version.update(|v| *v += 1);
            if added.last {
                save_images_soon();
            }
        }
        (FromWorker::ImagesCleared, _) => {
            STORE.with_borrow_mut(|s| {
                s.pixels.clear();
                s.names.clear();
                s.labels.clear();
            });
            version.update(|v| *v += 1);
        }
        (FromWorker::File { name, .. }, Some(b)) => js::download(b, name),
        (FromWorker::Autosave { .. }, Some(_))
            if state.with_untracked(|s| s.autosave_off.is_some()) => {}
        (FromWorker::Autosave { epoch }, Some(b)) => store_autosave(state, *epoch, b.clone()),
        _ => {}
    }
    let ready = msg == FromWorker::Ready;
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
    if device_ready && RECOVERING.replace(false) {
        leptos::task::spawn_local(async move {
            if let Err(e) = resume_autosave(state).await {
                state.update(|s| s.error = Some(format!("could not resume after the crash: {e}")));
            }
        });
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
        send_with(ToWorker::Import { autosave: false }, &bytes);
        state.update(|s| s.lesson = None);
    }
}

/// Keeps the worker's autosave bytes in the browser's storage, with the epoch and the image
/// count they belong to (one record, one transaction: the bytes and what they are never
/// disagree). A refusal turns autosave off for this tab; training goes on.
fn store_autosave(state: RwSignal<PageState>, epoch: usize, b: js_sys::Uint8Array) {
    let images = state.with_untracked(|s| s.images.count);
    let bytes = b.length() as usize;
    leptos::task::spawn_local(async move {
        // One record, one transaction: the bytes and what they are never disagree.
        let record = js_sys::Object::new();
        let _ = js_sys::Reflect::set(&record, &"epoch".into(), &(epoch as u32).into());
        let _ = js_sys::Reflect::set(&record, &"images".into(), &(images as u32).into());
        let _ = js_sys::Reflect::set(&record, &"bytes".into(), &b);
        match js::idb_put("session", &record).await {
            Ok(()) => state.update(|s| {
                s.autosaved = Some(epoch);
                s.autosaved_bytes = Some(bytes);
            }),
            // Training goes on; later autosaves are dropped instead of piling up.
            Err(e) => state.update(|s| {
                s.autosave_off = Some(format!("the browser refused to store it ({e})"));
                s.error = Some(format!(
                    "autosave is off: the browser refused to store it ({e}). Training \
                     goes on; export the session to keep it."
                ));
            }),
        }
    });
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

/// Keeps the loaded images (pixels, names, labels: one record) in the browser's storage, so a
/// reload can resume an autosave.
fn save_images_soon() {
    leptos::task::spawn_local(async move {
        let record = js_sys::Object::new();
        STORE.with_borrow(|s| {
            let strings = |v: &[String]| -> js_sys::Array {
                v.iter().map(|n| JsValue::from(n.as_str())).collect()
            };
            let _ = js_sys::Reflect::set(&record, &"side".into(), &(s.side as u32).into());
            let _ = js_sys::Reflect::set(&record, &"names".into(), &strings(&s.names));
            let folders: Vec<String> = s.labels.iter().map(Label::folder).collect();
            let _ = js_sys::Reflect::set(&record, &"labels".into(), &strings(&folders));
            let _ = js_sys::Reflect::set(
                &record,
                &"pixels".into(),
                &js_sys::Uint8Array::from(&s.pixels[..]),
            );
        });
        if let Err(e) = js::idb_put("images", &record).await {
            web_sys::console::warn_1(&format!("images not stored: {e}").into());
        }
    });
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

/// Sends picked files (a folder pick strips the folder's own name from the paths).
/// Resumes the autosaved run: the stored images go back to the worker, then the session.
async fn resume_autosave(state: RwSignal<PageState>) -> Result<(), String> {
    let images = js::idb_get("images").await?;
    let record = js::idb_get("session").await?;
    if images.is_undefined() || record.is_undefined() {
        return Err("no autosave in this browser".into());
    }
    let field =
        |o: &JsValue, k: &str| js_sys::Reflect::get(o, &k.into()).map_err(|e| format!("{e:?}"));
    let strings = |v: JsValue| -> Vec<String> {
        js_sys::Array::from(&v)
            .iter()
            .filter_map(|s| s.as_string())
            .collect()
    };
    let session = field(&record, "bytes")?;
    let (names, labels) = (
        strings(field(&images, "names")?),
        strings(field(&images, "labels")?)
            .iter()
            .map(|f| Label::from_folder(f))
            .collect(),
    );
    let pixels = field(&images, "pixels")?;
    send(ToWorker::ClearImages);
    send_with(ToWorker::RestoreImages { names, labels }, &pixels);
    send_with(ToWorker::Import { autosave: true }, &session);
    state.update(|s| s.autosave_offer = None);
    Ok(())
}

#[component]
fn App() -> impl IntoView {
    let mut page = PageState::new(js::query_flag("cpu"));
    page.workers = js::query_param("workers").and_then(|w| w.parse().ok());
    let state = RwSignal::new(page);
    let version = RwSignal::new(0usize);
    start_worker(state, version);
    open_lesson(state);
    leptos::task::spawn_local(async move {
        if !js::claim_autosave().await {
            state.update(|s| {
                s.autosave_off = Some("another tab of pcl-studio owns the autosave".into())
            });
        }
    });
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

    view! {
        <header>
            <h1>"pcl-studio"</h1>
            <p class="lede">
                "Prototypical Contrastive Learning in your browser: a small image encoder learns "
                "from your own pictures without labels, clustering them at several granularities "
                "as it goes. Everything runs on this machine; no image leaves it."
            </p>
        </header>
        <main>
            <AutosaveOffer state />
            <LessonNotice state />
            <BackendCard state />
            <ImagesCard state version />
            <TrainCard state />
            <GuideCard state version />
            <ExploreCard state version />
            <KeepCard state />
        </main>
    }
}

#[component]
fn AutosaveOffer(state: RwSignal<PageState>) -> impl IntoView {
    let resume = move |_| {
        leptos::task::spawn_local(async move {
            if let Err(e) = resume_autosave(state).await {
                state.update(|s| s.error = Some(format!("cannot resume: {e}")));
            }
        })
    };
    let discard = move |_| {
        state.update(|s| s.autosave_offer = None);
        leptos::task::spawn_local(async move {
            let _ = js::idb_delete("session").await;
        });
    };
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
                    </p>
                    <button data-testid="resume-autosave" on:click=resume>"Resume it"</button>
                    " "
                    <button on:click=discard>"Discard"</button>
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

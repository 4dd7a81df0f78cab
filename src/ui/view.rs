//! The Leptos view: spawns the worker, forwards its messages to [`PageState`], renders it.
//! Image pixels (thumbnails: the very pixels the worker trains on) live in a plain store here,
//! outside the reactive state; a version signal says when they changed.

use std::cell::RefCell;

use leptos::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use web_sys::{HtmlCanvasElement, HtmlInputElement, MessageEvent, Worker};

use super::js;
use super::state::{
    AmiLine, PageState, Preset, SETTINGS, ami_lines, finite_range, format_duration, level_heading,
    polyline, setting_text, with_setting,
};
use crate::intake::{MAX_FILE_BYTES, MAX_IMAGES, MAX_PIXELS};
use crate::protocol::{ExportKind, FromWorker, RunState, ToWorker};

/// trunk emits the worker's loader under this fixed name (Trunk.toml: filehash = false).
const WORKER_URL: &str = "./worker_loader.js";
const PALETTE: [&str; 12] = [
    "#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45",
    "#469990", "#9a6324", "#800000", "#000075",
];

#[derive(Default)]
struct Store {
    side: usize,
    names: Vec<String>,
    labels: Vec<String>,
    pixels: Vec<u8>,
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
    static WORKER: RefCell<Link> = RefCell::new(Link::default());
    static STORE: RefCell<Store> = RefCell::new(Store::default());
}

fn post(message: JsValue) {
    WORKER.with_borrow_mut(|link| match (&link.worker, link.ready) {
        (Some(w), true) => {
            let _ = w.post_message(&message);
        }
        _ => link.pending.push(message),
    });
}

fn send(msg: ToWorker) {
    post(msg.to_json().into());
}

fn send_with(msg: ToWorker, payload: &JsValue) {
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
    expose_pixels();
    leptos::mount::mount_to_body(App);
}

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
}

fn query_has(flag: &str) -> bool {
    web_sys::window()
        .and_then(|w| w.location().search().ok())
        .is_some_and(|q| q.trim_start_matches('?').split('&').any(|p| p == flag))
}

fn context_2d(canvas: &HtmlCanvasElement) -> Option<web_sys::CanvasRenderingContext2d> {
    canvas
        .get_context("2d")
        .ok()
        .flatten()
        .and_then(|c| c.dyn_into().ok())
}

/// Draws images `indices` of the store as a grid of `cols` columns on `canvas`.
fn draw_tiles(canvas: &HtmlCanvasElement, indices: &[usize], cols: usize) {
    STORE.with_borrow(|store| {
        let s = store.side;
        let count = store.pixels.len() / (s * s * 3).max(1);
        if s == 0 || indices.is_empty() {
            canvas.set_width(0);
            return;
        }
        let cols = cols.min(indices.len()).max(1);
        let rows = indices.len().div_ceil(cols);
        let (w, h) = (cols * s, rows * s);
        let mut rgba = vec![255u8; w * h * 4];
        for (t, &i) in indices.iter().enumerate().filter(|(_, i)| **i < count) {
            let (ox, oy) = ((t % cols) * s, (t / cols) * s);
            for y in 0..s {
                for x in 0..s {
                    let src = ((i * s + y) * s + x) * 3;
                    let dst = ((oy + y) * w + ox + x) * 4;
                    rgba[dst..dst + 3].copy_from_slice(&store.pixels[src..src + 3]);
                }
            }
        }
        canvas.set_width(w as u32);
        canvas.set_height(h as u32);
        // One CSS pixel per stored pixel, whatever the number of tiles.
        let _ = canvas.set_attribute("style", &format!("width: {w}px"));
        if let (Some(ctx), Ok(img)) = (
            context_2d(canvas),
            web_sys::ImageData::new_with_u8_clamped_array_and_sh(
                wasm_bindgen::Clamped(&rgba),
                w as u32,
                h as u32,
            ),
        ) {
            let _ = ctx.put_image_data(&img, 0.0, 0.0);
        }
    });
}

/// A canvas showing `indices` as thumbnails; `pick` gets the image index of a clicked tile.
#[component]
fn Tiles(
    indices: Vec<usize>,
    cols: usize,
    version: RwSignal<usize>,
    #[prop(optional)] testid: &'static str,
    #[prop(optional)] pick: Option<Callback<usize>>,
) -> impl IntoView {
    let node = NodeRef::<leptos::html::Canvas>::new();
    let shown = indices.clone();
    Effect::new(move |_| {
        version.track();
        if let Some(c) = node.get() {
            draw_tiles(&c, &shown, cols);
        }
    });
    let on_click = move |ev: web_sys::MouseEvent| {
        let (Some(pick), Some(c)) = (pick, node.get_untracked()) else {
            return;
        };
        let cols = cols.min(indices.len()).max(1);
        let rows = indices.len().div_ceil(cols);
        let rect = c.get_bounding_client_rect();
        let col = ((ev.client_x() as f64 - rect.left()) / rect.width() * cols as f64) as usize;
        let row = ((ev.client_y() as f64 - rect.top()) / rect.height() * rows as f64) as usize;
        if let Some(&i) = indices.get(row * cols + col.min(cols - 1)) {
            pick.run(i);
        }
    };
    view! { <canvas class="tiles" node_ref=node data-testid=testid on:click=on_click></canvas> }
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
        (FromWorker::Autosave { epoch }, Some(b)) => {
            let (epoch, b) = (*epoch, b.clone());
            let images = state.with_untracked(|s| s.images.count);
            leptos::task::spawn_local(async move {
                // One record, one transaction: the bytes and what they are never disagree.
                let record = js_sys::Object::new();
                let _ = js_sys::Reflect::set(&record, &"epoch".into(), &(epoch as u32).into());
                let _ = js_sys::Reflect::set(&record, &"images".into(), &(images as u32).into());
                let _ = js_sys::Reflect::set(&record, &"bytes".into(), &b);
                match js::idb_put("session", &record).await {
                    Ok(()) => state.update(|s| s.autosaved = Some(epoch)),
                    Err(e) => state
                        .update(|s| s.error = Some(format!("autosave could not be stored: {e}"))),
                }
            });
        }
        _ => {}
    }
    let ready = msg == FromWorker::Ready;
    let crashed = matches!(msg, FromWorker::Crashed(_));
    let device_ready = matches!(msg, FromWorker::ProbeStep { .. });
    let mut reply = None;
    state.update(|s| reply = s.apply(msg));
    if let Some(r) = reply {
        // The start message goes first, before anything the user did while the worker loaded.
        WORKER.with_borrow(|link| {
            if let Some(w) = &link.worker {
                let _ = w.post_message(&r.to_json().into());
            }
        });
    }
    if ready {
        worker_ready();
    }
    if crashed {
        // The old worker's wasm may be poisoned (a panic aborts): replace it.
        WORKER.with_borrow_mut(|link| {
            if let Some(w) = link.worker.take() {
                w.terminate();
            }
            *link = Link::default();
        });
        RECOVERING.set(true);
        start_worker(state, version);
    }
    if device_ready && RECOVERING.replace(false) {
        leptos::task::spawn_local(async move {
            if let Err(e) = resume_autosave(state).await {
                state.update(|s| s.error = Some(format!("could not resume after the crash: {e}")));
            }
        });
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
            let _ = js_sys::Reflect::set(&record, &"labels".into(), &strings(&s.labels));
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
            let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |e: MessageEvent| {
                on_worker_message(state, version, e)
            });
            worker.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
            // The page lives as long as the worker: both handlers stay for the page's lifetime.
            on_message.forget();
            let on_error = Closure::<dyn FnMut(web_sys::Event)>::new(move |_| {
                // A crash already explained itself (and a new worker is on its way).
                if !RECOVERING.get() {
                    state.update(|s| {
                        s.error
                            .get_or_insert("the compute worker stopped with an error".into());
                    });
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
fn send_files(files: web_sys::FileList, folder: bool) -> Result<(), String> {
    let array = js_sys::Array::new();
    let mut paths = Vec::new();
    for i in 0..files.length() {
        let Some(f) = files.get(i) else { continue };
        let rel = js_sys::Reflect::get(&f, &"webkitRelativePath".into())
            .ok()
            .and_then(|v| v.as_string())
            .filter(|p| !p.is_empty());
        let path = match (folder, rel) {
            (true, Some(p)) => p.split_once('/').map_or(p.clone(), |(_, r)| r.to_string()),
            _ => f.name(),
        };
        paths.push(path);
        array.push(&f);
    }
    if paths.is_empty() {
        return Err("that folder has no files in it".to_string());
    }
    send_with(ToWorker::AddFiles { paths }, &array);
    Ok(())
}

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
        strings(field(&images, "labels")?),
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
    let state = RwSignal::new(PageState::new(query_has("cpu")));
    let version = RwSignal::new(0usize);
    start_worker(state, version);
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
        <AutosaveOffer state />
        <BackendCard state />
        <ImagesCard state version />
        <TrainCard state />
        <ExploreCard state version />
        <KeepCard state />
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
fn BackendCard(state: RwSignal<PageState>) -> impl IntoView {
    // Sections re-render only when their slice of the state changes, not on every message.
    let backend = Memo::new(move |_| state.with(|s| s.backend.clone()));
    let backend_name = move || {
        backend.with(|b| {
            b.as_ref()
                .map_or("detecting…".to_string(), |b| b.adapter.clone())
        })
    };
    let limits = move || {
        backend.with(|b| {
            b.as_ref().map(|b| {
                b.limits
                    .iter()
                    .map(|(k, v)| view! { <li><code>{k.clone()}</code>": "{*v}</li> })
                    .collect_view()
            })
        })
    };
    let notice = move || {
        backend.with(|b| {
            b.as_ref().and_then(|b| b.notice.clone().map(|n| (n, b.detail.clone()))).map(
                |(n, detail)| {
                    view! {
                        <div class="notice" data-testid="backend-notice">
                            <p>{n}</p>
                            {detail.map(|d| view! { <details><summary>"Details"</summary><code>{d}</code></details> })}
                        </div>
                    }
                },
            )
        })
    };
    let probe_loss =
        move || state.with(|s| s.probe.map(|(l, _)| l.to_string()).unwrap_or_default());
    view! {
        <section class="card">
            <h2>"Compute backend"</h2>
            <p>
                <span data-testid="backend" data-backend=move || state.with(|s| s.backend_attr()) class="badge">
                    {backend_name}
                </span>
                " "
                <span class="api">{move || state.with(|s| s.backend.as_ref().map(|b| b.api.clone()).unwrap_or_default())}</span>
            </p>
            {notice}
            <details><summary>"Device limits"</summary><ul class="limits">{limits}</ul></details>
            <p data-testid="probe" data-loss=probe_loss>{move || state.with(|s| s.status_line())}</p>
        </section>
    }
}

#[component]
fn ImagesCard(state: RwSignal<PageState>, version: RwSignal<usize>) -> impl IntoView {
    let folder = NodeRef::<leptos::html::Input>::new();
    Effect::new(move |_| {
        if let Some(input) = folder.get() {
            let _ = input.set_attribute("webkitdirectory", "");
        }
    });
    // Files from the file picker, or (`folder`) the folder picker.
    let picked = move |folder: bool| {
        move |ev: web_sys::Event| {
            let input: HtmlInputElement = event_target(&ev);
            if let Some(files) = input.files()
                && let Err(e) = send_files(files, folder)
            {
                state.update(|s| s.error = Some(e));
            }
            input.set_value("");
        }
    };
    let on_drop = move |ev: web_sys::DragEvent| {
        ev.prevent_default();
        if let Some(dt) = ev.data_transfer() {
            leptos::task::spawn_local(async move {
                match js::dropped_files(&dt).await {
                    Ok(files) => {
                        let array = js_sys::Array::new();
                        let paths = files
                            .into_iter()
                            .map(|(p, f)| {
                                array.push(&f);
                                p
                            })
                            .collect();
                        send_with(ToWorker::AddFiles { paths }, &array);
                    }
                    Err(e) => state.update(|s| s.error = Some(format!("reading the drop: {e}"))),
                }
            });
        }
    };
    let sample_size = RwSignal::new(String::from("all"));
    let load_sample = move |_| {
        let limit = sample_size.get_untracked().parse().ok();
        send(ToWorker::LoadSample { limit });
    };
    let count_text = move || {
        state.with(|s| {
            let im = &s.images;
            match im.loading {
                Some((done, total, eta)) => format!(
                    "Loading {done} of {total} files{}…",
                    eta.map(|e| format!(", about {} left", format_duration(e)))
                        .unwrap_or_default()
                ),
                None if im.count == 0 => "No images yet.".into(),
                None => format!(
                    "{} images loaded ({:.1} MB of pixels{}).",
                    im.count,
                    im.memory_bytes as f64 / 1e6,
                    im.rate
                        .map(|r| format!(", {r:.0} files/s"))
                        .unwrap_or_default()
                ),
            }
        })
    };
    let loading = Memo::new(move |_| state.with(|s| s.images.loading.map(|(d, t, _)| (d, t))));
    let progress = move || {
        loading.with(|l| {
            l.map(|(done, total)| {
                view! { <progress max=total.to_string() value=done.to_string()></progress> }
            })
        })
    };
    let skipped_list = Memo::new(move |_| state.with(|s| s.images.skipped.clone()));
    let skipped = move || {
        skipped_list.with(|list| {
            (!list.is_empty()).then(|| {
                view! {
                    <details open class="skipped">
                        <summary>{format!("Skipped {} files:", list.len())}</summary>
                        <ul data-testid="skipped">
                            {list.iter().map(|f| view! {
                                <li data-testid="skipped-file" data-file=f.file.clone()>
                                    <code>{f.file.clone()}</code>": "{f.reason.clone()}
                                </li>
                            }).collect_view()}
                        </ul>
                    </details>
                }
            })
        })
    };
    let thumbs = move || {
        version.track();
        let n = state.with_untracked(|s| s.images.count);
        let shown: Vec<usize> = (n.saturating_sub(240)..n).collect();
        view! { <Tiles indices=shown cols=24 version testid="thumbnails" /> }
    };
    view! {
        <section class="card" on:dragover=|ev: web_sys::DragEvent| ev.prevent_default() on:drop=on_drop>
            <h2>"1. Images"</h2>
            <div class="dropzone">
                <p>"Drop image files or folders here, or pick them:"</p>
                <label>"Files " <input type="file" multiple accept="image/*" data-testid="image-input" on:change=picked(false) /></label>
                " "
                <label>"A folder " <input type="file" node_ref=folder data-testid="folder-input" on:change=picked(true) /></label>
                <p class="hint">
                    "Subfolder names become labels, used only to measure how good the "
                    "representation is, never to train (a second level, coarse/fine, is kept too)."
                </p>
            </div>
            <p>
                "Or the built-in sample set: 1,870 emoji in 9 groups and 99 subgroups "
                "(Noto Color Emoji, SIL Open Font License) "
                <select on:change=move |ev| sample_size.set(event_target_value(&ev)) name="sample-size">
                    <option value="all">"all"</option>
                    <option value="500">"500"</option>
                    <option value="200">"200"</option>
                    <option value="64">"64"</option>
                </select>
                " "
                <button data-testid="load-sample" on:click=load_sample>"Load sample set"</button>
                " "
                <button on:click=move |_| send(ToWorker::ClearImages)>"Remove all images"</button>
            </p>
            <Webcam />
            <p
                data-testid="image-count"
                data-count=move || state.with(|s| s.images.count.to_string())
                data-state=move || state.with(|s| if s.images.loading.is_some() { "loading" } else { "ready" })
            >
                {count_text}
            </p>
            {progress}
            {skipped}
            {thumbs}
            <p class="hint">
                {format!(
                    "Limits: {MAX_IMAGES} images; {} MB and {} megapixels per file (larger files \
                     are refused before decoding). PNG, JPEG, GIF (first frame), WebP, BMP.",
                    MAX_FILE_BYTES / 1048576,
                    MAX_PIXELS / 1_000_000
                )}
            </p>
        </section>
    }
}

/// Webcam snapshots, added as images of a named group (the group is their label).
#[component]
fn Webcam() -> impl IntoView {
    let video = NodeRef::<leptos::html::Video>::new();
    let on = RwSignal::new(false);
    let group = RwSignal::new(String::from("webcam"));
    let shots = RwSignal::new(0usize);
    let start = move |_| {
        leptos::task::spawn_local(async move {
            let Some(media) = web_sys::window().and_then(|w| w.navigator().media_devices().ok())
            else {
                return;
            };
            let constraints = web_sys::MediaStreamConstraints::new();
            constraints.set_video(&true.into());
            if let Ok(p) = media.get_user_media_with_constraints(&constraints)
                && let Ok(stream) = wasm_bindgen_futures::JsFuture::from(p).await
                && let Some(v) = video.get_untracked()
            {
                v.set_src_object(Some(stream.unchecked_ref()));
                let _ = v.play();
                on.set(true);
            }
        });
    };
    let snap = move |_| {
        let Some(v) = video.get_untracked() else {
            return;
        };
        let (w, h) = (v.video_width(), v.video_height());
        let document = web_sys::window().and_then(|w| w.document());
        let Some(canvas) = document
            .and_then(|d| d.create_element("canvas").ok())
            .and_then(|c| c.dyn_into::<HtmlCanvasElement>().ok())
        else {
            return;
        };
        if w == 0 || h == 0 {
            return;
        }
        canvas.set_width(w);
        canvas.set_height(h);
        let Some(ctx) = context_2d(&canvas) else {
            return;
        };
        let _ = ctx.draw_image_with_html_video_element(&v, 0.0, 0.0);
        let Ok(img) = ctx.get_image_data(0.0, 0.0, w as f64, h as f64) else {
            return;
        };
        let side = 36;
        let rgb =
            crate::engine::data::resize_rgba_square(&img.data().0, w as usize, h as usize, side);
        let g = group.get_untracked();
        shots.update(|n| *n += 1);
        let name = format!("{g}/snapshot-{}.png", shots.get_untracked());
        send_with(
            ToWorker::RestoreImages {
                names: vec![name],
                labels: vec![g],
            },
            &js_sys::Uint8Array::from(&rgb[..]),
        );
    };
    view! {
        <details class="webcam">
            <summary>"Webcam snapshots"</summary>
            <p>
                <button on:click=start>"Start camera"</button>
                " group: "
                <input type="text" prop:value=move || group.get() on:input=move |ev| group.set(event_target_value(&ev)) />
                " "
                <button on:click=snap disabled=move || !on.get()>"Snap"</button>
                {move || format!(" {} taken", shots.get())}
            </p>
            <video node_ref=video width="160" height="120" muted=true playsinline=true></video>
        </details>
    }
}

fn setting_input(state: RwSignal<PageState>, key: &'static str) -> impl IntoView {
    let value = move || state.with(|s| setting_text(&s.settings, key));
    let on_change = move |ev: web_sys::Event| {
        let text = event_target_value(&ev);
        state.update(|s| match with_setting(&s.settings, key, &text) {
            Ok(c) => {
                s.settings = c;
                s.settings_error = None;
            }
            Err(e) => s.settings_error = Some(e),
        });
    };
    view! { <input name=key prop:value=value on:change=on_change size="10" /> }
}

#[component]
fn TrainCard(state: RwSignal<PageState>) -> impl IntoView {
    let running =
        move || state.with(|s| matches!(s.run.state, RunState::Training | RunState::Paused));
    let train = move |_| {
        let config = state.with_untracked(|s| s.settings.clone());
        send(ToWorker::Train { config });
    };
    let baseline = move |_| {
        let mut config = state.with_untracked(|s| s.settings.clone());
        config.proto_weight = 0.0;
        send(ToWorker::Train { config });
    };
    let pause = move |_| {
        let paused = state.with_untracked(|s| s.run.state == RunState::Paused);
        send(if paused {
            ToWorker::Resume
        } else {
            ToWorker::Pause
        });
    };
    let presets = Preset::ALL
        .iter()
        .map(|&p| {
            view! {
                <button class="preset" on:click=move |_| state.update(|s| s.settings = p.config())>{p.name()}</button>
            }
        })
        .collect_view();
    let settings = SETTINGS
        .iter()
        .map(|d| {
            view! {
                <tr>
                    <td><label>{d.key}</label></td>
                    <td class="symbol">{d.symbol}</td>
                    <td>{setting_input(state, d.key)}</td>
                    <td class="hint">{d.help}</td>
                </tr>
            }
        })
        .collect_view();
    let steps_len = Memo::new(move |_| state.with(|s| s.steps.len()));
    let steps_chart = move || {
        let _ = steps_len.get(); // a read: a memo that is only tracked never computes
        state.with_untracked(|s| {
            let pick = |f: &dyn Fn(&crate::engine::StepRecord) -> f64| -> Vec<f64> {
                s.steps.iter().map(f).collect()
            };
            let loss = pick(&|r| r.loss as f64);
            let nce = pick(&|r| r.info_nce as f64);
            let proto = pick(&|r| r.proto.iter().map(|&p| p as f64).sum());
            let acc = pick(&|r| r.instance_acc as f64);
            let lr = pick(&|r| r.lr);
            let (lo, hi) = finite_range(loss.iter().chain(&nce).chain(&proto));
            let (_, lr_hi) = finite_range(&lr);
            let last = s.steps.last();
            view! {
                <svg class="chart" data-testid="loss-chart" data-points=loss.len().to_string() viewBox="0 0 400 150">
                    <polyline points=polyline(&loss, 400.0, 150.0, lo.min(0.0), hi) stroke="#222" />
                    <polyline points=polyline(&nce, 400.0, 150.0, lo.min(0.0), hi) stroke="#4363d8" />
                    <polyline points=polyline(&proto, 400.0, 150.0, lo.min(0.0), hi) stroke="#e6194b" />
                </svg>
                <svg class="chart small" viewBox="0 0 400 60">
                    <polyline points=polyline(&acc, 400.0, 60.0, 0.0, 1.0) stroke="#3cb44b" />
                    <polyline points=polyline(&lr, 400.0, 60.0, 0.0, lr_hi) stroke="#f58231" />
                </svg>
                <p class="legend">
                    <span style="color:#222">"■ loss"</span>" "
                    <span style="color:#4363d8">"■ InfoNCE"</span>" "
                    <span style="color:#e6194b">"■ ProtoNCE (sum of levels)"</span>" "
                    <span style="color:#3cb44b">"■ instance accuracy"</span>" "
                    <span style="color:#f58231">"■ learning rate"</span>
                    {last.map(|r| format!(
                        " — last: loss {:.3}, InfoNCE {:.3}, proto {:?}, accuracy {:.2}, lr {:.4}",
                        r.loss, r.info_nce, r.proto.iter().map(|p| format!("{p:.3}")).collect::<Vec<_>>(), r.instance_acc, r.lr
                    ))}
                </p>
            }
        })
    };
    let esteps_len = Memo::new(move |_| state.with(|s| s.esteps.len()));
    let esteps = move || {
        let _ = esteps_len.get();
        state.with_untracked(|s| {
            s.esteps.last().map(|(epoch, levels)| {
                view! {
                    <table class="esteps">
                        <caption>{format!("E-step before epoch {}", epoch + 1)}</caption>
                        <tr><th>"level"</th><th>"K"</th><th>"sizes"</th><th>"φ range"</th><th>"inertia"</th></tr>
                        {levels.iter().enumerate().map(|(m, l)| view! {
                            <tr>
                                <td>{m + 1}</td><td>{l.k}</td>
                                <td>{format!("{}–{}", l.min_size, l.max_size)}</td>
                                <td>{format!("{:.3}–{:.3}", l.phi_min, l.phi_max)}</td>
                                <td>{format!("{:.1}", l.inertia)}</td>
                            </tr>
                        }).collect_view()}
                    </table>
                }
            })
        })
    };
    view! {
        <section class="card">
            <h2>"2. Train"</h2>
            <p class="formula">
                "ProtoNCE for an image's embedding v, its key v′ and r negatives in the queue: "
                <code>"−log exp(v·v′/τ) / Σⱼ exp(v·v′ⱼ/τ) − (1/M) Σₘ log exp(v·cₛᵐ/φₛᵐ) / Σⱼ exp(v·cⱼᵐ/φⱼᵐ)"</code>
                ". M levels of k-means with K clusters each give the prototypes c and their "
                "concentrations φ = Σ‖v′ − c‖ / (Z log(Z + α)), α = 10, scaled to mean τ."
            </p>
            <p>"Presets: " {presets}</p>
            <table class="settings">{settings}</table>
            <p class="error">{move || state.with(|s| s.settings_error.clone())}</p>
            <p>
                <button data-testid="train" on:click=train disabled=running>"Train"</button>
                " "
                <button data-testid="pause" on:click=pause disabled=move || !running()>
                    {move || if state.with(|s| s.run.state == RunState::Paused) { "Resume" } else { "Pause" }}
                </button>
                " "
                <button data-testid="stop" on:click=move |_| send(ToWorker::Stop) disabled=move || !running()>"Stop"</button>
                " "
                <button data-testid="baseline" on:click=baseline disabled=running>"Run the InfoNCE-only baseline"</button>
            </p>
            <p
                data-testid="status"
                data-state=move || state.with(|s| s.state_attr())
                data-epoch=move || state.with(|s| s.run.epoch.to_string())
                data-images-per-s=move || state.with(|s| format!("{:.1}", s.run.images_per_s))
            >
                {move || state.with(|s| s.progress_line())}
            </p>
            <progress
                class:hidden=move || !running()
                max=move || state.with(|s| (s.run.epochs * s.run.steps_per_epoch).max(1).to_string())
                value=move || state.with(|s| (s.run.epoch * s.run.steps_per_epoch + s.run.step).to_string())
            ></progress>
            <p class="error" data-testid="error">{move || state.with(|s| s.error.clone())}</p>
            {steps_chart}
            {esteps}
        </section>
    }
}

#[component]
fn ExploreCard(state: RwSignal<PageState>, version: RwSignal<usize>) -> impl IntoView {
    let explore = Memo::new(move |_| state.with(|s| s.explore.clone()));
    let level = RwSignal::new(0usize);
    let open = RwSignal::new(None::<(usize, usize)>);
    let gallery = move || {
        explore.with(|ex| {
            let ex = ex.as_ref()?;
            Some(view! {
                <div data-testid="cluster-gallery">
                    {ex.levels.iter().enumerate().map(|(m, l)| view! {
                        <h3>{level_heading(m, l.k, l.inertia, ex.metrics.as_ref())}</h3>
                        {level_histograms(l)}
                        <div class="clusters">
                            {l.clusters.iter().take(24).enumerate().map(|(c, card)| {
                                let top: Vec<usize> = card.members.iter().take(6).map(|&i| i as usize).collect();
                                view! {
                                    <div class="cluster" data-testid="cluster" data-level=m.to_string()
                                        data-size=card.size.to_string() on:click=move |_| open.set(Some((m, c)))>
                                        <Tiles indices=top cols=6 version />
                                        <span>{format!("{} images, φ {:.3}", card.size, card.phi)}</span>
                                    </div>
                                }
                            }).collect_view()}
                            {(l.clusters.len() > 24).then(|| view! { <p class="hint">{format!("… and {} smaller clusters", l.clusters.len() - 24)}</p> })}
                        </div>
                    }).collect_view()}
                </div>
            })
        })
    };
    let members = move || {
        let (m, c) = open.get()?;
        explore.with(|ex| {
            let card = ex.as_ref()?.levels.get(m)?.clusters.get(c)?;
            let all: Vec<usize> = card.members.iter().take(400).map(|&i| i as usize).collect();
            Some(view! {
                <div class="members" data-testid="cluster-members">
                    <h3>{format!("Level {}, cluster {}: {} images, the most typical first (click one for its nearest neighbours)", m + 1, c + 1, card.size)}</h3>
                    <Tiles indices=all cols=20 version
                        pick=Callback::new(|i| send(ToWorker::Neighbours { index: i })) />
                </div>
            })
        })
    };
    let hierarchy = move || {
        explore.with(|_| ());
        state.with_untracked(|s| {
            let ex = s.explore.as_ref()?;
            let fine = ex.levels.len().checked_sub(1).filter(|&f| f > 0)?;
            let rows = s.hierarchy(fine);
            Some(view! {
                <div data-testid="hierarchy" class="hierarchy">
                    <h3>{format!("Hierarchy: level 1 clusters and the level {} clusters their images fall in", fine + 1)}</h3>
                    {rows.into_iter().enumerate().take(30).map(|(c, fines)| {
                        let top: Vec<usize> = ex.levels[0].clusters[c].members.iter().take(3).map(|&i| i as usize).collect();
                        view! {
                            <div class="branch">
                                <Tiles indices=top cols=3 version />
                                {format!(" cluster {} → ", c + 1)}
                                {fines.iter().take(8).map(|&(f, n)| {
                                    let t: Vec<usize> = ex.levels[fine].clusters[f].members.iter().take(1).map(|&i| i as usize).collect();
                                    view! { <span class="leaf"><Tiles indices=t cols=1 version />{format!("#{} ×{n}", f + 1)}</span> }
                                }).collect_view()}
                            </div>
                        }
                    }).collect_view()}
                </div>
            })
        })
    };
    let map = NodeRef::<leptos::html::Canvas>::new();
    Effect::new(move |_| {
        let lv = level.get();
        let Some(canvas) = map.get() else { return };
        explore.with(|ex| {
            let Some(ex) = ex else { return };
            draw_map(
                &canvas,
                &ex.map,
                ex.levels.get(lv).map(|l| &l.assignments[..]),
            );
        });
    });
    let hover = RwSignal::new(None::<usize>);
    let nearest_point = move |ev: &web_sys::MouseEvent| -> Option<usize> {
        let canvas = map.get_untracked()?;
        let rect = canvas.get_bounding_client_rect();
        let (x, y) = (
            (ev.client_x() as f64 - rect.left()) / rect.width() * 400.0,
            (ev.client_y() as f64 - rect.top()) / rect.height() * 400.0,
        );
        state.with_untracked(|s| {
            let pts = map_points(&s.explore.as_ref()?.map);
            pts.iter()
                .enumerate()
                .map(|(i, p)| (i, (p.0 - x).powi(2) + (p.1 - y).powi(2)))
                .filter(|&(_, d)| d < 100.0)
                .min_by(|a, b| a.1.total_cmp(&b.1))
                .map(|(i, _)| i)
        })
    };
    let on_move = move |ev: web_sys::MouseEvent| hover.set(nearest_point(&ev));
    let on_click = move |ev: web_sys::MouseEvent| {
        if let Some(i) = nearest_point(&ev) {
            send(ToWorker::Neighbours { index: i });
        }
    };
    let found = Memo::new(move |_| state.with(|s| s.neighbours.clone()));
    let neighbours = move || {
        let (i, list) = found.get()?;
        state.with_untracked(|s| {
            let mut shown = vec![i];
            shown.extend(list.iter().map(|&(j, _)| j));
            let name = s.images.names.get(i).cloned().unwrap_or_default();
            Some(view! {
                <div data-testid="neighbours">
                    <p>{format!("{name} (first) and its nearest neighbours:")}</p>
                    <Tiles indices=shown cols=13 version />
                </div>
            })
        })
    };
    let scores = Memo::new(move |_| {
        state.with(|s| {
            let m = s.explore.as_ref().and_then(|e| e.metrics.clone());
            let mut curves = s.earlier.clone();
            curves.push(s.curve.clone());
            (m, curves)
        })
    });
    let metrics = move || {
        scores.with(|(m, curves)| {
            let m = m.clone()?;
            Some(view! {
                <div data-testid="metrics" data-knn=m.report.knn_accuracy.to_string()
                    data-ami=m.report.ami.to_string() data-nmi=m.report.nmi.to_string()>
                    <h3>"How good is the representation? (labels from folders)"</h3>
                    <p>{format!(
                        "kNN accuracy {:.3} · k-means AMI {:.3} / NMI {:.3} · linear probe {:.3}",
                        m.report.knn_accuracy, m.report.ami, m.report.nmi, m.report.linear_accuracy
                    )}</p>
                    <p>{m.level_ami.iter().zip(&m.level_nmi).enumerate().map(|(l, (a, n))| format!(
                        "level {}: AMI {a:.3} NMI {n:.3}; ", l + 1)).collect::<String>()}</p>
                    <svg class="chart small" viewBox="0 0 400 100">
                        {curves.iter().enumerate().map(|(c, run)| {
                            let knn: Vec<f64> = run.metrics.iter().map(|m| m.report.knn_accuracy).collect();
                            view! { <polyline points=polyline(&knn, 400.0, 100.0, 0.0, 1.0) stroke=PALETTE[c % 12] /> }
                        }).collect_view()}
                    </svg>
                    <p class="legend">"kNN accuracy per E-step: "
                        {curves.iter().enumerate().map(|(c, run)| view! {
                            <span style=format!("color:{}", PALETTE[c % 12])>{format!("■ {} ", run.label)}</span>
                        }).collect_view()}
                    </p>
                    {ami_chart(curves.last().map(|c| &c.metrics[..]).unwrap_or(&[]))}
                </div>
            })
        })
    };
    let levels_select = move || {
        explore.with(|ex| {
            ex.as_ref().map(|ex| {
                ex.levels
                    .iter()
                    .enumerate()
                    .map(|(m, l)| view! { <option value=m.to_string()>{format!("level {} (K = {})", m + 1, l.k)}</option> })
                    .collect_view()
            })
        })
    };
    view! {
        <section class="card" class:hidden=move || explore.with(|e| e.is_none())>
            <h2>"3. Explore"</h2>
            {gallery}
            {members}
            {hierarchy}
            <h3>"Embedding map (PCA)"</h3>
            <p>
                "Colour by " <select on:change=move |ev| level.set(event_target_value(&ev).parse().unwrap_or(0))>{levels_select}</select>
                " — hover a point to see it, click it for its nearest neighbours."
            </p>
            <div class="map">
                <canvas data-testid="map" node_ref=map width="400" height="400" on:mousemove=on_move on:click=on_click></canvas>
                {move || hover.get().map(|i| view! { <Tiles indices=vec![i] cols=1 version /> })}
            </div>
            {neighbours}
            {metrics}
        </section>
    }
}

/// Each clustering level's AMI against the labels (solid) and the fine labels (dotted) per
/// E-step, with raw pixels' AMI as a grey line: the clusters should rise above it.
fn ami_chart(metrics: &[crate::engine::records::Metrics]) -> impl IntoView + use<> {
    let lines = ami_lines(metrics);
    let style = |line: &AmiLine| {
        let colour = line.level.map_or("#888888", |l| PALETTE[l % 12]);
        let dash = match (line.level, line.fine) {
            (None, _) => "6 4",
            (Some(_), true) => "2 3",
            (Some(_), false) => "",
        };
        (colour, dash)
    };
    let drawn = lines
        .iter()
        .map(|line| {
            let (colour, dash) = style(line);
            view! { <polyline points=polyline(&line.values, 400.0, 100.0, 0.0, 1.0) stroke=colour stroke-dasharray=dash /> }
        })
        .collect_view();
    let legend = lines
        .iter()
        .map(|line| {
            let (colour, _) = style(line);
            let last = line.values.last().copied().unwrap_or(f64::NAN);
            view! { <span style=format!("color:{colour}")>{format!("■ {} {last:.3}  ", line.label())}</span> }
        })
        .collect_view();
    (!lines.is_empty()).then(|| {
        view! {
            <h4>"Clusters against the labels: AMI of each level after every E-step"</h4>
            <svg class="chart small" viewBox="0 0 400 100" data-testid="ami-chart" data-lines=lines.len().to_string()>
                {drawn}
            </svg>
            <p class="legend">{legend}</p>
        }
    })
}

/// Cluster sizes (largest first) and a 10-bin histogram of the concentrations phi of a level.
fn level_histograms(level: &crate::engine::records::LevelView) -> impl IntoView + use<> {
    let sizes: Vec<f64> = level.clusters.iter().map(|c| c.size as f64).collect();
    let phis: Vec<f64> = level.clusters.iter().map(|c| c.phi as f64).collect();
    let bars = |values: &[f64], color: &'static str| {
        let (_, hi) = finite_range(values);
        let w = 200.0 / values.len().max(1) as f64;
        values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let h = (v / hi.max(1e-12) * 40.0).max(1.0);
                view! { <rect x=format!("{:.1}", i as f64 * w) y=format!("{:.1}", 40.0 - h)
                width=format!("{:.1}", (w - 1.0).max(0.5)) height=format!("{h:.1}") fill=color /> }
            })
            .collect_view()
    };
    let (lo, hi) = finite_range(&phis);
    let mut bins = vec![0f64; 10];
    for p in &phis {
        let b = (((p - lo) / (hi - lo).max(1e-12)) * 10.0)
            .floor()
            .clamp(0.0, 9.0) as usize;
        bins[b] += 1.0;
    }
    view! {
        <p class="histograms">
            <svg class="hist" viewBox="0 0 200 40">{bars(&sizes, "#4363d8")}</svg>
            {format!(" sizes {}–{} ", sizes.last().copied().unwrap_or(0.0), sizes.first().copied().unwrap_or(0.0))}
            <svg class="hist" viewBox="0 0 200 40">{bars(&bins, "#f58231")}</svg>
            {format!(" φ {lo:.3}–{hi:.3}")}
        </p>
    }
}

/// Map points scaled into a 400 x 400 canvas with a margin.
fn map_points(map: &[[f32; 2]]) -> Vec<(f64, f64)> {
    let xs: Vec<f64> = map.iter().map(|p| p[0] as f64).collect();
    let ys: Vec<f64> = map.iter().map(|p| p[1] as f64).collect();
    let (x0, x1) = finite_range(&xs);
    let (y0, y1) = finite_range(&ys);
    map.iter()
        .map(|p| {
            (
                10.0 + (p[0] as f64 - x0) / (x1 - x0) * 380.0,
                390.0 - (p[1] as f64 - y0) / (y1 - y0) * 380.0,
            )
        })
        .collect()
}

fn draw_map(canvas: &HtmlCanvasElement, map: &[[f32; 2]], clusters: Option<&[u32]>) {
    let Some(ctx) = context_2d(canvas) else {
        return;
    };
    ctx.clear_rect(0.0, 0.0, 400.0, 400.0);
    for (i, (x, y)) in map_points(map).into_iter().enumerate() {
        let c = clusters.and_then(|a| a.get(i)).copied().unwrap_or(0) as usize;
        ctx.set_fill_style_str(PALETTE[c % PALETTE.len()]);
        ctx.fill_rect(x - 2.0, y - 2.0, 4.0, 4.0);
    }
}

#[component]
fn KeepCard(state: RwSignal<PageState>) -> impl IntoView {
    let has_run = move || state.with(|s| s.run.config.is_some());
    let import = move |ev: web_sys::Event| {
        let input: HtmlInputElement = event_target(&ev);
        let Some(file) = input.files().and_then(|f| f.get(0)) else {
            return;
        };
        input.set_value("");
        leptos::task::spawn_local(async move {
            match wasm_bindgen_futures::JsFuture::from(file.array_buffer()).await {
                Ok(buffer) => send_with(ToWorker::Import { autosave: false }, &buffer),
                Err(e) => state.update(|s| s.error = Some(format!("cannot read the file: {e:?}"))),
            }
        });
    };
    let export = move |kind| move |_| send(ToWorker::Export(kind));
    view! {
        <section class="card">
            <h2>"4. Keep and share"</h2>
            <p>
                <button data-testid="export-model" on:click=export(ExportKind::Model) disabled=move || !has_run()>"Encoder weights"</button>
                " "
                <button data-testid="export-session" on:click=export(ExportKind::Session) disabled=move || !has_run()>"Session (resume later, here or in the CLI)"</button>
                " "
                <button data-testid="export-clusters" on:click=export(ExportKind::Clusters) disabled=move || !has_run()>"Clusters (JSON)"</button>
                " "
                <button data-testid="export-embeddings" on:click=export(ExportKind::Embeddings) disabled=move || !has_run()>"Embeddings (CSV)"</button>
            </p>
            <p>
                <label>"Open a session file: " <input type="file" data-testid="import-session" on:change=import /></label>
                " (load the same images first)"
            </p>
            <p class="hint" data-testid="autosave"
                data-epoch=move || state.with(|s| s.autosaved.map(|e| e.to_string()).unwrap_or_default())>
                {move || state.with(|s| s.autosaved.map(|e| format!(
                    "Autosaved in this browser after epoch {e}; a reload offers to resume."
                )).unwrap_or_else(|| "The run is saved in this browser after every epoch and on pause.".into()))}
            </p>
        </section>
    }
}

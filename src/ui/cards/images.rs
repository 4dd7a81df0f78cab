//! The images card: folders, files, the sample set and the webcam in; counts, skipped files and
//! thumbnails out.

use leptos::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{HtmlCanvasElement, HtmlInputElement};

use crate::intake::{Label, MAX_FILE_BYTES, MAX_IMAGES, MAX_PIXELS};
use crate::protocol::ToWorker;
use crate::ui::charts::format_duration;
use crate::ui::js;
use crate::ui::link::{send, send_with};
use crate::ui::state::PageState;
use crate::ui::tiles::{Tiles, context_2d};

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

/// The latest images shown as thumbnails: four rows, so the settings below stay in sight.
const THUMBNAILS: usize = 96;

#[component]
pub fn ImagesCard(state: RwSignal<PageState>, version: RwSignal<usize>) -> impl IntoView {
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
    let thumbs = move || {
        version.track();
        let n = state.with_untracked(|s| s.images.count);
        let shown: Vec<usize> = (n.saturating_sub(THUMBNAILS)..n).collect();
        view! { <Tiles indices=shown cols=24 version testid="thumbnails" /> }
    };
    view! {
        <section class="card" on:dragover=|ev: web_sys::DragEvent| ev.prevent_default() on:drop=on_drop>
            <h2>"1. Images"</h2>
            <SampleSet />
            <Pickers state />
            <Webcam />
            <ImageCount state />
            {thumbs}
            <details class="hint">
                <summary>"Formats and limits"</summary>
                {format!(
                    "PNG, JPEG, GIF (first frame), WebP, BMP. At most {MAX_IMAGES} images; {} MB \
                     and {} megapixels per file (larger files are refused before decoding).",
                    MAX_FILE_BYTES / 1048576,
                    MAX_PIXELS / 1_000_000
                )}
            </details>
        </section>
    }
}

/// The file and folder pickers (a drop on the card does the same).
#[component]
fn Pickers(state: RwSignal<PageState>) -> impl IntoView {
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
    view! {
        <div class="dropzone">
            <p>"Or your own: drop files or folders here, or pick them."</p>
            <label class="picker">"Files " <input type="file" multiple accept="image/*" data-testid="image-input" on:change=picked(false) /></label>
            <label class="picker">"A folder " <input type="file" node_ref=folder data-testid="folder-input" on:change=picked(true) /></label>
            <p class="hint">
                "Subfolder names become labels (coarse/fine for two levels), used only to measure "
                "the result, never to train."
            </p>
        </div>
    }
}

/// The built-in sample set, whole or a part spread over its groups.
#[component]
fn SampleSet() -> impl IntoView {
    let sample_size = RwSignal::new(String::from("all"));
    let load_sample = move |_| {
        let limit = sample_size.get_untracked().parse().ok();
        send(ToWorker::LoadSample { limit });
    };
    view! {
        <p>
            "Built-in sample: 1,870 emoji in 9 groups, 99 subgroups (Noto Color Emoji, SIL OFL) "
            <select on:change=move |ev| sample_size.set(event_target_value(&ev)) name="sample-size" aria-label="how many sample images">
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
    }
}

/// How many images are loaded, the loading progress, and the files skipped with the reason.
#[component]
fn ImageCount(state: RwSignal<PageState>) -> impl IntoView {
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
    // Redrawn when the count changes, not on every change of the page's state.
    let skipped_count = Memo::new(move |_| state.with(|s| s.images.skipped.len()));
    let skipped = move || {
        let total = skipped_count.get();
        (total > 0).then(|| {
            let (shown, more) = state.with_untracked(|s| {
                let (shown, more) = s.images.skipped_shown();
                (shown.to_vec(), more)
            });
            view! {
                <details open class="skipped">
                    <summary>{format!("Skipped {total} files:")}</summary>
                    <ul data-testid="skipped">
                        {shown.into_iter().map(|f| view! {
                            <li data-testid="skipped-file" data-file=f.file.clone()>
                                <code>{f.file.clone()}</code>": "{f.reason}
                            </li>
                        }).collect_view()}
                    </ul>
                    {(more > 0).then(|| view! {
                        <p data-testid="skipped-more">{format!("and {more} more")}</p>
                    })}
                </details>
            }
        })
    };
    view! {
        <p
            data-testid="image-count"
            data-count=move || state.with(|s| s.images.count.to_string())
            data-state=move || state.with(|s| if s.images.loading.is_some() { "loading" } else { "ready" })
        >
            {count_text}
        </p>
        {progress}
        {skipped}
    }
}

/// Webcam snapshots, added as images of a named group (the group is their label).
#[component]
pub fn Webcam() -> impl IntoView {
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
        let side = crate::engine::PclConfig::stored_size(crate::protocol::TRAIN_SIZE);
        let rgb =
            crate::engine::data::resize_rgba_square(&img.data().0, w as usize, h as usize, side);
        let g = group.get_untracked();
        shots.update(|n| *n += 1);
        let name = format!("{g}/snapshot-{}.png", shots.get_untracked());
        send_with(
            ToWorker::RestoreImages {
                names: vec![name],
                labels: vec![Label::from_folder(&g)],
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

//! The run kept in this browser (IndexedDB): the autosaved session and the images it trained
//! on, written together in one transaction by the one tab that owns the autosave (a Web Lock),
//! and matched on the way back by a fingerprint of the images (names, labels, pixels), never by
//! their count. Crash recovery resumes this tab's own last autosave, kept in memory, never what
//! another tab (or an older run) stored.

use std::cell::RefCell;

use leptos::prelude::*;
use wasm_bindgen::prelude::*;

use super::images::{self, fingerprint};
use super::js;
use super::link::{send, send_transfer};
use super::state::PageState;
use crate::intake::Label;
use crate::protocol::ToWorker;

thread_local! {
    /// The fingerprint of the images this tab last stored beside a session: they are written
    /// again only when they changed.
    static STORED_IMAGES: RefCell<Option<String>> = const { RefCell::new(None) };
    /// This tab's last autosave: its images' fingerprint and the session bytes.
    static LAST: RefCell<Option<(String, js_sys::Uint8Array)>> = const { RefCell::new(None) };
}

/// Where this browser remembers the measured device (`localStorage`).
pub(crate) const DEVICE_KEY: &str = "pcl-studio-device";

const ANOTHER_TAB: &str = "another tab of pcl-studio owns the autosave";

/// Claims the autosave for this tab; the state says whether it has it, now and when the tab
/// that has it closes.
pub fn claim(state: RwSignal<PageState>) {
    js::claim_autosave(move |owned| {
        state.update(|s| {
            s.owns_autosave = owned;
            if owned && s.autosave_off.as_deref() == Some(ANOTHER_TAB) {
                s.autosave_off = None;
            } else if !owned && s.autosave_off.is_none() {
                s.autosave_off = Some(ANOTHER_TAB.into());
            }
        })
    });
}

fn object(fields: &[(&str, JsValue)]) -> JsValue {
    let o = js_sys::Object::new();
    for (k, v) in fields {
        let _ = js_sys::Reflect::set(&o, &(*k).into(), v);
    }
    o.into()
}

/// The stored images record: pixels, names, label folders and their fingerprint.
fn images_record(fingerprint: &str) -> JsValue {
    images::with(|s| {
        let strings = |v: &[String]| -> js_sys::Array {
            v.iter().map(|n| JsValue::from(n.as_str())).collect()
        };
        let folders: Vec<String> = s.labels.iter().map(Label::folder).collect();
        object(&[
            ("side", (s.side as u32).into()),
            ("names", strings(&s.names).into()),
            ("labels", strings(&folders).into()),
            ("pixels", js_sys::Uint8Array::from(&s.pixels[..]).into()),
            ("fingerprint", fingerprint.into()),
        ])
    })
}

/// Keeps the worker's autosave: in memory for crash recovery, and, where this tab owns the
/// autosave, in the browser's storage with its images (one transaction). A refusal turns
/// autosave off for this tab; training goes on.
pub fn store_autosave(state: RwSignal<PageState>, epoch: usize, bytes: js_sys::Uint8Array) {
    let fp = fingerprint();
    LAST.set(Some((fp.clone(), bytes.clone())));
    if state.with_untracked(|s| !s.owns_autosave || s.autosave_off.is_some()) {
        return;
    }
    let count = state.with_untracked(|s| s.images.count);
    let size = bytes.length() as usize;
    leptos::task::spawn_local(async move {
        let session = object(&[
            ("epoch", (epoch as u32).into()),
            ("images", (count as u32).into()),
            ("fingerprint", fp.as_str().into()),
            ("bytes", bytes.into()),
        ]);
        let images = STORED_IMAGES
            .with_borrow(|s| s.as_deref() != Some(fp.as_str()))
            .then(|| images_record(&fp));
        let mut records = vec![("session", &session)];
        if let Some(r) = &images {
            records.push(("images", r));
        }
        match js::idb_put_all(&records).await {
            Ok(()) => {
                STORED_IMAGES.set(Some(fp));
                state.update(|s| {
                    s.autosaved = Some(epoch);
                    s.autosaved_bytes = Some(size);
                })
            }
            // Training goes on; later autosaves stay in memory only.
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

fn field(o: &JsValue, k: &str) -> Result<JsValue, String> {
    js_sys::Reflect::get(o, &k.into()).map_err(|e| format!("{e:?}"))
}

fn strings(v: JsValue) -> Vec<String> {
    js_sys::Array::from(&v)
        .iter()
        .filter_map(|s| s.as_string())
        .collect()
}

/// Sends images and a session to the worker: the run resumes on exactly these images.
fn resume_with(names: Vec<String>, labels: Vec<Label>, pixels: &JsValue, session: &JsValue) {
    send(ToWorker::ClearImages);
    send_transfer(ToWorker::RestoreImages { names, labels }, pixels);
    send_transfer(ToWorker::Import { autosave: true }, session);
}

/// Resumes the run stored in this browser (the offer after a reload), if its images are the
/// ones stored with it.
pub async fn resume_stored(state: RwSignal<PageState>) -> Result<(), String> {
    let images = js::idb_get("images").await?;
    let record = js::idb_get("session").await?;
    if images.is_undefined() || record.is_undefined() {
        return Err("no autosave in this browser".into());
    }
    let fp = |o: &JsValue| field(o, "fingerprint").ok().and_then(|f| f.as_string());
    let matched = match (fp(&record), fp(&images)) {
        (Some(a), Some(b)) => a == b,
        // Stored before sessions carried a fingerprint: the count is all there is.
        (None, None) => {
            let count = field(&record, "images")?.as_f64().unwrap_or(-1.0) as usize;
            count == strings(field(&images, "names")?).len()
        }
        _ => false,
    };
    if !matched {
        return Err(
            "the images stored in this browser are not the ones the saved run trained on; \
             it cannot be resumed (load its images and open an exported session instead)"
                .into(),
        );
    }
    let names = strings(field(&images, "names")?);
    let labels = strings(field(&images, "labels")?)
        .iter()
        .map(|f| Label::from_folder(f))
        .collect();
    let pixels = buffer_of(&field(&images, "pixels")?);
    let session = buffer_of(&field(&record, "bytes")?);
    resume_with(names, labels, &pixels, &session);
    state.update(|s| s.autosave_offer = None);
    Ok(())
}

/// The ArrayBuffer under a stored Uint8Array, to transfer to the worker.
fn buffer_of(bytes: &JsValue) -> JsValue {
    js_sys::Uint8Array::new(bytes).buffer().into()
}

/// After a crash: resumes this tab's own last autosave on the images the page holds, or says
/// why there is none. Never another tab's run.
pub fn resume_own() -> Result<(), String> {
    let Some((fp, bytes)) = LAST.with_borrow(|l| l.clone()) else {
        return Err("the run had not been saved yet".into());
    };
    if fp != fingerprint() {
        return Err("the images changed since the run was last saved".into());
    }
    let (names, labels, pixels) = images::with(|s| {
        let pixels = js_sys::Uint8Array::from(&s.pixels[..]);
        (s.names.clone(), s.labels.clone(), pixels)
    });
    // A copy: the kept bytes stay for the next crash.
    let session = bytes.slice(0, bytes.length());
    resume_with(
        names,
        labels,
        &pixels.buffer().into(),
        &session.buffer().into(),
    );
    Ok(())
}

/// Deletes the stored run, where this tab owns the autosave.
pub async fn discard(state: RwSignal<PageState>) {
    if !state.with_untracked(|s| s.owns_autosave) {
        return state.update(|s| {
            s.error = Some(format!("{ANOTHER_TAB}: discard it there"));
        });
    }
    state.update(|s| s.autosave_offer = None);
    let _ = js::idb_delete("session").await;
}

//! The worker's messages into the page: pixels into the image store, files to downloads,
//! autosaves to storage, everything into [`PageState`], whose replies go back; and the crash
//! recovery that the state judges and this carries out (a new worker after a back-off).

use std::cell::Cell;

use leptos::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use web_sys::MessageEvent;

use super::state::{PageState, Recovery};
use super::{images, js, lessons, link, storage};
use crate::protocol::FromWorker;

thread_local! {
    /// Set when the worker crashed: resume the autosave once the new worker's device is ready.
    static RECOVERING: Cell<bool> = const { Cell::new(false) };
}

/// Starts the page's worker; its messages go to [`on_message`], its death without a word to
/// the crash recovery.
pub(crate) fn start_worker(state: RwSignal<PageState>, version: RwSignal<usize>) {
    let started = link::start(
        move |e| on_message(state, version, e),
        move || {
            // A worker that dies without a word (out of memory aborts, no panic) is a crash too,
            // also one that replaced a crashed worker; a crash that already explained itself let
            // its worker go, so its error event does not come here.
            state.update(|s| {
                s.recovery =
                    Some(s.crashed("the compute worker stopped without a message (out of memory?)"))
            });
            recover(state, version);
        },
    );
    if let Err(e) = started {
        state.update(|s| s.error = Some(format!("cannot start the worker: {e}")));
    }
}

fn on_message(state: RwSignal<PageState>, version: RwSignal<usize>, e: MessageEvent) {
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
        super::hooks::views_shown(v);
    }
    match (&msg, &bytes) {
        (FromWorker::Images(added), Some(b)) => {
            images::add(added.side, &added.names, &added.labels, b.to_vec());
            version.update(|v| *v += 1);
        }
        (FromWorker::ImagesCleared, _) => {
            images::clear();
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
            js::store(storage::DEVICE_KEY, Some(&text));
        }
    }
    let ready = matches!(&msg, FromWorker::Ready { build } if build == crate::protocol::BUILD_ID);
    let device_ready = matches!(msg, FromWorker::ProbeStep { .. });
    let mut reply = None;
    state.update(|s| reply = s.apply(msg));
    if let Some(r) = reply {
        // `?crash-at-start` (development builds): every worker panics before it starts, the
        // end-to-end test of a start-up failure. Sent before Start, so the crash always comes
        // before the probe step.
        #[cfg(debug_assertions)]
        if ready && js::query_flag("crash-at-start") {
            link::send_first(&crate::protocol::ToWorker::SimulateCrash);
        }
        link::send_first(&r);
    }
    if ready {
        link::worker_ready();
    }
    lessons::open_session(state);
    recover(state, version);
    if device_ready
        && RECOVERING.replace(false)
        && let Err(e) = storage::resume_own()
    {
        state.update(|s| s.error = Some(format!("could not resume after the crash: {e}")));
    }
}

/// Acts on a crash the state has judged (`PageState::crashed`): the old worker goes (its wasm
/// may be poisoned: a panic aborts), and a new one starts after the back-off, or none.
fn recover(state: RwSignal<PageState>, version: RwSignal<usize>) {
    let Some(recovery) = state.try_update(|s| s.recovery.take()).flatten() else {
        return;
    };
    link::let_go();
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

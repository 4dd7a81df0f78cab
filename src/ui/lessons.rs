//! Lesson links opened: the sample set at once, the session (fetched from the page's own
//! origin, at most [`MAX_LESSON_BYTES`]) once it, a finished load of images and the device are
//! all here. What a link may ask for is `lesson.rs`.

use std::cell::RefCell;

use leptos::prelude::*;
use wasm_bindgen::prelude::*;

use super::js;
use super::lesson::{Lesson, MAX_LESSON_BYTES};
use super::link::{send, send_transfer};
use super::state::PageState;
use crate::protocol::ToWorker;

thread_local! {
    /// A lesson's session bytes, held until its images and the device are ready.
    static LESSON: RefCell<Option<JsValue>> = const { RefCell::new(None) };
}

/// Opens what the page's address asks for (`?sample=N&session=PATH`, see [`super::lesson`]): the
/// sample set at once, the session once it has arrived and the images are loaded.
pub(crate) fn open(state: RwSignal<PageState>) {
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
                open_session(state);
            }
            Err(e) => state.update(|s| {
                s.lesson = None;
                s.error = Some(format!("the lesson did not open: {e}"));
            }),
        }
    });
}

/// Sends the lesson's session once it, a finished load of images and the device are all here.
pub(crate) fn open_session(state: RwSignal<PageState>) {
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

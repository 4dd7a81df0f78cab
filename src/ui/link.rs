//! The page's link to its worker: messages held back until the worker says Ready (earlier ones
//! would be lost: its handler is installed only once its wasm has loaded), and a generation that
//! moves on whenever a worker is let go, so that a let-go worker's late events are dropped (a
//! panic reports itself twice: its own message, then the error event of the worker's death).

use std::cell::{Cell, RefCell};

use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use web_sys::{MessageEvent, Worker};

use crate::protocol::ToWorker;

/// trunk emits the worker's loader under this fixed name (Trunk.toml: filehash = false).
const WORKER_URL: &str = "./worker_loader.js";

/// The worker, and the messages waiting for it, each with what it transfers.
#[derive(Default)]
struct Link {
    worker: Option<Worker>,
    ready: bool,
    pending: Vec<(JsValue, Option<js_sys::Array>)>,
}

thread_local! {
    static GENERATION: Cell<u32> = const { Cell::new(0) };
    static WORKER: RefCell<Link> = RefCell::new(Link::default());
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

/// Sends `msg` ahead of every message still waiting (the worker's start message goes before
/// anything the user did while the worker loaded).
pub(crate) fn send_first(msg: &ToWorker) {
    WORKER.with_borrow(|link| {
        if let Some(w) = &link.worker {
            let _ = w.post_message(&msg.to_json().into());
        }
    });
}

/// The worker listens now: send what waited.
pub(crate) fn worker_ready() {
    WORKER.with_borrow_mut(|link| {
        link.ready = true;
        if let Some(w) = &link.worker {
            for (m, transfer) in link.pending.drain(..) {
                post_to(w, &m, transfer.as_ref());
            }
        }
    });
}

/// Ends the worker (its wasm may be poisoned: a panic aborts) and drops its late events.
pub(crate) fn let_go() {
    WORKER.with_borrow_mut(|link| {
        if let Some(w) = link.worker.take() {
            w.terminate();
        }
        *link = Link::default();
    });
    GENERATION.set(GENERATION.get().wrapping_add(1));
}

/// Starts a worker: `on_message` gets its messages, `on_death` is called when it dies without a
/// word (out of memory aborts, no panic); neither once the worker is let go. `Err`: why no
/// worker could start.
pub(crate) fn start(
    mut on_message: impl FnMut(MessageEvent) + 'static,
    mut on_death: impl FnMut() + 'static,
) -> Result<(), String> {
    let worker = Worker::new(WORKER_URL).map_err(|e| format!("{e:?}"))?;
    let generation = GENERATION.get();
    let current = move || GENERATION.get() == generation;
    let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |e: MessageEvent| {
        if current() {
            on_message(e)
        }
    });
    worker.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    // The page lives as long as the worker: both handlers stay for the page's lifetime.
    on_message.forget();
    let on_error = Closure::<dyn FnMut(web_sys::Event)>::new(move |_| {
        if current() {
            on_death()
        }
    });
    worker.set_onerror(Some(on_error.as_ref().unchecked_ref()));
    on_error.forget();
    WORKER.with_borrow_mut(|link| link.worker = Some(worker));
    Ok(())
}

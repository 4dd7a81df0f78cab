//! Test hooks of development builds (`trunk build`, which the browser tests use; the release
//! build has none): the stored pixels, the views panel's views, simulated crashes, divergence
//! and aborts, and the lesson reader with a limit a test can reach.

use std::cell::RefCell;

use wasm_bindgen::prelude::*;

use super::link::send;
use super::{images, js};
use crate::protocol::{ToWorker, ViewPairs};

thread_local! {
    /// The augmentation panel's last views.
    static SHOWN_VIEWS: RefCell<Option<ViewPairs>> = const { RefCell::new(None) };
}

/// Keeps the views the panel shows, for `window.pclViews()`.
pub(crate) fn views_shown(v: &ViewPairs) {
    SHOWN_VIEWS.set(Some(v.clone()));
}

/// `window.pclImages()` -> `{side, names, pixels}`: the stored pixels, for the end-to-end test
/// that compares them with the CLI's decoding of the same files.
pub(crate) fn expose() {
    let f = Closure::<dyn Fn() -> JsValue>::new(|| {
        images::with(|s| {
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
    on_window("pclImages", f.into_js_value());
    // `window.pclViews()` -> `{seed, size, names, pixels}`: the augmentation panel's views, for
    // the test that compares them with the CLI's (`pcl views`).
    let views = Closure::<dyn Fn() -> JsValue>::new(|| {
        let Some(v) = SHOWN_VIEWS.with_borrow(Clone::clone) else {
            return JsValue::NULL;
        };
        let o = js_sys::Object::new();
        let names: js_sys::Array = images::with(|s| {
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
    on_window("pclViews", views.into_js_value());
    // `window.pclSimulateCrash()`: the end-to-end test of crash recovery.
    let crash = Closure::<dyn Fn()>::new(|| send(ToWorker::SimulateCrash));
    on_window("pclSimulateCrash", crash.into_js_value());
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
    on_window("pclFetchOwn", fetch_own.into_js_value());
    // `window.pclSimulateDivergence(epoch)`: runs from now on break their weights at the end of
    // that epoch (behind a finite loss).
    let diverge = Closure::<dyn Fn(u32)>::new(|epoch: u32| {
        send(ToWorker::SimulateDivergence {
            epoch: epoch as usize,
        })
    });
    on_window("pclSimulateDivergence", diverge.into_js_value());
    // `window.pclSimulateAbort()`: a worker that dies without a message (out of memory).
    let abort = Closure::<dyn Fn()>::new(|| send(ToWorker::SimulateAbort));
    on_window("pclSimulateAbort", abort.into_js_value());
}

/// Sets `window[name]` to `f` for the page's lifetime.
fn on_window(name: &str, f: JsValue) {
    if let Some(w) = web_sys::window() {
        let _ = js_sys::Reflect::set(&w, &name.into(), &f);
    }
}

//! The Leptos view: spawns the worker, forwards its messages to [`PageState`], renders it.

use leptos::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::Closure;
use web_sys::{MessageEvent, Worker};

use super::state::PageState;
use crate::protocol::FromWorker;

/// trunk emits the worker's loader under this fixed name (Trunk.toml: filehash = false).
const WORKER_URL: &str = "./worker_loader.js";

pub fn mount() {
    leptos::mount::mount_to_body(App);
}

fn query_has(flag: &str) -> bool {
    web_sys::window()
        .and_then(|w| w.location().search().ok())
        .is_some_and(|q| q.trim_start_matches('?').split('&').any(|p| p == flag))
}

#[component]
fn App() -> impl IntoView {
    let state = RwSignal::new(PageState::new(query_has("cpu")));
    match Worker::new(WORKER_URL) {
        Ok(worker) => {
            let w = worker.clone();
            let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |e: MessageEvent| {
                let text = e.data().as_string().unwrap_or_default();
                let msg = FromWorker::from_json(&text).unwrap_or_else(FromWorker::Error);
                let mut reply = None;
                state.update(|s| reply = s.apply(msg));
                if let Some(r) = reply {
                    let _ = w.post_message(&r.to_json().into());
                }
            });
            worker.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
            // The page lives as long as the worker: both handlers stay for the page's lifetime.
            on_message.forget();
            let on_error = Closure::<dyn FnMut(web_sys::Event)>::new(move |_| {
                state.update(|s| s.error = Some("the compute worker failed to start".into()));
            });
            worker.set_onerror(Some(on_error.as_ref().unchecked_ref()));
            on_error.forget();
            std::mem::forget(worker);
        }
        Err(e) => state.update(|s| s.error = Some(format!("cannot start the worker: {e:?}"))),
    }

    let backend_name = move || {
        state.with(|s| {
            s.backend
                .as_ref()
                .map_or("detecting…".to_string(), |b| b.adapter.clone())
        })
    };
    let limits = move || {
        state.with(|s| {
            s.backend.as_ref().map(|b| {
                b.limits
                    .iter()
                    .map(|(k, v)| view! { <li><code>{k.clone()}</code>": "{*v}</li> })
                    .collect_view()
            })
        })
    };
    let notice = move || {
        state.with(|s| {
            s.backend.as_ref().and_then(|b| b.notice.clone().map(|n| (n, b.detail.clone()))).map(
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
        <header>
            <h1>"pcl-studio"</h1>
            <p class="lede">
                "Prototypical Contrastive Learning in your browser: a small image encoder learns "
                "from your own pictures without labels, clustering them at several granularities "
                "as it goes. Everything runs on this machine; no image leaves it."
            </p>
        </header>
        <section class="card">
            <h2>"Compute backend"</h2>
            <p>
                <span
                    data-testid="backend"
                    data-backend=move || state.with(|s| s.backend_attr())
                    class="badge"
                >
                    {backend_name}
                </span>
                " "
                <span class="api">{move || state.with(|s| s.backend.as_ref().map(|b| b.api.clone()).unwrap_or_default())}</span>
            </p>
            {notice}
            <ul class="limits">{limits}</ul>
        </section>
        <section class="card">
            <h2>"Device check"</h2>
            <p data-testid="probe" data-loss=probe_loss>{move || state.with(|s| s.status_line())}</p>
        </section>
    }
}

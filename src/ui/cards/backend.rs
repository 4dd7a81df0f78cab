//! The backend card: which device trains, and the probe step that checked it.

use leptos::prelude::*;

use crate::backend::{Choice, ChoiceKind};
use crate::ui::state::PageState;

#[component]
pub fn BackendCard(state: RwSignal<PageState>) -> impl IntoView {
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
    let choice = move || backend.with(|b| b.as_ref().and_then(|b| b.choice));
    let how = move || {
        choice().map_or("", |c| match c.how {
            ChoiceKind::Measured => "measured",
            ChoiceKind::Forced => "forced",
            ChoiceKind::Only => "only",
            ChoiceKind::Remembered => "remembered",
        })
    };
    let rate = move |f: fn(&Choice) -> Option<f64>| {
        move || {
            choice()
                .and_then(|c| f(&c))
                .map_or(String::new(), |r| format!("{r:.1}"))
        }
    };
    let words = move || {
        backend.with(|b| {
            b.as_ref().and_then(|b| {
                b.choice
                    .map(|c| c.words(b.workers, b.kind == crate::backend::BackendKind::Cpu))
            })
        })
    };
    // The user's override: the page again with `?backend=…` (or without, to measure).
    let choose = move |ev: web_sys::Event| {
        let value = event_target_value(&ev);
        // Measuring again forgets what this browser remembered.
        if value == "auto" {
            crate::ui::js::store(crate::ui::storage::DEVICE_KEY, None);
        }
        if let Some(w) = web_sys::window() {
            let query = if value == "auto" {
                String::new()
            } else {
                format!("?backend={value}")
            };
            let _ = w.location().set_search(&query);
        }
    };
    // On a GPU: the kernels built before the first step, and any built mid-run since.
    let kernels = Memo::new(move |_| state.with(|s| s.run.kernels.filter(|k| k.counted)));
    let kernels = move || {
        kernels.get().map(|k| {
            view! {
                <p data-testid="kernels" data-prepared=k.prepared data-first-epoch=k.first_epoch
                    data-later=k.later data-prepare-s=format!("{:.2}", k.prepare_seconds)
                    data-first-step-s=format!("{:.3}", k.first_step_seconds)>{k.words()}</p>
            }
        })
    };
    view! {
        <section class="card backend">
            <h2>"Compute backend"</h2>
            <p>
                <span data-testid="backend" data-backend=move || state.with(|s| s.backend_attr()) class="badge"
                    data-choice=how data-webgpu-img-s=rate(|c| c.webgpu_img_s) data-cpu-img-s=rate(|c| c.cpu_img_s)>
                    {backend_name}
                </span>
                " "
                <span class="api" data-testid="workers" data-workers=move || state.with(|s| s.backend.as_ref().map_or(0, |b| b.workers))>
                    {move || state.with(|s| s.backend.as_ref().map(workers_text).unwrap_or_default())}
                </span>
            </p>
            <p data-testid="backend-choice">{words}</p>
            <label>"Train on "
                <select data-testid="backend-select" on:change=choose
                    prop:value=crate::ui::js::query_param("backend").unwrap_or_else(|| "auto".into())>
                    <option value="auto">"the faster, measured"</option>
                    <option value="cpu">"the CPU"</option>
                    <option value="webgpu">"WebGPU"</option>
                </select>
            </label>
            {notice}
            {kernels}
            <details><summary>"Device limits"</summary><ul class="limits">{limits}</ul></details>
            <p data-testid="probe" data-loss=probe_loss>{move || state.with(|s| s.status_line())}</p>
        </section>
    }
}

/// The API under a GPU backend, or how many workers share the CPU fallback's steps.
fn workers_text(b: &crate::backend::BackendInfo) -> String {
    match b.workers {
        0 | 1 => b.api.clone(),
        n => format!("{n} workers share each step"),
    }
}

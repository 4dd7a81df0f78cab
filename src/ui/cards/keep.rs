//! The keep card: exports and sessions (save, open) of the run.

use leptos::prelude::*;
use web_sys::HtmlInputElement;

use crate::protocol::{ExportKind, ToWorker};
use crate::ui::link::{send, send_transfer};
use crate::ui::state::PageState;

#[component]
pub fn KeepCard(state: RwSignal<PageState>) -> impl IntoView {
    let has_run = move || state.with(|s| s.run.config.is_some());
    let import = move |ev: web_sys::Event| {
        let input: HtmlInputElement = event_target(&ev);
        let Some(file) = input.files().and_then(|f| f.get(0)) else {
            return;
        };
        input.set_value("");
        let max = crate::intake::MAX_SESSION_BYTES;
        if file.size() > max as f64 {
            return state.update(|s| {
                s.error = Some(format!(
                    "{} is {:.0} MB; a session file has at most {} MB (nothing was opened)",
                    file.name(),
                    file.size() / 1e6,
                    max / 1_000_000
                ))
            });
        }
        leptos::task::spawn_local(async move {
            match wasm_bindgen_futures::JsFuture::from(file.array_buffer()).await {
                Ok(buffer) => send_transfer(ToWorker::Import { autosave: false }, &buffer),
                Err(e) => state.update(|s| s.error = Some(format!("cannot read the file: {e:?}"))),
            }
        });
    };
    let export = move |kind| move |_| send(ToWorker::Export(kind));
    view! {
        <section class="card keep">
            <h2>"5. Keep and share"</h2>
            <p>
                <button data-testid="export-model" on:click=export(ExportKind::Model) disabled=move || !has_run()>"Encoder weights"</button>
                " "
                <button data-testid="export-session" on:click=export(ExportKind::Session) disabled=move || !has_run()>"Session (resume later, here or in the CLI)"</button>
                " "
                <button data-testid="export-clusters" on:click=export(ExportKind::Clusters) disabled=move || !has_run()>"Clusters (JSON)"</button>
                " "
                <button data-testid="export-embeddings" on:click=export(ExportKind::Embeddings) disabled=move || !has_run()>"Embeddings (CSV)"</button>
                " "
                <button data-testid="export-safetensors" on:click=export(ExportKind::Safetensors) disabled=move || !has_run()>"Encoder for PyTorch (safetensors)"</button>
                " "
                <button data-testid="export-projector" on:click=export(ExportKind::Projector) disabled=move || !has_run()>"Embedding Projector bundle (zip)"</button>
            </p>
            <p>
                <label>"Open a session file: " <input type="file" data-testid="import-session" on:change=import /></label>
                " (load the same images first)"
            </p>
            <p class="hint" data-testid="autosave"
                data-epoch=move || state.with(|s| s.autosaved.map(|e| e.to_string()).unwrap_or_default())
                data-off=move || state.with(|s| s.autosave_off.is_some().to_string())
                data-bytes=move || state.with(|s| s.autosaved_bytes.map(|b| b.to_string()).unwrap_or_default())>
                {move || state.with(|s| match (&s.autosave_off, s.autosaved) {
                    (Some(why), _) => format!(
                        "Autosave is off in this tab: {why}. Export the session to keep the run."
                    ),
                    (None, Some(e)) => format!(
                        "Autosaved in this browser after epoch {e} ({:.1} MB); a reload offers \
                         to resume.",
                        s.autosaved_bytes.unwrap_or(0) as f64 / 1e6
                    ),
                    (None, None) => {
                        "The run is saved in this browser after every epoch and on pause.".into()
                    }
                })}
            </p>
        </section>
    }
}

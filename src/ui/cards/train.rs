//! How to train: the presets in plain words, the settings a lesson varies, the rest under
//! "Advanced"; and the run's buttons, which the live card shows beside the run.

use leptos::prelude::*;

use crate::protocol::{RunState, ToWorker};
use crate::ui::link::send;
use crate::ui::settings::{
    LESSON_KEYS, SETTINGS, SettingDoc, checked_setting, plain_label, preset_words, range_words,
    setting_text,
};
use crate::ui::state::{PageState, Preset};

/// A setting's input: checked against its bounds as the user types (the message shows at
/// once), taken into the settings when the input is left; `placeholder`: what an empty input
/// stands for.
fn setting_input(
    state: RwSignal<PageState>,
    key: &'static str,
    placeholder: Option<Signal<String>>,
) -> impl IntoView {
    // A memo: the input is rewritten when its setting changes, not when a message about what
    // the user is typing appears (that would put the old value back under their fingers).
    let value = Memo::new(move |_| state.with(|s| setting_text(&s.settings, key)));
    let typing = move |ev: web_sys::Event| {
        let text = event_target_value(&ev);
        state.update(|s| s.settings_error = checked_setting(&s.settings, key, &text).err());
    };
    let on_change = move |ev: web_sys::Event| {
        let text = event_target_value(&ev);
        state.update(|s| match checked_setting(&s.settings, key, &text) {
            Ok(c) => {
                s.settings = c;
                s.settings_error = None;
            }
            Err(e) => s.settings_error = Some(e),
        });
    };
    let invalid = move || {
        state.with(|s| {
            s.settings_error
                .as_deref()
                .is_some_and(|e| e.starts_with(key))
                .to_string()
        })
    };
    view! {
        <input id=format!("setting-{key}") name=key prop:value=value on:input=typing
            on:change=on_change size="10" aria-describedby=format!("range-{key}")
            aria-invalid=invalid placeholder=move || placeholder.map(|p| p.get()) />
    }
}

#[component]
pub fn TrainCard(state: RwSignal<PageState>) -> impl IntoView {
    view! {
        <section class="card">
            <h2>"2. How to train"</h2>
            <Settings state />
        </section>
    }
}

/// Train, Pause / Resume, Stop and the one-click baseline (in the live card, beside what they
/// start).
#[component]
pub fn RunButtons(state: RwSignal<PageState>) -> impl IntoView {
    let busy = move || state.with(|s| s.busy());
    let cannot_stop = move || !state.with(|s| s.can_stop());
    let stop = move |_| {
        state.update(|s| s.stopping = true);
        send(ToWorker::Stop);
    };
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
    view! {
        <p class="buttons">
            <button data-testid="train" class="primary" on:click=train disabled=busy>"Train"</button>
            " "
            <button data-testid="pause" on:click=pause disabled=cannot_stop>
                {move || if state.with(|s| s.run.state == RunState::Paused) { "Resume" } else { "Pause" }}
            </button>
            " "
            <button data-testid="stop" on:click=stop disabled=cannot_stop>"Stop"</button>
            " "
            <button data-testid="baseline" on:click=baseline disabled=busy
                title="The same settings without the prototype term: the MoCo baseline">"Run the InfoNCE-only baseline"</button>
        </p>
        <p class="error" data-testid="error">{move || state.with(|s| s.error.clone())}</p>
    }
}

/// One setting's row: its name, the formula symbol, its input (`placeholder`: what an empty one
/// stands for), what it does and its range.
pub(super) fn setting_row(
    state: RwSignal<PageState>,
    d: &'static SettingDoc,
    placeholder: Option<Signal<String>>,
) -> impl IntoView {
    view! {
        <tr>
            <td><label for=format!("setting-{}", d.key)>{d.key}</label></td>
            <td class="symbol">{d.symbol}</td>
            <td>{setting_input(state, d.key, placeholder)}</td>
            <td class="hint">
                {d.help}
                <span class="range" id=format!("range-{}", d.key)>
                    {range_words(d.key).map(|r| format!(" ({r})"))}
                </span>
            </td>
        </tr>
    }
}

/// A setting a lesson varies, on one line: its plain name and symbol, its input, its range; what
/// it does in the name's tooltip (and in the Advanced table's words).
fn lesson_row(state: RwSignal<PageState>, d: &'static SettingDoc) -> impl IntoView {
    view! {
        <tr class="lesson">
            <td><label for=format!("setting-{}", d.key)
                title=format!("{}: {} ({})", d.key, d.help, range_words(d.key).unwrap_or_default())>
                {plain_label(d.key)}</label></td>
            <td class="symbol">{d.symbol}</td>
            <td>{setting_input(state, d.key, None)}</td>
            <td class="range" id=format!("range-{}", d.key)>{range_words(d.key)}</td>
        </tr>
    }
}

/// The presets in plain words as the main choice, the settings a lesson varies, and the rest
/// with the formula under "Advanced".
#[component]
fn Settings(state: RwSignal<PageState>) -> impl IntoView {
    let chosen = move |p: Preset| {
        state.with(|s| Preset::ALL.iter().find(|&&q| s.settings == q.config()) == Some(&p))
    };
    let presets = Preset::ALL
        .iter()
        .map(|&p| {
            view! {
                <button class="preset" data-testid=format!("preset-{}", p.key()) aria-pressed=move || chosen(p).to_string()
                    on:click=move |_| state.update(|s| s.settings = p.config())>
                    <strong>{p.name()}</strong>
                    <span>{preset_words(p)}</span>
                </button>
            }
        })
        .collect_view();
    let lesson = SETTINGS
        .iter()
        .filter(|d| LESSON_KEYS.contains(&d.key))
        .map(|d| lesson_row(state, d))
        .collect_view();
    let advanced = SETTINGS
        .iter()
        .filter(|d| !LESSON_KEYS.contains(&d.key))
        .map(|d| setting_row(state, d, None))
        .collect_view();
    view! {
        <div class="presets" role="group" aria-label="Presets">{presets}</div>
        <p class="hint">
            "A preset is a time budget: the run plans its epochs to end in time. Below, what a "
            "lesson varies; the rest under Advanced."
        </p>
        <table class="settings lesson">{lesson}</table>
        <details class="advanced">
            <summary>"Advanced settings and the formula"</summary>
            <p class="formula">
                "ProtoNCE for an image's embedding v, its key v′ and r negatives in the queue: "
                <code>"−log exp(v·v′/τ) / Σⱼ exp(v·v′ⱼ/τ) − (1/M) Σₘ log exp(v·cₛᵐ/φₛᵐ) / Σⱼ exp(v·cⱼᵐ/φⱼᵐ)"</code>
                ". M levels of k-means with K clusters each give the prototypes c and their "
                "concentrations φ = Σ‖v′ − c‖ / (Z log(Z + α)), α = 10, scaled to mean τ."
            </p>
            <table class="settings">{advanced}</table>
        </details>
        <p class="error" data-testid="settings-error" role="alert">{move || state.with(|s| s.settings_error.clone())}</p>
    }
}

//! The train card: presets, settings with their formulas, start / pause / stop, progress and
//! the loss curves.

use leptos::prelude::*;

use crate::protocol::{RunState, ToWorker};
use crate::ui::charts::{finite_range, polyline};
use crate::ui::settings::{SETTINGS, checked_setting, range_words, setting_text};
use crate::ui::state::{PageState, Preset};
use crate::ui::view::send;

/// A setting's input: checked against its bounds as the user types (the message shows at
/// once), taken into the settings when the input is left; `placeholder`: what an empty input
/// stands for.
pub(super) fn setting_input(
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
    let running =
        move || state.with(|s| matches!(s.run.state, RunState::Training | RunState::Paused));
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
        <section class="card">
            <h2>"2. Train"</h2>
            <Settings state />
            <p>
                <button data-testid="train" on:click=train disabled=busy>"Train"</button>
                " "
                <button data-testid="pause" on:click=pause disabled=cannot_stop>
                    {move || if state.with(|s| s.run.state == RunState::Paused) { "Resume" } else { "Pause" }}
                </button>
                " "
                <button data-testid="stop" on:click=stop disabled=cannot_stop>"Stop"</button>
                " "
                <button data-testid="baseline" on:click=baseline disabled=busy>"Run the InfoNCE-only baseline"</button>
            </p>
            <p
                data-testid="status"
                data-state=move || state.with(|s| s.state_attr())
                data-epoch=move || state.with(|s| s.run.epoch.to_string())
                data-images-per-s=move || state.with(|s| format!("{:.1}", s.run.images_per_s))
                data-memory-bytes=move || state.with(|s| s.run.memory_bytes.map(|b| b.to_string()).unwrap_or_default())
            >
                {move || state.with(|s| s.progress_line())}
            </p>
            <progress
                class:hidden=move || !running()
                max=move || state.with(|s| (s.run.epochs * s.run.steps_per_epoch).max(1).to_string())
                value=move || state.with(|s| (s.run.epoch * s.run.steps_per_epoch + s.run.step).to_string())
            ></progress>
            <p class="error" data-testid="error">{move || state.with(|s| s.error.clone())}</p>
            <StepCharts state />
            <EStepTable state />
        </section>
    }
}

/// The formula, the presets and every setting beside its symbol and what it does.
#[component]
fn Settings(state: RwSignal<PageState>) -> impl IntoView {
    let presets = Preset::ALL
        .iter()
        .map(|&p| {
            view! {
                <button class="preset" on:click=move |_| state.update(|s| s.settings = p.config())>{p.name()}</button>
            }
        })
        .collect_view();
    let settings = SETTINGS
        .iter()
        .map(|d| {
            view! {
                <tr>
                    <td><label for=format!("setting-{}", d.key)>{d.key}</label></td>
                    <td class="symbol">{d.symbol}</td>
                    <td>{setting_input(state, d.key, None)}</td>
                    <td class="hint">
                        {d.help}
                        <span class="range" id=format!("range-{}", d.key)>
                            {range_words(d.key).map(|r| format!(" ({r})"))}
                        </span>
                    </td>
                </tr>
            }
        })
        .collect_view();
    view! {
        <p class="formula">
            "ProtoNCE for an image's embedding v, its key v′ and r negatives in the queue: "
            <code>"−log exp(v·v′/τ) / Σⱼ exp(v·v′ⱼ/τ) − (1/M) Σₘ log exp(v·cₛᵐ/φₛᵐ) / Σⱼ exp(v·cⱼᵐ/φⱼᵐ)"</code>
            ". M levels of k-means with K clusters each give the prototypes c and their "
            "concentrations φ = Σ‖v′ − c‖ / (Z log(Z + α)), α = 10, scaled to mean τ."
        </p>
        <p>"Presets: " {presets}</p>
        <table class="settings">{settings}</table>
        <p class="error" data-testid="settings-error" role="alert">{move || state.with(|s| s.settings_error.clone())}</p>
    }
}

/// Loss parts, instance accuracy and learning rate per step.
#[component]
fn StepCharts(state: RwSignal<PageState>) -> impl IntoView {
    let steps_len = Memo::new(move |_| state.with(|s| s.steps.len()));
    move || {
        let _ = steps_len.get(); // a read: a memo that is only tracked never computes
        state.with_untracked(|s| {
            let pick = |f: &dyn Fn(&crate::engine::StepRecord) -> f64| -> Vec<f64> {
                s.steps.iter().map(f).collect()
            };
            let loss = pick(&|r| r.loss as f64);
            let nce = pick(&|r| r.info_nce as f64);
            let proto = pick(&|r| r.proto.iter().map(|&p| p as f64).sum());
            let acc = pick(&|r| r.instance_acc as f64);
            let lr = pick(&|r| r.lr);
            let (lo, hi) = finite_range(loss.iter().chain(&nce).chain(&proto));
            let (_, lr_hi) = finite_range(&lr);
            let last = s.steps.last();
            view! {
                <svg class="chart" data-testid="loss-chart" data-points=loss.len().to_string() viewBox="0 0 400 150">
                    <polyline points=polyline(&loss, 400.0, 150.0, lo.min(0.0), hi) stroke="#222" />
                    <polyline points=polyline(&nce, 400.0, 150.0, lo.min(0.0), hi) stroke="#4363d8" />
                    <polyline points=polyline(&proto, 400.0, 150.0, lo.min(0.0), hi) stroke="#e6194b" />
                </svg>
                <svg class="chart small" viewBox="0 0 400 60">
                    <polyline points=polyline(&acc, 400.0, 60.0, 0.0, 1.0) stroke="#3cb44b" />
                    <polyline points=polyline(&lr, 400.0, 60.0, 0.0, lr_hi) stroke="#f58231" />
                </svg>
                <p class="legend">
                    <span style="color:#222" aria-hidden="true">"■"</span>" loss"" "
                    <span style="color:#4363d8" aria-hidden="true">"■"</span>" InfoNCE"" "
                    <span style="color:#e6194b" aria-hidden="true">"■"</span>" ProtoNCE (sum of levels)"" "
                    <span style="color:#3cb44b" aria-hidden="true">"■"</span>" instance accuracy"" "
                    <span style="color:#f58231" aria-hidden="true">"■"</span>" learning rate"
                    {last.map(|r| format!(
                        " — last: loss {:.3}, InfoNCE {:.3}, proto {:?}, accuracy {:.2}, lr {:.4}",
                        r.loss, r.info_nce, r.proto.iter().map(|p| format!("{p:.3}")).collect::<Vec<_>>(), r.instance_acc, r.lr
                    ))}
                </p>
            }
        })
    }
}

/// K, cluster sizes, phi and inertia per level of the last E-step.
#[component]
fn EStepTable(state: RwSignal<PageState>) -> impl IntoView {
    let esteps_len = Memo::new(move |_| state.with(|s| s.esteps.len()));
    move || {
        let _ = esteps_len.get();
        state.with_untracked(|s| {
            s.esteps.last().map(|(epoch, levels, seconds)| {
                view! {
                    <table class="esteps" data-testid="estep" data-seconds=format!("{seconds:.3}")>
                        <caption>{format!("E-step before epoch {} ({seconds:.1} s)", epoch + 1)}</caption>
                        <tr><th>"level"</th><th>"K"</th><th>"sizes"</th><th>"φ range"</th><th>"inertia"</th></tr>
                        {levels.iter().enumerate().map(|(m, l)| view! {
                            <tr>
                                <td>{m + 1}</td><td>{l.k}</td>
                                <td>{format!("{}–{}", l.min_size, l.max_size)}</td>
                                <td>{format!("{:.3}–{:.3}", l.phi_min, l.phi_max)}</td>
                                <td>{format!("{:.1}", l.inertia)}</td>
                            </tr>
                        }).collect_view()}
                    </table>
                }
            })
        })
    }
}

//! The live card: where the run is (status, progress, time left) and its curves on one epoch
//! axis, with the E-steps marked, a hover readout and a line under each chart on what a healthy
//! curve looks like; then what each E-step found, as images.

use leptos::prelude::*;

use super::charts::axes;
use super::explore::{draw_map, prototype_images};
use super::train::RunButtons;
use crate::engine::StepRecord;
use crate::protocol::RunState;
use crate::ui::axes::{Frame, nearest_step, nice_ticks, step_epoch};
use crate::ui::state::PageState;
use crate::ui::tiles::Tiles;

/// A chart's SVG box: its text stays legible at the half-width a chart gets beside the other.
const W: f64 = 460.0;
const H: f64 = 215.0;

#[component]
pub fn LiveCard(state: RwSignal<PageState>, version: RwSignal<usize>) -> impl IntoView {
    let running =
        move || state.with(|s| matches!(s.run.state, RunState::Training | RunState::Paused));
    view! {
        <section class="card live">
            <h2>"3. Train"</h2>
            <RunButtons state />
            <p
                data-testid="status"
                class="status"
                data-state=move || state.with(|s| s.state_attr())
                data-epoch=move || state.with(|s| s.run.epoch.to_string())
                data-images-per-s=move || state.with(|s| format!("{:.1}", s.run.images_per_s))
                data-memory-bytes=move || state.with(|s| s.run.memory_bytes.map(|b| b.to_string()).unwrap_or_default())
                title=move || state.with(|s| s.progress_line())
            >
                {move || state.with(|s| s.progress_line())}
            </p>
            <progress
                class:hidden=move || !running()
                max=move || state.with(|s| (s.run.epochs * s.run.steps_per_epoch).max(1).to_string())
                value=move || state.with(|s| (s.run.epoch * s.run.steps_per_epoch + s.run.step).to_string())
            ></progress>
            <StepCharts state />
            <EStepPanel state version />
        </section>
    }
}

/// One series of a chart: its name, colour and points (epoch, value).
struct Series {
    name: &'static str,
    colour: &'static str,
    points: Vec<(f64, f64)>,
}

/// A chart of `series` over the epochs `0..x_max` with E-steps at `esteps`; `hover` is the
/// epoch under the pointer, shared by the charts.
#[allow(clippy::too_many_arguments)]
fn chart(
    testid: &'static str,
    label: &'static str,
    series: Vec<Series>,
    x_max: f64,
    y_ticks: Vec<f64>,
    y_name: &'static str,
    esteps: &[f64],
    hover: RwSignal<Option<f64>>,
    points: usize,
) -> impl IntoView + use<> {
    let frame = Frame::new(W, H, (0.0, x_max), &y_ticks);
    let x_ticks = nice_ticks(0.0, x_max, 8);
    let lines = series
        .iter()
        .map(|s| view! { <polyline points=frame.points(&s.points) stroke=s.colour data-series=s.name /> })
        .collect_view();
    let f = frame.clone();
    let on_move = move |ev: web_sys::MouseEvent| {
        use wasm_bindgen::JsCast;
        let Some(el) = ev
            .current_target()
            .and_then(|t| t.dyn_into::<web_sys::Element>().ok())
        else {
            return;
        };
        let rect = el.get_bounding_client_rect();
        let px = (ev.client_x() as f64 - rect.left()) / rect.width().max(1.0) * W;
        hover.set(Some(f.x_at(px)));
    };
    let f = frame.clone();
    let hair = move || {
        hover.get().map(|x| {
            let px = f.sx(x);
            view! { <line class="hover" x1=px x2=px y1=f.top y2=f.h - f.bottom /> }
        })
    };
    view! {
        <svg class="chart" data-testid=testid data-points=points.to_string() viewBox=format!("0 0 {W} {H}")
            role="img" aria-label=label on:mousemove=on_move on:mouseleave=move |_| hover.set(None)>
            {axes(&frame, &x_ticks, &y_ticks, esteps, y_name)}
            {lines}
            {hair}
        </svg>
    }
}

fn legend(series: &[(&'static str, &'static str)]) -> impl IntoView + use<> {
    series
        .iter()
        .map(|&(name, colour)| {
            view! { <span class="key"><span style=format!("color:{colour}") aria-hidden="true">"━ "</span>{name}</span> }
        })
        .collect_view()
}

/// The readout of the step nearest the hovered epoch.
fn readout(r: &StepRecord, x: f64) -> String {
    let proto = r.proto.iter().sum::<f32>() / r.proto.len().max(1) as f32;
    format!(
        "epoch {x:.1}: loss {:.3} · InfoNCE {:.3} · ProtoNCE {proto:.3} · instance accuracy {:.2} · learning rate {:.4}",
        r.loss, r.info_nce, r.instance_acc, r.lr
    )
}

/// The loss terms, and instance accuracy with the learning rate, per step on the epoch axis.
#[component]
fn StepCharts(state: RwSignal<PageState>) -> impl IntoView {
    let steps_len =
        Memo::new(move |_| state.with(|s| (s.steps.len(), s.run.epochs, s.esteps.len())));
    let hover = RwSignal::new(None::<f64>);
    let charts = move || {
        let _ = steps_len.get(); // a read: a memo that is only tracked never computes
        state.with_untracked(|s| {
            let spe = s.run.steps_per_epoch.max(1);
            let xs: Vec<f64> = s.steps.iter().map(|r| step_epoch(r, spe)).collect();
            let series = |f: &dyn Fn(&StepRecord) -> f64| -> Vec<(f64, f64)> {
                xs.iter().copied().zip(s.steps.iter().map(f)).collect()
            };
            let x_max = (s.run.epochs as f64).max(xs.last().copied().unwrap_or(1.0)).max(1.0);
            let esteps: Vec<f64> = s.esteps.iter().map(|(e, _, _)| *e as f64).collect();
            let loss = vec![
                Series { name: "loss", colour: "#222", points: series(&|r| r.loss as f64) },
                Series { name: "InfoNCE", colour: "#4363d8", points: series(&|r| r.info_nce as f64) },
                Series {
                    name: "ProtoNCE",
                    colour: "#e6194b",
                    points: series(&|r| {
                        let m = r.proto.len() as f64;
                        if m == 0.0 { f64::NAN } else { r.proto.iter().map(|&p| p as f64).sum::<f64>() / m }
                    }),
                },
            ];
            let hi = loss
                .iter()
                .flat_map(|s| s.points.iter().map(|p| p.1))
                .filter(|v| v.is_finite())
                .fold(1.0f64, f64::max);
            let lr_max = s.steps.iter().map(|r| r.lr).fold(1e-12, f64::max);
            let acc = vec![
                Series { name: "instance accuracy", colour: "#3cb44b", points: series(&|r| r.instance_acc as f64) },
                Series { name: "learning rate (of its start)", colour: "#f58231", points: series(&|r| r.lr / lr_max) },
            ];
            let n = s.steps.len();
            view! {
                <div class="charts">
                <figure>
                    {chart("loss-chart", "loss per step: total, InfoNCE and ProtoNCE", loss, x_max, nice_ticks(0.0, hi, 4), "nats", &esteps, hover, n)}
                    <figcaption>
                        {legend(&[("loss", "#222"), ("InfoNCE", "#4363d8"), ("ProtoNCE (mean of the levels)", "#e6194b"), ("E-step", "#999")])}
                        <br />
                        "loss = InfoNCE + prototype weight × ProtoNCE. InfoNCE rises while the queue "
                        "fills with other images' keys (more and harder negatives), then falls "
                        "slowly; ProtoNCE starts at the first E-step (dotted lines) and falls as "
                        "each image's embedding moves towards its prototypes."
                    </figcaption>
                </figure>
                <figure>
                    {chart("accuracy-chart", "instance accuracy and learning rate per step", acc, x_max, nice_ticks(0.0, 1.0, 4), "share", &esteps, hover, n)}
                    <figcaption>
                        {legend(&[("instance accuracy", "#3cb44b"), ("learning rate, as a share of its start", "#f58231")])}
                        <br />
                        "Instance accuracy: how often a view picks its own image's other view out of "
                        "the queue. It drops as the queue fills, then climbs. The learning rate falls "
                        "along a cosine to zero at the end of the time budget."
                    </figcaption>
                </figure>
                </div>
            }
        })
    };
    let read = move || {
        let x = hover.get()?;
        state.with(|s| {
            let i = nearest_step(&s.steps, s.run.steps_per_epoch, x)?;
            Some(readout(&s.steps[i], x))
        })
    };
    view! {
        {charts}
        <p class="readout" data-testid="chart-readout" aria-live="polite">
            {move || read().unwrap_or_else(|| "Hover a chart for the values of a step.".into())}
        </p>
    }
}

/// What each E-step found: the coarsest level's clusters as their most typical images, largest
/// first, with a slider back through the E-steps (it follows the latest unless moved back), and
/// K, sizes, phi and inertia of every level.
#[component]
fn EStepPanel(state: RwSignal<PageState>, version: RwSignal<usize>) -> impl IntoView {
    let count = Memo::new(move |_| state.with(|s| s.esteps.len()));
    // The E-step shown (1-based); `None`: the latest.
    let picked = RwSignal::new(None::<usize>);
    let shown = move || picked.get().unwrap_or(count.get()).min(count.get());
    let on_slide = move |ev: web_sys::Event| {
        let at: usize = event_target_value(&ev).parse().unwrap_or(0);
        picked.set((at < count.get_untracked()).then_some(at));
    };
    let body = move || {
        let at = shown();
        (at > 0).then(|| {
            state.with_untracked(|s| {
                let (epoch, levels, seconds) = &s.esteps[at - 1];
                let protos = levels.first().map(|l| l.prototypes.clone()).unwrap_or_default();
                let k = levels.first().map_or(0, |l| l.k);
                let n = protos.len().to_string();
                view! {
                    <p class="estep-caption">{format!(
                        "E-step {at} of {}, before epoch {}: k-means on every image's embedding. \
                         The {k} coarsest clusters, largest first, each with the images nearest \
                         its prototype:", count.get_untracked(), epoch + 1)}</p>
                    <div class="prototypes" data-testid="prototypes" data-estep=at.to_string() data-count=n>
                        {protos.into_iter().map(|p| view! {
                            <div class="prototype">
                                <Tiles indices=p.typical.iter().map(|&i| i as usize).collect() cols=4 version />
                                <span>{format!("{} images · φ {:.2}", p.size, p.phi)}</span>
                            </div>
                        }).collect_view()}
                    </div>
                    <details>
                        <summary>"Every level in numbers"</summary>
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
                    </details>
                }
            })
        })
    };
    // The latest explorer view's map beside the clusters: the same images as points.
    let node = NodeRef::<leptos::html::Canvas>::new();
    let view_epoch = Memo::new(move |_| state.with(|s| s.explore.as_ref().map(|e| e.epoch)));
    Effect::new(move |_| {
        let _ = view_epoch.get();
        let Some(c) = node.get() else { return };
        state.with_untracked(|s| {
            if let Some(ex) = &s.explore {
                let level = ex.levels.first();
                draw_map(
                    &c,
                    &ex.map,
                    level.map(|l| &l.assignments[..]),
                    &level.map(prototype_images).unwrap_or_default(),
                    None,
                );
            }
        });
    });
    view! {
        <div class="estep-panel" class:hidden=move || count.get() == 0>
            <h3>
                "What the E-step found "
                <input type="range" min="1" max=move || count.get().max(1).to_string() prop:value=move || shown().to_string()
                    on:input=on_slide data-testid="estep-slider" aria-label="which E-step to show" />
            </h3>
            <div class="estep-row">
                <div class="estep-body">{body}</div>
                <figure class="live-map" class:hidden=move || view_epoch.get().is_none()>
                    <canvas data-testid="live-map" node_ref=node width="400" height="400" role="img"
                        aria-label="the map of the latest clusters view: one point per image, coloured by the coarsest clusters"></canvas>
                    <figcaption>{move || view_epoch.get().map(|e| format!("Map after epoch {e}: one point per image, coloured by the coarsest clusters; rings: their most typical images"))}</figcaption>
                </figure>
            </div>
        </div>
    }
}

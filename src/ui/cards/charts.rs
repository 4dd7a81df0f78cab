//! Charts drawn as SVG from plain numbers: the AMI of each level against pixels, cluster sizes
//! and concentrations.

use leptos::prelude::*;

use super::live::axes;
use crate::engine::records::Metrics;
use crate::ui::charts::{
    AmiLine, SCORE_H, SCORE_W, ami_lines, finite_range, score_frame, score_points,
};
use crate::ui::state::RunCurve;
use crate::ui::tiles::PALETTE;

/// kNN accuracy per E-step of every run of this page (earlier runs first), one colour each.
pub(super) fn knn_chart(curves: &[RunCurve]) -> impl IntoView + use<> {
    let longest = curves
        .iter()
        .max_by_key(|c| c.metrics.iter().map(|m| m.epoch).max().unwrap_or(0))
        .map_or(&[][..], |c| &c.metrics[..]);
    let knn: Vec<Vec<f64>> = curves
        .iter()
        .map(|c| c.metrics.iter().map(|m| m.report.knn_accuracy).collect())
        .collect();
    let (frame, x_ticks, y_ticks) = score_frame(longest, knn.iter().flatten());
    let lines = curves
        .iter()
        .zip(&knn)
        .enumerate()
        .map(|(c, (run, values))| {
            view! { <polyline points=score_points(&frame, &run.metrics, values) stroke=PALETTE[c % 12] /> }
        })
        .collect_view();
    view! {
        <svg class="chart small" viewBox=format!("0 0 {SCORE_W} {SCORE_H}") role="img" aria-label="kNN accuracy per E-step">
            {axes(&frame, &x_ticks, &y_ticks, &[], "kNN accuracy")}
            {lines}
        </svg>
    }
}

/// Each clustering level's AMI against the labels (solid) and the fine labels (dotted) per
/// E-step, with raw pixels' AMI as a grey line: the clusters should rise above it.
pub(super) fn ami_chart(metrics: &[Metrics]) -> impl IntoView + use<> {
    let lines = ami_lines(metrics);
    let (frame, x_ticks, y_ticks) = score_frame(metrics, lines.iter().flat_map(|l| &l.values));
    let style = |line: &AmiLine| {
        let colour = line.level.map_or("#888888", |l| PALETTE[l % 12]);
        let dash = match (line.level, line.fine) {
            (None, _) => "6 4",
            (Some(_), true) => "2 3",
            (Some(_), false) => "",
        };
        (colour, dash)
    };
    let drawn = lines
        .iter()
        .map(|line| {
            let (colour, dash) = style(line);
            view! { <polyline points=score_points(&frame, metrics, &line.values) stroke=colour stroke-dasharray=dash /> }
        })
        .collect_view();
    let legend = lines
        .iter()
        .map(|line| {
            let (colour, _) = style(line);
            let last = line.values.last().copied().unwrap_or(f64::NAN);
            view! { <span><span style=format!("color:{colour}") aria-hidden="true">"■"</span>{format!(" {} {last:.3}  ", line.label())}</span> }
        })
        .collect_view();
    (!lines.is_empty()).then(|| {
        view! {
            <h4>"Clusters against the labels: AMI of each level after every E-step"</h4>
            <svg class="chart small" viewBox=format!("0 0 {SCORE_W} {SCORE_H}") data-testid="ami-chart" data-lines=lines.len().to_string()
                role="img" aria-label="AMI of each level per E-step">
                {axes(&frame, &x_ticks, &y_ticks, &[], "AMI")}
                {drawn}
            </svg>
            <p class="legend">{legend}</p>
        }
    })
}

/// Cluster sizes (largest first) and a 10-bin histogram of the concentrations phi of a level.
pub(super) fn level_histograms(level: &crate::engine::records::LevelView) -> impl IntoView + use<> {
    let sizes: Vec<f64> = level.clusters.iter().map(|c| c.size as f64).collect();
    let phis: Vec<f64> = level.clusters.iter().map(|c| c.phi as f64).collect();
    let bars = |values: &[f64], color: &'static str| {
        let (_, hi) = finite_range(values);
        let w = 200.0 / values.len().max(1) as f64;
        values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let h = (v / hi.max(1e-12) * 40.0).max(1.0);
                view! { <rect x=format!("{:.1}", i as f64 * w) y=format!("{:.1}", 40.0 - h)
                width=format!("{:.1}", (w - 1.0).max(0.5)) height=format!("{h:.1}") fill=color /> }
            })
            .collect_view()
    };
    let (lo, hi) = finite_range(&phis);
    let mut bins = vec![0f64; 10];
    for p in &phis {
        let b = (((p - lo) / (hi - lo).max(1e-12)) * 10.0)
            .floor()
            .clamp(0.0, 9.0) as usize;
        bins[b] += 1.0;
    }
    view! {
        <p class="histograms">
            <svg class="hist" viewBox="0 0 200 40">{bars(&sizes, "#4363d8")}</svg>
            {format!(" sizes {}–{} ", sizes.last().copied().unwrap_or(0.0), sizes.first().copied().unwrap_or(0.0))}
            <svg class="hist" viewBox="0 0 200 40">{bars(&bins, "#f58231")}</svg>
            {format!(" φ {lo:.3}–{hi:.3}")}
        </p>
    }
}

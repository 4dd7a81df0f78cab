//! Charts drawn as SVG from plain numbers: the axes every chart shares, kNN accuracy and the AMI
//! of each level against pixels per E-step, cluster sizes and concentrations.

use leptos::prelude::*;

use crate::engine::records::Metrics;
use crate::ui::axes::{Frame, tick_label};
use crate::ui::charts::{
    AmiLine, SCORE_H, SCORE_W, ami_lines, finite_range, score_frame, score_points,
};
use crate::ui::state::RunCurve;
use crate::ui::tiles::PALETTE;

/// Axes, gridlines, E-step markers and the hover line of a chart in `frame`.
pub(super) fn axes(
    frame: &Frame,
    x_ticks: &[f64],
    y_ticks: &[f64],
    esteps: &[f64],
    y_name: &str,
) -> impl IntoView + use<> {
    let f = frame.clone();
    let grid = y_ticks
        .iter()
        .map(|&y| {
            let py = f.sy(y);
            view! {
                <line class="grid" x1=f.left x2=f.w - f.right y1=py y2=py />
                <text class="tick" data-testid="tick" x=f.left - 4.0 y=py + 4.0 text-anchor="end">{tick_label(y, y_ticks)}</text>
            }
        })
        .collect_view();
    let xs = x_ticks
        .iter()
        .filter(|&&x| x <= f.x.1 + 1e-9)
        .map(|&x| {
            let px = f.sx(x);
            view! {
                <line class="axis" x1=px x2=px y1=f.h - f.bottom y2=f.h - f.bottom + 4.0 />
                <text class="tick" data-testid="tick" x=px y=f.h - f.bottom + 15.0 text-anchor="middle">{tick_label(x, x_ticks)}</text>
            }
        })
        .collect_view();
    let marks = esteps
        .iter()
        .map(|&e| {
            let px = f.sx(e);
            view! { <line class="estep" data-testid="estep-mark" x1=px x2=px y1=f.top y2=f.h - f.bottom /> }
        })
        .collect_view();
    view! {
        {grid}
        <line class="axis" x1=f.left x2=f.w - f.right y1=f.h - f.bottom y2=f.h - f.bottom />
        <line class="axis" x1=f.left x2=f.left y1=f.top y2=f.h - f.bottom />
        {xs}
        {marks}
        <text class="axis-name" x=f.w - f.right y=f.h - 2.0 text-anchor="end">"epoch"</text>
        <text class="axis-name" x=f.left + 4.0 y=f.top - 5.0>{y_name.to_string()}</text>
    }
}

/// kNN accuracy per E-step of every run of this page (earlier runs first), one colour each.
pub(super) fn knn_chart(curves: &[RunCurve]) -> impl IntoView + use<> {
    let knn: Vec<Vec<f64>> = curves
        .iter()
        .map(|c| c.metrics.iter().map(|m| m.report.knn_accuracy).collect())
        .collect();
    let all = curves.iter().flat_map(|c| &c.metrics);
    let (frame, x_ticks, y_ticks) = score_frame(all, knn.iter().flatten());
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

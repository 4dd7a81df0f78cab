//! Charts drawn as SVG from plain numbers: the AMI of each level against pixels, cluster sizes
//! and concentrations.

use leptos::prelude::*;

use crate::ui::charts::{AmiLine, ami_lines, finite_range, polyline};
use crate::ui::tiles::PALETTE;

/// Each clustering level's AMI against the labels (solid) and the fine labels (dotted) per
/// E-step, with raw pixels' AMI as a grey line: the clusters should rise above it.
pub(super) fn ami_chart(metrics: &[crate::engine::records::Metrics]) -> impl IntoView + use<> {
    let lines = ami_lines(metrics);
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
            view! { <polyline points=polyline(&line.values, 400.0, 100.0, 0.0, 1.0) stroke=colour stroke-dasharray=dash /> }
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
            <svg class="chart small" viewBox="0 0 400 100" data-testid="ami-chart" data-lines=lines.len().to_string()>
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

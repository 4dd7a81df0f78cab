//! The maths of the page's charts and headings, free of any DOM type (tested natively):
//! the frames of the score charts, the AMI chart's lines, gallery headings, durations.

use crate::engine::records::Metrics;
use crate::ui::axes::{Frame, nice_ticks};

pub fn format_duration(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}h {:02}m", s / 3600, s / 60 % 60)
    } else if s >= 60 {
        format!("{}m {:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// The SVG box of a chart of scores per E-step: legible at the width of the metrics card.
pub const SCORE_W: f64 = 460.0;
pub const SCORE_H: f64 = 170.0;

/// A frame over epochs 0 to the last of `metrics` and round ticks around `values` (scores in
/// 0..1): the axis shows where the lines lie, so a difference of 0.01 is visible and labelled.
pub fn score_frame<'a, 'b>(
    metrics: impl IntoIterator<Item = &'b Metrics>,
    values: impl IntoIterator<Item = &'a f64>,
) -> (Frame, Vec<f64>, Vec<f64>) {
    let (lo, hi) = finite_range(values);
    let pad = ((hi - lo) * 0.1).max(0.005);
    let y_ticks = nice_ticks((lo - pad).max(0.0), (hi + pad).min(1.0), 4);
    let x_max = metrics
        .into_iter()
        .map(|m| m.epoch)
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let x_ticks = nice_ticks(0.0, x_max, 6);
    (
        Frame::new(SCORE_W, SCORE_H, (0.0, x_max), &y_ticks),
        x_ticks,
        y_ticks,
    )
}

/// `values` (one per entry of `metrics`) as points on the epochs they were measured at.
pub fn score_points(frame: &Frame, metrics: &[Metrics], values: &[f64]) -> String {
    let xy: Vec<(f64, f64)> = metrics
        .iter()
        .zip(values)
        .map(|(m, &v)| (m.epoch as f64, v))
        .collect();
    frame.points(&xy)
}

/// One line of the "clusters against labels" chart: per E-step, a level's AMI against the
/// labels (`fine` false) or the fine labels; or raw pixels' AMI, flat (`level` None).
#[derive(Clone, Debug, PartialEq)]
pub struct AmiLine {
    pub level: Option<usize>,
    pub fine: bool,
    pub values: Vec<f64>,
}

impl AmiLine {
    pub fn label(&self) -> String {
        let against = if self.fine { "fine labels" } else { "labels" };
        match self.level {
            Some(l) => format!("level {} vs {against}", l + 1),
            None => format!("raw pixels vs {against}"),
        }
    }
}

/// The lines of the AMI chart from a run's metrics (one entry per E-step): every level against
/// the labels and the fine labels where they exist, and raw pixels' AMI as a flat line beside
/// each. Levels that appear later (a longer run) start where they appear.
pub fn ami_lines(metrics: &[Metrics]) -> Vec<AmiLine> {
    let mut lines = Vec::new();
    for fine in [false, true] {
        fn per(m: &Metrics, fine: bool) -> &[f64] {
            if fine {
                &m.level_ami_fine
            } else {
                &m.level_ami
            }
        }
        let levels = metrics
            .iter()
            .map(|m| per(m, fine).len())
            .max()
            .unwrap_or(0);
        for l in 0..levels {
            let values = metrics
                .iter()
                .map(|m| per(m, fine).get(l).copied().unwrap_or(f64::NAN))
                .collect();
            lines.push(AmiLine {
                level: Some(l),
                fine,
                values,
            });
        }
        let pixels = metrics.iter().rev().find_map(|m| {
            if fine {
                m.pixels_ami_fine
            } else {
                m.pixels_ami
            }
        });
        if let (Some(p), true) = (pixels, levels > 0) {
            lines.push(AmiLine {
                level: None,
                fine,
                values: vec![p; metrics.len().max(2)],
            });
        }
    }
    lines
}

/// The heading of level `m`'s gallery: K and inertia, and where labels exist how well its
/// clusters match them, beside raw pixels' figure.
pub fn level_heading(m: usize, k: usize, inertia: f64, metrics: Option<&Metrics>) -> String {
    let mut text = format!("Level {} — K = {k}, inertia {inertia:.1}", m + 1);
    let Some(metrics) = metrics else {
        return text;
    };
    let pixels = |p: Option<f64>| p.map_or(String::new(), |p| format!(" (raw pixels {p:.3})"));
    if let Some(a) = metrics.level_ami.get(m) {
        text += &format!(" · AMI vs labels {a:.3}{}", pixels(metrics.pixels_ami));
    }
    if let Some(a) = metrics.level_ami_fine.get(m) {
        text += &format!(", vs fine labels {a:.3}{}", pixels(metrics.pixels_ami_fine));
    }
    text
}

/// Min and max of the finite values (a unit range when there are none).
pub fn finite_range<'a>(values: impl IntoIterator<Item = &'a f64>) -> (f64, f64) {
    let (lo, hi) = values
        .into_iter()
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    if lo.is_finite() {
        (lo, hi.max(lo + 1e-9))
    } else {
        (0.0, 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ami_chart_has_a_line_per_level_and_label_kind_and_the_pixels_baseline() {
        let m = |ami: Vec<f64>, fine: Vec<f64>| Metrics {
            level_ami: ami,
            level_ami_fine: fine,
            pixels_ami: Some(0.3),
            pixels_ami_fine: Some(0.4),
            ..Default::default()
        };
        let lines = ami_lines(&[
            m(vec![0.1, 0.2], vec![0.5, 0.6]),
            m(vec![0.15, 0.25], vec![0.55, 0.65]),
        ]);
        let labels: Vec<String> = lines.iter().map(AmiLine::label).collect();
        assert_eq!(
            labels,
            [
                "level 1 vs labels",
                "level 2 vs labels",
                "raw pixels vs labels",
                "level 1 vs fine labels",
                "level 2 vs fine labels",
                "raw pixels vs fine labels"
            ]
        );
        assert_eq!(lines[1].values, vec![0.2, 0.25]);
        assert_eq!(lines[5].values, vec![0.4, 0.4]);
        // No fine labels: no fine lines and no fine baseline.
        let lines = ami_lines(&[Metrics {
            level_ami: vec![0.1],
            pixels_ami: Some(0.3),
            ..Default::default()
        }]);
        assert_eq!(lines.len(), 2);
        assert!(ami_lines(&[]).is_empty());
    }

    #[test]
    fn gallery_headings_say_how_well_each_level_matches_the_labels() {
        let m = Metrics {
            level_ami: vec![0.25, 0.3],
            level_ami_fine: vec![0.4, 0.5],
            pixels_ami: Some(0.28),
            pixels_ami_fine: Some(0.33),
            ..Default::default()
        };
        assert_eq!(
            level_heading(1, 74, 377.44, Some(&m)),
            "Level 2 — K = 74, inertia 377.4 · AMI vs labels 0.300 (raw pixels 0.280), \
             vs fine labels 0.500 (raw pixels 0.330)"
        );
        assert_eq!(
            level_heading(0, 18, 708.0, None),
            "Level 1 — K = 18, inertia 708.0"
        );
    }

    #[test]
    fn a_score_chart_spans_its_epochs_and_ticks_round_values_around_its_lines() {
        let at = |epoch: usize| Metrics {
            epoch,
            ..Default::default()
        };
        let metrics = [at(3), at(10), at(37)];
        let values = [0.262, 0.281, f64::NAN, 0.294];
        let (frame, x_ticks, y_ticks) = score_frame(&metrics, &values);
        assert_eq!(frame.x, (0.0, 37.0));
        assert_eq!(x_ticks.first(), Some(&0.0));
        assert!(
            y_ticks[0] <= 0.262 && *y_ticks.last().unwrap() >= 0.294,
            "{y_ticks:?}"
        );
        assert!(
            y_ticks[0] > 0.2 && y_ticks.len() >= 3,
            "zoomed in: {y_ticks:?}"
        );
        let points = score_points(&frame, &metrics, &[0.262, f64::NAN, 0.294]);
        assert_eq!(points.split(' ').count(), 2, "{points}");
        assert!(points.ends_with(&format!("{:.1},{:.1}", frame.sx(37.0), frame.sy(0.294))));
    }

    #[test]
    fn charts_scale_and_skip_non_finite_values() {
        assert_eq!(finite_range(&[2.0, f64::INFINITY, 5.0]), (2.0, 5.0));
        assert_eq!(format_duration(125.0), "2m 05s");
        assert_eq!(crate::ui::state::Preset::InfoNce.config().proto_weight, 0.0);
    }
}

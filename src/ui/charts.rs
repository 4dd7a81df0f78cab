//! The maths of the page's charts and headings, free of any DOM type (tested natively):
//! scaling, downsampling, the AMI chart's lines, gallery headings, durations.

use crate::engine::records::Metrics;

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

/// At most `max` points: means of equal runs of `ys` (a chart needs no more than its width).
pub fn downsample(ys: &[f64], max: usize) -> Vec<f64> {
    if ys.len() <= max {
        return ys.to_vec();
    }
    let per = ys.len().div_ceil(max);
    ys.chunks(per)
        .map(|c| c.iter().sum::<f64>() / c.len() as f64)
        .collect()
}

/// SVG polyline points for `ys` over a `w` x `h` box (y up), NaN and infinities skipped; long
/// series are averaged down to 400 points.
pub fn polyline(ys: &[f64], w: f64, h: f64, lo: f64, hi: f64) -> String {
    let ys = &downsample(ys, 400)[..];
    let n = ys.len().max(2) - 1;
    let span = (hi - lo).max(1e-12);
    ys.iter()
        .enumerate()
        .filter(|(_, y)| y.is_finite())
        .map(|(i, y)| {
            let x = i as f64 / n as f64 * w;
            let y = h - (y.clamp(lo, hi) - lo) / span * h;
            format!("{x:.1},{y:.1}")
        })
        .collect::<Vec<_>>()
        .join(" ")
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
    fn charts_scale_and_skip_non_finite_values() {
        assert_eq!(
            polyline(&[0.0, f64::NAN, 1.0], 10.0, 4.0, 0.0, 1.0),
            "0.0,4.0 10.0,0.0"
        );
        assert_eq!(finite_range(&[2.0, f64::INFINITY, 5.0]), (2.0, 5.0));
        assert_eq!(
            downsample(&[1.0, 3.0, 5.0, 7.0, 9.0], 3),
            vec![2.0, 6.0, 9.0]
        );
        assert_eq!(
            polyline(&vec![1.0; 1000], 10.0, 1.0, 0.0, 1.0)
                .split(' ')
                .count(),
            334
        );
        assert_eq!(format_duration(125.0), "2m 05s");
        assert_eq!(crate::ui::state::Preset::InfoNce.config().proto_weight, 0.0);
    }
}

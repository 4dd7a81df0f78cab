//! Chart frames with axes, free of any DOM type (tested natively): tick positions and labels,
//! data to SVG coordinates and back (for hover), and the x of a training step in epochs, so
//! every live chart shares one x-axis.

use crate::engine::StepRecord;

/// Ticks at 1, 2 or 5 times a power of ten, about `target` of them, from the first at or below
/// `lo` to the first at or above `hi`.
pub fn nice_ticks(lo: f64, hi: f64, target: usize) -> Vec<f64> {
    if !(lo.is_finite() && hi.is_finite()) || hi <= lo {
        return vec![lo.min(0.0), lo.max(1.0)];
    }
    let rough = (hi - lo) / target.max(1) as f64;
    let power = 10f64.powf(rough.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .find(|&s| s >= rough)
        .unwrap_or(10.0 * power);
    let first = (lo / step).floor() as i64;
    let last = (hi / step).ceil() as i64;
    (first..=last).map(|i| i as f64 * step).collect()
}

/// A tick's text with as many decimals as the step between ticks needs.
pub fn tick_label(v: f64, ticks: &[f64]) -> String {
    let step = match ticks {
        [a, b, ..] => (b - a).abs(),
        _ => 1.0,
    };
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10()).ceil() as usize
    };
    format!("{v:.decimals$}")
}

/// A chart's plotting area inside a `w` x `h` SVG box (margins for the tick labels) and the
/// data ranges it shows.
#[derive(Clone, Debug, PartialEq)]
pub struct Frame {
    pub w: f64,
    pub h: f64,
    pub left: f64,
    pub right: f64,
    pub top: f64,
    pub bottom: f64,
    pub x: (f64, f64),
    pub y: (f64, f64),
}

impl Frame {
    /// A frame whose y range is widened to `y_ticks`' ends.
    pub fn new(w: f64, h: f64, x: (f64, f64), y_ticks: &[f64]) -> Self {
        let y = match y_ticks {
            [first, .., last] => (*first, *last),
            _ => (0.0, 1.0),
        };
        Frame {
            w,
            h,
            left: 40.0,
            right: 12.0,
            top: 16.0,
            bottom: 30.0,
            x,
            y,
        }
    }

    pub fn sx(&self, x: f64) -> f64 {
        let span = (self.x.1 - self.x.0).max(1e-12);
        self.left + (x - self.x.0) / span * (self.w - self.left - self.right)
    }

    pub fn sy(&self, y: f64) -> f64 {
        let span = (self.y.1 - self.y.0).max(1e-12);
        let y = y.clamp(self.y.0, self.y.1);
        self.h - self.bottom - (y - self.y.0) / span * (self.h - self.top - self.bottom)
    }

    /// The data x under SVG x `px` (hover), within the x range.
    pub fn x_at(&self, px: f64) -> f64 {
        let inner = (self.w - self.left - self.right).max(1e-12);
        let t = ((px - self.left) / inner).clamp(0.0, 1.0);
        self.x.0 + t * (self.x.1 - self.x.0)
    }

    /// SVG polyline points of `(x, y)` pairs, non-finite ones skipped, long series averaged
    /// down to about 600 points (a chart needs no more than its width).
    pub fn points(&self, xy: &[(f64, f64)]) -> String {
        let per = xy.len().div_ceil(600).max(1);
        xy.chunks(per)
            .filter_map(|c| {
                let fin: Vec<&(f64, f64)> = c
                    .iter()
                    .filter(|(x, y)| x.is_finite() && y.is_finite())
                    .collect();
                if fin.is_empty() {
                    return None;
                }
                let n = fin.len() as f64;
                let x = fin.iter().map(|p| p.0).sum::<f64>() / n;
                let y = fin.iter().map(|p| p.1).sum::<f64>() / n;
                Some(format!("{:.1},{:.1}", self.sx(x), self.sy(y)))
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Where a step sits on the epoch axis: its epoch plus the share of the epoch done after it.
pub fn step_epoch(r: &StepRecord, steps_per_epoch: usize) -> f64 {
    r.epoch as f64 + (r.step + 1) as f64 / steps_per_epoch.max(1) as f64
}

/// The step nearest to epoch `x` (hover), by position in `steps`.
pub fn nearest_step(steps: &[StepRecord], steps_per_epoch: usize, x: f64) -> Option<usize> {
    steps
        .iter()
        .enumerate()
        .min_by(|a, b| {
            let d = |r: &StepRecord| (step_epoch(r, steps_per_epoch) - x).abs();
            d(a.1).total_cmp(&d(b.1))
        })
        .map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_numbers_that_cover_the_range() {
        assert_eq!(
            nice_ticks(0.0, 10.0, 5),
            vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]
        );
        assert_eq!(nice_ticks(0.0, 37.0, 5), vec![0.0, 10.0, 20.0, 30.0, 40.0]);
        let t = nice_ticks(0.012, 0.031, 4);
        assert!(t[0] <= 0.012 && *t.last().unwrap() >= 0.031, "{t:?}");
        assert_eq!(tick_label(0.005, &[0.0, 0.005]), "0.005");
        assert_eq!(tick_label(20.0, &[0.0, 10.0]), "20");
        assert_eq!(tick_label(0.4, &[0.0, 0.2]), "0.4");
        // Nothing to show, or one value: a unit range, never NaN ticks.
        assert_eq!(nice_ticks(f64::NAN, 1.0, 5), vec![0.0, 1.0]);
        assert!(nice_ticks(3.0, 3.0, 5).iter().all(|v| v.is_finite()));
    }

    #[test]
    fn a_frame_maps_data_to_its_box_and_back() {
        let f = Frame::new(640.0, 200.0, (0.0, 40.0), &[0.0, 2.0, 4.0, 6.0]);
        assert_eq!(f.sx(0.0), f.left);
        assert_eq!(f.sx(40.0), 640.0 - f.right);
        assert_eq!(f.sy(0.0), 200.0 - f.bottom);
        assert_eq!(f.sy(6.0), f.top);
        assert_eq!(
            f.sy(100.0),
            f.top,
            "values past the range stay in the frame"
        );
        assert!((f.x_at(f.sx(13.0)) - 13.0).abs() < 1e-9);
        assert_eq!(f.x_at(-50.0), 0.0);
        let pts = f.points(&[(0.0, 0.0), (1.0, f64::NAN), (2.0, 6.0)]);
        assert_eq!(pts.split(' ').count(), 2, "{pts}");
        let long: Vec<(f64, f64)> = (0..5000).map(|i| (i as f64 / 125.0, 1.0)).collect();
        assert!(f.points(&long).split(' ').count() <= 600);
    }

    #[test]
    fn steps_sit_at_their_share_of_the_epoch() {
        let r = |epoch, step| StepRecord {
            epoch,
            step,
            loss: 1.0,
            info_nce: 1.0,
            proto: vec![],
            instance_acc: 0.5,
            lr: 0.1,
            epoch_done: false,
            self_negatives: 0.0,
        };
        assert_eq!(step_epoch(&r(2, 3), 4), 3.0);
        assert_eq!(step_epoch(&r(0, 0), 8), 0.125);
        let steps = vec![r(0, 0), r(0, 1), r(1, 0), r(1, 1)];
        assert_eq!(nearest_step(&steps, 2, 1.4), Some(2));
        assert_eq!(nearest_step(&steps, 2, 99.0), Some(3));
        assert_eq!(nearest_step(&[], 2, 1.0), None);
    }
}

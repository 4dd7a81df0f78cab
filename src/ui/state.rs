//! Page state and its transitions, free of any DOM or Leptos type (tested natively). Image
//! pixels are not in here: the view keeps them in a plain store beside it (see `view.rs`).

use crate::backend::{BackendInfo, BackendKind};
use crate::engine::PclConfig;
use crate::engine::records::{ExploreReport, LevelSummary, Metrics, StepRecord, thin_history};
use crate::intake::{Label, Skipped};
use crate::protocol::{FromWorker, Phase, RunState, RunStatus, ToWorker};

/// Images known to the page (the worker holds the same, decoded).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ImagesInfo {
    pub count: usize,
    pub side: usize,
    pub names: Vec<String>,
    pub labels: Vec<Label>,
    /// `(done, total, eta_s)` while decoding.
    pub loading: Option<(usize, usize, Option<f64>)>,
    pub skipped: Vec<Skipped>,
    pub memory_bytes: usize,
    /// Images per second of the last load.
    pub rate: Option<f64>,
}

/// Metrics over epochs of one finished or running training run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunCurve {
    pub label: String,
    pub metrics: Vec<Metrics>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct PageState {
    pub backend: Option<BackendInfo>,
    /// Loss of the probe training step and its wall time in ms.
    pub probe: Option<(f32, f64)>,
    pub error: Option<String>,
    /// Ask the worker for the CPU backend even where WebGPU exists (`?cpu` in the URL).
    pub force_cpu: bool,
    pub images: ImagesInfo,
    pub run: RunStatus,
    pub steps: Vec<StepRecord>,
    pub esteps: Vec<(usize, Vec<LevelSummary>)>,
    pub explore: Option<ExploreReport>,
    /// The current run's metrics and earlier runs' (for side-by-side curves).
    pub curve: RunCurve,
    pub earlier: Vec<RunCurve>,
    pub neighbours: Option<(usize, Vec<(usize, f32)>)>,
    /// Settings the user edits; empty derived fields are filled by the worker.
    pub settings: PclConfig,
    /// Epoch of the last autosave, this session.
    pub autosaved: Option<usize>,
    /// An earlier session's autosave found at start-up (its epoch and image count), offered
    /// to resume.
    pub autosave_offer: Option<(usize, usize)>,
    pub settings_error: Option<String>,
    /// Why autosave is off in this tab (storage full or refused, another tab owns it); the
    /// worker's autosave bytes are then dropped at once.
    pub autosave_off: Option<String>,
    /// Worker crashes in this page so far (each restart backs off; see [`Recovery`]).
    pub crashes: u32,
    /// What the view should do about the last crash (it takes it).
    pub recovery: Option<Recovery>,
}

/// What the page does after its worker crashed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recovery {
    /// Start a new worker after `delay_ms` (on the CPU if `force_cpu`) and resume the last
    /// autosave.
    Restart { force_cpu: bool, delay_ms: u32 },
    /// Stop trying: the run shows as stopped and the last good autosave stays.
    GiveUp,
}

/// Crashes after which the page stops restarting its worker.
pub const MAX_CRASHES: u32 = 3;

/// The presets of the settings panel (shared with `pcl train --preset`).
pub use crate::engine::config::Preset;

impl PageState {
    pub fn new(force_cpu: bool) -> Self {
        Self {
            force_cpu,
            settings: Preset::Quick.config(),
            ..Default::default()
        }
    }

    /// Applies a worker message; returns the reply to send, if any.
    pub fn apply(&mut self, msg: FromWorker) -> Option<ToWorker> {
        match msg {
            FromWorker::Ready => {
                return Some(ToWorker::Start {
                    force_cpu: self.force_cpu,
                });
            }
            FromWorker::Backend(info) => self.backend = Some(info),
            FromWorker::ProbeStep { loss, millis } => self.probe = Some((loss, millis)),
            FromWorker::Loading { done, total, eta_s } => {
                self.images.loading = Some((done, total, eta_s))
            }
            FromWorker::Images(added) => {
                let im = &mut self.images;
                if added.last {
                    im.loading = None;
                }
                im.side = added.side;
                im.rate = Some(
                    (added.names.len() + added.skipped.len()) as f64 / added.seconds.max(1e-3),
                );
                im.names.extend(added.names);
                im.labels.extend(added.labels);
                im.skipped.extend(added.skipped);
                im.count = added.total;
                im.memory_bytes = added.memory_bytes;
            }
            FromWorker::ImagesCleared => {
                self.images = ImagesInfo::default();
                self.explore = None;
                self.neighbours = None;
            }
            FromWorker::Status(status) => {
                if self.run.state != RunState::Training
                    && self.run.state != RunState::Paused
                    && status.state == RunState::Training
                    && status.step == 0
                    && status.epoch == 0
                {
                    self.start_new_curve(&status);
                }
                self.run = status;
            }
            FromWorker::Steps(records) => {
                for r in records {
                    thin_history(&mut self.steps);
                    self.steps.push(r);
                }
            }
            FromWorker::History(records) => {
                self.steps = records;
                self.esteps.clear();
                self.error = None;
            }
            FromWorker::EStepDone { epoch, levels } => self.esteps.push((epoch, levels)),
            FromWorker::Explore(report) => {
                if let Some(m) = &report.metrics {
                    self.curve.metrics.retain(|x| x.epoch != m.epoch);
                    self.curve.metrics.push(m.clone());
                }
                self.explore = Some(*report);
            }
            FromWorker::File { .. } => {}
            // Recorded by the view once the bytes are stored.
            FromWorker::Autosave { .. } => {}
            FromWorker::Neighbours { index, neighbours } => {
                self.neighbours = Some((index, neighbours))
            }
            FromWorker::Error(e) => self.error = Some(e),
            FromWorker::Crashed(why) => self.recovery = Some(self.crashed(&why)),
        }
        None
    }

    /// The worker crashed (or died without a word): the run stops, and the page decides how
    /// to go on. Restarts back off; after two crashes on the GPU the next worker trains on the
    /// CPU; after [`MAX_CRASHES`] the page stops trying, keeping the last good autosave.
    pub fn crashed(&mut self, why: &str) -> Recovery {
        self.crashes += 1;
        self.run.state = RunState::Error;
        self.probe = None;
        let on_gpu = self
            .backend
            .as_ref()
            .is_some_and(|b| b.kind != BackendKind::Cpu);
        self.backend = None;
        if self.crashes >= MAX_CRASHES {
            self.error = Some(format!(
                "{why}. The compute worker crashed {} times, so the page stopped restarting \
                 it; the last autosave is kept. Reload the page to try again.",
                self.crashes
            ));
            return Recovery::GiveUp;
        }
        let force_cpu = self.force_cpu || (on_gpu && self.crashes >= 2);
        let how = if force_cpu && !self.force_cpu {
            " on the CPU this time"
        } else {
            ""
        };
        self.force_cpu = force_cpu;
        self.error = Some(format!(
            "{why}. Starting a new compute worker{how} and resuming from the last autosave…"
        ));
        Recovery::Restart {
            force_cpu,
            delay_ms: 500 * 4u32.pow(self.crashes - 1),
        }
    }

    /// A new run begins: keep the last run's curve for comparison and clear the charts.
    fn start_new_curve(&mut self, status: &RunStatus) {
        if !self.curve.metrics.is_empty() {
            self.earlier.push(std::mem::take(&mut self.curve));
        }
        let proto = status.config.as_ref().is_none_or(|c| c.proto_weight > 0.0);
        self.curve = RunCurve {
            label: if proto { "PCL" } else { "InfoNCE only" }.into(),
            metrics: Vec::new(),
        };
        self.steps.clear();
        self.esteps.clear();
        self.explore = None;
        self.neighbours = None;
        self.error = None;
    }

    /// `data-backend` of the backend badge.
    pub fn backend_attr(&self) -> &'static str {
        match self.backend.as_ref().map(|b| b.kind) {
            Some(BackendKind::Webgpu | BackendKind::Wgpu) => "webgpu",
            Some(BackendKind::Cpu) => "cpu",
            None => "pending",
        }
    }

    /// `data-state` of the status element: loading while images decode, else the run's state.
    pub fn state_attr(&self) -> &'static str {
        if self.images.loading.is_some() && self.run.state != RunState::Training {
            "loading"
        } else {
            self.run.state.as_str()
        }
    }

    pub fn status_line(&self) -> String {
        match (&self.error, &self.backend, &self.probe) {
            (Some(e), _, _) => format!("Error: {e}"),
            (None, None, _) => "Starting the compute worker…".into(),
            (None, Some(_), None) => "Running one training step to check the device…".into(),
            (None, Some(_), Some((loss, ms))) => {
                format!("One training step ran: loss {loss:.4} in {ms:.0} ms.")
            }
        }
    }

    /// The run's progress in words.
    pub fn progress_line(&self) -> String {
        let r = &self.run;
        match r.state {
            RunState::Idle => "Not started.".into(),
            RunState::Error => "Stopped by an error; the last good state is kept.".into(),
            _ => {
                let eta = r
                    .eta_s
                    .map(|s| format!(", about {} left", format_duration(s)))
                    .unwrap_or_default();
                format!(
                    "Epoch {} of {}, step {} of {} — {} — {:.0} images/s{eta}",
                    (r.epoch + 1).min(r.epochs.max(1)),
                    r.epochs,
                    r.step,
                    r.steps_per_epoch,
                    phase_words(r),
                    r.images_per_s
                )
            }
        }
    }

    /// For each coarse cluster (level 0, largest first), the finer clusters of `level` its
    /// members fall in, as (fine cluster, count), most members first.
    pub fn hierarchy(&self, level: usize) -> Vec<Vec<(usize, usize)>> {
        let Some(ex) = &self.explore else {
            return Vec::new();
        };
        let (Some(coarse), Some(fine)) = (ex.levels.first(), ex.levels.get(level)) else {
            return Vec::new();
        };
        let mut counts = vec![std::collections::BTreeMap::<usize, usize>::new(); coarse.k];
        for (&c, &f) in coarse.assignments.iter().zip(&fine.assignments) {
            *counts[c as usize].entry(f as usize).or_default() += 1;
        }
        counts
            .into_iter()
            .map(|m| {
                let mut v: Vec<(usize, usize)> = m.into_iter().collect();
                v.sort_by_key(|&(f, n)| (std::cmp::Reverse(n), f));
                v
            })
            .collect()
    }
}

/// What the run is doing, in words.
pub fn phase_words(r: &RunStatus) -> String {
    match &r.phase {
        Phase::Waiting | Phase::Training => "augment + train".into(),
        Phase::Embedding { done, total } => format!("E-step: embedding images {done}/{total}"),
        Phase::KMeans { level, levels, k } => {
            format!("E-step: k-means level {} of {levels} (K = {k})", level + 1)
        }
        Phase::Exploring => "computing the clusters view".into(),
        Phase::Resumed { autosave } => format!(
            "resumed from the {} at epoch {}",
            if *autosave { "autosave" } else { "session" },
            r.epoch
        ),
        Phase::Paused => "paused".into(),
        Phase::Finished => "finished".into(),
        Phase::Stopped => "stopped".into(),
        Phase::Failed => "stopped by an error".into(),
    }
}

/// One editable setting: its config key (the input's `name`), the formula symbol it sets,
/// and what it does in one line.
pub struct SettingDoc {
    pub key: &'static str,
    pub symbol: &'static str,
    pub help: &'static str,
}

pub const SETTINGS: &[SettingDoc] = &[
    SettingDoc {
        key: "minutes",
        symbol: "",
        help: "time budget: the run plans its epochs from its measured speed so that it ends in this many minutes; empty = train the epochs below",
    },
    SettingDoc {
        key: "epochs",
        symbol: "",
        help: "passes over all images (with a time budget: the first plan)",
    },
    SettingDoc {
        key: "warmup_epochs",
        symbol: "",
        help: "epochs of InfoNCE only before the first E-step (clusters need a rough embedding first)",
    },
    SettingDoc {
        key: "num_clusters",
        symbol: "K, M",
        help: "clusters per level, coarse to fine, comma-separated; M = how many levels; empty = from the number of images",
    },
    SettingDoc {
        key: "tau",
        symbol: "τ",
        help: "temperature of InfoNCE, and the mean of the concentrations φ",
    },
    SettingDoc {
        key: "queue_size",
        symbol: "r",
        help: "negatives kept in the queue; empty = at most half the images",
    },
    SettingDoc {
        key: "ema_momentum",
        symbol: "m",
        help: "momentum of the key encoder: how slowly the keys change",
    },
    SettingDoc {
        key: "proto_weight",
        symbol: "",
        help: "weight of the ProtoNCE term; 0 = InfoNCE only (MoCo)",
    },
    SettingDoc {
        key: "proto_mode",
        symbol: "",
        help: "full: every prototype of a level in the softmax; sampled: r of them (the paper's choice)",
    },
    SettingDoc {
        key: "batch_size",
        symbol: "",
        help: "images per step (capped to an eighth of small sets)",
    },
    SettingDoc {
        key: "lr",
        symbol: "η",
        help: "learning rate of SGD (momentum 0.9, cosine schedule)",
    },
    SettingDoc {
        key: "kmeans_restarts",
        symbol: "",
        help: "k-means runs per level; the lowest inertia wins",
    },
    SettingDoc {
        key: "width",
        symbol: "",
        help: "channels of the encoder's first layer (the rest double)",
    },
    SettingDoc {
        key: "feature_dim",
        symbol: "d",
        help: "size of the embedding v",
    },
    SettingDoc {
        key: "norm",
        symbol: "",
        help: "batch: BatchNorm per chunk of the batch, keys shuffled across chunks (the paper's choice); group: GroupNorm",
    },
    SettingDoc {
        key: "bn_chunks",
        symbol: "",
        help: "chunks of the batch with their own BatchNorm statistics (at least 2)",
    },
    SettingDoc {
        key: "seed",
        symbol: "",
        help: "same seed, same run (on the CPU)",
    },
];

/// The setting `key` of `config` as the text of its input.
pub fn setting_text(config: &PclConfig, key: &str) -> String {
    let value = serde_json::to_value(config).expect("plain data");
    match &value[key] {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(s) => s.to_lowercase(),
        serde_json::Value::Array(a) => a
            .iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        v => v.to_string(),
    }
}

/// `config` with `key` set from the text the user typed, or why it cannot be.
pub fn with_setting(config: &PclConfig, key: &str, text: &str) -> Result<PclConfig, String> {
    let mut value = serde_json::to_value(config).expect("plain data");
    let text = text.trim();
    let new = match (key, &value[key]) {
        ("num_clusters", _) => serde_json::Value::Array(
            text.split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(|t| {
                    t.parse::<u64>()
                        .map(Into::into)
                        .map_err(|_| format!("{key}: '{t}' is not a whole number"))
                })
                .collect::<Result<_, _>>()?,
        ),
        ("queue_size" | "minutes", _) if text.is_empty() => serde_json::Value::Null,
        ("minutes", _) => text
            .parse::<f64>()
            .map_err(|_| format!("{key}: '{text}' is not a number of minutes"))?
            .into(),
        ("norm", _) => match text.to_lowercase().as_str() {
            "batch" => "batch".into(),
            "group" => "group".into(),
            _ => return Err(format!("{key}: batch or group")),
        },
        ("proto_mode", _) => match text.to_lowercase().as_str() {
            "full" => "full".into(),
            "sampled" => "sampled".into(),
            _ => return Err(format!("{key}: full or sampled")),
        },
        (_, serde_json::Value::Number(n)) if n.is_f64() => text
            .parse::<f64>()
            .map_err(|_| format!("{key}: '{text}' is not a number"))?
            .into(),
        _ => text
            .parse::<u64>()
            .map_err(|_| format!("{key}: '{text}' is not a whole number"))?
            .into(),
    };
    value[key] = new;
    if key == "epochs" {
        // Epochs typed by hand are the plan: a preset's time budget no longer re-plans them.
        value["minutes"] = serde_json::Value::Null;
    }
    serde_json::from_value(value).map_err(|e| format!("{key}: {e}"))
}

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
    use crate::engine::records::{ClusterCard, LevelView};
    use crate::protocol::ImagesAdded;

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
    fn ready_starts_the_worker_and_results_are_kept() {
        let mut s = PageState::new(true);
        assert_eq!(s.backend_attr(), "pending");
        assert_eq!(
            s.apply(FromWorker::Ready),
            Some(ToWorker::Start { force_cpu: true })
        );
        assert!(
            s.apply(FromWorker::Backend(BackendInfo::cpu(Some("no GPU".into()))))
                .is_none()
        );
        assert_eq!(s.backend_attr(), "cpu");
        assert!(s.status_line().contains("Running one training step"));
        s.apply(FromWorker::ProbeStep {
            loss: 2.5,
            millis: 12.0,
        });
        assert!(s.status_line().contains("loss 2.5000"));
        s.apply(FromWorker::Error("lost device".into()));
        assert!(s.status_line().starts_with("Error: lost device"));
        assert_eq!(s.probe, Some((2.5, 12.0)), "an error keeps what was known");
        // A crash: the run stops and the page says it restarts from the autosave.
        s.apply(FromWorker::Crashed("the compute worker crashed".into()));
        assert_eq!(s.state_attr(), "error");
        assert!(
            s.error
                .as_deref()
                .unwrap()
                .contains("resuming from the last autosave")
        );
        assert_eq!(s.probe, None, "the new worker checks its device again");
        s.apply(FromWorker::History(vec![]));
        assert_eq!(s.error, None, "a resumed run clears the message");
    }

    #[test]
    fn crashes_back_off_fall_back_to_the_cpu_and_then_stop() {
        let mut s = PageState::new(false);
        let gpu = || BackendInfo {
            kind: BackendKind::Webgpu,
            ..BackendInfo::cpu(None)
        };
        s.apply(FromWorker::Backend(gpu()));
        s.apply(FromWorker::Crashed("boom".into()));
        assert_eq!(
            s.recovery.take(),
            Some(Recovery::Restart {
                force_cpu: false,
                delay_ms: 500
            })
        );
        s.apply(FromWorker::Backend(gpu()));
        s.apply(FromWorker::Crashed("boom".into()));
        assert_eq!(
            s.recovery.take(),
            Some(Recovery::Restart {
                force_cpu: true,
                delay_ms: 2000
            })
        );
        assert!(s.error.as_deref().unwrap().contains("on the CPU this time"));
        s.apply(FromWorker::Backend(BackendInfo::cpu(None)));
        s.apply(FromWorker::Crashed("boom".into()));
        assert_eq!(s.recovery.take(), Some(Recovery::GiveUp));
        assert_eq!(s.state_attr(), "error");
        assert!(s.error.as_deref().unwrap().contains("stopped restarting"));
    }

    #[test]
    fn images_accumulate_and_loading_shows_in_the_state() {
        let mut s = PageState::new(false);
        s.apply(FromWorker::Loading {
            done: 1,
            total: 4,
            eta_s: Some(3.0),
        });
        assert_eq!(s.state_attr(), "loading");
        let added = |names: &[&str], total| {
            FromWorker::Images(ImagesAdded {
                side: 36,
                names: names.iter().map(|n| n.to_string()).collect(),
                labels: vec![Label::default(); names.len()],
                skipped: vec![Skipped {
                    file: "x.txt".into(),
                    reason: "not an image".into(),
                }],
                total,
                memory_bytes: total * 36 * 36 * 3,
                seconds: 0.5,
                last: true,
            })
        };
        s.apply(added(&["a.png", "b.png"], 2));
        s.apply(added(&["c.png"], 3));
        assert_eq!(s.state_attr(), "idle");
        assert_eq!(s.images.count, 3);
        assert_eq!(s.images.names, vec!["a.png", "b.png", "c.png"]);
        assert_eq!(
            s.images.skipped.len(),
            2,
            "skipped files of both loads are listed"
        );
        s.apply(FromWorker::ImagesCleared);
        assert_eq!(s.images.count, 0);
    }

    #[test]
    fn a_new_run_keeps_the_last_curve_for_comparison() {
        let mut s = PageState::new(false);
        let training = |proto_weight| RunStatus {
            state: RunState::Training,
            epochs: 4,
            steps_per_epoch: 2,
            config: Some(PclConfig {
                proto_weight,
                ..PclConfig::default()
            }),
            ..Default::default()
        };
        s.apply(FromWorker::Status(training(1.0)));
        assert_eq!(s.curve.label, "PCL");
        s.curve.metrics.push(Metrics {
            epoch: 1,
            report: Default::default(),
            ..Default::default()
        });
        s.apply(FromWorker::Status(RunStatus {
            state: RunState::Done,
            ..Default::default()
        }));
        s.apply(FromWorker::Status(training(0.0)));
        assert_eq!(s.earlier.len(), 1);
        assert_eq!(s.earlier[0].label, "PCL");
        assert_eq!(s.curve.label, "InfoNCE only");
        assert!(s.progress_line().starts_with("Epoch 1 of 4, step 0 of 2"));
    }

    #[test]
    fn hierarchy_counts_fine_clusters_inside_coarse_ones() {
        let level = |k, assignments: Vec<u32>| LevelView {
            k,
            inertia: 0.0,
            clusters: vec![
                ClusterCard {
                    size: 0,
                    phi: 0.1,
                    members: vec![]
                };
                k
            ],
            assignments,
        };
        let mut s = PageState::new(false);
        s.explore = Some(ExploreReport {
            epoch: 3,
            levels: vec![level(2, vec![0, 0, 0, 1]), level(3, vec![2, 1, 2, 0])],
            map: vec![[0.0, 0.0]; 4],
            metrics: None,
        });
        assert_eq!(s.hierarchy(1), vec![vec![(2, 2), (1, 1)], vec![(0, 1)]]);
        assert!(s.hierarchy(5).is_empty());
    }

    #[test]
    fn settings_round_trip_through_their_inputs() {
        let c = PclConfig::default();
        assert_eq!(setting_text(&c, "tau"), "0.2");
        assert_eq!(setting_text(&c, "queue_size"), "");
        let c = with_setting(&c, "num_clusters", "10, 40,100").unwrap();
        assert_eq!(c.num_clusters, vec![10, 40, 100]);
        assert_eq!(setting_text(&c, "num_clusters"), "10, 40, 100");
        let c = with_setting(&c, "tau", "0.1").unwrap();
        assert_eq!(c.tau, 0.1);
        let c = with_setting(&c, "proto_mode", "sampled").unwrap();
        assert_eq!(setting_text(&c, "proto_mode"), "sampled");
        assert_eq!(
            with_setting(&c, "queue_size", "64").unwrap().queue_size,
            Some(64)
        );
        assert!(
            with_setting(&c, "epochs", "ten")
                .unwrap_err()
                .contains("whole number")
        );
        for s in SETTINGS {
            let text = setting_text(&c, s.key);
            assert!(with_setting(&c, s.key, &text).is_ok(), "{}", s.key);
        }
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
        assert_eq!(Preset::InfoNce.config().proto_weight, 0.0);
    }
}
